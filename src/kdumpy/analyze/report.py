"""The triage report: what killed the machine, where, and a signature to tell whether it was seen before.

Without a vmlinux everything comes from VMCOREINFO, the ELF notes (NT_PRSTATUS) and the kernel log.
With one, drgn adds the crashed thread's stack trace (inline frames included), the module list and
`tainted_mask`. The signature is always taken from the log's trace when the log has one, so a report
made with and without a vmlinux groups the same way.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdumpy.analyze.composition import Composition, PageClassifier, composition
from kdumpy.analyze.crashlog import CLASSES, CrashLog, Frame, log_lines, parse_crash
from kdumpy.analyze.dmesg import KernelLog, read_log
from kdumpy.analyze.signature import Signature, signature
from kdumpy.analyze.taint import TaintFlag, decode_mask
from kdumpy.errors import AddressError, KdumpyError, PageError, VmcoreinfoError
from kdumpy.formats.notes import PrStatus
from kdumpy.memory.dump import Dump, open_dump
from kdumpy.memory.kernel import Kernel

__all__ = ["KernelFacts", "Registers", "Report", "make_report", "render_text", "report_json"]


@dataclass
class KernelFacts:
    """The crashed kernel's identity."""

    release: str | None
    """uname -r."""
    version: str | None = None
    """uname -v: the build ("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)")."""
    machine: str | None = None
    """uname -m."""
    nodename: str | None = None
    """Host name."""
    build_id: str | None = None
    """GNU build id of vmlinux (VMCOREINFO BUILD-ID): the key to find its debug info."""


@dataclass
class Registers:
    """The crashing CPU's registers from its NT_PRSTATUS note."""

    note_index: int
    """Which CPU note (in note order)."""
    pid: int
    """pr_pid: the task running on that CPU."""
    values: dict[str, int]
    """Register name to value."""
    how: str
    """How the note was matched to the crashing CPU."""


@dataclass
class Report:
    """Everything `kdumpy report` says."""

    paths: list[str]
    """The dump file(s)."""
    format: str
    """Dump format name."""
    incomplete: bool
    """The dump was cut short."""
    kernel: KernelFacts
    """Release, build, machine."""
    crash_time: int | None
    """CRASHTIME (seconds since the epoch), when VMCOREINFO has it."""
    uptime_ns: int | None
    """Time since boot at the crash (the panic line's timestamp)."""
    crash: CrashLog
    """The crash as the log tells it."""
    signature: Signature
    """The grouping signature."""
    trace: list[Frame]
    """The call trace shown: drgn's with a vmlinux, else the log's."""
    trace_source: str
    """"drgn", "log" or "none"."""
    modules: list[str] | None
    """Loaded modules where known."""
    modules_source: str
    """"drgn", "log (Modules linked in)" or "unknown"."""
    taints: list[TaintFlag] | None
    """Taint flags where known."""
    taints_source: str
    """"tainted_mask (VMCOREINFO)", "tainted_mask (drgn)", "log (Tainted: field)" or "unknown"."""
    registers: Registers | None
    """The crashing CPU's registers."""
    cpus: int
    """Number of CPU notes."""
    memory: Composition
    """Pages by category."""
    log: KernelLog | None
    """The kernel log (None when it could not be read)."""
    notes: list[str] = field(default_factory=list)
    """What is missing, and what a vmlinux would add."""


def _kernel_facts(kernel: Kernel | None, dump: Dump, notes: list[str]) -> KernelFacts:
    info = dump.vmcoreinfo
    facts = KernelFacts(info.osrelease if info else None, build_id=info.build_id if info else None)
    if kernel is not None:
        try:
            uts = kernel.utsname()
            facts.release = uts.release or facts.release
            facts.version, facts.machine, facts.nodename = uts.version, uts.machine, uts.nodename
        except (KdumpyError, ValueError) as e:
            notes.append(f"utsname not readable ({e}): release from VMCOREINFO only")
    return facts


def _registers(cpus: Sequence[PrStatus], crash: CrashLog) -> Registers | None:
    if not cpus:
        return None
    if crash.pid:
        hits = [i for i, c in enumerate(cpus) if c.pid == crash.pid]
        if len(hits) == 1:
            i = hits[0]
            return Registers(i, cpus[i].pid, cpus[i].registers, f"the note whose pid is {crash.pid}")
    if crash.cpu is not None and crash.cpu < len(cpus):
        c = cpus[crash.cpu]
        return Registers(crash.cpu, c.pid, c.registers, f"note {crash.cpu} (notes follow CPU numbers)")
    if len(cpus) == 1:
        return Registers(0, cpus[0].pid, cpus[0].registers, "the only CPU note")
    return None


