"""``contactsync dead-letters ACCOUNT [--kind K] [--replay|--discard] [--all | --id ID ...]``: list an account's
dead letters as a table, or replay or discard them (``app.deadletters``), printing the counts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from app.commands.shared import (
    clip,
    fail,
    open_database,
    open_queue,
    out,
    service_settings,
    short_time,
    table,
)
from app.config import Settings
from app.db.base import utcnow
from app.deadletters.schemas import ActionResult, DeadLetter, Selection

EXIT_REFUSED = 1
MAX_ROUNDS = 1000  # --all: requests of up to service.MAX_ALL rows each


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from app.deadletters import service

    p = sub.add_parser(
        "dead-letters",
        help="list an account's dead letters, or replay or discard them",
        description="Without --replay or --discard: a page of ACCOUNT's dead letters (webhook events, outbox "
        "rows, CRM writes and signups that failed for good), newest first, with why, the provider's answer and "
        "the attempts. --replay puts the chosen ones back on their normal path (a worker picks them up; one "
        "that fails again is listed again with its new reason); --discard stops listing them. Choose them with "
        "--id (e.g. outbox:123, or 123 with --kind) or --all (with --kind: that kind only); rows no longer dead "
        "are skipped, so running it twice is harmless. Each replay or discard is recorded with --actor (GET "
        "/accounts/ACCOUNT/dead-letters/actions). Reads and writes the service's PostgreSQL and Redis "
        f"(CONTACTSYNC_DATABASE_URL, CONTACTSYNC_REDIS_URL). Exit {EXIT_REFUSED} when the request is refused "
        "(unknown account, kind or id): nothing is changed then.",
    )
    p.add_argument("account_id", metavar="ACCOUNT", type=int, help="Kommo account id")
    p.add_argument("--kind", choices=service.KINDS, help="only this kind of dead letter")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--replay", action="store_true", help="replay the chosen dead letters")
    act.add_argument("--discard", action="store_true", help="discard the chosen dead letters")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every dead letter (of --kind)")
    which.add_argument(
        "--id",
        dest="ids",
        metavar="ID",
        nargs="+",
        action="extend",
        default=[],
        help="a dead letter's id, e.g. outbox:123 (repeatable)",
    )
    p.add_argument("--page", type=_positive, default=1, help="listing: page number (default: 1)")
    p.add_argument(
        "--per-page",
        type=_positive,
        default=service.PER_PAGE,
        help=f"listing: rows per page (default: {service.PER_PAGE}, at most {service.MAX_PER_PAGE})",
    )
    p.add_argument("--actor", default="cli", help="who is recorded as acting (default: cli)")
    p.set_defaults(func=cmd_dead_letters)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_dead_letters(args: argparse.Namespace) -> int:
    acting = args.replay or args.discard
    if acting and not (args.all or args.ids):
        fail("--replay and --discard need --all or --id ID")
        return 2
    if not acting and (args.all or args.ids):
        fail("--all and --id choose what --replay or --discard acts on; without them the command lists")
        return 2
    settings = service_settings(redis=bool(args.replay))
    if settings is None:
        return 2
    try:
        return asyncio.run(_act(settings, args) if acting else _list(settings, args))
    except KeyboardInterrupt:
        return 130


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    from app.deadletters import service
    from app.errors import AppError

    async with open_database(settings) as db:
        try:
            async with db.session_scope() as session:
                page = await service.list_page(
                    session, args.account_id, kind=args.kind, page=args.page, per_page=args.per_page
                )
        except AppError as exc:
            fail(exc.message)
            return EXIT_REFUSED
    per_kind = ", ".join(f"{k} {n}" for k, n in page.counts.items())
    if not page.total:
        out(f"no dead letters{f' of kind {args.kind}' if args.kind else ''} for account {args.account_id}")
        return 0
    if page.items:
        for line in table(
            ("ID", "STATUS", "FAILED AT", "TRIES", "SUBJECT", "REASON"), [_row(i) for i in page.items]
        ):
            out(line)
    else:
        out(f"page {page.page} is past the end")
    out(f"page {page.page} of {page.pages}: {page.total} dead letters ({per_kind})")
    return 0


def _row(letter: DeadLetter) -> tuple[str, str, str, str, str, str]:
    subject = (
        letter.email or (f"contact {letter.kommo_id}" if letter.kommo_id else "") or letter.detail or "-"
    )
    if letter.email and letter.detail:
        subject = f"{letter.email} ({letter.detail})"
    answer = " ".join(x for x in (f"[{letter.code}]" if letter.code else None, letter.error) if x)
    reason = f"{letter.reason}: {answer}" if answer else letter.reason
    attempts = "-" if letter.attempts is None else str(letter.attempts)
    return (letter.id, letter.status, short_time(letter.at), attempts, clip(subject, 40), clip(reason, 80))


async def _act(settings: Settings, args: argparse.Namespace) -> int:
    from app.deadletters import service
    from app.errors import AppError

    selection = Selection.everything(args.kind) if args.all else Selection.of_ids(args.ids, args.kind)
    verb = "replayed" if args.replay else "discarded"
    # --all takes the rows that were dead when the command started: one that fails again meanwhile is not
    # taken back by a later round.
    started = utcnow()
    results: list[ActionResult] = []
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_database(settings))
        queue = await stack.enter_async_context(open_queue(settings)) if args.replay else None
        for _ in range(MAX_ROUNDS):
            try:
                async with db.session_scope() as session:
                    if queue is not None:
                        result = await service.replay(
                            session, queue, args.account_id, selection, actor=args.actor, before=started
                        )
                    else:
                        result = await service.discard(
                            session, args.account_id, selection, actor=args.actor, before=started
                        )
            except AppError as exc:
                fail(exc.message)
                return EXIT_REFUSED
            results.append(result)
            if not result.more:
                break
    affected = sum(r.affected for r in results)
    skipped = sum(r.skipped for r in results)
    out(f"{verb} {affected}, skipped {skipped} (no longer dead) for account {args.account_id}")
    per_kind: dict[str, tuple[int, int]] = {}
    for r in results:
        for kind, c in r.by_kind.items():
            a, s = per_kind.get(kind, (0, 0))
            per_kind[kind] = (a + c.affected, s + c.skipped)
    for kind, (a, s) in per_kind.items():
        out(f"  {kind}: {verb} {a}, skipped {s}")
    out(f"recorded as action {', '.join(str(r.action_id) for r in results)} by {args.actor}")
    return 0
