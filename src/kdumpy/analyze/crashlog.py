"""What the kernel log says about the crash: the panic line and its class, the CPU and task, the call
trace, the modules line and the taint field.

The kernel prints a crash in a few fixed shapes (kernel/panic.c, arch/x86/kernel/dumpstack.c,
arch/x86/mm/fault.c, kernel/watchdog.c, kernel/hung_task.c, mm/oom_kill.c, arch/x86/kernel/nmi.c,
drivers/tty/sysrq.c). The crash is anchored on the last "Kernel panic - not syncing:" line; when
there is none (an oops with panic_on_oops goes to the capture kernel straight from oops_end(),
before panic() prints anything), on the last oops header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kdumpy.analyze.dmesg import PrintkRecord
from kdumpy.analyze.taint import TaintFlag, parse_tainted_field

__all__ = [
    "CLASSES",
    "CrashLog",
    "Frame",
    "LogLine",
    "log_lines",
    "normalise_function",
    "parse_crash",
]

# The panic classes, with a short description for the report.
CLASSES: dict[str, str] = {
    "sysrq": "crash requested through sysrq (echo c > /proc/sysrq-trigger)",
    "oops": "kernel oops (bad memory access)",
    "bug": "BUG() assertion",
    "warn": "WARN() with panic_on_warn",
    "oom": "out of memory with panic_on_oom",
    "hung_task": "hung task with hung_task_panic",
    "soft_lockup": "soft lockup with softlockup_panic",
    "nmi": "NMI (unknown NMI, hard lockup or hardware error)",
    "other": "other panic",
}


@dataclass(frozen=True)
class LogLine:
    """One line of the log (a record, or one line of a multi-line record)."""

    ts_nsec: int
    """Timestamp of its record."""
    text: str
    """The text, decoded as UTF-8 (bad bytes escaped)."""


@dataclass(frozen=True)
class Frame:
    """One frame of a call trace."""

    function: str
    """Function name as printed ("sysrq_handle_crash", "out_of_memory.cold")."""
    offset: str = ""
    """"+0x16/0x20" as printed, or "" (drgn frames: the pc is in `address`)."""
    module: str | None = None
    """Module name, None for the kernel image."""
    reliable: bool = True
    """False for the "? " frames the unwinder only guessed."""
    address: int | None = None
    """Program counter when known (drgn)."""

    def __str__(self) -> str:
        s = ("? " if not self.reliable else "") + self.function + self.offset
        return s + (f" [{self.module}]" if self.module else "")


@dataclass
class CrashLog:
    """The crash as the log tells it."""

    crash_class: str
    """One of CLASSES."""
    reason: str
    """The panic (or oops) line in one line, as the kernel printed it."""
    panic_line: str | None
    """The reason after "Kernel panic - not syncing: ", None when the kernel printed no panic line."""
    headline: str | None = None
    """The event that started it ("BUG: kernel NULL pointer dereference, address: 0000000000000000",
    "WARNING: CPU: 0 PID: 1 at ...", "watchdog: BUG: soft lockup - ..."), when it is not the panic."""
    null_deref: bool = False
    """The oops is a NULL pointer dereference."""
    cpu: int | None = None
    """CPU the crash ran on ("CPU: N PID: ..." line)."""
    pid: int | None = None
    """Task id of the crashing task."""
    comm: str | None = None
    """Command name of the crashing task."""
    hardware: str | None = None
    """"Hardware name:" line."""
    trace: list[Frame] = field(default_factory=list)
    """Call trace of the crash, innermost first."""
    rip: Frame | None = None
    """The function of the faulting instruction ("RIP: 0010:..."), for oops, BUG, WARN, soft lockup."""
    top_frame: str | None = None
    """The function that identifies the crash (normalised): the RIP function, else the first reliable
    frame after the panic and exception machinery."""
    modules: list[str] | None = None
    """Modules from the "Modules linked in:" line; None when the log has no such line."""
    taints: list[TaintFlag] | None = None
    """Taint flags from the "Tainted:" field; None when the log shows none."""
    blocked_task: str | None = None
    """For a hung task: "comm:pid" of the first task reported blocked."""
    uptime_ns: int | None = None
    """Timestamp of the anchor line (the panic)."""
    anchor: int | None = None
    """Index of the anchor line in the log lines."""
    span: tuple[int, int] | None = None
    """[first, last] line indices that belong to the crash report (for highlighting)."""


def log_lines(records: Sequence[PrintkRecord]) -> list[LogLine]:
    """The records as lines (a record with embedded newlines becomes several)."""
    out = []
    for r in records:
        text = r.text.decode("utf-8", "backslashreplace")
        for part in text.split("\n"):
            out.append(LogLine(r.ts_nsec, part))
    return out


_PANIC = re.compile(r"^Kernel panic - not syncing: ?(.*)$")
_CPU = re.compile(
    r"\bCPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.+?)(?: Kdump: \S+)? (?:Not tainted|Tainted:)"
)
_HARDWARE = re.compile(r"^Hardware name: (.*)$")
_MODULES = re.compile(r"^Modules linked in:(.*)$")
_RIP = re.compile(r"^RIP: [0-9a-f]{4}:(.*)$")
_FRAME = re.compile(
    r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(\? )?([A-Za-z0-9_.$]+)(\+0x[0-9a-f]+/0x[0-9a-f]+)"
    r"(?: \[([A-Za-z0-9_\-]+)[^\]]*\])?\s*$"
)
_MARKER = re.compile(r"^\s*</?(TASK|IRQ|NMI|SOFTIRQ|EOI)>\s*$")
_CALL_TRACE = re.compile(r"^\s*Call Trace:")

_SYSRQ = re.compile(r"(?:sysrq|SysRq) ?: Trigger a crash")
_NULL = re.compile(
    r"BUG: (?:kernel NULL pointer dereference|unable to handle kernel NULL pointer dereference)"
)
_FAULT = re.compile(
    r"BUG: unable to handle (?:page fault|kernel paging request)|general protection fault|"
    r"^Oops: |^invalid opcode: |BUG: kernel NULL pointer"
)
# The line that opens an oops, before its "Oops: ..." line.
_FAULT_FIRST = re.compile(
    r"BUG: (?:kernel NULL pointer dereference|unable to handle)|general protection fault"
)
_BUG_AT = re.compile(r"kernel BUG at ")
_WARN = re.compile(r"^WARNING: CPU: \d+ PID: \d+ at ")
_SOFT = re.compile(r"BUG: soft lockup - CPU#\d+ stuck for")
_HUNG = re.compile(r"INFO: task (.+):(\d+) blocked for more than \d+ seconds")
_OOM = re.compile(r" invoked oom-killer: ")
_NMI = re.compile(
    r"Uhhuh\. NMI received for unknown reason|Watchdog detected hard LOCKUP|"
    r"NMI: (?:PCI system error|IOCK error)"
)

# Frames of the panic, oops and exception machinery: never the one that tells what went wrong.
_MACHINERY = frozenset(
    [
        "dump_stack_lvl",
        "dump_stack",
        "show_stack",
        "show_trace_log_lvl",
        "panic",
        "vpanic",
        "nmi_panic",
        "_printk",
        "printk",
        "vprintk",
        "__warn",
        "warn_slowpath_fmt",
        "report_bug",
        "handle_bug",
        "exc_invalid_op",
        "asm_exc_invalid_op",
        "check_panic_on_warn",
        "die",
        "die_addr",
        "__die",
        "__die_body",
        "oops_end",
        "page_fault_oops",
        "no_context",
        "kernelmode_fixup_or_oops",
        "__bad_area_nosemaphore",
        "bad_area_nosemaphore",
        "do_user_addr_fault",
        "do_kern_addr_fault",
        "exc_page_fault",
        "asm_exc_page_fault",
        "do_trap",
        "do_error_trap",
        "exc_general_protection",
        "asm_exc_general_protection",
        "crash_kexec",
        "__crash_kexec",
        "crash_setup_regs",
        "machine_crash_shutdown",
        "dump_header",
        "watchdog_timer_fn",
        "__hrtimer_run_queues",
        "hrtimer_interrupt",
        "__sysvec_apic_timer_interrupt",
        "sysvec_apic_timer_interrupt",
        "asm_sysvec_apic_timer_interrupt",
    ]
)
# Where a blocked task sleeps: the frames above them say what it waits for.
_SLEEP = frozenset(
    [
        "__schedule",
        "schedule",
        "schedule_timeout",
        "schedule_preempt_disabled",
        "io_schedule",
        "io_schedule_timeout",
        "__wait_for_common",
        "wait_for_completion",
        "wait_for_completion_killable",
        "wait_for_completion_timeout",
        "rwsem_down_read_slowpath",
        "rwsem_down_write_slowpath",
        "down_read",
        "down_write",
        "down_read_killable",
        "percpu_rwsem_wait",
        "__percpu_down_read",
        "percpu_down_read",
        "__mutex_lock",
        "mutex_lock",
        "__mutex_lock_slowpath",
        "mutex_lock_killable",
        "bit_wait_io",
        "out_of_line_wait_on_bit",
        "__wait_on_bit",
        "folio_wait_bit_common",
    ]
)
_SUFFIX = re.compile(r"(?:\.(?:cold|isra|constprop|part|llvm|lto_priv|localalias)(?:\.\d+)*)+$")


def normalise_function(name: str) -> str:
    """A function name without the compiler's clone suffixes (".cold", ".isra.0", ".constprop.0")."""
    return _SUFFIX.sub("", name)


