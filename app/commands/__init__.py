"""Operator commands of ``contactsync`` beyond running the service: each module here adds its subcommands
through a ``register(sub)`` function listed in ``MODULES``, so ``app.cli`` stays the home of the serving
commands only."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Modules with a ``register(sub)`` adding their subcommands, in the order ``--help`` lists them.
MODULES: tuple[str, ...] = ("rotation", "widget", "accounts", "sync", "status", "dead_letters")

# The subcommands each module adds. A command line that names one imports that module alone, and one naming a
# serving command (``serve``, ``worker``…) none: the modules load the database and queue layers, over a
# second of start-up that a worker, or a command refusing its configuration, has no use for.
COMMANDS: dict[str, str] = {
    "rotate-keys": "rotation",
    "rotate-token": "rotation",
    "widget": "widget",
    "accounts": "accounts",
    "sync": "sync",
    "status": "status",
    "dead-letters": "dead_letters",
}


def register_all(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    argv: Sequence[str] | None = None,
    *,
    own: frozenset[str] = frozenset(),
) -> None:
    """Add the modules' subcommands: all of them, or only those ``argv`` can need when its first argument names
    a command (``own``: the caller's commands, which need none). Help, a missing command or an unknown one get
    all, so that argparse lists every command."""
    first = next(iter(argv), None) if argv is not None else None
    if first in own:
        return
    modules = (COMMANDS[first],) if first in COMMANDS else MODULES
    for name in modules:
        importlib.import_module(f"app.commands.{name}").register(sub)
