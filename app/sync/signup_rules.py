"""The rules of newsletter signups (``app.sync.signups``), pure: no I/O here.

- A signup is a ``subscribe`` event of the email platform for a list the account's spec maps; other lists
  are none of the CRM's business.
- An address a live CRM contact holds is ``linked`` (nothing created); otherwise, with the spec's
  ``create_contacts``, a contact is to be created (``pending``), else the signup is only ``recorded``.
- The new contact carries the tag of each mapped list the address joined: the list rule's ``tag``, or the
  first of its ``tags_any`` (any of them selects the list); a list mapped with ``all`` gives none. So the
  mirror, once the contact's webhook comes back, keeps the address in those lists.
- Its names and text fields are what the platform holds for the address in the fields the spec maps them
  to: the mirror pushes the contact's values back there, and an empty value would clear what the subscriber
  typed into the form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.connectors.base import CrmFieldValue
from app.db.states import SignupState
from app.sync.spec import PHONE_TARGET, ListRule, SourceKind, StoredSpec

# Custom-field types whose value is the platform's text as it is (the others need options, dates, parts).
TEXT_FIELD_TYPES = frozenset({"text", "textarea", "url", "numeric"})


def list_rule(spec: StoredSpec, list_id: int, base_list_id: int | None) -> ListRule | None:
    """The spec's rule mapping ``list_id`` (the base rule maps the account's own list), if any."""
    for rule in spec.lists:
        mapped = base_list_id if rule.base else rule.list_id
        if mapped is not None and mapped == list_id:
            return rule
    return None


def list_tag(rule: ListRule) -> str | None:
    """The tag that puts a contact in the rule's list: its ``tag``, else the first of ``tags_any``."""
    if rule.all:
        return None
    if rule.tag is not None:
        return rule.tag
    return rule.tags_any[0] if rule.tags_any else None


def mapped_lists(spec: StoredSpec, list_ids: Sequence[int], base_list_id: int | None) -> list[int]:
    """Those of ``list_ids`` the spec maps, once each, in order."""
    return [i for i in dict.fromkeys(list_ids) if list_rule(spec, i, base_list_id) is not None]


def signup_tags(spec: StoredSpec, list_ids: Sequence[int], base_list_id: int | None) -> list[str]:
    """The tags of the mapped lists the address joined, once each (case-insensitively), in order."""
    tags: dict[str, str] = {}
    for list_id in list_ids:
        rule = list_rule(spec, list_id, base_list_id)
        tag = list_tag(rule) if rule is not None else None
        if tag:
            tags.setdefault(tag.casefold(), tag)
    return list(tags.values())


def first_state(*, owned: bool, create_contacts: bool) -> SignupState:
    """The state of a new signup: held by a live contact, to create, or recorded only."""
    if owned:
        return SignupState.LINKED
    return SignupState.PENDING if create_contacts else SignupState.RECORDED


def joined(held: Sequence[int], new: Sequence[int]) -> list[int]:
    """``held`` followed by the lists of ``new`` it lacks."""
    return list(dict.fromkeys([*held, *new]))


def needs_tags(
    spec: StoredSpec, before: Sequence[int], after: Sequence[int], base_list_id: int | None
) -> bool:
    """True when the lists joined since the contact was created (``after`` less ``before``) carry a tag it
    was not given: it goes back to ``pending`` to get it."""
    given = {t.casefold() for t in signup_tags(spec, before, base_list_id)}
    return any(t.casefold() not in given for t in signup_tags(spec, after, base_list_id))


@dataclass(frozen=True, slots=True)
class ContactValues:
    name: str = ""
    first_name: str = ""
    last_name: str = ""
    fields: tuple[CrmFieldValue, ...] = ()


def contact_values(spec: StoredSpec, held: Mapping[str, str]) -> ContactValues:
    """The CRM values of a new contact: for each field rule with one source, a name or a text custom field,
    the value the platform holds (``held``: field name → value) in its target."""
    names = {SourceKind.NAME: "", SourceKind.FIRST_NAME: "", SourceKind.LAST_NAME: ""}
    fields: dict[int, CrmFieldValue] = {}
    for rule in spec.fields:
        value = (held.get(rule.target) or "").strip()
        if len(rule.sources) != 1 or rule.target_type == PHONE_TARGET or not value:
            continue
        ref = rule.sources[0]
        if ref.kind in names:
            names[ref.kind] = names[ref.kind] or value
        elif (
            ref.kind is SourceKind.CUSTOM_FIELD and ref.field_id is not None and ref.type in TEXT_FIELD_TYPES
        ):
            fields.setdefault(ref.field_id, CrmFieldValue(ref.field_id, (value,)))
    return ContactValues(
        names[SourceKind.NAME],
        names[SourceKind.FIRST_NAME],
        names[SourceKind.LAST_NAME],
        tuple(fields.values()),
    )
