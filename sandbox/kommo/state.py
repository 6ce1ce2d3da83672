"""The sandbox's whole state (``app.state.kommo``): accounts, OAuth, contacts, notes, webhooks, limits, stats; the
installation flows a Kommo user goes through are ``installs`` (``installs.py``).

In-process tests and the demo may call these methods directly; HTTP routes are thin wrappers around them.
"""

from __future__ import annotations

import itertools
from typing import Any

from .config import KommoSandboxConfig
from .errors import SandboxError
from .installs import InstallFlows
from .limits import Clock, Faults, RateLimiter, Stats
from .notes import NoteStore
from .oauth import OAuthStore
from .payload import ContactChanges, parse_contact_item
from .store import ENUM_TYPES, FIELD_TYPES, SMART_ADDRESS_PARTS, Account, Contact, FieldDef, FieldEnum, User
from .webhooks import Dispatcher, Webhook

ValidationErrors = list[dict[str, Any]]
ACCOUNT_DOMAINS = ("kommo.com", "amocrm.ru", "amocrm.com")
# amocrm.com is Kommo's former global domain: its accounts answer under both names (Kommo's rebranding notes).
_SAME_PLATFORM = {"amocrm.com": "kommo.com"}


def _platform(domain: str) -> str:
    return _SAME_PLATFORM.get(domain, domain)


