"""The `kdumpy` command: parses arguments, calls one job, renders its result.

Each command group is one module with `register(subparsers)`; a module imports its job inside the
function that runs it, so that `kdumpy --help` and a capture-kernel start stay cheap.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from kdumpy import __version__
from kdumpy.errors import KdumpyError

__all__ = ["main"]

# Command-group modules, in the order `--help` lists them.
_GROUPS = ("info", "convert", "dump", "analyze", "arm", "lab")
# Which group registers each command: a command line naming one builds only that group's parsers (the
# capture kernel's `kdumpy dump` starts faster). tests/cli checks it against what the groups register.
COMMANDS = {
    "info": "info", "convert": "convert", "rebuild": "convert", "dump": "dump",
    "dmesg": "analyze", "report": "analyze", "shell": "analyze",
    "crashkernel": "arm", "load": "arm", "unload": "arm", "status": "arm", "check": "arm",
    "panic-policy": "arm", "test": "arm", "lab": "lab",
}  # fmt: skip


def add_deflate_option(p: argparse.ArgumentParser) -> None:
    """`--deflate`, the library that writes zlib pages, as `dump` and `convert` take it."""
    from kdumpy.formats.codecs import DEFLATE

    p.add_argument(
        "--deflate",
        choices=DEFLATE,
        default=DEFLATE[0],
        help="what writes zlib pages: libdeflate (default; faster, smaller; libz when it is not "
        "installed) or libz (makedumpfile's bytes exactly)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command`'s group only."""
    parser = argparse.ArgumentParser(
        prog="kdumpy",
        description="The userspace of Linux kdump: read, write, convert and analyse crash dumps.",
    )
    parser.add_argument("--version", action="version", version=f"kdumpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in (COMMANDS[command],) if command in COMMANDS else _GROUPS:
        importlib.import_module(f"kdumpy.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        result: int | None = args.func(args)
    except KdumpyError as e:
        print(f"kdumpy: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("kdumpy: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # `kdumpy ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 1
    except OSError as e:
        # A file that cannot be opened or written: one line, like any other error.
        where = f": {e.filename}" if e.filename else ""
        print(f"kdumpy: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    return result or 0
