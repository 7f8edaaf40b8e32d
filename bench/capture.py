"""kdumpy's collector inside a real capture kernel: smallest crashkernel, peak RSS, capture time.

    .venv/bin/python bench/capture.py [--doc docs/collector.md]

Boots Debian's 6.1 (1 GiB guest) in the lab (kdumpy.lab: QEMU, TCG), crashes it with sysrq and runs
the collectors in the capture kernel, each under `/usr/bin/time -v` (GNU time, from the host root
the capture kernel chroots into) and `timeout -s KILL`:

* sweep: at each crashkernel size (default 80M..192M in steps of 16M; idle workload, then the mixed
  workload around the sizes where the idle sweep found each collector's minimum), one boot runs
  `kdumpy dump -l -d 31 /proc/vmcore dump.kdump`, then `makedumpfile -l -d 31 /proc/vmcore dump.mdf`,
  at nr_cpus=1. Each collector's outcome (exit status, killed by a signal, the OOM killer's console
  lines), peak RSS and elapsed time are recorded; when the run itself fails, the failure mode is read
  from the console (kexec load refused, capture kernel not booting, ...). At the largest size the
  same boot also runs a staged probe (bench/capture.py's STAGES script) that prints the peak RSS
  after the interpreter, numpy, kdumpy's modules, opening /proc/vmcore and the -d 31 filtering pass.
* timing: one collector per boot (cold, as a real capture is), --repeat boots each: kdumpy at
  nr_cpus=1, kdumpy --num-threads 2 at nr_cpus=2, makedumpfile at nr_cpus=1 (crashkernel 192M).
* every dump produced is checked on the host: `kdumpy info --json` (release, dump level, complete)
  and `makedumpfile --dump-dmesg` (the log shows "sysrq triggered crash").

Runs are serialized by the lab's QEMU lock (a run waits for another user of QEMU); each run is
bounded by --run-timeout once it holds the lock, each collector by --tool-timeout. Each run's files
(console.log, *.time, *.log, *.rc, meminfo.txt, the dumps) stay in --out-dir/<run>/, and all results
in --out-dir/results.json; `--from-json` re-renders the tables from it without booting anything.
`--doc FILE` writes the tables between the `capture:begin` / `capture:end` markers of FILE.
A full default run is about 20 boots (15-25 minutes under TCG).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from kdumpy.errors import LabError  # noqa: E402
from kdumpy.lab.cache import cache_dir  # noqa: E402
from kdumpy.lab.scenario import Scenario, run_crash  # noqa: E402

BEGIN = "<!-- capture:begin (written by bench/capture.py) -->"
END = "<!-- capture:end -->"
EXPECT = "sysrq triggered crash"

# Run in the capture kernel by the venv's python: peak RSS (KiB, VmHWM) after each stage of what
# `kdumpy dump -l -d 31` does before it writes. No braces: the lab fills {out}/{python} with format.
STAGES = r"""
import sys, time
t0 = time.monotonic()
def stage(name):
    hwm = rss = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    print("STAGE", name.replace(" ", "_"), hwm, rss, round(time.monotonic() - t0, 2), flush=True)
