"""drgn, when it is installed (`pip install 'kdumpy[drgn]'`): the crashed thread's stack, the module
list and the taint mask with a debug vmlinux, and an interactive shell on any dump.

drgn reads ELF vmcores itself and kdump-compressed files through libkdumpfile; kdumpy only hands it
the path. Everything here imports drgn lazily, so kdumpy works without it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdumpy.analyze.crashlog import Frame
from kdumpy.errors import DumpError, UnsupportedError, UsageError

__all__ = ["DrgnFacts", "available", "crash_facts", "require", "shell", "shell_argv"]

_INSTALL = "drgn is not installed: pip install 'kdumpy[drgn]'"


def available() -> bool:
    """Whether drgn can be imported."""
    return importlib.util.find_spec("drgn") is not None


def require() -> None:
    """Raise UnsupportedError with the install hint when drgn is missing."""
    if not available():
        raise UnsupportedError(_INSTALL)


@dataclass
class DrgnFacts:
    """What drgn adds to the report."""

    trace: list[Frame] = field(default_factory=list)
    """Stack trace of the crashed thread, innermost first (inline frames included)."""
    thread: str | None = None
    """"comm (tid)" of the crashed thread."""
    modules: list[str] | None = None
    """Names of the loaded modules."""
    tainted_mask: int | None = None
    """The kernel's tainted_mask."""
    errors: list[str] = field(default_factory=list)
    """What drgn could not do, one line each."""


def _check_paths(dump: str, vmlinux: str) -> None:
    if not Path(vmlinux).is_file():
        raise UsageError(f"--vmlinux {vmlinux}: no such file")
    if not Path(dump).is_file():
        raise UsageError(f"{dump}: no such file")


def _program(dump: str, vmlinux: str) -> Any:
    import drgn

    prog = drgn.Program()
    try:
        prog.set_core_dump(dump)
    except Exception as e:  # drgn raises OSError, ValueError or its own errors
        raise DumpError(f"drgn cannot open {dump}: {e}") from e
    try:
        prog.load_debug_info([vmlinux])
    except drgn.MissingDebugInfoError as e:
        # Missing module debug info is expected; the kernel's own must be there.
        if "vmlinux" in str(e).split("\n")[0] or "kernel" in str(e).split("\n")[0]:
            raise UsageError(f"drgn found no usable debug info in {vmlinux}: {e}") from e
    return prog


def crash_facts(dump: str, vmlinux: str) -> DrgnFacts:
    """The crashed thread's stack trace, the modules and the taint mask, read by drgn."""
    require()
    _check_paths(dump, vmlinux)
    prog = _program(dump, vmlinux)
    facts = DrgnFacts()
    try:
        thread = prog.crashed_thread()
        name = getattr(thread, "name", None)
        facts.thread = f"{name} ({thread.tid})" if name else str(thread.tid)
        for f in thread.stack_trace():
            fname = f.name
            if fname is None:
                fname = f"{f.pc:#x}"
            facts.trace.append(Frame(fname, "", None, True, int(f.pc)))
    except Exception as e:  # the trace is best effort: report why it failed
        facts.errors.append(f"stack trace of the crashed thread: {e}")
    try:
        from drgn.helpers.linux.module import for_each_module

        facts.modules = [m.name.string_().decode() for m in for_each_module(prog)]
    except Exception as e:
        facts.errors.append(f"module list: {e}")
    try:
        facts.tainted_mask = int(prog["tainted_mask"].value_())
    except Exception as e:
        facts.errors.append(f"tainted_mask: {e}")
    return facts


def shell_argv(dumps: Sequence[str], vmlinux: str) -> list[str]:
    """The command line of `drgn -c DUMP -s VMLINUX`, run by this interpreter."""
    if len(dumps) != 1:
        raise UsageError(
            "drgn opens one dump file: reassemble a --split set first (makedumpfile --reassemble)"
        )
    _check_paths(dumps[0], vmlinux)
    return [sys.executable, "-m", "drgn", "-c", dumps[0], "-s", vmlinux]


def shell(dumps: Sequence[str], vmlinux: str) -> None:
    """Replace this process with drgn's interactive shell on the dump."""
    require()
    argv = shell_argv(dumps, vmlinux)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
