"""Email activity → Kommo notes against the floor set by Kommo's rate and batch limits, and the lag of live
Kommo → Unisender changes measured side by side (before and during the activity) in one run.

One stack at the real limits (Kommo sandbox 7 req/s, 250 per page / per notes call; Unisender 1,200 calls/min,
500 rows per import; the service's budgets equal). ``--contacts`` seeded and fully synced. Then, in one run:

1. Baseline: renames at ``--live-rate`` per second through the Kommo sandbox (its webhooks post them, as in
   ``bench.lag``) for ``--baseline`` seconds, no activity; their lag = rename → Unisender taking the row.
2. Activity: the renames go on while ``--events`` ``email_status`` events are injected through the Unisender
   sandbox (``POST /_sandbox/accounts/{key}/hook-events``, 1,000 a call, the next call as soon as fewer than
   ``--inflight`` deliveries are in flight), which delivers them signed to the service's hook.

The events are letters of ``--campaigns`` campaigns to the contacts that alone hold their first address (so
each event has exactly one owner): per letter maybe a delivery (``ok_delivered``: skipped, no call), usually
1-3 opens, often 1-2 clicks, a few soft bounces (1-2 statuses), hard bounces and spam complaints. Every event
has its own time (events are deduplicated on their identity). The notes the default kinds write (one per
contact, campaign and kind: opened, clicked, soft/hard bounce, complained) are therefore known in advance with
their counts; the events of one note are adjacent and never split over two hook calls, so each note can be
written by one POST. An event of a note arriving after the note was written (a round boundary of the notes
writer falling inside a note's events, or a round that ran before the rest had been stored) costs a PATCH.
Hard bounces and complaints also make the service tag the contact in Kommo (one ``PATCH /contacts/{id}`` each,
from the same 7/s budget); they go only to contacts the live stream does not rename (a stopped address is
never pushed again, so its rename would never show).

Measured: wall time from the first injected event until every ``email_activity`` row is handled (not
``pending``); when the sandbox finished delivering and when the service had stored every event; the notes in
the Kommo sandbox (its control endpoint) against the expected ones, count by count; Kommo calls by endpoint
and their 429s; note items per POST/PATCH call; the worker's and API's CPU seconds; live lag p50/p99/max per
phase. Floor = ceil(expected notes / 250) / 7 s; the PATCH items, batched as tightly, would add
ceil(items / 250) / 7 s and the tag calls tags / 7 s (shown, not in the verdict's floor).

    .venv/bin/python -m bench.activity [--contacts 20000] [--events 100000] [--live-rate 20] [--baseline 10]

Targets: wall / floor ≤ 1.2; no 429 from Kommo; live p99 during the activity ≤ 1 s; notes exact.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.common import (
    bench_stack,
    machine,
    pct,
    proc_cpu_seconds,
    start_py_spy,
    stop_py_spy,
    use_uvloop,
    verdict,
)
from bench.processes import real_limits
from bench.spec import WatchedLedger, drain_waits, named, sole_holders

KOMMO_RPS = 7
NOTES_PER_CALL = 250
UNI_PER_MIN = 1200
HOOK_CALL = 1000  # events per hook-events call (the control endpoint's cap)
FIRST_CAMPAIGN = 9001
BASE_TIME = datetime(2026, 11, 30, tzinfo=UTC)

# The statuses used and the kind each is (Unisender's vocabulary; independent of app.connectors).
KIND_OF = {
    "ok_delivered": "delivered",
    "ok_read": "opened",
    "ok_link_visited": "clicked",
    "err_mailbox_full": "soft_bounce",
    "err_will_retry": "soft_bounce",
    "err_user_unknown": "hard_bounce",
    "err_domain_inactive": "hard_bounce",
    "ok_fbl": "complained",
}
GROUP_OF = {
    "ok_delivered": "success_pending_group",
    "ok_read": "success_group",
    "ok_link_visited": "success_group",
    "ok_fbl": "spam_group",
}
WRITTEN = frozenset({"opened", "clicked", "soft_bounce", "hard_bounce", "complained"})  # the default kinds

NoteKey = tuple[int, int, str]  # Kommo contact id, campaign id, kind


@dataclass(frozen=True)
class Mix:
    """Per-letter probabilities."""

    delivered: float = 0.4  # a delivery event (skipped by the default kinds)
    opened: float = 0.8  # then 1-3 opens
    clicked: float = 0.35  # of the opened: 1-2 clicks
    soft_bounce: float = 0.01  # instead of all that: 1-2 soft-bounce statuses
    hard_bounce: float = 0.002  # instead of all that: one hard bounce (contacts outside the live pool)
    complaint: float = 0.0005  # of the opened: a spam complaint (contacts outside the live pool)


@dataclass
class Plan:
    """The events to inject, in hook calls, and what they must become."""

    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    events: int = 0
    letters: int = 0
    campaigns: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    notes: dict[NoteKey, int] = field(default_factory=dict)  # expected note → its event count
    stopped: set[int] = field(default_factory=set)  # contacts hard-bounced or complained: one tag call each


def plan_events(
    targets: Sequence[tuple[int, str]], live: set[int], events: int, campaigns: int, seed: int, mix: Mix
) -> Plan:
    """Letters of up to ``campaigns`` campaigns to ``targets`` (campaign by campaign, the contacts shuffled)
    until ``events`` events; the last letter may be cut short (its notes are counted as cut)."""
    rng = random.Random(f"bench-activity:{seed}")
    plan = Plan()
    call: list[dict[str, Any]] = []
    order = list(targets)
    for c in range(campaigns):
        campaign = FIRST_CAMPAIGN + c
        rng.shuffle(order)
        for cid, email in order:
            if plan.events >= events:
                break
            if cid in plan.stopped:
                continue  # the address takes no more mail
            statuses = _letter(rng, mix, stoppable=cid not in live)
            statuses = statuses[: events - plan.events]
            if len(call) + len(statuses) > HOOK_CALL:
                plan.calls.append(call)
                call = []
            for status in statuses:
                kind = KIND_OF[status]
                when = BASE_TIME + timedelta(seconds=plan.events)  # unique: each event its own identity
                data: dict[str, Any] = {
                    "email": email,
                    "status": status,
                    "status_group": GROUP_OF.get(status, "error_group"),
                    "campaign_id": campaign,
                }
                call.append(
                    {
                        "event_name": "email_status",
                        "event_time": f"{when:%Y-%m-%d %H:%M:%S}",
                        "event_data": data,
                    }
                )
                plan.events += 1
                plan.by_kind[kind] += 1
                if kind in WRITTEN:
                    key = (cid, campaign, kind)
                    plan.notes[key] = plan.notes.get(key, 0) + 1
                if kind in ("hard_bounce", "complained"):
                    plan.stopped.add(cid)
            plan.letters += 1
            plan.campaigns = c + 1
        if plan.events >= events:
            break
    if call:
        plan.calls.append(call)
    if plan.events < events:
        raise SystemExit(
            f"only {plan.events} events fit {campaigns} campaigns × {len(targets)} contacts; raise --campaigns"
        )
    return plan


def _letter(rng: random.Random, mix: Mix, *, stoppable: bool) -> list[str]:
    """The statuses one letter reports, in order."""
    r = rng.random()
    if stoppable and r < mix.hard_bounce:
        return [rng.choice(("err_user_unknown", "err_domain_inactive"))]
    if r < mix.hard_bounce + mix.soft_bounce:
        return ["err_mailbox_full"] + (["err_will_retry"] if rng.random() < 0.3 else [])
    out: list[str] = []
    if rng.random() < mix.delivered:
        out.append("ok_delivered")
    if rng.random() < mix.opened:
        out += ["ok_read"] * rng.randint(1, 3)
        if rng.random() < mix.clicked:
            out += ["ok_link_visited"] * rng.randint(1, 2)
        if stoppable and rng.random() < mix.complaint:
            out.append("ok_fbl")
    return out or ["ok_delivered"]


# --- live changes ---------------------------------------------------------------------------------------------


class PhasedLedger(WatchedLedger):
    """A watched ledger that keeps each lag under the phase its change was made in."""

    def __init__(self) -> None:
        super().__init__({})
        self.phase_of: dict[str, str] = {}  # address → phase of the change awaited for it
        self.by_phase: dict[str, list[float]] = {}

    def append(self, entry: Any) -> None:
        seen = len(self.seen)
        phase = self.phase_of.get(entry.get("email") or "")
        super().append(entry)
        if len(self.seen) > seen and phase is not None:
            self.by_phase.setdefault(phase, []).append(self.seen[-1])


def phased_ledger(st: Any, api_key: str) -> PhasedLedger:
    """Swap the account's ledger for a phased one (same entries so far)."""
    uacc = st.unisender_app.state.unisender.accounts[api_key]
    ledger = PhasedLedger()
    ledger.extend(uacc.ledger)
    uacc.ledger = ledger
    return ledger


