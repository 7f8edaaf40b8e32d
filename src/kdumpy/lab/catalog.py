"""`kdumpy lab catalog`: every trigger on every lab kernel, each judged from the captured dump's own
log, with timings; the table goes into docs/lab.md between two marker lines.

Captures are deleted once read (about 0.5 GB each); the log, console and timings are kept.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdumpy.errors import KdumpyError
from kdumpy.lab import assets
from kdumpy.lab.report import dump_dmesg, shows
from kdumpy.lab.scenario import TRIGGERS, Scenario, run_crash

__all__ = ["BEGIN", "END", "Outcome", "catalog", "table", "update_doc"]

BEGIN = "<!-- catalog:begin (written by `kdumpy lab catalog`) -->"
END = "<!-- catalog:end -->"


@dataclass
class Outcome:
    """One trigger on one kernel."""

    kernel: str
    release: str
    trigger: str
    ok: bool
    evidence: str
    """The phrase found in the dump's log, or why the run failed."""
    timings: dict[str, float]
    total: float


def _one(sc: Scenario, cache: Path, out: Path, accel: str, progress: Callable[[str], None]) -> Outcome:
    t0 = time.monotonic()
    release = assets.kernel(sc.kernel, cache).release
    try:
        result = run_crash(sc, out, cache, accel=accel, timeout=900, progress=progress)
        assert result.vmcore is not None
        log = dump_dmesg(result.vmcore)
        (out / "dmesg.txt").write_text(log)
        result.vmcore.unlink()
        found = shows(log, TRIGGERS[sc.trigger].expect)
        ok = found is not None
        evidence = found if ok else f"not in the dump's log: {' / '.join(TRIGGERS[sc.trigger].expect)}"
        timings = result.timings
    except KdumpyError as e:
        ok, evidence, timings = False, str(e), {}
    total = round(time.monotonic() - t0, 1)
    return Outcome(sc.kernel, release, sc.trigger, ok, evidence or "", timings, total)


def catalog(
    cache: Path,
    *,
    kernels: Sequence[str] = tuple(assets.SERIES),
    triggers: Sequence[str] = tuple(TRIGGERS),
    ram: str = "512M",
    accel: str = "auto",
    progress: Callable[[str], None] = print,
) -> list[Outcome]:
    """Run each trigger on each kernel, one guest at a time."""
    outcomes = []
    root = cache / "catalog"
    for kernel in kernels:
        for trigger in triggers:
            out = root / f"{kernel}-{trigger}"
            shutil.rmtree(out, ignore_errors=True)
            progress(f"== {kernel} {trigger}")
            o = _one(
                Scenario(kernel=kernel, trigger=trigger, ram=ram),
                cache,
                out,
                accel,
                lambda m: progress("   " + m),
            )
            progress(f"   {'OK' if o.ok else 'FAILED'} in {o.total:.0f}s: {o.evidence}")
            outcomes.append(o)
            (root / "results.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=1) + "\n")
    return outcomes


def table(outcomes: Sequence[Outcome], ram: str, accel: str) -> str:
    """A markdown table: one row per kernel and trigger, seconds since QEMU started."""
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {ram} guest RAM, crashkernel=128M, accelerator {accel}; "
        'seconds since QEMU started. "capture up" is the capture kernel\'s /init, "saved" the end of '
        "dd of /proc/vmcore; the verdict comes from `makedumpfile --dump-dmesg` on the capture.",
        "",
        "| kernel | trigger | result | evidence in the dump's log "
        "| armed | triggered | capture up | saved | total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        t = o.timings

        def cell(name: str, t: dict[str, float] = t) -> str:
            return f"{t[name]:.0f}" if name in t else "–"

        evidence = re.sub(r"\s+", " ", o.evidence).replace("|", "\\|")[:120]
        lines.append(
            f"| {o.release} | {o.trigger} | {'captured' if o.ok else '**failed**'} | {evidence} | "
            f"{cell('armed')} | {cell('triggered')} | {cell('capture kernel up')} | {cell('capture done')} | "
            f"{o.total:.0f} |"
        )
    return "\n".join(lines) + "\n"


def update_doc(doc: Path, text: str) -> None:
    """Replace what lies between BEGIN and END in `doc` (appending both if absent)."""
    current = doc.read_text() if doc.exists() else ""
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        current = head + block + tail
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(current)