def _parse_frame(text: str) -> Frame | None:
    m = _FRAME.match(text)
    if m is None:
        return None
    return Frame(m.group(2), m.group(3), m.group(4), reliable=m.group(1) is None)


def _trace_after(lines: Sequence[LogLine], start: int, stop: int) -> list[Frame]:
    """The frames of the first "Call Trace:" in lines[start:stop]."""
    for i in range(start, min(stop, len(lines))):
        if _CALL_TRACE.match(lines[i].text):
            frames = []
            for ln in lines[i + 1 :]:
                if _MARKER.match(ln.text):
                    continue
                f = _parse_frame(ln.text)
                if f is None:
                    break
                frames.append(f)
            return frames
    return []


def _first(lines: Sequence[LogLine], pattern: re.Pattern[str], start: int, stop: int) -> int | None:
    for i in range(max(start, 0), min(stop, len(lines))):
        if pattern.search(lines[i].text):
            return i
    return None


def _last(lines: Sequence[LogLine], pattern: re.Pattern[str], start: int, stop: int) -> int | None:
    for i in range(min(stop, len(lines)) - 1, max(start, 0) - 1, -1):
        if pattern.search(lines[i].text):
            return i
    return None


def top_frames(frames: Sequence[Frame], skip: frozenset[str] = _MACHINERY) -> list[Frame]:
    """The reliable frames, from the first one not in `skip` on."""
    out = [f for f in frames if f.reliable]
    i = 0
    while i < len(out) and normalise_function(out[i].function) in skip:
        i += 1
    return out[i:]


