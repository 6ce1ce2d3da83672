"""Unit tests of UnisenderClient against httpx.MockTransport: wire format, batching, log mapping, errors."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx
import pytest

from app.connectors.base import EspContact, ImportRow, RowOutcome, RowResult
from app.connectors.errors import (
    AuthError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from app.connectors.unisender import (
    UnisenderAccessDenied,
    UnisenderAuthError,
    UnisenderClient,
    UnisenderError,
    UnisenderNotFound,
    UnisenderRateLimited,
    UnisenderRequestError,
    UnisenderTransientError,
)
from app.connectors.unisender.imports import column_calls, import_groups
from app.context import tls_context

API_KEY = "unit-test-key-123"
Handler = Callable[[httpx.Request], httpx.Response]


class RecordingLimiter:
    """Counts acquisitions and pauses (stands in for the app's budget in unit tests)."""

    def __init__(self) -> None:
        self.acquired = 0.0
        self.pauses: list[float] = []

    async def acquire(self, cost: float = 1.0) -> None:
        self.acquired += cost

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def returned(self) -> None:
        return None


class Recorder:
    """A MockTransport handler that records requests and answers from a queue or a function."""

    def __init__(self, respond: Callable[[httpx.Request, list[tuple[str, str]]], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self.forms: list[list[tuple[str, str]]] = []
        self._respond = respond

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = parse_qsl(request.content.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        self.requests.append(request)
        self.forms.append(form)
        return self._respond(request, form)


def ok(result: object) -> httpx.Response:
    return httpx.Response(200, json={"result": result})


def make_client(
    handler: Handler, limiter: RecordingLimiter | None = None, **kwargs: object
) -> tuple[UnisenderClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = UnisenderClient(
        http,
        base_url="https://api.unisender.test/",
        api_key=API_KEY,
        limiter=limiter or RecordingLimiter(),
        **kwargs,  # type: ignore[arg-type]
    )
    return client, http


def import_ok(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
    rows = {k.split("]")[0] for k, _ in form if k.startswith("data[")}
    n = len(rows)
    return ok(
        {"total": n, "inserted": n, "updated": 0, "deleted": 0, "new_emails": n, "invalid": 0, "log": []}
    )


def data_rows(form: list[tuple[str, str]]) -> list[list[str]]:
    """Rebuild data[i][j] into rows, asserting indices are dense and 0-based."""
    cells = [(k, v) for k, v in form if k.startswith("data[")]
    rows: dict[int, dict[int, str]] = {}
    for key, value in cells:
        i, j = (int(part) for part in key[len("data[") : -1].split("]["))
        rows.setdefault(i, {})[j] = value
    assert sorted(rows) == list(range(len(rows)))
    return [[row[j] for j in sorted(row)] for _, row in sorted(rows.items())]


# --- wire format ---------------------------------------------------------------------------------------------


async def test_import_form_body_is_exact_php_bracket_form() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    async with http:
        results = await client.import_contacts(
            [
                ImportRow(email="ivan@ex.ru", fields=(("Name", "Иван Петров"),), list_ids=(101, 102)),
                ImportRow(email="ann@ex.com", fields=(("Name", "Ann"),), list_ids=(101,)),
                ImportRow(email="gone@ex.com", fields=(("Name", "Old"),), list_ids=(5,), delete=True),
            ]
        )
    assert results == [RowResult(index=i, outcome=RowOutcome.OK) for i in range(3)]
    (request,) = rec.requests
    assert request.method == "POST"
    assert request.url.path == "/en/api/importContacts"
    assert dict(request.url.params) == {"format": "json"}
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert API_KEY not in str(request.url)
    assert rec.forms[0] == [
        ("api_key", API_KEY),
        ("platform", "contactsync"),
        ("field_names[0]", "email"),
        ("field_names[1]", "Name"),
        ("field_names[2]", "email_list_ids"),
        ("field_names[3]", "delete"),
        ("data[0][0]", "ivan@ex.ru"),
        ("data[0][1]", "Иван Петров"),
        ("data[0][2]", "101,102"),
        ("data[0][3]", "0"),
        ("data[1][0]", "ann@ex.com"),
        ("data[1][1]", "Ann"),
        ("data[1][2]", "101"),
        ("data[1][3]", "0"),
        ("data[2][0]", "gone@ex.com"),
        ("data[2][1]", ""),  # a deleted row carries only its address
        ("data[2][2]", ""),
        ("data[2][3]", "1"),
    ]


async def test_import_sends_only_needed_columns_and_never_email_status_by_default() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    async with http:
        await client.import_contacts([ImportRow(email="a@x.io"), ImportRow(email="b@x.io")])
    fields = [v for k, v in rec.forms[0] if k.startswith("field_names")]
    assert fields == ["email"]
    assert data_rows(rec.forms[0]) == [["a@x.io"], ["b@x.io"]]


async def test_rows_only_carry_columns_they_set_whatever_their_neighbours() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    rows = [
        ImportRow(email="a@x.io", fields=(("Name", "A"),), list_ids=(1,)),
        ImportRow(
            email="nameless@x.io", list_ids=(1,)
        ),  # must not get an empty Name cell (it would clear it)
        ImportRow(email="d@x.io", delete=True),
        ImportRow(email="c@x.io", fields=(("Name", "C"),), list_ids=(1,)),
    ]
    async with http:
        results = await client.import_contacts(rows)
    assert [r.index for r in results] == [0, 1, 2, 3]
    columns = [[v for k, v in form if k.startswith("field_names")] for form in rec.forms]
    assert columns == [["email", "Name", "email_list_ids", "delete"], ["email", "email_list_ids"]]
    assert data_rows(rec.forms[0]) == [
        ["a@x.io", "A", "1", "0"],
        ["d@x.io", "", "", "1"],
        ["c@x.io", "C", "1", "0"],
    ]
    assert data_rows(rec.forms[1]) == [["nameless@x.io", "1"]]


async def test_unsubscribed_rows_travel_in_their_own_call_with_email_status() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    rows = [
        ImportRow(email="a@x.io", fields=(("Name", "A"),)),
        ImportRow(email="u@x.io", fields=(("Name", "U"),), unsubscribed=True),
        ImportRow(email="b@x.io", fields=(("Name", "B"),)),
    ]
    async with http:
        results = await client.import_contacts(rows)
    assert [r.index for r in results] == [0, 1, 2]
    assert len(rec.forms) == 2
    first = [v for k, v in rec.forms[0] if k.startswith("field_names")]
    second = [v for k, v in rec.forms[1] if k.startswith("field_names")]
    assert first == ["email", "Name"]
    assert data_rows(rec.forms[0]) == [["a@x.io", "A"], ["b@x.io", "B"]]
    assert second == ["email", "Name", "email_status"]
    assert data_rows(rec.forms[1]) == [["u@x.io", "U", "unsubscribed"]]
    values = {v for form in rec.forms for _, v in form}
    assert "active" not in values
    assert "new" not in values


def field_names(form: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in form if k.startswith("field_names")]


def test_groups_follow_the_fields_and_status_a_row_sets_and_deletions_join_the_largest() -> None:
    """Only field sets and email_status split calls: a blank phone or list cell gives nothing (see RowShape)."""
    rows = [
        ImportRow(email="a@x.io", fields=(("Name", "A"), ("city", "Riga"))),  # 0
        ImportRow(email="b@x.io", fields=(("city", "Oslo"), ("Name", "B"))),  # 1: same set, other order
        ImportRow(email="c@x.io", fields=(("Name", "C"),)),  # 2: fewer fields
        ImportRow(email="d@x.io", fields=(("Name", "D"), ("city", "")), phone="+79261232323"),  # 3
        ImportRow(email="e@x.io", fields=(("Name", "E"), ("city", "X")), list_ids=(1,)),  # 4
        ImportRow(email="f@x.io", fields=(("Name", "F"), ("city", "X")), excluded_list_ids=(1,)),  # 5
        ImportRow(email="g@x.io", fields=(("Name", "G"), ("city", "X")), unsubscribed_list_ids=(1,)),  # 6
        ImportRow(email="h@x.io", fields=(("Name", "H"), ("city", "X")), unsubscribed=True),  # 7
        ImportRow(email="gone@x.io", fields=(("Name", "Old"),), list_ids=(1,), delete=True),  # 8
        ImportRow(email="i@x.io", fields=(("city", "Y"), ("Name", "I"))),  # 9
    ]
    assert import_groups(rows) == [[0, 1, 3, 4, 5, 6, 8, 9], [2], [7]]


async def test_phone_and_list_columns_are_blank_in_the_rows_that_set_none() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    rows = [
        ImportRow(email="a@x.io", fields=(("Name", "A"),), phone="+79261232323", list_ids=(1,)),
        ImportRow(email="b@x.io", fields=(("Name", "B"),), excluded_list_ids=(2,)),
    ]
    async with http:
        await client.import_contacts(rows)
    assert [field_names(form) for form in rec.forms] == [
        ["email", "Name", "phone", "email_list_ids", "email_excluded_list_ids"]
    ]
    assert data_rows(rec.forms[0]) == [["a@x.io", "A", "+79261232323", "1", ""], ["b@x.io", "B", "", "", "2"]]


async def test_each_call_carries_only_the_columns_its_rows_set() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    rows = [
        ImportRow(email="a@x.io", fields=(("Name", "A"), ("city", "Riga"))),
        ImportRow(email="c@x.io", fields=(("Name", "C"),)),  # must not get an empty city cell (it clears)
        ImportRow(email="b@x.io", fields=(("city", ""), ("Name", "B"))),  # "" is sent: it clears the city
        ImportRow(
            email="p@x.io",
            fields=(("age", "42"),),
            phone="+79261232323",
            list_ids=(1, 2),
            excluded_list_ids=(3,),
            unsubscribed_list_ids=(4, 5),
        ),
    ]
    async with http:
        results = await client.import_contacts(rows)
    assert results == [RowResult(index=i, outcome=RowOutcome.OK) for i in range(4)]
    assert [field_names(form) for form in rec.forms] == [
        ["email", "Name", "city"],
        ["email", "Name"],
        [
            "email",
            "age",
            "phone",
            "email_list_ids",
            "email_excluded_list_ids",
            "email_unsubscribed_list_ids",
        ],
    ]
    assert data_rows(rec.forms[0]) == [["a@x.io", "A", "Riga"], ["b@x.io", "B", ""]]
    assert data_rows(rec.forms[1]) == [["c@x.io", "C"]]
    assert data_rows(rec.forms[2]) == [["p@x.io", "42", "+79261232323", "1,2", "3", "4,5"]]


@pytest.mark.parametrize(
    "row",
    [
        ImportRow(email="a@x.io", fields=(("Name", "A"), ("Name", "B"))),
        ImportRow(email="a@x.io", fields=(("email", "b@x.io"),)),
        ImportRow(email="a@x.io", fields=(("email_list_ids", "1"),)),
        ImportRow(email="a@x.io", fields=(("", "x"),)),
        ImportRow(email="a@x.io", fields=(("phone", "+79261232323"),), delete=True),
    ],
)
async def test_a_row_whose_field_names_cannot_be_columns_is_rejected_without_a_call(row: ImportRow) -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    async with http:
        results = await client.import_contacts([ImportRow(email="ok@x.io"), row])
    assert results[0] == RowResult(index=0, outcome=RowOutcome.OK)
    assert (results[1].index, results[1].outcome, results[1].code) == (
        1,
        RowOutcome.REJECTED,
        "invalid_field_name",
    )
    assert results[1].message
    # Only the good row was sent; the bad one reached no call, not even as a deletion.
    assert [data_rows(form) for form in rec.forms] == [[["ok@x.io"]]]


def test_column_calls_split_user_fields_by_fifty_keeping_system_columns_in_the_first() -> None:
    user = [f"f{i}" for i in range(120)]
    columns = ["email", *user, "phone", "email_list_ids", "delete"]
    calls = column_calls(columns)
    assert calls == [
        ["email", *user[:50], "phone", "email_list_ids", "delete"],
        ["email", *user[50:100]],
        ["email", *user[100:]],
    ]
    assert column_calls(["email", *user[:50], "phone"]) == [["email", *user[:50], "phone"]]


async def test_rows_with_more_than_fifty_fields_take_several_calls_and_only_applied_rows_go_on() -> None:
    def respond(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
        rows = data_rows(form)
        # The first call rejects b@x.io (say its phone); a later call must not send it again.
        log = [
            {"index": str(i), "code": "invalid_phone", "message": "bad"}
            for i, r in enumerate(rows)
            if r[0] == "b@x.io"
        ]
        return ok({"total": len(rows), "log": log})

    rec = Recorder(respond)
    client, http = make_client(rec)
    many = tuple((f"f{i}", str(i)) for i in range(60))
    rows = [
        ImportRow(email="a@x.io", fields=many, phone="+79261232323", list_ids=(1,)),
        ImportRow(email="b@x.io", fields=many, phone="+7926", list_ids=(1,)),
        ImportRow(email="gone@x.io", delete=True),
        ImportRow(email="c@x.io", fields=many, phone="+79261232324", list_ids=(1,)),
    ]
    async with http:
        results = await client.import_contacts(rows)
    assert [r.outcome for r in results] == [RowOutcome.OK, RowOutcome.REJECTED, RowOutcome.OK, RowOutcome.OK]
    assert results[1].code == "invalid_phone"
    first, second = rec.forms
    assert field_names(first) == ["email", *(f"f{i}" for i in range(50)), "phone", "email_list_ids", "delete"]
    assert [r[0] for r in data_rows(first)] == ["a@x.io", "b@x.io", "gone@x.io", "c@x.io"]
    assert field_names(second) == ["email", *(f"f{i}" for i in range(50, 60))]
    # Neither the rejected row nor the deletion (it would re-create the contact) is in the second call.
    assert data_rows(second) == [
        ["a@x.io", *(str(i) for i in range(50, 60))],
        ["c@x.io", *(str(i) for i in range(50, 60))],
    ]


async def test_batching_1200_rows_into_500_500_200() -> None:
    rec = Recorder(import_ok)
    limiter = RecordingLimiter()
    client, http = make_client(rec, limiter)
    rows = [ImportRow(email=f"user{i}@example.com", list_ids=(7,)) for i in range(1200)]
    async with http:
        results = await client.import_contacts(rows)
    sizes = [len(data_rows(form)) for form in rec.forms]
    assert sizes == [500, 500, 200]
    sent = [row[0] for form in rec.forms for row in data_rows(form)]
    assert sent == [row.email for row in rows]
    assert [r.index for r in results] == list(range(1200))
    assert all(r.outcome is RowOutcome.OK for r in results)
    assert limiter.acquired == 3  # one unit per call


async def test_empty_import_makes_no_call() -> None:
    rec = Recorder(import_ok)
    client, http = make_client(rec)
    async with http:
        assert await client.import_contacts([]) == []
    assert rec.requests == []


# --- log mapping -----------------------------------------------------------------------------------------------


async def test_log_indices_as_string_and_int_map_to_input_rows_across_batches() -> None:
    calls = 0

    def respond(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
        nonlocal calls
        calls += 1
        n = len(data_rows(form))
        log: list[dict[str, object]] = (
            [{"index": "2", "code": "invalid_email", "message": "bad address"}]
            if calls == 1
            else [
                {"index": 3, "code": "role_address", "message": "role"},
                {"index": "3", "code": "duplicate", "message": "second entry, same row"},
                {"index": 99, "code": "x", "message": "out of range: ignored"},
                {"index": "abc", "code": "x", "message": "unreadable: ignored"},
                {"index": 5, "code": "note", "message": "just a warning", "level": "warning"},
            ]
        )
        return ok(
            {
                "total": n,
                "inserted": n - 1,
                "updated": 0,
                "deleted": 0,
                "new_emails": 0,
                "invalid": 1,
                "log": log,
            }
        )

    client, http = make_client(Recorder(respond))
    rows = [ImportRow(email=f"u{i}@ex.com") for i in range(510)]
    async with http:
        results = await client.import_contacts(rows)
    rejected = [r for r in results if r.outcome is RowOutcome.REJECTED]
    assert rejected == [
        RowResult(index=2, outcome=RowOutcome.REJECTED, code="invalid_email", message="bad address"),
        RowResult(index=503, outcome=RowOutcome.REJECTED, code="role_address", message="role"),
    ]
    assert results[505] == RowResult(index=505, outcome=RowOutcome.OK)
    assert len(results) == 510


async def test_log_indices_map_back_through_the_unsubscribe_split() -> None:
    def respond(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
        fields = [v for k, v in form if k.startswith("field_names")]
        log = (
            [{"index": 0, "code": "status_change_denied", "message": "new"}]
            if "email_status" in fields
            else []
        )
        return ok({"total": 1, "log": log})

    client, http = make_client(Recorder(respond))
    rows = [
        ImportRow(email="a@x.io"),
        ImportRow(email="b@x.io", unsubscribed=True),
        ImportRow(email="c@x.io"),
    ]
    async with http:
        results = await client.import_contacts(rows)
    assert [r.outcome for r in results] == [RowOutcome.OK, RowOutcome.REJECTED, RowOutcome.OK]
    assert results[1].code == "status_change_denied"


# --- errors ----------------------------------------------------------------------------------------------------

ERROR_CASES = [
    ("retry_later", UnisenderTransientError, TransientError),
    ("api_call_limit_exceeded_for_api_key", UnisenderRateLimited, RateLimitedError),
    ("api_call_limit_exceeded_for_ip", UnisenderRateLimited, RateLimitedError),
    ("invalid_api_key", UnisenderAuthError, AuthError),
    ("access_denied", UnisenderAccessDenied, ForbiddenError),
    ("not_enough_money", UnisenderAccessDenied, ForbiddenError),
    ("invalid_arg", UnisenderRequestError, RequestError),
    ("unknown_method", UnisenderRequestError, RequestError),
    ("unspecified", UnisenderRequestError, RequestError),
    ("too_many_double_optins", UnisenderRequestError, RequestError),
    ("some_future_code", UnisenderRequestError, RequestError),
]


@pytest.mark.parametrize(("code", "cls", "category"), ERROR_CASES)
async def test_error_envelope_with_http_200_maps_to_exception(
    code: str, cls: type[UnisenderError], category: type[Exception]
) -> None:
    def respond(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
        # result present but must be ignored
        return httpx.Response(200, json={"error": "AK100310-02 something", "code": code, "result": {"id": 1}})

    client, http = make_client(Recorder(respond))
    async with http:
        with pytest.raises(cls) as caught:
            await client.create_list("x")
    assert type(caught.value) is cls
    assert isinstance(caught.value, category)
    assert isinstance(caught.value, UnisenderError)
    assert caught.value.code == code
    assert caught.value.retryable is issubclass(cls, UnisenderTransientError)


async def test_contact_not_found_maps_to_not_found_and_get_contact_returns_none() -> None:
    def respond(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "error": "Contact &quot;nobody@ex.com&quot; not found",
                "code": "unspecified",
                "result": "",
            },
        )

    client, http = make_client(Recorder(respond))
    async with http:
        assert await client.get_contact("nobody@ex.com") is None
        await client.exclude("nobody@ex.com")  # idempotent by default
        with pytest.raises(UnisenderNotFound) as caught:
            await client.exclude("nobody@ex.com", missing_ok=False)
        with pytest.raises(UnisenderNotFound):
            await client.unsubscribe("nobody@ex.com", [1])
    assert isinstance(caught.value, NotFoundError)
    assert 'Contact "nobody@ex.com" not found' in caught.value.message


async def test_rate_limit_pauses_limiter_with_default_and_configured_retry_after() -> None:
    def respond(request: httpx.Request, form: list[tuple[str, str]]) -> httpx.Response:
        return httpx.Response(200, json={"error": "too many", "code": "api_call_limit_exceeded_for_ip"})

    limiter = RecordingLimiter()
    client, http = make_client(Recorder(respond), limiter)
    custom, http2 = make_client(Recorder(respond), limiter, rate_limit_retry_after=7.5)
    async with http, http2:
        with pytest.raises(UnisenderRateLimited) as caught:
            await client.get_lists()
        with pytest.raises(UnisenderRateLimited):
            await custom.get_lists()
    assert caught.value.retry_after == 60.0
    assert limiter.pauses == [60.0, 7.5]


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (httpx.Response(500, text="oops"), UnisenderTransientError),
        (httpx.Response(503, json={"error": "x", "code": "invalid_arg"}), UnisenderTransientError),
        (httpx.Response(429, headers={"Retry-After": "3"}), UnisenderRateLimited),
        (httpx.Response(200, text="<html>gateway</html>"), UnisenderTransientError),
        (httpx.Response(200, json=[1, 2]), UnisenderTransientError),
        (httpx.Response(404, text="not here"), UnisenderRequestError),
        (httpx.Response(403, json={"error": "no", "code": "access_denied"}), UnisenderAccessDenied),
    ],
)
async def test_http_level_failures(response: httpx.Response, cls: type[UnisenderError]) -> None:
    client, http = make_client(lambda request: response)
    async with http:
        with pytest.raises(cls) as caught:
            await client.get_lists()
    assert type(caught.value) is cls
    assert caught.value.status_code == response.status_code
    if cls is UnisenderRateLimited:
        assert caught.value.retry_after == 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof")]
)
async def test_transport_failures_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client, http = make_client(handler)
    async with http:
        with pytest.raises(UnisenderTransientError) as caught:
            await client.check_credentials()
    assert caught.value.retryable
    assert API_KEY not in str(caught.value)


async def test_unreadable_result_shape_is_transient_bad_response() -> None:
    client, http = make_client(lambda request: ok({"log": "not a list"}))
    async with http:
        with pytest.raises(UnisenderTransientError) as caught:
            await client.import_contacts([ImportRow(email="a@x.io")])
    assert caught.value.code == "bad_response"


# --- other methods ---------------------------------------------------------------------------------------------


async def test_get_contact_maps_lists_and_fields() -> None:
    rec = Recorder(
        lambda request, form: ok(
            {
                "email": {"email": "ivan@ex.ru", "status": "active", "availability": "available"},
                "lists": [{"id": 101, "status": "active", "added_at": "2024-05-01 10:00:00"}, {"id": 7}],
                "fields": {"Name": "Иван", "age": 42, "empty": None},
            }
        )
    )
    client, http = make_client(rec)
    async with http:
        contact = await client.get_contact("ivan@ex.ru")
    assert contact == EspContact(
        email="ivan@ex.ru",
        status="active",
        list_ids=(101, 7),
        fields={"Name": "Иван", "age": "42", "empty": ""},
    )
    assert rec.requests[0].url.path == "/en/api/getContact"
    assert rec.forms[0][2:] == [("email", "ivan@ex.ru"), ("include_lists", "1"), ("include_fields", "1")]


async def test_get_contact_accepts_php_empty_arrays_and_nested_lists() -> None:
    client, http = make_client(
        lambda request: ok(
            {"email": {"email": "a@x.io", "status": "new", "lists": [{"id": 3}]}, "fields": []}
        )
    )
    async with http:
        contact = await client.get_contact("a@x.io")
    assert contact == EspContact(email="a@x.io", status="new", list_ids=(3,), fields={})


async def test_lists_fields_and_hook_calls() -> None:
    answers = {
        "getLists": ok([{"id": 55688, "title": "My list", "extra": 1}]),
        "createList": ok({"id": 9}),
        "getFields": ok([{"id": 1, "name": "Name", "public_name": "Имя", "type": "string", "is_visible": 1}]),
        "createField": ok({"id": 12}),
        "setHook": ok({}),
        "removeHook": ok({}),
        "exclude": ok({}),
        "unsubscribe": ok({}),
    }
    rec = Recorder(lambda request, form: answers[request.url.path.rsplit("/", 1)[1]])
    client, http = make_client(rec, lang="ru", platform="")
    async with http:
        lists = await client.get_lists()
        assert await client.create_list("CRM mirror") == 9
        fields = await client.get_fields()
        assert await client.create_field("city", "string", public_name="Город") == 12
        await client.set_unsubscribe_hook("https://hooks.example.com/unisender/1?token=t")
        await client.remove_hook("https://hooks.example.com/unisender/1?token=old")
        await client.exclude("A@x.io", [1, 2])
        await client.unsubscribe("a@x.io")
        await client.exclude("a@x.io", [])  # empty selection: no call, never "all lists"
    assert [(x.id, x.title) for x in lists] == [(55688, "My list")]
    assert [(f.id, f.name, f.type) for f in fields] == [(1, "Name", "string")]
    paths = [r.url.path for r in rec.requests]
    assert paths == [
        "/ru/api/getLists",
        "/ru/api/createList",
        "/ru/api/getFields",
        "/ru/api/createField",
        "/ru/api/setHook",
        "/ru/api/removeHook",
        "/ru/api/exclude",
        "/ru/api/unsubscribe",
    ]
    forms = [form[1:] for form in rec.forms]  # platform="" is left out, api_key stays first
    assert all(form[0] == ("api_key", API_KEY) for form in rec.forms)
    assert forms[1] == [("title", "CRM mirror")]
    assert forms[3] == [("name", "city"), ("type", "string"), ("public_name", "Город")]
    assert forms[4] == [
        ("hook_url", "https://hooks.example.com/unisender/1?token=t"),
        ("event_format", "json_post"),
        ("events[email_status]", "*"),
        ("events[subscribe]", "*"),
        ("events[unsubscribe]", "*"),
        ("events[campaign_status]", "*"),
        ("single_event", "0"),
        ("max_parallel", "5"),
        ("status", "active"),
    ]
    assert forms[5] == [("hook_url", "https://hooks.example.com/unisender/1?token=old")]
    assert forms[6] == [("contact_type", "email"), ("contact", "A@x.io"), ("list_ids", "1,2")]
    assert forms[7] == [("contact_type", "email"), ("contact", "a@x.io")]


async def test_check_credentials_raises_auth_error_on_invalid_key() -> None:
    client, http = make_client(
        lambda request: httpx.Response(200, json={"error": "AK100310-02", "code": "invalid_api_key"})
    )
    async with http:
        with pytest.raises(UnisenderAuthError):
            await client.check_credentials()


async def test_warnings_do_not_break_success() -> None:
    body = json.dumps({"result": [], "warnings": [{"warning": "probably fine"}]})
    client, http = make_client(lambda request: httpx.Response(200, text=body))
    async with http:
        assert await client.get_lists() == []


def test_repr_hides_the_key() -> None:
    client = UnisenderClient(
        httpx.AsyncClient(verify=tls_context()),
        base_url="https://x",
        api_key=API_KEY,
        limiter=RecordingLimiter(),
    )
    assert API_KEY not in repr(client)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("120", 120.0, 120.0),
        ("99999999", 3600.0, 3600.0),  # bounded: a hostile value cannot park the credential for years
        ("inf", None, None),
        ("-5", None, None),
    ],
)
async def test_retry_after_is_read_in_seconds_and_bounded(
    header: str, low: float | None, high: float | None
) -> None:
    client, http = make_client(lambda request: httpx.Response(503, headers={"Retry-After": header}))
    async with http:
        with pytest.raises(UnisenderTransientError) as caught:
            await client.get_lists()
    if low is None:
        assert caught.value.retry_after is None
    else:
        assert low <= (caught.value.retry_after or 0.0) <= (high or 0.0)


async def test_retry_after_as_an_http_date_is_honoured() -> None:
    """RFC 9110 allows an HTTP-date: it used to be dropped (no delay), now it is the seconds until then."""
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    client, http = make_client(lambda request: httpx.Response(503, headers={"Retry-After": when}))
    async with http:
        with pytest.raises(UnisenderTransientError) as caught:
            await client.get_lists()
    assert 85.0 <= (caught.value.retry_after or 0.0) <= 91.0
