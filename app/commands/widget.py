"""``contactsync widget build``: the Kommo widget archive, calling this service at its public URL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Kommo's upload form expects this name; the builder (and FastAPI with it) loads only when the command runs.
ARCHIVE_NAME = "widget.zip"


def cmd_widget_build(args: argparse.Namespace) -> int:
    from app.widget.build import InvalidWidgetUrl, write_widget

    url: str | None = args.url
    if url is None:
        from app.cli import _settings

        # Only the public URL is read, but from the same configuration the service runs with.
        url = _settings().public_url
    try:
        size = write_widget(args.out, url)
    except InvalidWidgetUrl as exc:
        sys.stderr.write(f"contactsync: {exc.message}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"contactsync: cannot write {args.out}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write(f"{args.out}: Kommo widget ({size} bytes) calling {url.strip().rstrip('/')}\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    widget = sub.add_parser("widget", help="the Kommo widget where account owners paste their Unisender key")
    actions = widget.add_subparsers(dest="widget_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "build",
        help="write the widget archive to upload in the Kommo integration's settings",
        description="Write the Kommo widget archive (manifest, script, texts in English and Russian, logos). "
        "The script calls this service at --url (default: CONTACTSYNC_PUBLIC_URL), which must be https "
        "(or http on loopback, for trying it locally). Upload the file in the integration's settings in "
        f"Kommo, under the name {ARCHIVE_NAME}.",
    )
    p.add_argument(
        "--out", type=Path, default=Path(ARCHIVE_NAME), help=f"file to write (default: {ARCHIVE_NAME})"
    )
    p.add_argument("--url", default=None, help="the service's URL as Kommo's pages reach it")
    p.set_defaults(func=cmd_widget_build)
