"""``contactsync rotate-keys`` and ``rotate-token``: re-encrypting stored secrets under a new key, and a new
webhook token for an account with its hooks moved to it."""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.cli import _settings, _with_database
from app.config import Settings


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from app.security.rotation import run_rotate_keys

    with _with_database(_settings()) as settings:
        return asyncio.run(
            run_rotate_keys(
                settings, batch_size=args.batch_size, dry_run=args.dry_run, max_batches=args.max_batches
            )
        )


def cmd_rotate_token(args: argparse.Namespace) -> int:
    from app.accounts.rotation import rotate_webhook_token
    from app.context import build_context
    from app.errors import AppError
    from app.logging import configure_logging

    base = _settings()
    configure_logging(fmt=base.effective_log_format, level=base.log_level)  # stderr, redacted

    async def main(settings: Settings) -> int:
        pc = await build_context(settings)
        try:
            out = await rotate_webhook_token(pc, args.account_id)
        except AppError as exc:
            print(f"contactsync: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await pc.close()
        print(out.model_dump_json(indent=2))
        # Running API processes cache token hashes for up to 5 s: the old token may pass there until then.
        return 3 if False in (out.kommo_webhooks_registered, out.unisender_hook_registered) else 0

    with _with_database(base) as settings:
        return asyncio.run(main(settings))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rotate-keys",
        help="re-encrypt every stored secret under the first key of CONTACTSYNC_SECRET_KEYS (safe to re-run)",
    )
    p.add_argument("--dry-run", action="store_true", help="count the values to re-encrypt; write nothing")
    p.add_argument("--batch-size", type=_positive, default=500, help="rows per transaction (default: 500)")
    p.add_argument(
        "--max-batches",
        type=_positive,
        default=None,
        help="stop after this many batches (run again to continue)",
    )
    p.set_defaults(func=cmd_rotate_keys)

    p = sub.add_parser(
        "rotate-token",
        help="issue a new webhook token for an account and re-register Kommo's and Unisender's hooks",
        description="Issue a new webhook token for ACCOUNT: the old one is refused at once here and within 5 s "
        "by running API processes (their token cache); Kommo's webhooks and Unisender's unsubscribe hook are "
        "moved to the new URL. Prints the new webhook URL. Exit 3 when a re-registration failed (see "
        "last_error in GET /accounts/ACCOUNT; Kommo's webhooks are retried by the worker's webhook cron).",
    )
    p.add_argument("account_id", metavar="ACCOUNT", type=int, help="Kommo account id")
    p.set_defaults(func=cmd_rotate_token)
