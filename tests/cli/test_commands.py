"""The CLI's command -> group map, which lets `kdumpy dump` build only its own parser."""

from __future__ import annotations

import argparse
import importlib

import pytest

from kdumpy import cli


def _registered(group: str) -> set[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"kdumpy.cli.{group}").register(sub)
    return set(sub.choices)


def test_command_map_matches_what_each_group_registers() -> None:
    for group in cli._GROUPS:
        assert {c for c, g in cli.COMMANDS.items() if g == group} == _registered(group)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_a_command_alone_parses_as_within_the_whole_parser(command: str) -> None:
    alone = cli.build_parser(command)
    whole = cli.build_parser()
    sub_alone = next(a for a in alone._actions if isinstance(a, argparse._SubParsersAction))
    sub_whole = next(a for a in whole._actions if isinstance(a, argparse._SubParsersAction))
    assert sub_alone.choices[command].format_usage() == sub_whole.choices[command].format_usage()


def test_unknown_command_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    for command in cli.COMMANDS:
        assert command in err


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_says_usage_once(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = cli.main([command, "--help"])  # `dump` parses its own options, as makedumpfile
    except SystemExit as e:
        rc = e.code  # argparse's --help
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kdumpy {command}") and "usage: usage" not in out
