"""What a captured dump says about its crash, read with Debian's makedumpfile (kdumpy's own dmesg
reader takes over when it lands)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from kdumpy.lab.cache import run

__all__ = ["dump_dmesg", "panic_lines", "shows"]

# Lines that tell why and where the kernel died.
_PANIC = re.compile(
    r"Kernel panic|BUG:|kernel BUG at|WARNING:|Oops:|soft lockup|hung_task|blocked for more than|NMI|"
    r"Out of memory|invoked oom-killer|panic_on|sysrq|RIP:|Call Trace:"
)
# Lines that start the story of a crash.
_EVENT = re.compile(
    r"sysrq: Trigger|BUG:|kernel BUG at|WARNING:|Oops|soft lockup|INFO: task|hung_task|invoked oom-killer|"
    r"Out of memory|NMI received|Uhhuh. NMI|Kernel panic"
)


def dump_dmesg(dump: Path) -> str:
    """The crashed kernel's log, as `makedumpfile --dump-dmesg` extracts it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dmesg.txt"
        run(["makedumpfile", "--dump-dmesg", dump, out], what="makedumpfile --dump-dmesg", timeout=300)
        return out.read_text(errors="replace")


def panic_lines(log: str, limit: int = 40) -> list[str]:
    """The lines about the crash: from the event that led to the panic (an oops, a warning, a
    watchdog report, the sysrq line, ...) on, those that match, plus each call trace."""
    lines = log.splitlines()
    panic = next((i for i, ln in enumerate(lines) if "Kernel panic - not syncing" in ln), len(lines) - 1)
    # The event is printed shortly before the panic line; earlier matches are boot noise.
    window = range(max(0, panic - 200), panic + 1)
    start = next((i for i in window if _EVENT.search(lines[i])), max(0, panic))
    out: list[str] = []
    in_trace = False
    for line in lines[start:]:
        if _PANIC.search(line):
            out.append(line)
            in_trace = "Call Trace:" in line
        elif in_trace and re.search(r"\]\s+(\S+\+0x|<|\?)", line):
            out.append(line)
        else:
            in_trace = False
        if len(out) >= limit:
            break
    return out


def shows(log: str, expected: tuple[str, ...]) -> str | None:
    """The first of the expected phrases that the log contains, or None."""
    return next((e for e in expected if e in log), None)
