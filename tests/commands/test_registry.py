"""The command line loads only what the command it runs needs: ``COMMANDS`` names, for every operator
subcommand, the module that adds it, and a serving command loads none of those modules."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from app.cli import build_parser
from app.commands import COMMANDS, MODULES


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("no subcommands")


def test_the_table_names_exactly_the_commands_each_module_adds() -> None:
    for name in MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"app.commands.{name}").register(sub)
        added = _choices(parser)
        assert added, name
        assert {command: COMMANDS.get(command) for command in added} == dict.fromkeys(added, name)
    assert set(COMMANDS.values()) == set(MODULES)


@pytest.mark.parametrize("argv", [[], ["--help"], ["no-such-command"]])
def test_help_and_unknown_commands_see_every_command(argv: list[str]) -> None:
    assert set(COMMANDS) < _choices(build_parser(argv))


def test_a_command_line_gets_its_own_command_and_parses_as_with_all() -> None:
    serving = _choices(build_parser(["worker"]))
    assert serving
    assert not serving & set(COMMANDS)
    for command, argv in (
        ("status", ["status", "--json"]),
        ("dead-letters", ["dead-letters", "42", "--all"]),
    ):
        alone = build_parser(argv)
        assert _choices(alone) - serving == {command}
        assert vars(alone.parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_a_serving_command_loads_no_operator_command_module() -> None:
    code = (
        "import sys; from app.cli import build_parser; args = build_parser(['worker']).parse_args(['worker']); "
        "print(args.command, sorted(m for m in sys.modules if m.startswith('app.commands.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["worker", "[]"]
