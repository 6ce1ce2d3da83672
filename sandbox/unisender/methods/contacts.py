"""Contact methods besides the import: reading (getContact, isContactInLists, getContactCount,
getTotalContactsCount) and per-list changes (subscribe, exclude, unsubscribe)."""

from __future__ import annotations

from typing import Any

from sandbox.unisender.methods.call import (
    ApiError,
    Call,
    invalid_arg,
    p_array,
    p_flag,
    p_int,
    p_list_ids,
    p_str,
)
from sandbox.unisender.methods.records import (
    join_list,
    leave_list,
    new_contact,
    normalise_email,
    normalise_phone,
    split_tags,
)
from sandbox.unisender.state import Contact

# --- reading contacts ---------------------------------------------------------------------------------


def _require_email(call: Call, name: str = "email") -> str:
    raw = p_str(call, name, required=True)
    assert raw is not None
    email = normalise_email(raw)
    if email is None:
        raise invalid_arg(f'Invalid email address "{raw}"')
    return email


def get_contact(call: Call) -> dict[str, Any]:
    """getContact: email object, plus lists/fields on request."""
    raw = p_str(call, "email", required=True)
    assert raw is not None
    email = normalise_email(raw)
    contact = call.account.contacts_by_email.get(email) if email else None
    if contact is None:
        raise ApiError("unspecified", f'Contact "{raw.strip()}" not found')
    email_obj: dict[str, Any] = {
        "email": contact.email,
        "added_at": contact.added_at,
        "status": contact.status,
        "availability": contact.availability,
    }
    if p_flag(call, "include_details") == 1:
        email_obj.update(
            {
                "last_send_datetime": contact.activity.get("last_send_datetime"),
                "last_delivery_datetime": contact.activity.get("last_delivery_datetime"),
                "last_read_datetime": contact.activity.get("last_read_datetime"),
                "last_click_datetime": contact.activity.get("last_click_datetime"),
                "rating": None,
            }
        )
    result: dict[str, Any] = {"email": email_obj}
    if p_flag(call, "include_lists") == 1:
        result["lists"] = [
            {"id": lid, "status": m.status, "added_at": m.added_at}
            for lid, m in sorted(contact.lists.items())
        ]
    if p_flag(call, "include_fields") == 1:
        result["fields"] = call.account.field_values(contact)
    return result


def is_contact_in_lists(call: Call) -> bool:
    """isContactInLists: membership (any per-list status) of one, any or all lists."""
    email = _require_email(call)
    ids = p_list_ids(call, "list_ids", required=True)
    assert ids is not None
    condition = (p_str(call, "condition") or "or").strip().lower()
    if condition not in ("or", "and"):
        raise invalid_arg('Argument "condition" must be "or" or "and"')
    contact = call.account.contacts_by_email.get(email)
    if contact is None:
        return False
    hits = [lid in contact.lists for lid in ids]
    return all(hits) if condition == "and" else any(hits)


def get_contact_count(call: Call) -> dict[str, Any]:
    """getContactCount: members of a list, optionally by tag, channel and substring."""
    list_id = p_int(call, "list_id", required=True)
    assert list_id is not None
    lst = call.account.lists.get(list_id)
    if lst is None:
        raise invalid_arg(f"List with id={list_id} not found")
    search_params = p_array(call, "params") or {}
    flat = {k: v for k, v in search_params.items() if isinstance(v, str)}
    tag_id = flat.get("tagId")
    kind = flat.get("type")
    search = flat.get("search")
    if kind is not None and kind not in ("address", "phone"):
        raise invalid_arg('params[type] must be "address" or "phone"')
    if search is not None and kind is None:
        raise invalid_arg("params[search] needs params[type]")
    count = 0
    for pid in lst.members:
        contact = call.account.contacts_by_id[pid]
        if tag_id is not None and (not tag_id.isdigit() or int(tag_id) not in contact.tags):
            continue
        value = contact.email if kind == "address" else contact.phone if kind == "phone" else ""
        if kind is not None and value is None:
            continue
        if search and search.lower() not in (value or "").lower():
            continue
        count += 1
    return {"listId": list_id, "searchParams": flat, "count": count}


def get_total_contacts_count(call: Call) -> dict[str, Any]:
    """getTotalContactsCount(login)."""
    login = p_str(call, "login", required=True)
    if login != call.account.login:
        raise ApiError("unspecified", "Can't find user by provided login")
    return {"total": len(call.account.contacts_by_id)}


# --- subscribe / exclude / unsubscribe ----------------------------------------------------------------