def make_report(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    vmlinux: str | None = None,
    classifier: PageClassifier | None = None,
) -> Report:
    """Build the report for a dump (one file or a split set)."""
    plist = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    notes: list[str] = []
    with open_dump(plist if len(plist) > 1 else plist[0]) as dump:
        kernel: Kernel | None = None
        try:
            kernel = Kernel(dump)
        except KdumpyError as e:
            notes.append(f"kernel memory not readable: {e}")
        log: KernelLog | None = None
        if kernel is not None:
            try:
                log = read_log(kernel)
                notes.extend(f"log: {m}" for m in log.missing)
            except (VmcoreinfoError, AddressError, PageError) as e:
                notes.append(f"kernel log not readable: {e}")
        lines = log_lines(log.records) if log is not None else []
        if log is not None and log.raw is not None:
            from kdumpy.analyze.crashlog import LogLine

            lines = [LogLine(0, t) for t in log.raw.decode("utf-8", "backslashreplace").splitlines()]
        crash = parse_crash(lines)
        if log is None:
            crash.reason = "unknown: the kernel log could not be read"
        facts = _kernel_facts(kernel, dump, notes)
        info = dump.vmcoreinfo
        uptime = crash.uptime_ns
        if uptime is None and log is not None and log.records:
            uptime = log.records[-1].ts_nsec
        taints, taints_source = (
            crash.taints,
            "log (Tainted: field)" if crash.taints is not None else "unknown",
        )
        # tainted_mask is exported by no kernel today; read it when one does.
        mask_addr = info.symbol("tainted_mask") if info else None
        if kernel is not None and mask_addr is not None:
            try:
                taints, taints_source = decode_mask(kernel.read_u64(mask_addr)), "tainted_mask (VMCOREINFO)"
            except KdumpyError as e:
                notes.append(f"tainted_mask not readable: {e}")
        report = Report(
            paths=plist,
            format=dump.format,
            incomplete=dump.incomplete,
            kernel=facts,
            crash_time=info.crashtime if info else None,
            uptime_ns=uptime,
            crash=crash,
            signature=signature(crash),
            trace=crash.trace,
            trace_source="log" if crash.trace else "none",
            modules=crash.modules,
            modules_source="log (Modules linked in)" if crash.modules is not None else "unknown",
            taints=taints,
            taints_source=taints_source,
            registers=_registers(dump.cpus, crash),
            cpus=len(dump.cpus),
            memory=composition(dump, classifier),
            log=log,
            notes=notes,
        )
    if dump.incomplete:
        notes.append("the dump is incomplete: pages past the cut were never written")
    if vmlinux is not None:
        _add_drgn(report, plist, vmlinux)
    else:
        notes.append(
            "with --vmlinux (the debug vmlinux of this build"
            + (f", build id {facts.build_id}" if facts.build_id else "")
            + "), drgn adds the crashed thread's full stack trace with inline frames, the loaded modules "
            "and tainted_mask; `kdumpy shell DUMP --vmlinux PATH` opens drgn for anything deeper"
        )
    return report


def _add_drgn(report: Report, paths: list[str], vmlinux: str) -> None:
    from kdumpy.analyze import drgn as drgn_facts

    if len(paths) != 1:
        report.notes.append("drgn reads one file: no drgn facts for a split set")
        return
    facts = drgn_facts.crash_facts(paths[0], vmlinux)
    report.notes.extend(f"drgn: {e}" for e in facts.errors)
    if facts.trace:
        report.trace, report.trace_source = facts.trace, "drgn"
        if not report.crash.trace:
            report.signature = signature(report.crash, facts.trace)
    if facts.modules is not None:
        report.modules, report.modules_source = facts.modules, "drgn"
    if facts.tainted_mask is not None:
        report.taints, report.taints_source = decode_mask(facts.tainted_mask), "tainted_mask (drgn)"


# -- rendering --


