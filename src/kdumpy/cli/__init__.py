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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdumpy",
        description="The userspace of Linux kdump: read, write, convert and analyse crash dumps.",
    )
    parser.add_argument("--version", action="version", version=f"kdumpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _GROUPS:
        importlib.import_module(f"kdumpy.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