class NoteCalls:
    """Counts the items of every accepted notes call the Kommo sandbox applies (wraps its note store)."""

    def __init__(self, store: Any) -> None:
        self.posts: list[int] = []  # items per accepted POST
        self.patches: list[int] = []  # items per accepted PATCH
        create, update = store.create, store.update

        def counted_create(*args: Any, **kwargs: Any) -> Any:
            out = create(*args, **kwargs)
            if out[0]:
                self.posts.append(len(out[0]))
            return out

        def counted_update(*args: Any, **kwargs: Any) -> Any:
            out = update(*args, **kwargs)
            if out[0]:
                self.patches.append(len(out[0]))
            return out

        store.create, store.update = counted_create, counted_update


# --- the run ----------------------------------------------------------------------------------------------------


_PREFIXES = (
    ("Opened ", "opened"),
    ("Clicked a link in ", "clicked"),
    ("Soft bounce of ", "soft_bounce"),
    ("Hard bounce of ", "hard_bounce"),
    ("Marked ", "complained"),
)


def _read_note(note: dict[str, Any]) -> tuple[NoteKey, int] | None:
    """(contact, campaign, kind) and the count a note's text shows; None for a text of no known form."""
    text = str((note.get("params") or {}).get("text") or "")
    kind = next((k for prefix, k in _PREFIXES if text.startswith(prefix)), None)
    campaign = re.search(r"(?:“Bench campaign |campaign #)(\d+)", text)
    if kind is None or campaign is None:
        return None
    times = re.search(r"\((\d+) times\)", text)
    return (int(note["entity_id"]), int(campaign.group(1)), kind), int(times.group(1)) if times else 1