def _target(call: Call) -> tuple[Contact, list[int]]:
    kind = p_str(call, "contact_type", required=True)
    raw = p_str(call, "contact", required=True)
    assert raw is not None
    if kind == "email":
        key = normalise_email(raw)
        if key is None:
            raise invalid_arg(f'Invalid email address "{raw}"')
        contact = call.account.contacts_by_email.get(key)
    elif kind == "phone":
        key = normalise_phone(raw)
        if key is None:
            raise invalid_arg(f'Invalid phone number "{raw}"')
        contact = call.account.contacts_by_phone.get(key)
    else:
        raise invalid_arg('Argument "contact_type" must be "email" or "phone"')
    not_found = ApiError("unspecified", f'Contact "{raw.strip()}" not found', with_result=True)
    if contact is None:
        raise not_found
    requested = p_list_ids(call, "list_ids")
    ids = [lid for lid in (requested or list(contact.lists)) if lid in contact.lists]
    if not ids:
        raise not_found
    return contact, ids


def exclude(call: Call) -> dict[str, Any]:
    """exclude: remove from lists without marking unsubscribed (re-subscribable)."""
    contact, ids = _target(call)
    for list_id in ids:
        leave_list(call.account, contact, list_id)
    return {}


def unsubscribe(call: Call) -> dict[str, Any]:
    """unsubscribe: keep in the lists, mark the memberships unsubscribed."""
    contact, ids = _target(call)
    for list_id in ids:
        membership = contact.lists[list_id]
        if membership.status != "unsubscribed":
            membership.status = "unsubscribed"
            if call.state.config.notify_api_unsubscribes:
                call.list_event("unsubscribe", contact, list_id)
    return {}


def subscribe(call: Call) -> dict[str, Any]:
    """subscribe, reduced: no letters are sent; statuses follow double_optin."""
    cfg = call.state.config
    account = call.account
    list_ids = p_list_ids(call, "list_ids", required=True)
    assert list_ids is not None
    fields = p_array(call, "fields", required=True)
    assert fields is not None
    flat: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            raise invalid_arg(f"fields[{name}] must be a string")
        flat[name] = value
    email = phone = None
    if flat.get("email", "").strip():
        email = normalise_email(flat["email"])
        if email is None:
            raise invalid_arg(f'Invalid email address "{flat["email"]}"')
    if flat.get("phone", "").strip():
        phone = normalise_phone(flat["phone"])
        if phone is None:
            raise invalid_arg(f'Invalid phone number "{flat["phone"]}"')
    if email is None and phone is None:
        raise invalid_arg("fields[email] or fields[phone] is required")
    user_values: dict[int, str] = {}
    for name, value in flat.items():
        if name in ("email", "phone"):
            continue
        fld = account.fields_by_name.get(name)
        if fld is None:
            raise invalid_arg(f'Unknown field name "{name}"')
        user_values[fld.id] = value
    raw_tags = p_str(call, "tags")
    tag_names = split_tags(raw_tags) if raw_tags is not None else None
    if tag_names is not None and len(tag_names) > cfg.max_tags:
        raise invalid_arg(f"At most {cfg.max_tags} tags per contact")
    double_optin = p_flag(call, "double_optin", allowed=(0, 1, 3, 4))
    overwrite = p_flag(call, "overwrite", allowed=(0, 1, 2))

    contact = account.find(email, phone)
    needs_letter = double_optin == 0 or (
        double_optin == 4 and (contact is None or contact.status not in ("new", "active"))
    )
    if needs_letter and not cfg.lists_have_confirmation_letters:
        ids = ",".join(map(str, list_ids))
        raise ApiError("unspecified", f'These list ids="{ids}" has no confirmation letters')
    now = call.now
    if contact is None:
        contact = new_contact(call, email, phone, "invited" if needs_letter else "new")
    else:
        if email and contact.email is None:
            contact.email = email
            account.contacts_by_email[email] = contact
        if needs_letter and contact.status in ("new", "inactive"):
            contact.status = "invited"

    if overwrite == 1:
        contact.fields = dict(user_values)
    elif overwrite == 2:
        contact.fields.update(user_values)
    else:
        for fid, value in user_values.items():
            contact.fields.setdefault(fid, value)
    if tag_names is not None or overwrite == 1:
        ids_ = [account.tag_id(t) for t in tag_names or []]
        if overwrite in (1, 2):
            contact.tags = ids_
        else:
            contact.tags.extend(t for t in ids_ if t not in contact.tags)
    if overwrite == 1:
        for list_id in [lid for lid in contact.lists if lid not in list_ids]:
            leave_list(account, contact, list_id)
    for list_id in list_ids:
        current = contact.lists.get(list_id)
        if current is not None:
            continue  # existing memberships keep their status: an unsubscribe is never undone here
        join_list(account, contact, list_id, "invited" if needs_letter else "active", now)
        if not needs_letter:
            call.list_event("subscribe", contact, list_id)
    return {"person_id": contact.person_id}
