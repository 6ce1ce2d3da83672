"""Kommo API v4 client for one connected account (contacts, notes, field definitions, users, account,
webhooks registry)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pydantic
import structlog

from app.connectors.base import (
    ContactPage,
    ContactsCreated,
    CrmClient,
    CrmContact,
    CrmFieldDef,
    CrmFieldWrite,
    CrmNewContact,
    CrmNote,
    CrmUser,
    FieldsWritten,
    NotesWritten,
)
from app.connectors.kommo import answers, creates
from app.connectors.kommo.batch import Item, in_sent_order, with_request_ids, write_in_batches
from app.connectors.kommo.contact_fields import write_contact_fields
from app.connectors.kommo.exceptions import (
    KommoError,
    KommoRateLimited,
    KommoTransientError,
    from_response,
)
from app.connectors.kommo.notes import add_tags, write_service_notes
from app.connectors.kommo.pages import ContactListing, listing_of, plain_listing
from app.connectors.kommo.schemas import (
    KommoAccount,
    KommoContactList,
    KommoCustomFieldList,
    KommoNoteList,
    KommoPage,
    KommoUserList,
    KommoWebhook,
    KommoWebhookList,
)
from app.connectors.kommo.writes import (
    ContactIn,
    ContactPatch,
    ContactUpdated,
    KommoContactsUpdated,
    KommoNotesAdded,
    NoteCreated,
    NoteIn,
    NoteUpdate,
)
from app.connectors.ratelimit import RateLimiter, send_counted

log = structlog.get_logger(__name__)

MAX_LIMIT = 250  # Kommo's page size and batch cap
MAX_PAGES = 100_000  # iter_contacts bound: 25 M contacts at 250 per page
MAX_LIST_PAGES = 1_000  # bound of the small lists (field definitions, users): 250,000 items
DEFAULT_WEBHOOK_SORT = 10
# Items per batch write call: Kommo takes 250 and recommends 50; 100 keeps a rejected call's resend small.
DEFAULT_WRITE_BATCH = 100

# Invariant list type that httpx accepts as-is (repeated keys like filter[id][] need pairs, not a dict).
QueryParams = list[tuple[str, str | int | float | bool | None]]


PageT = TypeVar("PageT", bound=KommoPage)


class KommoClient:
    """Calls made on behalf of one Kommo account; cheap to build, the ``httpx.AsyncClient`` is injected.

    Every call waits for ``limiter``, sends ``Authorization: Bearer``, and raises the ``KommoError`` tree. No
    retries here (the worker owns them), except that a 429 also pauses ``limiter`` for ``retry_after``.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        access_token: str,
        limiter: RateLimiter,
        write_batch_size: int = DEFAULT_WRITE_BATCH,
    ) -> None:
        if not 1 <= write_batch_size <= MAX_LIMIT:
            raise ValueError(f"write_batch_size must be 1..{MAX_LIMIT}")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._access_token = access_token
        self._limiter = limiter
        self._write_batch = write_batch_size

    # --- transport ------------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json: Any = None,
    ) -> httpx.Response:
        url = f"{self._base_url}{path}"
        headers = {
            "Authorization": f"Bearer {self._access_token}",
            "Accept": "application/hal+json, application/json;q=0.9, */*;q=0.1",
        }
        await self._limiter.acquire()
        try:
            request = self._http.build_request(method, url, params=params, json=json, headers=headers)
            response = await send_counted(self._http, request, self._limiter)
        except httpx.TimeoutException as exc:
            log.warning("kommo.timeout", method=method, path=path, error=type(exc).__name__)
            raise KommoTransientError(f"Kommo {method} {path} timed out", code="timeout") from exc
        except httpx.RequestError as exc:
            log.warning("kommo.transport_error", method=method, path=path, error=type(exc).__name__)
            raise KommoTransientError(
                f"Kommo {method} {path} failed: {type(exc).__name__}", code="transport"
            ) from exc
        if not response.is_success:
            error = from_response(response)
            if isinstance(error, KommoRateLimited):
                self._limiter.pause(error.retry_after)
            log.info(
                "kommo.request_failed",
                method=method,
                path=path,
                status=response.status_code,
                error=type(error).__name__,
                request_id=error.request_id,
            )
            raise error
        return response

    # --- contacts -------------------------------------------------------------------------------------------

    async def _contact_list(self, params: QueryParams, what: str) -> ContactListing | None:
        response = await self._request("GET", "/api/v4/contacts", params=params)
        if response.status_code == 204 or not response.content:
            return None  # Kommo answers 204 No Content for an empty result
        # A page in Kommo's plain shape is read directly (``pages.py``); anything else is validated by the
        # models, which coerce or refuse it.
        listing = plain_listing(response.content)
        if listing is not None:
            return listing
        try:
            model = KommoContactList.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            if not any(error["type"] == "json_invalid" for error in exc.errors()):
                raise answers.shape_error(exc, response, what) from exc
            # Text pydantic's parser refuses but Python's reads (lone surrogates, which the cleaning at the
            # boundary removes): the slow path, which also tells a body that is not JSON at all.
            model = answers.read(KommoContactList, response, what)
        return listing_of(model.model_dump(by_alias=True))

    async def list_contacts(
        self,
        *,
        page: int = 1,
        limit: int = MAX_LIMIT,
        updated_since: int | None = None,
        query: str | None = None,
    ) -> ContactPage:
        """One page of contacts; with ``updated_since``, only those updated at or after it, oldest first;
        with ``query``, only those with a filled field containing it (§3.1)."""
        if page < 1:
            raise ValueError("page is 1-based")
        limit = max(1, min(limit, MAX_LIMIT))
        params: QueryParams = [("page", page), ("limit", limit)] + ([("query", query)] if query else [])
        if updated_since is not None:
            params += [("filter[updated_at][from]", updated_since), ("order[updated_at]", "asc")]
        listing = await self._contact_list(params, "list contacts")
        if listing is None:
            return ContactPage(contacts=[], next_page=None)
        contacts = listing.contacts
        next_page: int | None = None
        if listing.next_href is not None and contacts:
            next_page = answers.page_of(listing.next_href) or page + 1
            if next_page <= page:
                raise KommoError(f"Kommo list contacts: next link points back to page {next_page}")
        return ContactPage(contacts=contacts, next_page=next_page)

    async def iter_contacts(
        self, *, limit: int = MAX_LIMIT, updated_since: int | None = None, start_page: int = 1
    ) -> AsyncIterator[CrmContact]:
        """Every contact over all pages (bounded by ``MAX_PAGES``)."""
        page: int | None = start_page
        for _ in range(MAX_PAGES):
            if page is None:
                return
            result = await self.list_contacts(page=page, limit=limit, updated_since=updated_since)
            for contact in result.contacts:
                yield contact
            page = result.next_page
        raise KommoError(f"Kommo list contacts: more than {MAX_PAGES} pages")

    async def get_contacts(self, ids: Sequence[int]) -> list[CrmContact]:
        """The contacts with these ids that exist (missing ones are simply absent), 250 per request."""
        unique = list(dict.fromkeys(ids))
        found: list[CrmContact] = []
        for start in range(0, len(unique), MAX_LIMIT):
            chunk = unique[start : start + MAX_LIMIT]
            params: QueryParams = [("filter[id][]", contact_id) for contact_id in chunk]
            params.append(("limit", MAX_LIMIT))
            listing = await self._contact_list(params, "get contacts")
            if listing is not None:
                found += listing.contacts
        return found

    async def add_contact_tags(self, contact_id: int, tags: Sequence[str]) -> None:
        """Add tags (by name) to a contact, keeping its other tags."""
        names = [tag for tag in dict.fromkeys(tags) if tag]
        if not names:
            return
        body = {"tags_to_add": [{"name": name} for name in names]}
        await self._request("PATCH", f"/api/v4/contacts/{int(contact_id)}", json=body)
        log.info("kommo.tags_added", contact_id=contact_id, count=len(names))

    async def update_contacts(self, patches: Sequence[ContactPatch]) -> list[ContactUpdated]:
        """``PATCH /api/v4/contacts`` in calls of ``write_batch_size``; results in input order. A 400 naming
        items raises ``KommoBatchRejected``; every error carries ``progress`` (``batch.py``)."""
        if len({p.id for p in patches}) != len(patches):
            raise ValueError("one patch per contact: merge the changes of a contact first")
        items = with_request_ids((p.request_id for p in patches), (p.body() for p in patches))
        updated = await self._write_contacts("PATCH", items, "update contacts")
        log.info("kommo.contacts_updated", count=len(updated))
        return updated

    async def add_contacts(self, contacts: Sequence[ContactIn]) -> list[ContactUpdated]:
        """``POST /api/v4/contacts``, as ``update_contacts``. No duplicate control (§10): look up first."""
        items = with_request_ids((c.request_id for c in contacts), (c.body() for c in contacts))
        created = await self._write_contacts("POST", items, "add contacts")
        log.info("kommo.contacts_added", count=len(created))
        return created

    async def _write_contacts(self, method: str, items: list[Item], what: str) -> list[ContactUpdated]:
        async def send(chunk: list[Item]) -> list[ContactUpdated]:
            response = await self._request(method, "/api/v4/contacts", json=[body for _, body in chunk])
            parsed: KommoContactsUpdated = answers.read(KommoContactsUpdated, response, what)
            found = parsed.embedded.contacts
            sent = [rid for rid, _ in chunk]
            ordered = in_sent_order(found, [c.request_id for c in found], sent)
            if ordered is None:
                raise KommoError(
                    f"Kommo {what}: the answer does not match the items sent", code="bad_response"
                )
            return [
                ContactUpdated(id=c.id, name=c.name, updated_at=c.updated_at, request_id=rid)
                for c, rid in zip(ordered, sent, strict=True)
            ]

        return await write_in_batches(items, self._write_batch, send)

    async def find_contact_ids_by_email(self, email: str) -> list[int]:
        return await creates.contact_ids_by_email(self, email)

    async def create_contacts(self, contacts: Sequence[CrmNewContact]) -> ContactsCreated:
        return await creates.create_contacts(self, contacts)

    async def write_contact_fields(self, writes: Sequence[CrmFieldWrite]) -> FieldsWritten:
        """Stored fields' new values, see ``contact_fields.write_contact_fields``."""
        return await write_contact_fields(self, writes)

    # --- notes --------------------------------------------------------------------------------------------------

    async def add_notes(self, notes: Sequence[NoteIn]) -> list[NoteCreated]:
        """``POST /api/v4/contacts/notes`` in calls of ``write_batch_size``; results in input order. A 400
        naming items raises ``KommoBatchRejected`` (drop those, resend ``progress.unsaved_request_ids``)."""
        created = await self._write_notes("POST", notes, "add notes")
        log.info("kommo.notes_added", count=len(created))
        return created

    async def update_notes(self, notes: Sequence[NoteUpdate]) -> list[NoteCreated]:
        """``PATCH /api/v4/contacts/notes`` (new params for notes added before), as ``add_notes``."""
        updated = await self._write_notes("PATCH", notes, "update notes")
        log.info("kommo.notes_updated", count=len(updated))
        return updated

    async def write_notes(self, notes: Sequence[CrmNote], *, service: str) -> NotesWritten:
        """Service notes (shown as coming from ``service``), see ``notes.write_service_notes``."""
        return await write_service_notes(self, notes, service=service)

    async def find_service_notes(self, *, service: str, since: int) -> dict[tuple[int, str], int]:
        """The service notes from ``service`` updated at or after ``since`` (Unix seconds), as (contact id, text)
        → note id: how a note whose add lost its answer is found again (``GET /api/v4/contacts/notes``)."""
        filters: QueryParams = [("filter[note_type]", "service_message"), ("filter[updated_at][from]", since)]
        pages = await self._every_page("/api/v4/contacts/notes", KommoNoteList, "list notes", filters)
        return {
            (note.entity_id, str(note.params.get("text", ""))): note.id
            for page in pages
            for note in page.items()
            if note.note_type == "service_message" and note.params.get("service") == service
        }

    async def add_tags(self, tags: Mapping[int, Sequence[str]]) -> NotesWritten:
        """Tags added to contacts through batch PATCHes, see ``notes.add_tags``."""
        return await add_tags(self, tags)

    async def _write_notes(
        self, method: str, notes: Sequence[NoteIn] | Sequence[NoteUpdate], what: str
    ) -> list[NoteCreated]:
        items = with_request_ids((n.request_id for n in notes), (n.body() for n in notes))

        async def send(chunk: list[Item]) -> list[NoteCreated]:
            response = await self._request(method, "/api/v4/contacts/notes", json=[body for _, body in chunk])
            parsed: KommoNotesAdded = answers.read(KommoNotesAdded, response, what)
            found = parsed.embedded.notes
            sent = [rid for rid, _ in chunk]
            ordered = in_sent_order(found, [n.request_id for n in found], sent)
            if ordered is None:
                raise KommoError(
                    f"Kommo {what}: the answer does not match the items sent", code="bad_response"
                )
            return [
                NoteCreated(id=n.id, entity_id=n.entity_id, request_id=rid)
                for n, rid in zip(ordered, sent, strict=True)
            ]

        return await write_in_batches(items, self._write_batch, send)

    # --- field definitions and users ---------------------------------------------------------------------------

    async def _every_page(
        self, path: str, model: type[PageT], what: str, filters: QueryParams | None = None
    ) -> list[PageT]:
        """All pages of a HAL list, following ``_links.next``; a 204 (nothing at all) is no pages."""
        pages: list[PageT] = []
        page = 1
        for _ in range(MAX_LIST_PAGES):
            params: QueryParams = [*(filters or []), ("page", page), ("limit", MAX_LIMIT)]
            response = await self._request("GET", path, params=params)
            if response.status_code == 204 or not response.content:
                return pages
            parsed: PageT = answers.read(model, response, what)
            pages.append(parsed)
            if parsed.links.next is None:
                return pages
            next_page = answers.page_of(parsed.links.next.href) or page + 1
            if next_page <= page:
                raise KommoError(f"Kommo {what}: next link points back to page {next_page}")
            page = next_page
        raise KommoError(f"Kommo {what}: more than {MAX_LIST_PAGES} pages")

    async def get_custom_fields(self) -> list[CrmFieldDef]:
        """Every contact custom-field definition of the account (``GET /api/v4/contacts/custom_fields``)."""
        pages = await self._every_page(
            "/api/v4/contacts/custom_fields", KommoCustomFieldList, "custom fields"
        )
        return [item.to_field_def() for page in pages for item in page.items()]

    async def get_users(self) -> list[CrmUser]:
        """Every user of the account (``GET /api/v4/users``). Kommo lets only admins list users: for another
        user's token this raises ``KommoForbidden`` (403)."""
        pages = await self._every_page("/api/v4/users", KommoUserList, "users")
        return [item.to_user() for page in pages for item in page.items()]

    # --- account and webhooks -------------------------------------------------------------------------------

    async def get_account(self) -> KommoAccount:
        """``GET /api/v4/account``."""
        response = await self._request("GET", "/api/v4/account")
        account: KommoAccount = answers.read(KommoAccount, response, "account")
        return account

    async def register_webhook(self, destination: str, events: Sequence[str]) -> None:
        """Subscribe ``destination`` to ``events`` (e.g. ``add_contact``)."""
        body = {"destination": destination, "settings": list(events), "sort": DEFAULT_WEBHOOK_SORT}
        response = await self._request("POST", "/api/v4/webhooks", json=body)
        webhook_id: int | None = None
        if response.content:
            data = answers.json_of(response, "register webhook")
            if isinstance(data, Mapping) and isinstance(data.get("id"), int):
                webhook_id = data["id"]
        log.info("kommo.webhook_registered", webhook_id=webhook_id, events=list(events))

    async def list_webhooks(self, destination: str | None = None) -> list[KommoWebhook]:
        """Registered webhooks, optionally only those for ``destination``."""
        params: QueryParams = []
        if destination is not None:
            params.append(("filter[destination]", destination))
        response = await self._request("GET", "/api/v4/webhooks", params=params)
        if response.status_code == 204 or not response.content:
            return []
        listing: KommoWebhookList = answers.read(KommoWebhookList, response, "list webhooks")
        return listing.embedded.webhooks

    async def delete_webhook(self, destination: str) -> None:
        """Unsubscribe ``destination``."""
        await self._request("DELETE", "/api/v4/webhooks", json={"destination": destination})
        log.info("kommo.webhook_deleted")


if TYPE_CHECKING:
    _protocol_check: type[CrmClient] = KommoClient
