"""``contactsync sync ACCOUNT [--follow]``: start a full sync as ``POST /sync/contacts`` does (or find the one
already going) and, with ``--follow``, watch it to its end in PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.commands.shared import age, fail, open_database, open_queue, out, reason, service_settings
from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database
from app.db.states import RunStatus
from app.sync.runs_repo import RunView

DEFAULT_TIMEOUT = 3600.0
POLL_SECONDS = 0.5
BAR_WIDTH = 24
BLOCK = 6  # the moving block of the bar: a full sync's total is unknown until Kommo's last page
EXIT_FAILED = 1
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sync",
        help="start a full sync of an account (or find the one running); --follow watches it to its end",
        description="Start a full sync of ACCOUNT, as POST /sync/contacts does: Kommo is paged and every "
        "contact applied, then the contacts Kommo no longer holds are removed. When a full sync is already "
        "running for the account, that one is the run. --follow shows its counters until it ends: exit 0 "
        f"when it is done, {EXIT_FAILED} when it failed (with its error), {EXIT_TIMEOUT} when --timeout "
        f"passed first, {EXIT_INTERRUPTED} on Ctrl-C; in those last two the run goes on (the workers "
        "advance it, not this command). Reads and writes the service's PostgreSQL and Redis "
        "(CONTACTSYNC_DATABASE_URL, CONTACTSYNC_REDIS_URL).",
    )
    p.add_argument("account_id", metavar="ACCOUNT", type=int, help="Kommo account id")
    p.add_argument("--follow", action="store_true", help="show the run's progress until it ends")
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"stop following after this many seconds (default: {DEFAULT_TIMEOUT:.0f})",
    )
    p.set_defaults(func=cmd_sync)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


@dataclass
class _Following:
    run_id: str | None = None


def cmd_sync(args: argparse.Namespace) -> int:
    settings = service_settings(redis=True)
    if settings is None:
        return 2
    following = _Following()
    try:
        return asyncio.run(_sync(settings, args, following))
    except (OSError, SQLAlchemyError, RedisError) as exc:
        fail(f"cannot reach the service's database or Redis: {reason(exc)}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        if following.run_id is None:
            return EXIT_INTERRUPTED
        if sys.stdout.isatty():
            sys.stdout.write("\n")  # off the progress line being redrawn
        out(
            f"stopped following; run {following.run_id} goes on "
            f"(contactsync sync {args.account_id} --follow, or GET /sync/runs/{following.run_id})"
        )
        return EXIT_INTERRUPTED


async def _sync(settings: Settings, args: argparse.Namespace, following: _Following) -> int:
    from app.accounts.integrations import require_account
    from app.errors import AppError
    from app.sync import fullsync

    account_id = args.account_id
    async with open_database(settings) as db, open_queue(settings) as queue:
        try:
            async with db.session_scope() as session:
                integration = await require_account(session, account_id)
                run, created = await fullsync.start_run(session, queue, integration)
                run_id, status = run.id, run.status
        except AppError as exc:
            fail(exc.message)
            return EXIT_FAILED
        if created:
            out(f"full sync of account {account_id} started: run {run_id}")
        else:
            out(f"a full sync of account {account_id} is already {status}: run {run_id}")
        if not args.follow:
            return 0
        following.run_id = run_id
        return await follow(db, run_id, give_up_after=args.timeout, progress=Progress(sys.stdout))


class Progress:
    """Draws a run's state: one line redrawn in place on a terminal, a new line per change elsewhere (a log
    file, a pipe)."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.frame = 0
        self.last: str | None = None

    def show(self, view: RunView) -> None:
        self.frame += 1
        counters = counters_text(view)
        if self.tty:
            self.stream.write(f"\r{bar(view.run.status, self.frame)} {view.run.status:<7}  {counters}\x1b[K")
            self.stream.flush()
            return
        # Elapsed time alone changes every poll: a plain line only when the run itself moved.
        state = f"{view.run.status} {view.run.fetched} {view.run.changed} {view.run.pushed}"
        if state != self.last:
            self.last = state
            self.stream.write(f"run {view.run.id}: {view.run.status}: {counters}\n")
            self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def bar(status: str, frame: int) -> str:
    """Full of ``#`` when done, of ``!`` when failed; a block moving back and forth while the run goes on (its
    total is unknown); empty while it waits for a worker."""
    if status == RunStatus.DONE:
        return "[" + "#" * BAR_WIDTH + "]"
    if status == RunStatus.FAILED:
        return "[" + "!" * BAR_WIDTH + "]"
    if status == RunStatus.PENDING:
        return "[" + " " * BAR_WIDTH + "]"
    span = BAR_WIDTH - BLOCK
    step = frame % (2 * span)
    start = step if step <= span else 2 * span - step
    return "[" + " " * start + "=" * BLOCK + " " * (span - start) + "]"


def elapsed(view: RunView) -> float:
    run = view.run
    start = run.started_at or run.created_at
    return ((run.finished_at or utcnow()) - start).total_seconds()


def counters_text(view: RunView) -> str:
    run = view.run
    return f"fetched {run.fetched}  changed {run.changed}  pushed {run.pushed}  elapsed {age(elapsed(view))}"


async def follow(
    db: Database, run_id: str, *, give_up_after: float, progress: Progress, poll: float = POLL_SECONDS
) -> int:
    """Show the run until it is done (0) or failed (1), or ``give_up_after`` seconds pass (124)."""
    from app.sync import runs_repo

    deadline = time.monotonic() + give_up_after
    while True:
        async with db.session_scope() as session:
            views = await runs_repo.run_views(session, run_id=run_id, failures=0)
        if not views:  # deleted under us: nothing left to follow
            progress.end()
            fail(f"run {run_id} no longer exists")
            return EXIT_FAILED
        view = views[0]
        progress.show(view)
        run = view.run
        if run.status == RunStatus.DONE:
            progress.end()
            out(
                f"run {run_id} done in {age(elapsed(view))}: fetched {run.fetched}, changed {run.changed}, "
                f"pushed {run.pushed}, rejected {view.rejected}, contacts not applied {view.failed}"
            )
            return 0
        if run.status == RunStatus.FAILED:
            progress.end()
            out(f"run {run_id} failed after {age(elapsed(view))}: {run.error or 'no error recorded'}")
            fail(f"full sync failed: {run.error or 'no error recorded'}")
            return EXIT_FAILED
        if time.monotonic() >= deadline:
            progress.end()
            out(
                f"gave up following after {age(give_up_after)}: run {run_id} is still {run.status} and goes on "
                f"(contactsync sync {run.account_id} --follow to watch it again)"
            )
            return EXIT_TIMEOUT
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