stage("interpreter")
import numpy
stage("numpy")
from kdumpy.collect.dump import DumpJob, run_dump
from kdumpy.collect.pipeline import filter_pages
from kdumpy.memory.dump import open_dump
import kdumpy.collect.output, kdumpy.collect.convert, kdumpy.formats.codecs
stage("kdumpy modules")
dump = open_dump(sys.argv[1])
stage("open /proc/vmcore")
f = filter_pages(dump, 31)
stage("filter -d 31")
"""


@dataclass
class Tool:
    """One collector invocation in the capture kernel."""

    label: str
    """File stem in the run directory: LABEL.time, LABEL.log, LABEL.rc."""
    command: str
    """Shell words; {python} and {out} are filled by the lab."""
    dump: str | None = None
    """Output file name in the run directory, if it writes a dump."""


def kdumpy_tool(label: str = "kdumpy", threads: int = 0) -> Tool:
    extra = f" --num-threads {threads}" if threads else ""
    return Tool(
        label,
        f"{{python}} -m kdumpy dump -l -d 31 --message-level 7{extra} /proc/vmcore {{out}}/{label}.dump",
        f"{label}.dump",
    )


def mdf_tool(label: str = "makedumpfile") -> Tool:
    return Tool(label, f"makedumpfile -l -d 31 /proc/vmcore {{out}}/{label}.dump", f"{label}.dump")


STAGES_TOOL = Tool("stages", "{python} {out}/stages.py /proc/vmcore")


def capture_cmd(tools: list[Tool], tool_timeout: int) -> str:
    """The capture kernel's shell command: meminfo, then each tool under timeout and GNU time; always
    exits 0 (each tool's status is in LABEL.rc)."""
    steps = ["cat /proc/meminfo > {out}/meminfo.txt"]
    for t in tools:
        steps.append(
            f"timeout -s KILL {tool_timeout} /usr/bin/time -v -o {{out}}/{t.label}.time "
            f"{t.command} > {{out}}/{t.label}.log 2>&1; echo $? > {{out}}/{t.label}.rc"
        )
    steps.append("cat /proc/meminfo > {out}/meminfo.after.txt; true")
    return "; ".join(steps)


@dataclass
class ToolResult:
    label: str
    rc: int | None = None
    maxrss_kib: int | None = None
    elapsed_s: float | None = None
    signal: int | None = None
    ok: bool = False
    outcome: str = ""
    dump_bytes: int | None = None
    info: dict[str, object] = field(default_factory=dict)
    dmesg_shows_panic: bool | None = None
    user_s: float | None = None
    sys_s: float | None = None


@dataclass
class RunResult:
    name: str
    kind: str
    workload: str
    crashkernel: str
    cpus: int
    out: str
    started: str = ""
    seconds: float = 0.0
    error: str | None = None
    failure: str | None = None
    """The failure mode of the run itself (load, capture kernel boot), from the console."""
    mem_total_kib: int | None = None
    mem_available_kib: int | None = None
    oom_lines: list[str] = field(default_factory=list)
    tools: list[ToolResult] = field(default_factory=list)
    stages: list[tuple[str, int, int, float]] = field(default_factory=list)


def _console_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [re.sub(r"^\[\s*[\d.]+\] ", "", ln) for ln in text.splitlines()]


OOM_RE = re.compile(r"invoked oom-killer|Out of memory|oom-kill:|Killed process|page allocation failure")


def _failure_mode(lines: list[str], error: str) -> str:
    """Why a run failed before or while the capture kernel ran, in a few words from the console."""
    lines = [re.sub(r"^\[\s*[\d.]+\]\s*", "", ln) for ln in lines]  # the guest kernel's timestamps
    text = "\n".join(lines)
    if "capture kernel up" not in text:
        if "KDUMPY-LAB: armed" not in text:
            why = next((ln.strip() for ln in lines if "kexec" in ln.lower() and "rror" in ln), "")
            why = why or next(
                (ln.strip() for ln in lines if "crashkernel" in ln.lower() and "fail" in ln.lower()), ""
            )
            return f"capture kernel not loaded: {why or error}"
        panic = next((ln.strip() for ln in reversed(lines) if "Kernel panic" in ln), None)
        oom = [ln for ln in lines if OOM_RE.search(ln)]
        if panic:
            return f"capture kernel did not boot: {panic}" + (" (OOM)" if oom else "")
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "(no output)")
        return f"capture kernel did not reach /init: last line {last!r}"
    if "capture done" not in text:
        panic = next((ln.strip() for ln in reversed(lines) if "Kernel panic" in ln), None)
        return f"capture kernel died during the capture: {panic or error}"
    return error


def _parse_time(path: Path) -> tuple[int | None, float | None, int | None]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, None, None
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    sig = re.search(r"Command terminated by signal (\d+)", text)
    elapsed = None
    if el:
        elapsed = int(el.group(1) or 0) * 3600 + int(el.group(2)) * 60 + float(el.group(3))
    return (int(rss.group(1)) if rss else None, elapsed, int(sig.group(1)) if sig else None)