def check_notes(notes: list[dict[str, Any]], expected: dict[NoteKey, int]) -> dict[str, int]:
    """Compare the sandbox's notes with the expected ones: missing, extra, duplicate, wrong count, unreadable."""
    got: dict[NoteKey, int] = {}
    out = Counter(missing=0, extra=0, duplicate=0, wrong_count=0, unreadable=0)
    for note in notes:
        read = _read_note(note)
        if read is None:
            out["unreadable"] += 1
            continue
        key, count = read
        if key in got:
            out["duplicate"] += 1
        got[key] = count
    for key, count in expected.items():
        if key not in got:
            out["missing"] += 1
        elif got[key] != count:
            out["wrong_count"] += 1
    out["extra"] = sum(1 for key in got if key not in expected)
    return dict(out)


async def run(
    contacts: int,
    events: int,
    campaigns: int,
    live_rate: float,
    baseline: float,
    within: float,
    inflight: int,
    seed: int,
    stops: float = 1.0,
    profile: str | None = None,
) -> dict[str, Any]:
    from sandbox.kommo import KommoSandboxConfig
    from sandbox.unisender import UnisenderSandboxConfig
    from tests.support.e2e import connect_account, wait_quiet

    kommo_kw, unisender_kw, env = real_limits()
    async with bench_stack(
        kommo_config=KommoSandboxConfig(
            **kommo_kw, webhook_retry_delays=(0.2, 0.5, 1.0), delivery_concurrency=4
        ),
        # A failed hook delivery is retried after 1 s, not Unisender's 10 minutes (failures are reported).
        unisender_config=UnisenderSandboxConfig(**unisender_kw, hook_retry_interval_seconds=1.0),
        extra_env=env,
    ) as bs:
        st = bs.stack
        account = await connect_account(st, contacts=contacts, seed=seed)
        await asyncio.sleep(1.2)  # let the connect's Kommo calls leave Kommo's 1-s window
        t = time.monotonic()
        r = await st.api.post("/sync/contacts", headers=st.admin_headers, json={"id": account.account_id})
        assert r.status_code == 202, r.text
        await wait_quiet(st, account, within=within)
        sync_s = time.monotonic() - t

        kstate = st.kommo_app.state.kommo
        kacc = kstate.accounts[account.subdomain]
        targets = sole_holders(kacc)
        pool_rng = random.Random(f"bench-activity-live:{seed}")
        pool = pool_rng.sample(targets, max(1, min(len(targets), max(100, len(targets) // 10))))
        live = {cid for cid, _ in pool}
        t = time.monotonic()
        base = Mix()
        mix = Mix(hard_bounce=base.hard_bounce * stops, complaint=base.complaint * stops)
        plan = plan_events(targets, live, events, campaigns, seed, mix)
        plan_s = time.monotonic() - t

        conn = await asyncpg.connect(bs.cfg.dsn)
        # The campaigns' names as a refresh would have cached them (the notes read them; an unknown one would
        # be looked up on Unisender once per notes job).
        await conn.executemany(
            "INSERT INTO campaign (account_id, campaign_id, subject, refreshed_at) VALUES ($1, $2, $3, now())",
            [
                (account.account_id, FIRST_CAMPAIGN + c, f"Bench campaign {FIRST_CAMPAIGN + c}")
                for c in range(plan.campaigns)
            ],
        )
        ledger = phased_ledger(st, account.api_key)
        note_calls = NoteCalls(kstate.notes)
        uni_state = st.unisender_app.state.unisender
        hooks = st.unisender_app.state.unisender_hooks
        uni = uni_state.stats
        assert bs.worker_proc is not None
        wpid, apid = bs.worker_proc.pid, bs.api_proc.pid

        phase = "baseline"
        made: Counter[str] = Counter()
        stop = asyncio.Event()

        async def stream() -> None:
            # Renames of the live pool at a steady rate, each awaited as its new name on Unisender.
            n = 0
            start = time.monotonic()
            while not stop.is_set():
                delay = start + n / live_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if stop.is_set():
                        break
                cid, email = pool[(n * 7919) % len(pool)]
                name = f"Live {n}"
                ledger.waiting[email] = (time.monotonic(), named(name))
                ledger.phase_of[email] = phase
                made[phase] += 1
                _, _, errors = kstate.update_contacts(kacc, [{"id": cid, "name": name}])
                assert not errors, errors
                n += 1

        calls0 = uni.calls.get("importContacts", 0)
        limited0 = sum(v for k, v in uni.errors.items() if "limit" in k)
        streamer = asyncio.create_task(stream()) if live_rate > 0 else None
        spy = None
        try:
            await asyncio.sleep(baseline)
            base_imports = uni.calls.get("importContacts", 0) - calls0
            await st.kommo.delete("/_sandbox/stats")
            deliveries0 = len(uni_state.deliveries)
            imports0 = uni.calls.get("importContacts", 0)
            if profile:
                spy = start_py_spy(wpid, profile)  # the worker for the activity phase
                await asyncio.sleep(1.0)
            cpu0 = {"worker": proc_cpu_seconds(wpid), "api": proc_cpu_seconds(apid)}
            phase = "activity"
            db_t0 = await conn.fetchval("SELECT clock_timestamp()")
            t0 = time.monotonic()
            marks: dict[str, float] = {}

            async def inject() -> None:
                for body in plan.calls:
                    while hooks.pending >= inflight:  # noqa: ASYNC110 (the sandbox's own delivery tasks)
                        await asyncio.sleep(0.005)
                    r = await st.unisender.post(
                        f"/_sandbox/accounts/{account.api_key}/hook-events", json={"events": body}
                    )
                    assert r.status_code == 200, r.text
                marks["injected"] = time.monotonic() - t0
                while hooks.pending:  # noqa: ASYNC110 (the sandbox's own delivery tasks)
                    await asyncio.sleep(0.01)
                marks["delivered"] = time.monotonic() - t0

            injector = asyncio.create_task(inject())
            samples: list[tuple[float, int, int]] = []  # (s since the first event, stored, handled)
            while True:
                row = await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM email_activity) AS total,"
                    " (SELECT count(*) FROM email_activity WHERE state = 'pending') AS pending,"
                    " (SELECT count(*) FROM webhook_event WHERE source = 'unisender' AND status = 'pending')"
                    " AS inbox"
                )
                now = time.monotonic() - t0
                samples.append((now, row["total"], row["total"] - row["pending"]))
                if "delivered" in marks and "stored" not in marks and row["total"] >= plan.events:
                    marks["stored"] = now  # every event is an email_activity row
                if "first_note" not in marks and note_calls.posts:
                    marks["first_note"] = now
                if row["total"] >= plan.events and row["pending"] == 0 and row["inbox"] == 0:
                    break
                if injector.done() and injector.exception() is not None:
                    await injector
                if now > within:
                    raise RuntimeError(f"activity not handled within {within} s: {dict(row)}, {marks}")
                await asyncio.sleep(0.1)
            wall = time.monotonic() - t0
            await injector
            cpu = {
                "worker": proc_cpu_seconds(wpid) - cpu0["worker"],
                "api": proc_cpu_seconds(apid) - cpu0["api"],
            }
            stop.set()  # the live stream ends with the activity
            if streamer is not None:
                await streamer
                streamer = None
            activity_imports = uni.calls.get("importContacts", 0) - imports0
            if spy is not None:
                await stop_py_spy(spy)
                spy = None
            kstats_at_done = (await st.kommo.get("/_sandbox/stats")).json()
            # The tag calls of the hard bounces and complaints may still be going: wait for them (bounded).
            tags_deadline = time.monotonic() + 120
            while time.monotonic() < tags_deadline:
                untagged = await conn.fetchval(
                    "SELECT count(*) FROM contact_email WHERE consent <> 'subscribed' AND kommo_tagged_at IS NULL"
                )
                if untagged == 0:
                    break
                await asyncio.sleep(0.2)
            tags_s = time.monotonic() - t0
            states = {
                (r["kind"], r["state"]): r["n"]
                for r in await conn.fetch(
                    "SELECT kind, state, count(*) AS n FROM email_activity GROUP BY 1, 2"
                )
            }
            stopped_db = await conn.fetchval(
                "SELECT count(*) FROM contact_email WHERE consent <> 'subscribed'"
            )
            note_rows = await conn.fetchval("SELECT count(*) FROM activity_note")
            # Where a live change waits: stored by the API → applied by the worker (the rest of its lag is
            # the webhook's way in, before, and the push, after).
            applying = [
                float(r["s"])
                for r in await conn.fetch(
                    "SELECT extract(epoch FROM handled_at - received_at) AS s FROM webhook_event"
                    " WHERE source = 'kommo' AND handled_at IS NOT NULL AND received_at >= $1",
                    db_t0,
                )
            ]
        finally:
            stop.set()
            if streamer is not None:
                await streamer
            if spy is not None:
                await stop_py_spy(spy)
            await conn.close()
        await drain_waits(ledger.waiting, 30)
        kstats = (await st.kommo.get("/_sandbox/stats")).json()
        notes = (await st.kommo.get(f"/_sandbox/accounts/{account.subdomain}/notes")).json()
        hook_attempts = uni_state.deliveries[deliveries0:]
        limited = sum(v for k, v in uni.errors.items() if "limit" in k) - limited0

    failed_hooks = sum(1 for d in hook_attempts if not d["delivered"])
    posts, patches = note_calls.posts, note_calls.patches
    floor_calls = math.ceil(len(plan.notes) / NOTES_PER_CALL)
    floor = floor_calls / KOMMO_RPS
    lags = {p: ledger.by_phase.get(p, []) for p in ("baseline", "activity")}
    superseded = {p: made[p] - len(lags[p]) for p in ("baseline", "activity")}
    return {
        "contacts": contacts,
        "targets": len(targets),
        "live_pool": len(pool),
        "sync_s": sync_s,
        "plan_s": plan_s,
        "plan": plan,
        "hook_calls": len(plan.calls),
        "hook_attempts": len(hook_attempts),
        "failed_hooks": failed_hooks,
        "inflight": inflight,
        "wall": wall,
        "marks": marks,
        "tags_s": tags_s,
        "progress": _progress(samples, plan.events),
        "samples": samples,
        "floor_calls": floor_calls,
        "floor": floor,
        "ratio": wall / floor if floor else float("nan"),
        "kstats_at_done": kstats_at_done,
        "kstats": kstats,
        "posts": posts,
        "patches": patches,
        "notes_in_kommo": len(notes) if isinstance(notes, list) else -1,
        "note_check": check_notes(notes if isinstance(notes, list) else [], plan.notes),
        "note_rows": note_rows,
        "states": states,
        "stopped_db": stopped_db,
        "cpu": cpu,
        "live_rate": live_rate,
        "baseline_s": baseline,
        "made": dict(made),
        "lags": lags,
        "applying": applying,
        "superseded": superseded,
        "missing": len(ledger.waiting),
        "imports": {"baseline": base_imports, "activity": activity_imports},
        "unisender_429": limited,
    }


def _progress(samples: list[tuple[float, int, int]], total: int) -> dict[str, list[float]]:
    """When a quarter, half, three quarters and all of the events were stored, and were handled."""
    out: dict[str, list[float]] = {"stored": [], "handled": []}
    for share in (0.25, 0.5, 0.75, 1.0):
        for i, name in ((1, "stored"), (2, "handled")):
            at = next((s[0] for s in samples if s[i] >= share * total), float("nan"))
            out[name].append(at)
    return out


def _calls(stats: dict[str, Any], endpoint: str) -> tuple[int, int]:
    """(calls, 429s) of one endpoint."""
    return stats["calls"].get(endpoint, 0), stats["responses"].get(f"{endpoint} 429", 0)


def trace(r: dict[str, Any], step: float = 2.0) -> None:
    """Events stored and handled every ``step`` seconds of the activity phase."""
    print(f"{'s':>6} {'stored':>7} {'handled':>7}")
    due = 0.0
    for at, stored, handled in r["samples"]:
        if at >= due:
            print(f"{at:6.1f} {stored:>7} {handled:>7}")
            due = at + step


def report(r: dict[str, Any]) -> None:
    plan: Plan = r["plan"]
    ks, kd = r["kstats"], r["kstats_at_done"]
    post, post429 = _calls(ks, "POST /api/v4/contacts/notes")
    patch, patch429 = _calls(ks, "PATCH /api/v4/contacts/notes")
    tag, tag429 = _calls(ks, "PATCH /api/v4/contacts/{id}")
    posts, patches = r["posts"], r["patches"]
    post_items, patch_items = sum(posts), sum(patches)
    expected = len(plan.notes)
    per_note = (sum(plan.notes.values()) / expected) if expected else float("nan")
    marks = r["marks"]

    def mark(name: str) -> str:
        return f"{marks[name]:.1f} s" if name in marks else "—"

    print(f"# activity → Kommo notes, with live changes — {machine()}")
    print(
        f"{r['contacts']} contacts ({r['targets']} sole holders of their address; live pool {r['live_pool']}), "
        f"full sync {r['sync_s']:.1f} s; plan built in {r['plan_s']:.1f} s"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(plan.by_kind.items()))
    print(
        f"events: {plan.events} in {r['hook_calls']} hook calls ({plan.letters} letters of {plan.campaigns} "
        f"campaigns): {kinds}"
    )
    print(
        f"expected notes: {expected} ({per_note:.2f} events each); contacts stopped (hard bounce or complaint, "
        f"one tag call each): {len(plan.stopped)}"
    )
    print(
        f"{'':<10} | {'wall s':>6} {'floor s':>7} {'ratio':>5} | {'notes':>6} {'expect':>6} | {'POST':>5} "
        f"{'floor':>5} {'/call':>6} | {'PATCH':>5} {'items':>6} | {'tags':>4} | {'429':>4} {'max/1s':>6} | "
        f"{'wrk cpu':>7} {'api cpu':>7} | verdict"
    )
    check = r["note_check"]
    exact = r["notes_in_kommo"] == expected and not any(check.values())
    live_p99 = pct(r["lags"]["activity"], 99)
    k429 = ks["rate_limited"]
    ok = r["ratio"] <= 1.2 and k429 == 0 and exact and live_p99 <= 1.0 and r["missing"] == 0
    print(
        f"{'activity':<10} | {r['wall']:6.1f} {r['floor']:7.2f} {r['ratio']:5.2f} | {r['notes_in_kommo']:>6} "
        f"{expected:>6} | {post:>5} {r['floor_calls']:>5} {post_items / max(1, len(posts)):6.1f} | "
        f"{patch:>5} {patch_items:>6} | {tag:>4} | {k429:>4} {max(ks['max_calls_in_1s'].values(), default=0):>6} | "
        f"{r['cpu']['worker']:7.1f} {r['cpu']['api']:7.1f} | "
        f"{verdict(ok)} (≤ 1.2 floor, no 429, live p99 ≤ 1 s, notes exact)"
    )
    print(
        f"timeline from the first injected event: all injected {mark('injected')}, sandbox delivered "
        f"{mark('delivered')} ({r['hook_attempts']} attempts, {r['failed_hooks']} failed, ≤ {r['inflight']} in "
        f"flight), every event stored {mark('stored')}, first note {mark('first_note')}, all handled "
        f"{r['wall']:.1f} s, tags done {r['tags_s']:.1f} s"
    )
    prog = r["progress"]
    print(
        "events stored at 25/50/75/100 %: "
        + " / ".join(f"{x:.1f}" for x in prog["stored"])
        + " s; handled: "
        + " / ".join(f"{x:.1f}" for x in prog["handled"])
        + " s"
    )
    print(
        f"Kommo calls when all was handled: notes POST {_calls(kd, 'POST /api/v4/contacts/notes')[0]}, PATCH "
        f"{_calls(kd, 'PATCH /api/v4/contacts/notes')[0]}, tags {_calls(kd, 'PATCH /api/v4/contacts/{id}')[0]}; "
        f"at the end: {ks['total_calls']} in all {dict(ks['calls'])}; 429s: notes POST {post429}, PATCH "
        f"{patch429}, tags {tag429}, all {k429}"
    )
    patch_floor = math.ceil(patch_items / NOTES_PER_CALL) / KOMMO_RPS
    tag_floor = tag / KOMMO_RPS
    print(
        f"floor = ceil({expected} / {NOTES_PER_CALL}) = {r['floor_calls']} calls / {KOMMO_RPS} per s = "
        f"{r['floor']:.2f} s; PATCH items batched as tightly would add {patch_floor:.2f} s "
        f"({patch} PATCH calls took {patch / KOMMO_RPS:.2f} s of budget), tag calls {tag_floor:.2f} s: "
        f"all Kommo calls made ({ks['total_calls']}) need ≥ {ks['total_calls'] / KOMMO_RPS:.2f} s "
        f"(wall / that {r['wall'] / max(1e-9, ks['total_calls'] / KOMMO_RPS):.2f})"
    )
    sizes = Counter(min(250, 50 * math.ceil(n / 50)) for n in posts)
    print(
        f"note items per POST: mean {post_items / max(1, len(posts)):.1f}, min {min(posts, default=0)}, "
        f"max {max(posts, default=0)}, by ≤ 50s {dict(sorted(sizes.items()))}; per PATCH: mean "
        f"{patch_items / max(1, len(patches)):.1f}, max {max(patches, default=0)}"
    )
    states = ", ".join(f"{k}/{s} {n}" for (k, s), n in sorted(r["states"].items()))
    print(
        f"email_activity: {states}; activity_note rows {r['note_rows']}; addresses stopped "
        f"{r['stopped_db']} (expected {len(plan.stopped)})"
    )
    print(
        f"notes in the Kommo sandbox: {r['notes_in_kommo']} (expected {expected}); check by contact, campaign, "
        f"kind and count: {r['note_check']}"
    )
    print(
        f"live renames at {r['live_rate']:g}/s — {'phase':<9} | {'changes':>7} {'seen':>5} {'superseded':>10} | "
        f"{'p50 ms':>6} {'p99 ms':>6} {'max ms':>6} | importContacts"
    )
    for p, label in (("baseline", f"{r['baseline_s']:g} s, no activity"), ("activity", "with activity")):
        lags = r["lags"][p]
        print(
            f"  {label:<36} | {r['made'].get(p, 0):>7} {len(lags):>5} {r['superseded'][p]:>10} | "
            f"{pct(lags, 50) * 1000:6.0f} {pct(lags, 99) * 1000:6.0f} {max(lags, default=float('nan')) * 1000:6.0f} | "
            f"{r['imports'][p]}"
        )
    print(
        f"  still awaited 30 s after the end: {r['missing']}; Unisender 429s: {r['unisender_429']} "
        f"(target: activity-phase p99 ≤ 1000 ms: {verdict(live_p99 <= 1.0)})"
    )
    applying = r["applying"]
    print(
        f"  of which Kommo events stored → applied by the worker during the activity: {len(applying)} events, "
        f"p50 {pct(applying, 50) * 1000:.0f} ms, p99 {pct(applying, 99) * 1000:.0f} ms, "
        f"max {max(applying, default=float('nan')) * 1000:.0f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=20000)
    p.add_argument("--events", type=int, default=100000)
    p.add_argument("--campaigns", type=int, default=5, help="campaigns the letters belong to (at most)")
    p.add_argument("--live-rate", type=float, default=20.0, help="renames per second (0: none)")
    p.add_argument("--baseline", type=float, default=10.0, help="seconds of renames before the activity")
    p.add_argument("--within", type=float, default=900.0, help="give up on a stage after this many seconds")
    p.add_argument(
        "--inflight", type=int, default=5, help="hook deliveries in flight (the hook's max_parallel)"
    )
    p.add_argument(
        "--stops", type=float, default=1.0, help="scale the hard-bounce and complaint shares (0: none)"
    )
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--trace", action="store_true", help="also print events stored/handled every 2 s")
    p.add_argument("--profile", help="py-spy raw output file: the worker during the activity phase")
    args = p.parse_args(argv)
    use_uvloop()
    result = asyncio.run(
        run(
            args.contacts,
            args.events,
            args.campaigns,
            args.live_rate,
            args.baseline,
            args.within,
            args.inflight,
            args.seed,
            args.stops,
            args.profile,
        )
    )
    if args.trace:
        trace(result)
    report(result)


if __name__ == "__main__":
    main()