# How far before the anchor the start of a crash report may lie, in lines.
_WINDOW = 400


def parse_crash(lines: Sequence[LogLine]) -> CrashLog:
    """Find and classify the crash in the log."""
    n = len(lines)
    anchor = _last(lines, _PANIC, 0, n)
    panic_reason = None
    if anchor is not None:
        m = _PANIC.match(lines[anchor].text)
        assert m is not None
        panic_reason = m.group(1).strip()
    else:
        anchor = _last(lines, re.compile(f"{_FAULT.pattern}|{_BUG_AT.pattern}|{_SOFT.pattern}"), 0, n)
    if anchor is None:
        return CrashLog("other", "no panic or oops message in the log", None)

    lo = max(0, anchor - _WINDOW)
    cls, header = _classify(lines, panic_reason, lo, anchor)
    headline = lines[header].text.strip() if header is not None and header != anchor else None
    # Without a panic line, the line that opened the oops is the reason.
    reason = panic_reason or headline or lines[anchor].text.strip()
    crash = CrashLog(
        cls,
        reason,
        panic_reason,
        uptime_ns=lines[anchor].ts_nsec,
        anchor=anchor,
        headline=headline if panic_reason else None,
    )
    start = header if header is not None else anchor
    if cls == "oops":
        crash.null_deref = _last(lines, _NULL, lo, anchor + 1) is not None

    # The "CPU: N PID: ... Comm:" line and what follows it belong to the event at `start`.
    cpu_at = _first(lines, _CPU, start, n)
    if cpu_at is not None:
        m = _CPU.search(lines[cpu_at].text)
        assert m is not None
        crash.cpu, crash.pid, crash.comm = int(m.group(1)), int(m.group(2)), m.group(3)
        crash.taints = parse_tainted_field(lines[cpu_at].text)
        hw = _first(lines, _HARDWARE, cpu_at, cpu_at + 4)
        if hw is not None:
            crash.hardware = lines[hw].text.split(":", 1)[1].strip()
    mods = _first(lines, _MODULES, start, min(n, start + 120))
    if mods is not None:
        text = lines[mods].text.split(":", 1)[1]
        text = re.sub(r"\[last unloaded:[^\]]*\]", "", text)
        crash.modules = [re.sub(r"\(.*\)$", "", w) for w in text.split()]

    if cls in ("oops", "bug", "warn", "soft_lockup"):
        rip_at = _first(lines, _RIP, start, min(n, start + 80))
        if rip_at is not None:
            crash.rip = _parse_frame(_RIP.match(lines[rip_at].text).group(1))  # type: ignore[union-attr]
    if cls == "hung_task" and header is not None:
        m = _HUNG.search(lines[header].text)
        if m:
            crash.blocked_task = f"{m.group(1)}:{m.group(2)}"
        crash.trace = _trace_after(lines, header, anchor)
        top = top_frames(crash.trace, _MACHINERY | _SLEEP)
    else:
        crash.trace = _trace_after(lines, start, n)
        top = top_frames(crash.trace)
    if crash.rip is not None:
        crash.top_frame = normalise_function(crash.rip.function)
    elif top:
        crash.top_frame = normalise_function(top[0].function)
    end = anchor
    while end + 1 < n and (end + 1 - anchor) < 200 and not lines[end + 1].text.startswith("---[ end"):
        end += 1
    crash.span = (start, end)
    return crash


