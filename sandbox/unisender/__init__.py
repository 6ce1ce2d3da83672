"""Unisender sandbox: a faithful in-memory simulator of Unisender's classic API, written from its public docs.

``create_unisender_sandbox(config)`` returns a FastAPI app; its state is ``app.state.unisender``
(:class:`SandboxState`: ``accounts[api_key]`` with ``contacts_by_email``, ``lists``, ``fields``, ``ledger``...),
so in-process tests and the demo may inspect it directly. It shares no code with ``app.connectors``.

Public API (every answer HTTP 200, ``{"result": ...}`` or ``{"error": msg, "code": code}``; 5xx only for faults)
  GET|POST /{lang}/api/{method}, /{lang}/api/async/{method}    lang ∈ ru|en|it|ua (anything else: HTTP 404)
  Parameters: query and body merged (body wins, like PHP's $_REQUEST); body read only when it is
  ``application/x-www-form-urlencoded`` (bzip2 with ``request_compression=bzip2``) or multipart. A JSON body is
  invisible, as it is to PHP: its arguments are simply missing (``invalid_api_key`` or ``invalid_arg``).
  PHP bracket arrays (``field_names[0]``, ``data[0][1]``, ``fields[Name]``, ``events[]``, %-encoded or not).
  A scalar where an array is required (``field_names=email,Name``) is ``invalid_arg``.
  Checks in order: per-IP limit, api_key (missing/wrong → invalid_api_key), access_denied, unknown_method,
  per-key limit (sliding window), per-method limit, injected fault. Unknown args (format, platform, test_mode,
  double_optin/force_import on importContacts, ...) are accepted and ignored.
  Methods: importContacts, getContact, isContactInLists, getContactCount, getTotalContactsCount, subscribe,
  exclude, unsubscribe, getLists, createList, updateList, deleteList, getFields, createField, updateField,
  deleteField, getTags, deleteTag, setHook, removeHook, exportContacts (legacy synchronous: offset, limit ≤ 1000 →
  {field_names, data}), async/exportContacts (field_names omitted → every system and user field; notify_url
  optional [export_requires_notify_url]; returns {task_uuid, status: "new"}), getCampaigns (from, to, limit
  1..100 [max_campaigns_page], offset), getCampaignStatus, getCampaignCommonStats, getCampaignDeliveryStats
  (legacy synchronous: campaign_id, changed_since inclusive, field_ids[] or field_ids=1,2 → {fields: [email,
  send_result, last_update, <field names>], data}), async/getCampaignDeliveryStats (the same table as a task
  file), getVisitedLinks (group=0: {fields: [email, url, request_time, ip], data} one row per click; group=1:
  one row per (email, url) with "count", time and ip of the latest click) and async/getTaskResult (both task
  types: {task_uuid, status, task_type: export|campaign_delivery_stats, file_to_download once completed}).
  Tasks are snapshots taken at creation; "completed" task_seconds later (0 by default), before that "new" until
  polled, then "processing". The file (served by the control API, 404 until completed) is CSV, UTF-8, header
  row of column names, lists comma-joined in one cell, gzipped with export_gzip (URL ending .csv.gz). With a
  notify_url the sandbox POSTs JSON {"result": {task_uuid, status: "completed", task_type, file_to_download}}
  once, when the task completes (simulator-specific: the real payload is undocumented).

Control API (JSON; errors are HTTP 4xx with ``{"detail": ...}``)
  POST   /_sandbox/accounts                        {"api_key"?, "login"?} → {"api_key", "login"}; 409 if taken
  GET    /_sandbox/accounts                        → {"accounts": [summary...]}
  GET    /_sandbox/accounts/{key}                  → summary: lists (member counts), fields, tags, hooks
  POST   /_sandbox/reset                           forget everything (configured accounts are re-created)
  POST   /_sandbox/accounts/{key}/access           {"denied": bool, "methods"?: [..]} → API access_denied switch
  GET    /_sandbox/accounts/{key}/contacts         ?offset&limit → {"total", "contacts": [contact...]}
  GET    /_sandbox/accounts/{key}/contacts/{email} → {"person_id", "email", "phone", "status", "availability",
                                                      "added_at", "fields", "tags", "lists": {id: {status, added_at}}}
  GET    /_sandbox/accounts/{key}/snapshot         → {"contacts": {email (phone if none): {"status", "phone",
                                                      "fields": {name: value}, "lists": {id: {"status"}}}}}
  POST   /_sandbox/accounts/{key}/contacts/{email}/unsubscribe  {"list_id"?: int|null}: the contact clicks the
         unsubscribe link (null = account-wide status), "campaign_id"?: in that campaign's letter → {"changed",
         "contact"}; emits the hook events
  POST   /_sandbox/accounts/{key}/contacts/{email}/activate     {"list_id"?}: the contact re-activates itself
  GET    /_sandbox/accounts/{key}/ledger           ?email&offset&limit → {"total", "entries"}: every row
         importContacts accepted: {seq, call, index, at, email, phone, op (upsert|delete), outcome, data}
  GET    /_sandbox/accounts/{key}/ledger/summary   → rows, addresses_imported_more_than_once,
         consecutive_identical_rows (same data imported twice in a row), addresses_with_differing_data, examples
  GET    /_sandbox/accounts/{key}/hooks            → {"hooks": [...]}
  POST   /_sandbox/accounts/{key}/hook-events      {"events": [{"event_name", "event_data", "event_time"?}]}: the
         account's hooks deliver these (known event names only) → {"events": n}
  GET    /_sandbox/deliveries                      ?api_key&hook_url&offset → {"pending", "deliveries": [{seq,
         api_key, hook_url, retry_count, at, status_code, error, delivered, events, body}]}
  POST   /_sandbox/faults                          {"rate": 0..1, "kinds": [retry_later|http_500|http_502|http_503|
         rate_limit|rate_limit_ip|hang], "seed"?, "method"?, "api_key"?, "count"?, "hang_seconds"?,
         "hang_applies"?} (seeded RNG: reproducible); GET shows it with injected counts; DELETE clears it
  GET    /_sandbox/exports/{task_uuid}.csv         the file of an async task (text/csv); .csv.gz when gzipped
  GET    /_sandbox/tasks                           ?api_key → {"tasks": [{task_uuid, api_key, task_type, status,
                                                      polls, notify_url, notified (status code or error name)}]}
  POST   /_sandbox/accounts/{key}/campaigns        {"list_id", "subject"?, "rates"?: {delivered, opened, clicked,
         soft_bounce, hard_bounce, complaint, unsubscribe}, "links"?: [url], "seed"?, "duration_s"? (1.0),
         "sender_name"?, "sender_email"?} → {"campaign_id", "message_id", "recipients", "steps"}: sent now to the
         list's active members (see Campaigns below); 404 unknown list, 400 rates that do not add up or
         clicked > 0 without links
  GET    /_sandbox/accounts/{key}/campaigns        → {"campaigns": [getCampaigns entry + recipients, steps, played]}
  GET    /_sandbox/accounts/{key}/campaigns/{id}/facts → {"campaign_id", "list_id", "status", "steps", "played",
         "addresses": {email: {"send_result", "opens", "clicks": [url...], "unsubscribe", "complaint"}}}
  POST   /_sandbox/accounts/{key}/contacts/{email}/fields  {"fields": {name: value}, "notify"?}: an edit in
         Unisender's UI ("" clears) → {"changed": {name: value}, "contact"}; emits contact_data_change
  POST   /_sandbox/accounts/{key}/lists/{list_id}/signups  {"email", "fields"?, "notify"?}: the address signs up
         through a form (confirmed) → {"created", "changed", "contact"}: created "active" if new, made active
         in the list (even after an unsubscribe: its own action); emits subscribe {"email", "list_id"} if the
         membership was not active
  GET    /_sandbox/stats                           → {"calls": {method: n}, "total_calls", "errors": {code: n},
                                                      "faults", "by_account": {key: {method: n}}}

Hooks: ``setHook(hook_url, events[]=NAME`` or ``events[NAME]=*|status,status…, event_format=json_post,
max_parallel, single_event, status)`` for email_status, subscribe, unsubscribe, campaign_status and
contact_data_change (the sandbox's name for the undocumented "user data change" event, event_data ``{"email",
"fields": {name: new value}}`` with the changed values only; emitted by the fields control endpoint);
``removeHook(hook_url)`` (an unknown URL is not an error). Events are POSTed after the call answered, in
background tasks, in the classic layouts (see ``hooks.py``): batched ``{"auth", "events_by_user": [{"login",
"events": [{"event_name", "event_time", "event_data"}]}]}`` (one body per call) or, with ``single_event=1``,
one flat body per event; PHP ``json_encode`` serialization; ``auth`` = md5 of the body with the API key in
place of the auth value (``hook_unsigned`` drops it); resends carry a top-level ``retry_count``;
``hook_timeout_seconds`` 3, ``hook_retry_interval_seconds`` 600 and ``hook_max_retries`` 144 configurable;
exhausted → hook ``stopped``. subscribe/unsubscribe ``event_data`` is ``{"email", "list_id"}``, one event per
list (an account-wide unsubscribe: one per list of the address). Unsubscribes come from the ``unsubscribe``
method, importContacts ``email_status=unsubscribed`` or ``email_unsubscribed_list_ids``, and the control
endpoint (with ``campaign_id`` also an ``email_status`` ``ok_unsubscribed``); API-made ones can be muted with
``notify_api_unsubscribes=False``. Only transitions are events: a contact or membership created already
unsubscribed notifies nobody. ``subscribe`` events come from the subscribe method and the activate and signups
control endpoints; any known event can be injected with ``POST /_sandbox/accounts/{key}/hook-events``.

Campaigns (``campaigns.py``): recipients = the list's members with an active membership, an address and status
new or active. Each recipient's outcome is drawn from ``random.Random(seed)`` (timing from a second seeded RNG):
hard_bounce (err_user_unknown|err_domain_inactive|err_dest_invalid), else soft_bounce (err_mailbox_full|
err_giveup), else delivered (default 1 - bounces; the rest stays ok_sent); a delivered letter is opened (1-3
opens), clicked (independently, 1-2 clicks on given links), then complaint (ok_fbl) or unsubscribe
(ok_unsubscribed). Over duration_s the timeline posts, through the hooks, ``campaign_status`` {"campaign_id",
"status": in_progress, later completed}, per recipient ``email_status`` {"email", "status", "status_group",
"campaign_id"}: ok_sent, then ok_delivered or the bounce, one ok_read per open, one ok_link_visited per click
(no url in the event), ok_fbl or ok_unsubscribed, and for an unsubscribe also ``unsubscribe`` {"email",
"list_id"} (if the membership changed; it becomes unsubscribed). status_group: success_pending_group (ok_sent,
ok_delivered), success_group (ok_read, ok_link_visited), unsubscribed_group, spam_group (ok_fbl, the sandbox's
own), error_group. Due steps go out together (one batched body per hook per 20 ms). Bounces set the contact's
availability (unreachable, mailbox_full, temp_unreachable); sends, deliveries, opens and clicks set getContact's
last_*_datetime and the export's email_last_delivered_at/_read_at/_clicked_at. The stats methods read what the
timeline has played; once the campaign is completed they equal its facts. send_result is the furthest status
reached (ok_sent < ok_delivered < ok_read < ok_link_visited < ok_unsubscribed|ok_fbl|errors); last_update is
when it was reached; read_unique counts readers or clickers, read_all counts opens (a click without a tracked
open: one read); spam counts complaints. Unknown campaign id → ``invalid_arg`` ``Campaign with id=N not found``.

Simulator choices where Unisender's docs are silent (config field in brackets where switchable)
- importContacts: >500 rows, no email/phone column, unknown or duplicate column name, non-array field_names/data,
  empty data → ``invalid_arg`` for the whole call [max_import_rows]. Per-row problems skip the row with a log
  entry ``{"index": "<row key>" (string) [log_index_as_string], "code", "message"}``; codes are placeholders
  [log_codes]: invalid_email, invalid_phone (not "+" and 10-15 digits), role_address [reject_role_addresses,
  role_local_parts], invalid_value (bad status/time/delete/list ids), invalid_list (unknown list id),
  too_many_tags (>10), duplicate (address repeated within one call: later row skipped, not counted as invalid),
  owned_by_different_subscribers (the row's phone belongs to a contact other than its address's owner, unless
  that one is phone-only: it gains the address), invalid_field_value (strict mode, on by default
  [validate_field_values]: a user-field value that does not fit the field's type). A row with an address
  updates that address's contact; its phone replaces the contact's. A list id in two list columns of a row
  counts as excluded, else unsubscribed, else joined; excluding a list the address is not in does nothing. A refused status change is a warning: the rest of the row applies and
  the row counts as updated [status_change_denied_skips_row]. Log entries carry no severity field. Existing addresses may change status only from active/inactive
  [mutable_statuses]; an unsubscribed list membership is never re-activated (not even by overwrite_lists).
  overwrite_lists=1 replaces memberships only when the row has a list column. Missing cells are empty strings;
  an empty user-field value clears it. ``delete=1`` removes the contact from the account (counted as deleted
  even if unknown). Emails are stored lower-cased.
- getContact unknown → ``unspecified`` ``Contact "x" not found`` (no ``result``); exclude/unsubscribe not found
  (or not in any given list) → same with ``"result": ""``. lists/fields are top-level keys of ``result``.
- subscribe: sandbox lists have no confirmation letters, so double_optin 0 (default) and 4 (not new/active)
  answer the real "These list ids=... has no confirmation letters" error [lists_have_confirmation_letters];
  1 and 3 add without a letter; an unsubscribed contact or membership stays unsubscribed.
- createList duplicate title, unknown list/field ids, bad field names or types → ``invalid_arg``; createField
  refuses system names [reject_system_field_names] and '-' [field_name_allow_hyphen].
- Method names are case-sensitive [method_names_case_sensitive]; missing and wrong api_key both answer
  ``invalid_api_key`` with message ``AK100310-02``. Messages are English whatever ``lang`` is.
- Rate limits: 1200/min per key [calls_per_minute], per IP off [ip_calls_per_minute], per method subscribe 300,
  async/exportContacts 20, sendEmail 60 [method_limits]; rejected calls do not use up the window.
- Fault ``hang`` sleeps ``hang_seconds`` (35, beyond the real 30 s deadline) then still applies the call
  [hang_applies] (set false to answer 504 without applying).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sandbox.routes import shared_routes
from sandbox.unisender.api import router as api_router
from sandbox.unisender.background import Background
from sandbox.unisender.config import UnisenderSandboxConfig
from sandbox.unisender.control import router as control_router
from sandbox.unisender.control_activity import router as activity_router
from sandbox.unisender.hooks import HookDispatcher, signed_body
from sandbox.unisender.state import Account, Contact, SandboxState

__all__ = [
    "Account",
    "Contact",
    "HookDispatcher",
    "SandboxState",
    "UnisenderSandboxConfig",
    "create_unisender_sandbox",
    "signed_body",
]


def create_unisender_sandbox(config: UnisenderSandboxConfig | None = None) -> FastAPI:
    """Build the sandbox app; state lives in ``app.state.unisender``, hook delivery in ``app.state.unisender_hooks``,
    campaign timelines and task notifications in ``app.state.unisender_background``."""
    state = SandboxState(config or UnisenderSandboxConfig())
    dispatcher = HookDispatcher(state)
    background = Background(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await background.aclose()
            await dispatcher.aclose()

    app = FastAPI(
        title="Unisender sandbox",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        routes=shared_routes(control_router, activity_router, api_router),
    )
    app.state.unisender = state
    app.state.unisender_hooks = dispatcher
    app.state.unisender_background = background
    return app
