"""schemathesis against the service's own OpenAPI document: every operation except the webhook receivers
(fuzzed with real form bodies in ``test_bad_input.py``), loaded from the real app over ASGI, served with real
PostgreSQL (migrated by alembic), Redis and both sandboxes.

For each operation schemathesis generates valid cases (positive: the documented answer, in the documented
shape) and invalid ones (negative: a 4xx), sent with the admin token; half of the valid cases that carry an
account id are pointed at a connected account so the paths behind the 404s are reached too. Every operator
endpoint is also called without credentials and with wrong ones (401). Never a 5xx, never a crash, and a refused
request (any 4xx) leaves every table exactly as it was (a fingerprint of all rows is compared before and after).

Quick version: a few dozen cases per operation and mode (well under a minute); ``--long``: hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.db.base import Base
from app.main import create_app
from tests.conftest import Stack
from tests.support.e2e import Account, connect_account

pytestmark = pytest.mark.slow

# Reachable without the admin token by design: Kommo's redirect and uninstall hook, the OAuth start link (its
# own signature), the widget's key endpoint (Kommo's widget token) and the probes. Everything else in the
# document is an operator endpoint.
PUBLIC = {
    ("GET", "/auth"),
    ("GET", "/auth/callback"),
    ("GET", "/kommo/disable"),
    ("POST", "/widget/key"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}
# Names under which operations carry a Kommo account id (query, path or JSON body).
ACCOUNT_KEYS = ("id", "account_id")

POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]
WRONG_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
]


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def add(self, label: str, case: Any, message: str) -> None:
        # One report per operation and kind of failure: the same bug seen 30 times is still one bug.
        kinds = re.findall(r"^- (ST\d+ .*)$", message, flags=re.M) or [message.splitlines()[0][:80]]
        key = f"{label}: {', '.join(kinds)}"
        if key not in self.seen:
            self.seen.add(key)
            self.problems.append(f"{key}\n{message[:1200]}\n  replay: {_curl(case)}")


def _curl(case: Any) -> str:
    with contextlib.suppress(Exception):
        return str(case.as_curl_command(headers={}))
    return repr(case)


def _fingerprint_sql() -> str:
    # Every row of every table, as text: a refused request must not have inserted, updated or deleted anything.
    parts = [
        f"SELECT '{t.name}' AS tbl, count(*) AS n, md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"
        f' AS h FROM "{t.name}" r'
        for t in Base.metadata.sorted_tables
    ]
    return " UNION ALL ".join(parts)


def _point_at(case: Any, account_id: int) -> None:
    """Aim a generated case at the connected account (only where it already carries an integer id)."""
    for container in (case.query, case.path_parameters, case.body):
        if isinstance(container, dict):
            for key in ACCOUNT_KEYS:
                if isinstance(container.get(key), int) and not isinstance(container.get(key), bool):
                    container[key] = account_id


def _is_operator(method: str, path: str) -> bool:
    return (method, path) not in PUBLIC


def _run(
    schema: Any,
    account: Account,
    admin: dict[str, str],
    fingerprint: Callable[[], Any],
    examples: int,
    long_run: bool,
) -> Findings:
    found = Findings()
    ops = [result.ok() for result in schema.get_all_operations()]

    def call(label: str, case: Any, headers: dict[str, str], checks: list[Any] | None) -> Any:
        before = fingerprint()
        try:
            response = case.call(headers=headers, timeout=30, allow_redirects=False)
        except Exception as exc:  # a crash of the app surfaces here (the ASGI transport re-raises it)
            found.add(label, case, f"crashed: {exc!r}")
            return None
        found.calls += 1
        found.by_status[response.status_code] = found.by_status.get(response.status_code, 0) + 1
        if checks:
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (AssertionError, FailureGroup) as exc:
                found.add(label, case, str(exc))
        if response.status_code >= 500:
            found.add(label, case, f"{response.status_code} {response.text[:300]}")
        if 400 <= response.status_code < 500 and fingerprint() != before:
            found.add(label, case, f"refused with {response.status_code} but the database changed")
        return response

    base = {
        "deadline": None,
        "suppress_health_check": list(HealthCheck),
        "database": None,
        # No shrinking in the quick run (time); every failure is recorded with its replay command anyway.
        "phases": [Phase.explicit, Phase.generate] + ([Phase.shrink] if long_run else []),
        "derandomize": not long_run,
    }

    def fuzz(op: Any, mode: GenerationMode, checks: list[Any]) -> None:
        label = f"{op.method.upper()} {op.path} [{mode.value}]"

        @settings(max_examples=examples, **base)
        @given(case=op.as_strategy(generation_mode=mode), aim=st.booleans())
        def run(case: Any, aim: bool) -> None:
            # Negative cases stay as generated: aiming could replace the very value made invalid (id=0).
            if aim and mode is GenerationMode.POSITIVE:
                _point_at(case, account.account_id)
            call(label, case, admin, checks)

        try:
            run()
        except Unsatisfiable:
            # Nothing to get wrong: an operation without parameters or body has no negative cases.
            assert mode is GenerationMode.NEGATIVE, label

    def unauthenticated(op: Any) -> None:
        label = f"{op.method.upper()} {op.path} [no or wrong credentials]"

        @settings(max_examples=len(WRONG_CREDENTIALS) * 2, **base)
        @given(case=op.as_strategy(), creds=st.sampled_from(WRONG_CREDENTIALS), aim=st.booleans())
        def run(case: Any, creds: dict[str, str], aim: bool) -> None:
            if aim:
                _point_at(case, account.account_id)
            response = call(label, case, creds, None)
            if response is not None and response.status_code != 401:
                found.add(label, case, f"answered {response.status_code} without valid credentials")

        run()

    for op in ops:
        fuzz(op, GenerationMode.POSITIVE, POSITIVE_CHECKS)
        fuzz(op, GenerationMode.NEGATIVE, NEGATIVE_CHECKS)
        if _is_operator(op.method.upper(), op.path):
            unauthenticated(op)
    return found


@pytest.mark.timeout(600)
async def test_schemathesis_every_operation(stack: Stack, long_run: bool) -> None:
    account = await connect_account(stack)
    url = stack.settings.database_url
    assert url
    loop = asyncio.get_running_loop()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    sql = _fingerprint_sql()

    def fingerprint() -> list[tuple[str, int, str]]:
        rows = asyncio.run_coroutine_threadsafe(conn.fetch(sql), loop).result(30)
        return [(r["tbl"], r["n"], r["h"]) for r in rows]

    # The app runs in schemathesis' own event-loop thread (its lifespan builds the process context there);
    # this loop keeps serving the sandboxes it calls, so everything blocking goes to a worker thread.
    app = create_app(stack.settings)
    try:
        schema = await asyncio.to_thread(schemathesis.openapi.from_asgi, "/openapi.json", app)
        schema = schema.exclude(path_regex=r"^/webhooks/")
        found = await asyncio.to_thread(
            _run, schema, account, stack.admin_headers, fingerprint, 150 if long_run else 12, long_run
        )
    finally:
        await asyncio.to_thread(shutdown_lifespans)
        await conn.close()
    print(f"schemathesis: {found.calls} calls, statuses {sorted(found.by_status.items())}")  # noqa: T201
    assert found.calls >= 300
    assert not found.problems, (
        "\n".join(p.splitlines()[0] for p in found.problems) + "\n\n" + "\n\n".join(found.problems)
    )