def _classify(lines: Sequence[LogLine], panic: str | None, lo: int, anchor: int) -> tuple[str, int | None]:
    """The class and the index of the line that started the crash."""
    hi = anchor + 1
    if panic is not None:
        if "sysrq triggered crash" in panic:
            return "sysrq", _last(lines, _SYSRQ, lo, hi)
        if panic.startswith(("Out of memory", "System is deadlocked on memory")):
            return "oom", _last(lines, _OOM, lo, hi)
        if "hung_task: blocked tasks" in panic:
            return "hung_task", _first(lines, _HUNG, _hung_start(lines, lo, anchor), hi)
        if panic.startswith("softlockup"):
            return "soft_lockup", _last(lines, _SOFT, lo, hi)
        if "panic_on_warn set" in panic:
            return "warn", _last(lines, _WARN, lo, hi)
        if "NMI" in panic or "LOCKUP" in panic:
            return "nmi", _last(lines, _NMI, lo, hi)
    bug = _last(lines, _BUG_AT, lo, hi)
    fault = _last(lines, _FAULT, lo, hi)
    if bug is not None and (fault is None or fault >= bug):
        return "bug", bug
    if fault is not None:
        # The first line of this oops: "BUG: kernel NULL pointer ..." comes a few lines before "Oops: ...".
        first = _last(lines, _FAULT_FIRST, fault - 8, fault + 1)
        return "oops", first if first is not None else fault
    if panic is None and _last(lines, _SOFT, lo, hi) is not None:
        return "soft_lockup", _last(lines, _SOFT, lo, hi)
    return "other", None


def _hung_start(lines: Sequence[LogLine], lo: int, anchor: int) -> int:
    """The first "blocked for more than" report of the last batch before the panic."""
    last = _last(lines, _HUNG, lo, anchor)
    if last is None:
        return lo
    first = last
    while True:
        prev = _last(lines, _HUNG, lo, first)
        if prev is None or lines[first].ts_nsec - lines[prev].ts_nsec > 1_000_000_000:
            return first
        first = prev
