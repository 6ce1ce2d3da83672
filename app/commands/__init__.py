"""Operator commands of ``contactsync`` beyond running the service: each module here adds its subcommands
through a ``register(sub)`` function listed in ``MODULES``, so ``app.cli`` stays the home of the serving
commands only."""

from __future__ import annotations

import argparse
import importlib

# Modules with a ``register(sub)`` adding their subcommands, in the order ``--help`` lists them.
MODULES: tuple[str, ...] = ("rotation", "widget", "accounts", "sync", "status", "dead_letters")


def register_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in MODULES:
        importlib.import_module(f"app.commands.{name}").register(sub)