def _cpu_times(path: Path) -> tuple[float | None, float | None]:
    """User and system seconds from GNU time's output."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, None
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    return (float(user.group(1)) if user else None, float(system.group(1)) if system else None)


def _meminfo(path: Path, key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", path.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _check_dump(path: Path, tr: ToolResult) -> None:
    """kdumpy info --json and makedumpfile --dump-dmesg on the host."""
    tr.dump_bytes = path.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-m", "kdumpy", "info", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 0:
        info = json.loads(proc.stdout)[0]
        tr.info = {k: info.get(k) for k in ("release", "dump_level", "complete", "codec", "pages")}
    else:
        tr.info = {"error": (proc.stderr or proc.stdout).strip()[-300:]}
    dmesg = path.with_suffix(".dmesg.txt")
    dmesg.unlink(missing_ok=True)
    proc = subprocess.run(
        ["makedumpfile", "--dump-dmesg", str(path), str(dmesg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    tr.dmesg_shows_panic = proc.returncode == 0 and EXPECT in dmesg.read_text(errors="replace")


def run_one(
    kind: str, name: str, sc: Scenario, tools: list[Tool], out_root: Path, cache: Path, run_timeout: float
) -> RunResult:
    out = out_root / name
    if out.exists():
        for p in out.iterdir():
            if p.is_file():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if any(t.label == "stages" for t in tools):
        (out / "stages.py").write_text(STAGES)
    rr = RunResult(name, kind, sc.workload, sc.crashkernel, sc.capture_cpus, str(out))
    rr.started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"[{rr.started}] {name}: crashkernel={sc.crashkernel} nr_cpus={sc.capture_cpus} "
        f"workload={sc.workload}: {', '.join(t.label for t in tools)}",
        flush=True,
    )
    t0 = time.monotonic()
    try:
        run_crash(sc, out, cache, timeout=run_timeout)
    except LabError as e:
        rr.error = str(e)
    rr.seconds = round(time.monotonic() - t0, 1)
    lines = _console_lines(out / "console.log")
    rr.oom_lines = [re.sub(r"^\[\s*[\d.]+\]\s*", "", ln.strip()) for ln in lines if OOM_RE.search(ln)][:12]
    m = next((re.search(r"capture MemTotal: (\d+) kB", ln) for ln in lines if "capture MemTotal" in ln), None)
    rr.mem_total_kib = int(m.group(1)) if m else None
    rr.mem_available_kib = _meminfo(out / "meminfo.txt", "MemAvailable")
    if rr.error is not None:
        rr.failure = _failure_mode(lines, rr.error)
    for t in tools:
        tr = ToolResult(t.label)
        try:
            tr.rc = int((out / f"{t.label}.rc").read_text().strip())
        except (OSError, ValueError):
            tr.rc = None
        tr.maxrss_kib, tr.elapsed_s, tr.signal = _parse_time(out / f"{t.label}.time")
        tr.user_s, tr.sys_s = _cpu_times(out / f"{t.label}.time")
        dump = out / t.dump if t.dump else None
        if tr.rc is None:
            tr.outcome = rr.failure or "did not run"
        elif tr.rc == 137 and tr.signal is None and tr.elapsed_s is None:
            tr.outcome = "timed out (killed by timeout)"
        elif tr.rc == 0:
            tr.ok = True
            tr.outcome = "ok"
        else:
            killed = f"killed by signal {tr.signal}" if tr.signal else f"exit {tr.rc}"
            log = (out / f"{t.label}.log").read_text(errors="replace").strip().splitlines()
            last = log[-1].strip() if log else ""
            oom = any(
                t.label in ln or "python" in ln or "makedumpfile" in ln
                for ln in rr.oom_lines
                if "Killed process" in ln
            )
            tr.outcome = (
                killed
                + (" (OOM killer)" if oom and tr.signal == 9 else "")
                + (f": {last[:120]}" if last and not tr.signal else "")
            )
        if t.label == "stages":
            try:
                for ln in (out / "stages.log").read_text().splitlines():
                    w = ln.split()
                    if w and w[0] == "STAGE":
                        rr.stages.append((w[1].replace("_", " "), int(w[2]), int(w[3]), float(w[4])))
            except OSError:
                pass
        if tr.ok and dump is not None and dump.exists():
            _check_dump(dump, tr)
            if not (tr.info.get("dump_level") == 31 and tr.info.get("complete") and tr.dmesg_shows_panic):
                tr.ok = False
                tr.outcome = f"dump not readable as expected: {tr.info} dmesg={tr.dmesg_shows_panic}"
        elif tr.ok and dump is not None:
            tr.ok = False
            tr.outcome = "exit 0 but no dump"
        rr.tools.append(tr)
    for tr in rr.tools:
        bits = [tr.outcome]
        if tr.maxrss_kib:
            bits.append(f"peak RSS {tr.maxrss_kib / 1024:.1f} MiB")
        if tr.elapsed_s is not None:
            bits.append(f"{tr.elapsed_s:.2f} s")
        print(f"    {tr.label}: {', '.join(bits)}", flush=True)
    if rr.failure:
        print(f"    run: {rr.failure}", flush=True)
    return rr


def _mb(n: int) -> str:
    return f"{n}M"


def sweep(
    workload: str,
    sizes: list[int],
    args: argparse.Namespace,
    cache: Path,
    out_root: Path,
    results: list[RunResult],
) -> None:
    for ck in sizes:
        tools = [kdumpy_tool(), mdf_tool()]
        if workload == "idle" and ck == max(args.sizes):
            tools.append(STAGES_TOOL)
        sc = Scenario(
            kernel=args.kernel,
            trigger="sysrq",
            workload=workload,
            ram="1G",
            crashkernel=_mb(ck),
            capture_cpus=1,
            capture_cmd=capture_cmd(tools, args.tool_timeout),
        )
        results.append(
            run_one("sweep", f"sweep-{workload}-{ck}M", sc, tools, out_root, cache, args.run_timeout)
        )
        save(results, out_root)


def minimum(results: list[RunResult], workload: str, label: str) -> int | None:
    """Smallest size from which on every larger size tried also succeeded."""
    runs = sorted(
        (int(r.crashkernel[:-1]), r) for r in results if r.kind == "sweep" and r.workload == workload
    )
    best = None
    for ck, r in reversed(runs):
        tr = next((t for t in r.tools if t.label == label), None)
        if tr is None or not tr.ok:
            break
        best = ck
    return best


TIMING_CASES: dict[str, tuple[int, Callable[[], Tool]]] = {
    # name: (nr_cpus, tool)
    "kdumpy-1": (1, lambda: kdumpy_tool("kdumpy")),
    "kdumpy-t2-2": (2, lambda: kdumpy_tool("kdumpy-t2", threads=2)),
    "makedumpfile-1": (1, lambda: mdf_tool()),
    "kdumpy-2": (2, lambda: kdumpy_tool("kdumpy")),
    "makedumpfile-2": (2, lambda: mdf_tool()),
}


def timing(args: argparse.Namespace, cache: Path, out_root: Path, results: list[RunResult]) -> None:
    for rep in range(1, args.repeat + 1):
        for case in args.timing_cases:
            cpus, make = TIMING_CASES[case]
            tool = make()
            sc = Scenario(
                kernel=args.kernel,
                trigger="sysrq",
                workload="idle",
                ram="1G",
                crashkernel=args.timing_crashkernel,
                capture_cpus=cpus,
                capture_cmd=capture_cmd([tool], args.tool_timeout),
            )
            name = f"time-{case}-{rep}"
            results.append(run_one("timing", name, sc, [tool], out_root, cache, args.run_timeout))
            save(results, out_root)


def save(results: list[RunResult], out_root: Path) -> None:
    (out_root / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")


def load(path: Path) -> list[RunResult]:
    runs = []
    for d in json.loads(path.read_text()):
        d["tools"] = [ToolResult(**t) for t in d["tools"]]
        for t in d["tools"]:
            if t.user_s is None:
                t.user_s, t.sys_s = _cpu_times(Path(d["out"]) / f"{t.label}.time")
        d["stages"] = [tuple(s) for s in d["stages"]]
        runs.append(RunResult(**d))
    return runs


def _plain(line: str) -> str:
    """A console line without the guest kernel's timestamp."""
    return re.sub(r"\[\s*\d+\.\d+\]\s*", "", line.strip())