def _iso(t: int | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else None


def _uptime(ns: int | None) -> str | None:
    if ns is None:
        return None
    s = ns / 1e9
    if s < 120:
        return f"{s:.3f} s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{sec:02d}"


def _human(pages: int, page_size: int) -> str:
    n = float(pages * page_size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


_REG_ORDER = [
    "rip",
    "rsp",
    "rbp",
    "eflags",
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "orig_rax",
    "cs",
    "ss",
    "ds",
    "es",
    "fs",
    "gs",
    "fs_base",
    "gs_base",
]


def registers_lines(regs: Registers) -> list[str]:
    names = [r for r in _REG_ORDER if r in regs.values] + sorted(set(regs.values) - set(_REG_ORDER))
    cells = [f"{n.upper():>8} {regs.values[n]:016x}" for n in names]
    return ["".join(cells[i : i + 3]) for i in range(0, len(cells), 3)]


def summary(report: Report) -> list[tuple[str, str]]:
    """(label, value) rows of the report's summary, shared by text and HTML."""
    k, c = report.kernel, report.crash
    rows = [
        ("Dump", f"{' '.join(report.paths)} ({report.format}{', incomplete' if report.incomplete else ''})"),
        ("Kernel", " ".join(x for x in (k.release, k.version, k.machine) if x) or "unknown"),
    ]
    if k.nodename:
        rows.append(("Host", k.nodename))
    when = _iso(report.crash_time)
    up = _uptime(report.uptime_ns)
    rows.append(("Crashed", ", ".join(x for x in (when, f"uptime {up}" if up else None) if x) or "unknown"))
    rows.append(("Panic", c.reason))
    if c.headline:
        rows.append(("Started by", c.headline))
    cls = f"{c.crash_class} ({CLASSES[c.crash_class]})"
    if c.null_deref:
        cls += ", NULL pointer dereference"
    rows.append(("Class", cls))
    if c.cpu is not None or c.pid is not None:
        rows.append(("Task", f"CPU {c.cpu}, PID {c.pid} ({c.comm})"))
    if c.blocked_task:
        rows.append(("Blocked task", c.blocked_task))
    rows.append(("Top frame", c.top_frame or "unknown"))
    rows.append(("Signature", f"{report.signature.id}  {report.signature.text}"))
    if report.taints is None:
        taint = "unknown (no Tainted: field in the log)"
    elif not report.taints:
        taint = "not tainted"
    else:
        taint = ", ".join(f"{t.letter} {t.name}" for t in report.taints)
    rows.append(("Taints", f"{taint}  [{report.taints_source}]" if report.taints is not None else taint))
    if report.modules is None:
        rows.append(("Modules", "unknown (the log names none; --vmlinux lists them)"))
    else:
        rows.append(("Modules", f"{' '.join(report.modules) or '(none)'}  [{report.modules_source}]"))
    total = report.memory.total
    mem = ", ".join(
        f"{name} {n} ({100 * n / total:.1f}%)" for name, n in report.memory.categories.items() if total
    )
    rows.append(("Memory", f"{total} pages ({_human(total, report.memory.page_size)}): {mem}"))
    return rows


def render_text(report: Report) -> str:
    rows = summary(report)
    width = max(len(label) for label, _ in rows)
    out = [f"{label:<{width}}  {value}" for label, value in rows]
    out.append("")
    out.append(f"Call trace ({report.trace_source}):")
    if report.crash.rip is not None:
        out.append(f"  RIP {report.crash.rip}")
    out += [f"  {f}" + (f"  ({f.address:#x})" if f.address is not None else "") for f in report.trace]
    if not report.trace:
        out.append("  (none found)")
    if report.registers is not None:
        r = report.registers
        out.append("")
        out.append(f"Registers (CPU note {r.note_index}, pid {r.pid}; {r.how}):")
        out += [f"  {line}" for line in registers_lines(r)]
    if report.notes:
        out.append("")
        out.append("Notes:")
        out += [f"  - {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def report_json(report: Report) -> dict[str, Any]:
    c = report.crash
    return {
        "dump": {"paths": report.paths, "format": report.format, "incomplete": report.incomplete},
        "kernel": vars(report.kernel),
        "crash_time": report.crash_time,
        "crash_time_iso": _iso(report.crash_time),
        "uptime_ns": report.uptime_ns,
        "panic": {
            "class": c.crash_class,
            "class_description": CLASSES[c.crash_class],
            "reason": c.reason,
            "panic_line": c.panic_line,
            "headline": c.headline,
            "null_deref": c.null_deref,
            "cpu": c.cpu,
            "pid": c.pid,
            "comm": c.comm,
            "hardware": c.hardware,
            "blocked_task": c.blocked_task,
            "top_frame": c.top_frame,
            "rip": str(c.rip) if c.rip else None,
        },
        "signature": {
            "id": report.signature.id,
            "text": report.signature.text,
            "frames": list(report.signature.frames),
        },
        "trace": {
            "source": report.trace_source,
            "frames": [
                {
                    "function": f.function,
                    "offset": f.offset or None,
                    "module": f.module,
                    "reliable": f.reliable,
                    "address": f.address,
                }
                for f in report.trace
            ],
        },
        "taints": None
        if report.taints is None
        else {
            "source": report.taints_source,
            "flags": [{"letter": t.letter, "name": t.name, "bit": t.bit} for t in report.taints],
        },
        "modules": None
        if report.modules is None
        else {"source": report.modules_source, "names": report.modules},
        "registers": None
        if report.registers is None
        else {
            "note_index": report.registers.note_index,
            "pid": report.registers.pid,
            "matched_by": report.registers.how,
            "values": {k: f"{v:#018x}" for k, v in report.registers.values.items()},
        },
        "cpus": report.cpus,
        "memory": {
            "page_size": report.memory.page_size,
            "source": report.memory.source,
            "note": report.memory.note,
            "pages": report.memory.categories,
        },
        "log": None
        if report.log is None
        else {
            "layout": report.log.layout,
            "records": len(report.log.records),
            "complete": report.log.complete,
        },
        "notes": report.notes,
    }