class KommoSandboxState:
    def __init__(self, config: KommoSandboxConfig | None = None) -> None:
        self.config = config or KommoSandboxConfig()
        self.clock = Clock()
        self.installs = InstallFlows(self)
        self._init_data()

    def _init_data(self) -> None:
        self.oauth = OAuthStore()
        self.accounts: dict[str, Account] = {}  # by subdomain
        self.accounts_by_id: dict[int, Account] = {}
        self.webhooks: dict[int, list[Webhook]] = {}  # by account id
        self.notes = NoteStore()  # contact notes (``notes.py``)
        self.stats = Stats()
        self.limiter = RateLimiter()
        self.faults = Faults()
        self.dispatcher = Dispatcher(self)
        self._contact_ids = itertools.count(10_000_001)
        self._tag_ids = itertools.count(500_001)
        self._webhook_ids = itertools.count(1)
        self._account_ids = itertools.count(32_720_107)
        self._enum_ids = itertools.count(900_001)
        self._user_ids = itertools.count(11_500_001)  # above every account's first user (11_087_123 + n)

    async def reset(self) -> None:
        """Forget all data (accounts, integrations, tokens, contacts, webhooks, stats, faults); keep config and clock."""
        await self.dispatcher.close()
        self._init_data()

    async def aclose(self) -> None:
        await self.dispatcher.close()

    # --- accounts and integrations -----------------------------------------------------------------------------
    def create_account(
        self,
        subdomain: str,
        name: str | None = None,
        account_id: int | None = None,
        domain: str | None = None,
    ) -> Account:
        if not subdomain or not subdomain.replace("-", "").isalnum() or not subdomain.isascii():
            raise SandboxError("subdomain must be ASCII letters, digits and '-'")
        if domain is not None and domain not in ACCOUNT_DOMAINS:
            raise SandboxError(f"domain must be one of {', '.join(ACCOUNT_DOMAINS)}")
        if subdomain in self.accounts:
            raise SandboxError(f"account {subdomain!r} exists", 409)
        if account_id is None:
            account_id = next(self._account_ids)
            while account_id in self.accounts_by_id:
                account_id = next(self._account_ids)
        elif account_id in self.accounts_by_id:
            raise SandboxError(f"account id {account_id} exists", 409)
        account = Account(
            account_id,
            subdomain,
            name or subdomain,
            self.clock.now(),
            field_offset=100_000 * len(self.accounts),
            current_user_id=11_087_123 + len(self.accounts),
            domain=domain,
        )
        self.accounts[subdomain] = account
        self.accounts_by_id[account_id] = account
        return account

    def account_for_host(self, segment: str) -> tuple[Account, str] | None:
        """The account served under a path segment, and its host as called: a host (``acme.amocrm.ru``), or
        a bare subdomain as the short form of ``{subdomain}.{base_domain}``. An account answers only on its
        own platform's hosts (an amocrm.ru account is not reachable as ``acme`` or ``acme.kommo.com``)."""
        subdomain, dot, domain = segment.lower().partition(".")
        domain = domain if dot else self.config.base_domain
        account = self.accounts.get(subdomain)
        if account is None or _platform(domain) != _platform(account.domain or self.config.base_domain):
            return None
        return account, f"{subdomain}.{domain}"

    def host_of(self, account: Account) -> str:
        return account.host(self.config.base_domain)

    def account(self, subdomain: str) -> Account:
        acct = self.accounts.get(subdomain)
        if acct is None:
            raise SandboxError(f"no account {subdomain!r}", 404)
        return acct

    def create_integration(
        self,
        redirect_uri: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        disable_hook_url: str | None = None,
        name: str = "Integration",
    ) -> Any:
        if client_id is not None and client_id in self.oauth.integrations:
            raise SandboxError(f"integration {client_id} exists", 409)
        return self.oauth.new_integration(
            redirect_uri,
            client_id=client_id,
            client_secret=client_secret,
            disable_hook_url=disable_hook_url,
            name=name,
        )

    def add_user(
        self, account: Account, name: str, *, email: str | None = None, is_admin: bool = False
    ) -> User:
        uid = next(self._user_ids)
        user = User(uid, name, email or f"user{uid}@{account.subdomain}.example.com", is_admin=is_admin)
        account.users.append(user)
        return user

    def add_field(
        self, account: Account, name: str, ftype: str, code: str | None = None, enums: list[str] | None = None
    ) -> FieldDef:
        """A user field (``code`` None unless given). ``enums``: the options of select, radiobutton,
        multiselect and multitext; a smart_address field gets its six parts."""
        if ftype not in FIELD_TYPES:
            raise SandboxError(f"type must be one of {sorted(FIELD_TYPES)}")
        if code is not None and account.field_by_code(code) is not None:
            raise SandboxError(f"code {code!r} exists", 409)
        options: list[FieldEnum] | None = None
        if ftype in ENUM_TYPES:
            if not enums or not all(isinstance(v, str) and v for v in enums):
                raise SandboxError("enums must be a non-empty list of strings for this type")
            options = [
                FieldEnum(self.next_enum_id(), v, 500 + i, v if ftype == "multitext" else None)
                for i, v in enumerate(enums)
            ]
        elif ftype == "smart_address":
            options = [
                FieldEnum(self.next_enum_id(), p, 2 * (i + 1), p) for i, p in enumerate(SMART_ADDRESS_PARTS)
            ]
        fid = max(account.fields) + 2
        field = FieldDef(fid, name, ftype, code, 500 + len(account.fields), options)
        account.fields[fid] = field
        return field

    # --- contacts ---------------------------------------------------------------------------------------------
    def next_contact_id(self) -> int:
        return next(self._contact_ids)

    def next_enum_id(self) -> int:
        return next(self._enum_ids)

    def _validate(
        self, account: Account, items: list[Any], update: bool
    ) -> tuple[list[ContactChanges], ValidationErrors]:
        parsed: list[ContactChanges] = []
        failures: ValidationErrors = []
        for i, item in enumerate(items):
            errors: list[dict[str, str]] = []
            ch = parse_contact_item(account, item, update=update, errors=errors)
            if errors:
                rid = ch.request_id if ch.request_id is not None else str(i)
                failures.append({"request_id": rid, "errors": errors})
            parsed.append(ch)
        if update and not failures:
            seen: set[int] = set()
            for i, ch in enumerate(parsed):
                if ch.id in seen:
                    failures.append(
                        {
                            "request_id": ch.request_id or str(i),
                            "errors": [
                                {"code": "Duplicate", "path": "id", "detail": "This value is already used."}
                            ],
                        }
                    )
                seen.add(ch.id)  # type: ignore[arg-type]
        return parsed, failures

    def create_contacts(
        self, account: Account, items: list[Any], *, fire_webhooks: bool = True
    ) -> tuple[list[Contact], list[str], ValidationErrors]:
        """Validate all, then create all (atomic). Returns (contacts, request_ids, validation errors)."""
        parsed, failures = self._validate(account, items, update=False)
        if failures:
            return [], [], failures
        now = self.clock.now()
        created: list[Contact] = []
        rids: list[str] = []
        for i, ch in enumerate(parsed):
            s = ch.scalars
            first, last = s.get("first_name", ""), s.get("last_name", "")
            name = s.get("name", f"{first} {last}".strip())
            created_at = s.get("created_at", now)
            contact = Contact(
                self.next_contact_id(),
                name=name,
                first_name=first,
                last_name=last,
                responsible_user_id=s.get("responsible_user_id", account.current_user_id),
                created_by=s.get("created_by", account.current_user_id),
                updated_by=s.get("updated_by", account.current_user_id),
                created_at=created_at,
                updated_at=max(s.get("updated_at", created_at), created_at),
                fields=[],
                tags=[],
            )
            self._apply_fields_and_tags(account, contact, ch)
            account.add(contact)
            created.append(contact)
            rids.append(ch.request_id if ch.request_id is not None else str(i))
            if fire_webhooks:
                self.dispatcher.emit(account, "add", contact)
        return created, rids, []

    def update_contacts(
        self, account: Account, items: list[Any], *, fire_webhooks: bool = True
    ) -> tuple[list[Contact], list[str | None], ValidationErrors]:
        parsed, failures = self._validate(account, items, update=True)
        if failures:
            return [], [], failures
        now = self.clock.now()
        updated: list[Contact] = []
        for ch in parsed:
            contact = account.contacts[ch.id]  # type: ignore[index]
            before = _fingerprint(contact)
            s = ch.scalars
            for key in ("name", "first_name", "last_name", "responsible_user_id", "created_by", "created_at"):
                if key in s:
                    setattr(contact, key, s[key])
            self._apply_fields_and_tags(account, contact, ch)
            changed = _fingerprint(contact) != before
            if changed or self.config.noop_patch_bumps:
                contact.updated_by = s.get("updated_by", account.current_user_id)
                wanted = s.get("updated_at")
                new_ts = (
                    wanted
                    if wanted is not None and wanted > contact.updated_at
                    else max(now, contact.updated_at + (0 if self.config.same_second_stamps else 1))
                )
                account.set_updated_at(contact, new_ts)
                if fire_webhooks:
                    self.dispatcher.emit(account, "update", contact)
            updated.append(contact)
        return updated, [ch.request_id for ch in parsed], []

    def _apply_fields_and_tags(self, account: Account, contact: Contact, ch: ContactChanges) -> None:
        for fid, values in ch.fields:
            pos = next((i for i, (f, _v) in enumerate(contact.fields) if f == fid), None)
            if values is None:
                if pos is not None:
                    del contact.fields[pos]
            elif pos is None:
                contact.fields.append((fid, values))
            else:
                contact.fields[pos] = (fid, values)
        if ch.tags_set is not None:
            contact.tags = []
            for tid, name in ch.tags_set:
                self._add_tag(account, contact, tid, name)
        for tid, name in ch.tags_add:
            self._add_tag(account, contact, tid, name)
        for tid, name in ch.tags_del:
            if tid is None and name is not None:
                tag = account.tags_by_name.get(name.lower())
                tid = tag.id if tag else None
            if tid in contact.tags:
                contact.tags.remove(tid)

    def _add_tag(self, account: Account, contact: Contact, tid: int | None, name: str | None) -> None:
        if tid is None:
            assert name is not None
            tid = account.tag_named(name, self._tag_ids).id
        if tid not in contact.tags:
            contact.tags.append(tid)

    def delete_contact(self, account: Account, cid: int, *, fire_webhooks: bool = True) -> Contact:
        contact = account.live(cid)
        if contact is None:
            raise SandboxError(f"no live contact {cid}", 404)
        account.mark_deleted(contact)
        if fire_webhooks:
            self.dispatcher.emit(account, "delete", contact)
        return contact

    def restore_contact(self, account: Account, cid: int, *, fire_webhooks: bool = True) -> Contact:
        contact = account.contacts.get(cid)
        if contact is None or not contact.deleted:
            raise SandboxError(f"no deleted contact {cid}", 404)
        account.mark_restored(contact)
        account.set_updated_at(contact, max(self.clock.now(), contact.updated_at + 1))
        if fire_webhooks:
            self.dispatcher.emit(account, "restore", contact)
        return contact

    # --- webhooks ---------------------------------------------------------------------------------------------
    def subscribe(self, account: Account, destination: str, settings: list[str], sort: int) -> Webhook:
        now = self.clock.now()
        hooks = self.webhooks.setdefault(account.id, [])
        for hook in hooks:
            # Re-saving a destination updates its settings and re-enables it (Kommo's webhook docs).
            if hook.destination == destination:
                hook.settings, hook.sort, hook.updated_at, hook.disabled = list(settings), sort, now, False
                hook.failures.clear()
                return hook
        hook = Webhook(
            next(self._webhook_ids),
            account.id,
            destination,
            list(settings),
            sort,
            now,
            now,
            account.current_user_id,
        )
        hooks.append(hook)
        return hook

    def unsubscribe(self, account: Account, destination: str) -> bool:
        hooks = self.webhooks.get(account.id, [])
        keep = [h for h in hooks if h.destination != destination]
        self.webhooks[account.id] = keep
        return len(keep) != len(hooks)


def _fingerprint(c: Contact) -> tuple[Any, ...]:
    return (
        c.name,
        c.first_name,
        c.last_name,
        c.responsible_user_id,
        c.created_by,
        c.created_at,
        tuple((f, tuple(v)) for f, v in c.fields),
        tuple(c.tags),
    )
