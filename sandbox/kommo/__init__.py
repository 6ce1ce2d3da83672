"""Kommo (amoCRM) API v4 sandbox: an in-memory simulator of the parts of Kommo contactsync uses.

Written from Kommo's public developer docs and published request captures, independently of ``app.connectors``
(no shared code). Product code never imports this package.

Usage::

    app = create_kommo_sandbox(KommoSandboxConfig(webhook_retry_delays=(0.05,)))
    state = app.state.kommo          # KommoSandboxState: call its methods directly in-process
    async with serve_in_background(app) as url:   # app.serving
        KOMMO_BASE_URL = url + "/{host}"

Hosts
-----
Real Kommo serves each account on its own host: ``{sub}.kommo.com`` (Kommo; also under its former name
``{sub}.amocrm.com``) or ``{sub}.amocrm.ru`` (amoCRM, a separate platform since 2022). The sandbox serves each account
under a path prefix naming its host instead: ``https://acme.kommo.com/api/v4/contacts`` is
``{sandbox}/acme.kommo.com/api/v4/contacts`` and the token endpoint ``{sandbox}/acme.kommo.com/oauth2/access_token``.
So ``KOMMO_BASE_URL`` = ``http://127.0.0.1:PORT/{host}``. An account answers only under its own platform's hosts:
one created with ``domain: "amocrm.ru"`` is reachable as ``/acme.amocrm.ru/...`` and nowhere else (404 otherwise),
a Kommo one as ``/acme.kommo.com/...`` and ``/acme.amocrm.com/...``. The short form ``/acme/...`` means
``acme.{base_domain}`` (kept for older setups). Subdomains are unique across platforms in the sandbox.
``www.kommo.com/oauth`` (consent) is ``{sandbox}/oauth``. HAL links (``_links.self/next/prev``) point at the
sandbox so a client can follow them; the webhook ``account[_links][self]`` and the OAuth ``referer`` keep the
real form (``https://{host}``, ``{host}``).

Kommo API (every success ``application/hal+json``, every error ``application/problem+json`` with Kommo's error
bodies, ``responses.py``; every response carries ``X-Request-Id``)
----------------------------------------------------------------------------------------------------------
- ``POST /{sub}/oauth2/access_token``: JSON, form or multipart body; ``authorization_code`` (needs
  ``redirect_uri``) and ``refresh_token`` grants; answers ``{token_type, expires_in, server_time, access_token,
  refresh_token}`` (``application/json``). Errors are
  OAuthProblemJson: unknown/bad code → 400 (hints "Cannot decrypt the authorization code", "...has been
  revoked", "...has expired"); bad client id/secret → 401 "Некорректный клиент"; spent/revoked refresh token →
  401 ``"hint":"Token has been revoked"``; unknown → 401 "Cannot decrypt the refresh token"; expired → 401.
- ``GET /{sub}/api/v4/account`` (``with=amojo_id,uuid,version``).
- ``GET /{sub}/api/v4/contacts``: ``page`` (1-based), ``limit`` (default 50, max 250; above → 422 "Limit of 250 per
  page", or clamped with ``over_limit="clamp"``), ``filter[id][]`` (also ``filter[id]=1,2``), ``filter[updated_at]
  [from|to]`` (inclusive), ``query`` (case-insensitive substring of names and field values),
  ``order[updated_at]``/``order[id]`` = asc|desc (default id asc), ``with`` (leads/customers/catalog_elements
  → empty lists). ``_page``, ``_links.self/next/prev`` (``next`` only when another page exists), ``_embedded.contacts``.
  **204, empty body**, when the page is empty or past the end.
- ``GET /{sub}/api/v4/contacts/{id}``: the contact, or 204 if missing or deleted.
- ``POST /{sub}/api/v4/contacts`` (array, ≤ 250 else 422; atomic: any invalid item → 400, nothing created;
  ``request_id`` echoed or the index as a string).
- ``PATCH /{sub}/api/v4/contacts`` (array with ids) and ``PATCH /{sub}/api/v4/contacts/{id}`` (object); array-form
  answer ``{id, name, updated_at, [request_id], _links}``. ``custom_fields_values`` by ``field_id`` or ``field_code``,
  values with ``enum_id`` or ``enum_code`` (multitext default: the first enum, WORK); a field's values are replaced,
  other fields kept; ``values: null``/``[]`` clears the field. Value shapes per type (spec §8.2): text, textarea, url,
  streetaddress a string; numeric a string or number, read back as a string; checkbox a bool (read ``{"value":
  true}``); select/radiobutton/multiselect by ``enum_id``, ``enum_code`` or option text (read ``{value, enum_id,
  enum_code}``); date, date_time, birthday unix seconds or an RFC 3339 string, read as unix seconds; smart_address one
  item per part, each naming its part (``enum_code`` address_line_1, address_line_2, city, state, zip, country, or its
  ``enum_id``), read back in that part order. ``tags_to_add``/``tags_to_delete`` ``[{id}|{name}]``
  (a new name creates the tag), ``_embedded.tags`` replaces the set. Bad input → 400 ``validation-errors``
  (codes NotSupportedChoice, InvalidType, NotBlank, NotFound, TooManyValues; paths like
  ``custom_fields_values.0.field_id``); empty body → 400 "Request data can't be blank". Unknown keys are ignored.
  ``updated_at`` of a changed contact becomes max(now, previous + 1) (or a larger explicit ``updated_at``),
  so each version of a contact has a distinct, increasing ``updated_at``.
- Contact notes (spec §11): ``POST /{sub}/api/v4/contacts/notes`` (array, each item with ``entity_id``) and ``POST
  /{sub}/api/v4/contacts/{id}/notes`` (array or one object, ``entity_id`` from the path) answer ``{"_links":
  {"self"}, "_embedded": {"notes": [{id, entity_id, request_id, _links.self → .../contacts/{id}/notes/{note_id}}]}}``
  (``request_id`` echoed or the index as a string); ``PATCH /{sub}/api/v4/contacts/notes`` (array with ``id``; an
  ``entity_id`` given must be the note's) and ``PATCH .../contacts/{id}/notes/{note_id}`` (object) answer the same
  shape; ``note_type``, ``params`` (replaced whole, checked against the type), ``created_by``,
  ``responsible_user_id``, ``created_at``, ``updated_at`` can change. Writable ``note_type``: common {text}, call_in/
  call_out {uniq, duration (int), source, phone, link?}, service_message/extended_service_message {service, text},
  geolocation {text, address, longitude, latitude}, sms_in/sms_out {text, phone}, attachment {file_uuid,
  file_name, version_uuid?}: ``?`` optional, the rest required, strings except ``duration``; unknown params dropped.
  Writes: ≤ 250 items else 422; atomic: any bad item → 400 ``validation-errors`` by ``request_id`` (codes NotBlank,
  InvalidType, NotSupportedChoice, NotFound at ``entity_id`` for an unknown or deleted contact and at ``id`` for an
  unknown note, Duplicate, TooLong past ``note_text_max``). ``GET /{sub}/api/v4/contacts/notes`` and ``GET
  .../contacts/{id}/notes``: ``filter[note_type]`` and ``filter[id]`` (one, ``[]`` array or comma list),
  ``filter[updated_at][from|to]``, ``order[updated_at|id]``, ``page``/``limit`` as the contact list, ``_page``,
  ``_links.self/next/prev``, ``_embedded.notes[]`` = ``{id, entity_id, created_by, updated_by, created_at,
  updated_at, responsible_user_id, group_id, note_type, params, account_id, is_pinned, _links}``; 204 when empty or
  past the end. ``GET .../contacts/{id}/notes/{note_id}``: the note, 204 if missing or on another contact. Notes of a
  deleted contact are hidden until it is restored.
- ``GET /{sub}/api/v4/contacts/custom_fields``: PHONE (enums WORK, WORKDD, MOB, FAX, HOME, OTHER) and EMAIL
  (WORK, PRIV, OTHER), multitext, predefined, then the user fields. First account: PHONE 771906, EMAIL 771908, enum ids
  as in the webhook example of Kommo's docs (PHONE/WORK 552476, EMAIL/WORK 552488, step 2); each further account shifts
  all ids by 100000. Paged like the users below (``_total_items``, ``_page``, ``_page_count``, ``_links``).
- ``GET /{sub}/api/v4/users``: the account's users ``{id, name, email, lang, rights{…, is_admin, is_active}, _links}``;
  ``page``/``limit`` (default 50, max 250, above as the contact list), ``_total_items``, ``_page``, ``_page_count``,
  ``_links.self/next/prev``; 204 past the end. ``GET /{sub}/api/v4/users/{id}``: one user, 204 if unknown. Admin only:
  tokens act as the account's first user ("Admin", ``current_user_id``); made a non-admin (control API) → 403
  "Insufficient rights".
- ``POST|GET|DELETE /{sub}/api/v4/webhooks``: POST answers 200 with the webhook object (re-posting a
  destination updates its settings and re-enables it); bad URL → the captured 400 "Invalid URL"; unknown setting →
  400; GET answers 204 when there are none; DELETE answers 204.
Any other path → 404 ``"Cannot GET https://{sub}.kommo.com/..."``; wrong method → 405; missing, unknown,
expired or revoked token, or a token of another account → 401 "Invalid user name or password".

Limits and faults: per integration (client_id of the token) a sliding 1-s window of ``rate_limit_rps``
(7) accepted calls; beyond → 429 with ``retry_after`` (``retry_after``=300; optional ``Retry-After`` header).
After ``block_after_429s`` consecutive 429s (default None = never) every call answers 403 for ``block_seconds``.
Injected faults (``/_sandbox/faults``) apply to API calls and the token endpoint, after auth and the rate limit:
latency (+ seeded jitter), then a burst of N 429s, then a seeded 5xx rate (body ``ErrInternalServer``).

Webhooks: each contact create/update (API or control), delete and restore (control only: v4 has
no public delete/restore) is sent to every enabled webhook whose settings include ``{action}_contact``, as
``application/x-www-form-urlencoded`` PHP bracket keys, all values strings, account block first
(``account_block_first``), ``[enum]`` = enum id, ``[code]`` after ``[values]``, radiobutton ``[values][value]``/``[values][enum]`` (an object),
dates bare (``[values][0]=1714521600``), checkbox ``"1"``/``"0"``, smart_address parts as multitext's
``[values][j][value]``/``[values][j][enum]``, delete = id + type only,
tags as ``[tags][i][id]``/``[tags][i][name]``, and the headers of current deliveries: ``User-Agent:
amoCRM-Webhooks/3.0``, ``X-Amocrm-Requestid`` (a new UUID v4 per attempt, in the delivery log), ``Accept-Encoding:
gzip``. Delivery runs in background tasks; 2 s timeout; 100–299 = success;
retries after ``webhook_retry_delays`` (default 5, 30, 120, 600 s); a webhook is disabled after more than
``webhook_disable_failures`` (100) failed attempts within 2 h (sandbox clock), the last one failed.
``batch_window_ms`` > 0 coalesces the changes of a window into one body (several contacts and actions).
``duplicate_rate`` sends some bodies twice; ``reorder`` shuffles the changes collected in a window (in
``reorder_window_ms`` when not batching). Both use ``webhook_seed``. Seeding fires no webhooks by default.
``note_contact`` (and the other non-contact settings) can be subscribed to but is never sent: adding a note fires
nothing.

Where Kommo's docs are silent, and the choice made (config option where cheap)
------------------------------------------------------------------------------
default limit 50 (``default_limit``); limit > 250 → 422 (``over_limit``); refresh tokens single-use, reuse → 401
revoked (``refresh_grace=True`` = documented grace: R1 valid until R2 is redeemed); old access tokens stay valid
after a refresh; codes single-use; ``platform=2`` (``platform``); webhook POST answers 200; retry schedule
(``webhook_retry_delays``); no ``Retry-After`` header (``retry_after_header``); 403 block body has the
problem+json shape of the other errors; ``is_deleted`` omitted from contacts; page past the end → 204; a PATCH
that changes nothing still bumps ``updated_at`` and fires ``update_contact`` (``noop_patch_bumps``); an edit within
the second of a contact's last one is stamped a second later (``same_second_stamps=True``: it keeps the stamp, as
a whole-second clock would); contacts carry PHONE and EMAIL only (no
POSITION); custom-field values must have the field's JSON type (strings for multitext, no numbers); ``request_id``
must be a string; page/limit < 1 or non-numeric → 400 validation-errors; the token response is
``application/json``; the consent page's ``mode`` is accepted and ignored (always a redirect); webhook bodies
carry no tags, names split or ``group_id``; an unchecked checkbox is held and sent (``"0"``), not dropped; a JSON
number written to a numeric field is held as PHP prints it (3.0 → "3"); smart_address enums have their part codes as
text; a missing user by id → 204; users' rights are all "A"; notes: params required as listed above, the note
batch limit 250, no text limit (``note_text_max``), created_by/responsible_user_id default to the token's user,
a PATCH answers like the POST, a deleted contact's notes are hidden.

Control API (JSON; no auth; errors ``{"error": message}`` with 400/404/409)
--------------------------------------------------------------------------
- ``GET  /_sandbox`` → config, integrations, accounts, clock.
- ``GET|PATCH /_sandbox/config`` → the options of :class:`KommoSandboxConfig` (PATCH a subset).
- ``POST /_sandbox/integrations`` ``{redirect_uri, client_id?, client_secret?, disable_hook_url?, name?}`` → 201
  ``{client_id, client_secret, redirect_uri, disable_hook_url, name}`` (client_id a UUID unless given).
  ``GET /_sandbox/integrations``.
- ``POST /_sandbox/accounts`` ``{subdomain, name?, id?, domain?}`` (domain ``kommo.com`` (default: base_domain),
  ``amocrm.ru`` or ``amocrm.com``) → 201 ``{id, subdomain, host, name, contacts, deleted_contacts}``.
  ``GET /_sandbox/accounts``.
- ``POST /_sandbox/authorize`` ``{client_id, subdomain, state?, deny?}`` → ``{redirect_url, code}``: the redirect the
  consent page's Allow (or Deny) button produces: ``{redirect_uri}?code=&state=&referer={host}&client_id=
  &platform=`` (``platform=1`` for amocrm.ru accounts, else ``platform``; state omitted if not given) or
  ``?error=access_denied&client_id=&state=``. Codes live 20 min.
- ``POST /_sandbox/install_widget`` ``{client_id, subdomain}`` → ``{url, code, status, error, elapsed_ms}``: Kommo's
  widget-install redirect, sent by the sandbox itself: ``GET {redirect_uri}?code=&referer={host}&platform=
  &client_id=&from_widget=1``, no state, once, ``widget_install_timeout`` (3 s), the answer ignored (reported).
- ``POST /_sandbox/widget_token`` ``{client_id, subdomain, is_admin?, claims?, secret?, alg?}`` → ``{token, claims}``:
  a disposable widget JWT (HS256 keyed by the client secret; ``iss`` https://{host}, ``aud`` scheme://host of
  the redirect URI, ``jti``, ``iat``/``nbf``, ``exp`` (+``widget_token_ttl``), ``account_id``, ``subdomain``,
  ``client_uuid``, ``user_id``, ``is_admin``). ``claims`` override claims, ``secret`` the key, ``alg: "none"`` leaves
  it unsigned: for tests of bad tokens.
- ``POST /_sandbox/tokens`` ``{client_id, subdomain, long_lived_ttl?}`` → a token response without the OAuth dance
  (with ``long_lived_ttl``: a long-lived access token, no refresh token).
- ``POST /_sandbox/uninstall`` ``{client_id, subdomain}`` → revokes the installation's tokens and calls
  ``GET {disable_hook_url}?client_uuid=&account_id=&signature=`` (signature = hex HMAC-SHA256(client_secret,
  "{client_id}|{account_id}"), ``User-Agent: amoService-oAuth-Code-Sender/1.0``) → ``{revoked_tokens, hook_url,
  hook_status, hook_error}``.
- ``PATCH /_sandbox/accounts/{sub}`` ``{current_user_admin}`` → the account plus ``current_user_admin``; false makes
  the tokens' user a non-admin (``/api/v4/users`` answers 403).
- ``POST /_sandbox/accounts/{sub}/users`` ``{name, email?, is_admin?}`` → 201 ``{id, name, email, is_admin}``.
- ``POST /_sandbox/accounts/{sub}/seed`` ``{count, seed?, fire_webhooks?, custom_fields?}`` → ``{created, first_id,
  last_id}`` (see :func:`seed_contacts`; ~1 s per 100k contacts; seeds of 10k+ end with ``gc.freeze()`` so full GC
  passes skip the contacts: a 250-contact page then takes ~7 ms at 1M). ``custom_fields: true`` also makes (once per
  account) one user field of every type and three more users, and gives contacts values in those fields and random
  responsible users; without it a seed is what it always was.
- ``POST|PATCH /_sandbox/accounts/{sub}/contacts[?webhooks=0]``: as the API's create/update, without auth or limits.
- ``GET /_sandbox/accounts/{sub}/contacts/{id}`` → contact JSON plus ``is_deleted`` (deleted ones too).
- ``POST /_sandbox/accounts/{sub}/contacts/{id}/delete`` and ``.../restore`` (``?webhooks=0`` to stay silent).
- ``GET /_sandbox/accounts/{sub}/notes[?entity_id=]`` → every note of the account as the API's read model, in id
  order, those of deleted contacts too.
- ``POST /_sandbox/accounts/{sub}/custom_fields`` ``{name, type, code?, enums?}`` → 201 a user field (code null
  unless given; ``enums`` required for select, radiobutton, multiselect, multitext; a smart_address gets its six
  parts). Types: text, textarea, url, numeric, checkbox, select, radiobutton, multiselect, multitext, date, birthday,
  date_time, streetaddress, smart_address.
- ``GET /_sandbox/accounts/{sub}/webhooks`` → registered webhooks with ``disabled`` and ``recent_failures``.
- ``GET|POST|DELETE /_sandbox/faults`` ``{latency_ms, latency_jitter_ms, error_rate, error_status, burst_429,
  lost_answers, seed, only}`` (``lost_answers``: the next N API writes, POST or PATCH, are applied and answered
  504; ``only``: an endpoint such as ``"POST /api/v4/contacts/notes"``, the only calls the faults apply to)
  (POST sets the given keys; DELETE clears faults and the rate-limit windows and blocks).
- ``GET /_sandbox/clock``, ``POST /_sandbox/clock/advance`` ``{seconds}`` → ``{now, offset}``.
- ``GET|DELETE /_sandbox/stats`` → ``{calls: {"GET /api/v4/contacts": n, ...}, responses: {"... 200": n},
  by_account (by subdomain), by_host (by the host called, token endpoint included), grants, token_errors, refresh_count, rate_limited, blocked, faults, max_calls_in_1s: {client_id: n},
  total_calls}``.
- ``GET|DELETE /_sandbox/deliveries[?webhook_id=&limit=]`` → delivery attempts ``{body_id, webhook_id,
  destination, attempt, status, error, ok, duplicate, at, duration_ms, contacts, body}``.
- ``POST /_sandbox/deliveries/drain`` ``{timeout?}`` → ``{drained, outstanding}``: waits for batch windows,
  queued bodies and pending retries.
- ``POST /_sandbox/reset`` → forget all data (keeps config and clock).
Consent page: ``GET /oauth?client_id=&state=&mode=`` (or ``/{sub}/oauth``) lists accounts with Allow/Deny
forms posting to ``POST /oauth/decision``, which answers 302 to the redirect above.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.routes import shared_routes

from . import responses as r
from .config import KommoSandboxConfig
from .errors import SandboxError
from .seed import seed_contacts
from .state import KommoSandboxState

__all__ = ["KommoSandboxConfig", "KommoSandboxState", "create_kommo_sandbox", "seed_contacts"]


class _RequestId:
    """Adds ``X-Request-Id`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = secrets.token_hex(16).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_kommo_sandbox(config: KommoSandboxConfig | None = None) -> FastAPI:
    """A fresh sandbox app; its state is ``app.state.kommo`` (:class:`KommoSandboxState`)."""
    from .api import router as api_router
    from .api import where
    from .consent import router as consent_router
    from .control import router as control_router

    state = KommoSandboxState(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    app = FastAPI(
        title="Kommo sandbox",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        routes=shared_routes(control_router, consent_router, api_router),
    )
    app.state.kommo = state
    app.add_middleware(_RequestId)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return r.problem(405, f"Method {request.method} is not allowed")
        path = request.url.path
        parts = path.split("/", 2)
        host = f"https://{where(state, parts[1])[1]}" if len(parts) > 2 else "https://www.kommo.com"
        rest = "/" + parts[2] if len(parts) > 2 else path
        return r.problem(exc.status_code, f"Cannot {request.method} {host}{rest}")

    @app.exception_handler(SandboxError)
    async def sandbox_error(_request: Request, exc: SandboxError) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(ValueError)
    async def bad_value(_request: Request, exc: ValueError) -> Response:
        return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)

    return app
