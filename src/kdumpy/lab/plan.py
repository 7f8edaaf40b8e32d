"""The plan a guest's /init carries out: shell variables in plan.sh on the output share."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import kdumpy

__all__ = ["kept_paths", "write_plan"]

# The guest mounts its own tmpfs over these in the host root it chroots into.
_GUEST_TMPFS = ("/tmp/", "/run/")


def kept_paths() -> list[str]:
    """Host paths the guest must still see under its tmpfs mounts: the venv and kdumpy's source,
    when the project lives in /tmp or /run (a CI clone in /tmp, say)."""
    wanted = {Path(sys.prefix).absolute(), Path(kdumpy.__file__).resolve().parent}
    return sorted(str(p) for p in wanted if str(p).startswith(_GUEST_TMPFS))


def write_plan(out_dir: Path, values: dict[str, str]) -> None:
    """Write out_dir/plan.sh for /init: `values`, the output share's host path and LAB_KEEP."""
    plan = {"LAB_OUT_HOST": str(out_dir), **values, "LAB_KEEP": " ".join(kept_paths())}
    (out_dir / "plan.sh").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in plan.items()))