def _cell(tr: ToolResult | None) -> str:
    if tr is None:
        return "–"
    if tr.ok:
        return f"ok, {tr.maxrss_kib / 1024:.1f} MiB, {tr.elapsed_s:.1f} s" if tr.maxrss_kib else "ok"
    s = _plain(tr.outcome)
    if tr.maxrss_kib:
        s += f" (peak {tr.maxrss_kib / 1024:.1f} MiB)"
    return s.replace("|", "/")


def render(results: list[RunResult], meta: dict[str, str]) -> str:
    out: list[str] = []
    out.append(
        f"Run on {meta.get('date', '?')} by `.venv/bin/python bench/capture.py`: "
        f"Debian {meta.get('kernel', '?')} "
        f"({meta.get('release', '?')}), 1 GiB guest, sysrq crash, TCG, kdumpy at {meta.get('commit', '?')}."
        " Each cell: outcome, peak RSS (GNU time's maximum resident set size), elapsed time."
    )
    out.append("")
    sweep_runs = [r for r in results if r.kind == "sweep"]
    if sweep_runs:
        out.append(
            "| workload | crashkernel | capture MemTotal | MemAvailable before | "
            "`kdumpy dump -l -d 31` | `makedumpfile -l -d 31` |"
        )
        out.append("|---|---|---|---|---|---|")
        for r in sorted(sweep_runs, key=lambda r: (r.workload != "idle", int(r.crashkernel[:-1]))):
            k = next((t for t in r.tools if t.label == "kdumpy"), None)
            m = next((t for t in r.tools if t.label == "makedumpfile"), None)
            mt = f"{r.mem_total_kib / 1024:.0f} MiB" if r.mem_total_kib else "–"
            ma = f"{r.mem_available_kib / 1024:.0f} MiB" if r.mem_available_kib else "–"
            if r.failure and (k is None or k.rc is None):
                why = _plain(r.failure).replace("|", "/")
                out.append(f"| {r.workload} | {r.crashkernel} | {mt} | {ma} | {why} | same |")
            else:
                out.append(f"| {r.workload} | {r.crashkernel} | {mt} | {ma} | {_cell(k)} | {_cell(m)} |")
        out.append("")
        for w in ("idle", "mix"):
            if not any(r.workload == w for r in sweep_runs):
                continue
            parts = []
            for label in ("kdumpy", "makedumpfile"):
                ck = minimum(results, w, label)
                rss = [
                    t.maxrss_kib
                    for r in sweep_runs
                    if r.workload == w
                    for t in r.tools
                    if t.label == label and t.ok and t.maxrss_kib
                ]
                lo, hi = (f"{min(rss) / 1024:.1f}", f"{max(rss) / 1024:.1f}") if rss else ("", "")
                span = f" (peak RSS {lo if lo == hi else f'{lo}-{hi}'} MiB where it worked)" if rss else ""
                parts.append(f"{label} {f'{ck}M' if ck else 'none of the sizes tried'}{span}")
            out.append(f"* Smallest crashkernel ({w}): " + "; ".join(parts) + ".")
        for r in sorted(sweep_runs, key=lambda r: (r.workload != "idle", int(r.crashkernel[:-1]))):
            pick = next((ln for ln in r.oom_lines if "Killed process" in ln), None) or next(
                (ln for ln in r.oom_lines if "Out of memory" in ln or "invoked oom-killer" in ln), None
            )
            if pick:
                out.append(f"* OOM at {r.crashkernel} ({r.workload}): `{_plain(pick)[:160]}`")
        out.append("")
    stage_runs = [r for r in results if r.stages]
    for r in stage_runs[:1]:
        out.append(
            f"Where kdumpy's memory goes, in the capture kernel at crashkernel={r.crashkernel} "
            "(peak RSS after each stage of the dump, before writing; VmHWM / VmRSS):"
        )
        out.append("")
        out.append("| stage | peak RSS | RSS now | seconds since start |")
        out.append("|---|---|---|---|")
        for name, hwm, now, secs in r.stages:
            out.append(f"| {name} | {hwm / 1024:.1f} MiB | {now / 1024:.1f} MiB | {secs:.2f} |")
        full = next((t for t in r.tools if t.label == "kdumpy"), None)
        if full and full.maxrss_kib:
            out.append(
                f"| whole `kdumpy dump -l -d 31` (same boot) | {full.maxrss_kib / 1024:.1f} MiB | | "
                f"{full.elapsed_s:.2f} |"
            )
        mdf = next((t for t in r.tools if t.label == "makedumpfile"), None)
        if mdf and mdf.maxrss_kib:
            out.append(
                f"| whole `makedumpfile -l -d 31` (same boot) | {mdf.maxrss_kib / 1024:.1f} MiB | | "
                f"{mdf.elapsed_s:.2f} |"
            )
        out.append("")
    timing_runs = [r for r in results if r.kind == "timing"]
    if timing_runs:
        out.append(
            f"Capture time, one collector per boot (cold), crashkernel={timing_runs[0].crashkernel}, idle:"
        )
        out.append("")
        out.append(
            "| collector | nr_cpus | elapsed per run (user + system CPU) | peak RSS | dump size | readable |"
        )
        out.append("|---|---|---|---|---|---|")
        groups: dict[tuple[str, int], list[ToolResult]] = {}
        for r in timing_runs:
            for t in r.tools:
                groups.setdefault((t.label, r.cpus), []).append(t)
        names = {
            "kdumpy": "`kdumpy dump -l -d 31`",
            "kdumpy-t2": "`kdumpy dump -l -d 31 --num-threads 2`",
            "makedumpfile": "`makedumpfile -l -d 31`",
        }
        order = ["kdumpy", "kdumpy-t2", "makedumpfile"]
        for (label, cpus), trs in sorted(
            groups.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else 9, kv[0][1])
        ):
            el = ", ".join(
                (
                    f"{t.elapsed_s:.1f} s"
                    + (f" ({t.user_s:.1f} + {t.sys_s:.1f})" if t.user_s is not None else "")
                )
                if t.ok and t.elapsed_s is not None
                else t.outcome
                for t in trs
            )
            peaks = ", ".join(sorted({f"{t.maxrss_kib / 1024:.1f}" for t in trs if t.maxrss_kib})) + " MiB"
            size = ", ".join(f"{t.dump_bytes / 2**20:.1f}" for t in trs if t.dump_bytes) + " MiB"
            readable = "yes" if all(t.ok for t in trs) else "no"
            out.append(f"| {names.get(label, label)} | {cpus} | {el} | {peaks} | {size} | {readable} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_doc(doc: Path, table: str) -> None:
    text = doc.read_text()
    block = f"{BEGIN}\n{table}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + (("\n" + tail) if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n## Capture kernel\n\n" + block
    doc.write_text(text)


def _meta(args: argparse.Namespace, cache: Path) -> dict[str, str]:
    meta = {"date": time.strftime("%Y-%m-%d"), "kernel": args.kernel}
    try:
        from kdumpy.lab import assets

        meta["release"] = assets.kernel(args.kernel, cache).release
    except Exception:
        pass
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        meta["commit"] = head + ("+uncommitted src changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument(
        "--sizes",
        default="80,96,112,128,144,160,176,192",
        help="crashkernel sizes in MiB for the idle sweep (default %(default)s)",
    )
    ap.add_argument(
        "--mix-sizes",
        default="auto",
        help="sizes for the mixed-workload sweep: 'auto' (each idle minimum and one step "
        "below), a list, or 'none'",
    )
    ap.add_argument("--repeat", type=int, default=2, help="boots per timing case (default 2)")
    ap.add_argument("--timing-crashkernel", default="192M")
    ap.add_argument(
        "--timing-cases",
        default="kdumpy-1,kdumpy-t2-2,makedumpfile-1",
        help=f"comma list of {', '.join(TIMING_CASES)} (default %(default)s)",
    )
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--run-timeout", type=float, default=480, help="seconds per boot, once QEMU is ours")
    ap.add_argument("--tool-timeout", type=int, default=300, help="seconds per collector in the guest")
    ap.add_argument("--out-dir", help="default <lab cache>/runs/capture")
    ap.add_argument("--cache", help="lab cache (default $KDUMPY_LAB_CACHE or ~/.cache/kdumpy/lab)")
    ap.add_argument("--doc", help="write the tables between the capture markers of this file")
    ap.add_argument(
        "--from-json",
        action="append",
        help="render the tables from a results.json (repeatable: merged), booting nothing",
    )
    args = ap.parse_args()
    args.sizes = sorted(int(s.rstrip("Mm")) for s in args.sizes.split(","))
    args.timing_cases = [c for c in args.timing_cases.split(",") if c]
    for c in args.timing_cases:
        if c not in TIMING_CASES:
            ap.error(f"unknown timing case {c!r}")
    cache = cache_dir(args.cache)
    out_root = Path(args.out_dir or cache / "runs" / "capture").resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = [r for f in args.from_json for r in load(Path(f))]
        meta_path = Path(args.from_json[0]).with_name("meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    else:
        meta = _meta(args, cache)
        (out_root / "meta.json").write_text(json.dumps(meta) + "\n")
        results = []
        t0 = time.monotonic()
        if not args.skip_sweep:
            sweep("idle", args.sizes, args, cache, out_root, results)
            if args.mix_sizes == "auto":
                mins = {
                    m
                    for m in (minimum(results, "idle", "kdumpy"), minimum(results, "idle", "makedumpfile"))
                    if m
                }
                mix = sorted({s for m in mins for s in (m - 16, m) if s >= min(args.sizes)})
            elif args.mix_sizes == "none":
                mix = []
            else:
                mix = sorted(int(s.rstrip("Mm")) for s in args.mix_sizes.split(","))
            sweep("mix", mix, args, cache, out_root, results)
        if not args.skip_timing:
            timing(args, cache, out_root, results)
        print(f"{len(results)} boots in {time.monotonic() - t0:.0f} s; results in {out_root}/results.json")
    table = render(results, meta)
    print()
    print(table)
    if args.doc:
        write_doc(Path(args.doc), table)
        print(f"written into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
