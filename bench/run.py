"""Benchmark of `kdumpy dump` against makedumpfile, the codec floor and a plain read.

    .venv/bin/python bench/run.py [VMCORE] [--repeat N] [--quick] [--threads 0,1,2] [--cases dump,convert]
                                  [--convert-threads 1] [--out-dir DIR] [--src DIR]

VMCORE defaults to the lab's largest mixed-workload vmcore (see docs/performance.md for making a
4 GiB one). Every run is a fresh process; wall time is the best of --repeat runs (the page cache is
warmed first, so both tools read from memory), peak RSS is that process's ru_maxrss (os.wait4), CPU
is its user + system time in that best run.
Cases: -d 31 and -d 1 with lzo and zlib against Debian's makedumpfile (no --num-threads, its best);
kdumpy's zlib pages by libdeflate (its default) and, in the "zlib libz" rows, by libz as makedumpfile's;
kdumpy with --num-threads 0 (its default: one thread does everything, as makedumpfile's default), 1
and 2 (compression threads beside the main thread, which reads and writes); zstd and snappy against
the codec floor (the same pages compressed by the same library, one thread, in one process, reading
excluded); an upstream makedumpfile is added when $MAKEDUMPFILE_UPSTREAM names one.
The convert case (`--cases convert`): `kdumpy convert VMCORE OUT --format kdump --codec lzo|zlib` (no
filtering, --threads per --convert-threads) against `makedumpfile -d 0 -l|-c` on the same file, and
`kdumpy dump -d 0` with the same codec beside it (the collector's batch path, for comparison).

Both tools write to --out-dir (default /dev/shm, a tmpfs), so the figures are the tools' own work and
not the disk's: kdumpy fsyncs its dump before renaming it, makedumpfile does not sync (kdump's scripts
sync after it). kdumpy runs as installed, from byte-compiled modules: the children get a private
PYTHONPYCACHEPREFIX, warmed by one untimed run, even when PYTHONDONTWRITEBYTECODE is set here.
--src runs another kdumpy source tree (e.g. `git archive HEAD` unpacked) for before/after figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = Path(sys.executable)
KDUMPY = [str(PY), "-m", "kdumpy"]
CODEC_OPT = {"lzo": "-l", "zlib": "-c", "zstd": "-z", "snappy": "-p"}

# The codec floor: every page kdumpy would compress, compressed once more by the same library in one
# thread (the C library through ctypes, one call per page into a reused buffer), reading excluded.
# The pages are read in batches first and compressed from memory, as one pass.
_FLOOR = r"""
import sys, time
import numpy as np
from kdumpy.memory.dump import open_dump
from kdumpy.formats.codecs import get_codec, zero_pages
from kdumpy.collect.pipeline import filter_pages, read_batches
dump = open_dump(sys.argv[1]); codec = get_codec(sys.argv[2]); level = int(sys.argv[3])
ps = dump.page_size
filt = filter_pages(dump, level)
comp = codec.compressor(ps)
out = np.empty(1024 * ps + comp.bound, dtype=np.uint8)
total = 0.0
for pfns, pages in read_batches(dump, filt.bitmap2, 0, filt.max_mapnr):
    index = np.flatnonzero(~zero_pages(pages)) if level & 1 else np.arange(len(pfns))
    index = index.tolist()
    t = time.perf_counter()
    comp.compress_pages(pages.ctypes.data, index, out.ctypes.data)
    total += time.perf_counter() - t
print(total)
"""


@dataclass
class Run:
    wall: float
    rss_mib: float
    size: int
    cpu: float = 0.0


ENV = dict(os.environ)


def _run(cmd: list[str], out: Path | None, repeat: int, stdout: int | None = None, warm: bool = False) -> Run:
    best = Run(float("inf"), 0.0, 0)
    for i in range(repeat + int(warm)):
        if out is not None and out.exists():
            out.unlink()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                                env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
        size = out.stat().st_size if out is not None and out.exists() else 0
        if wall < best.wall and not (warm and i == 0):
            best = Run(wall, usage.ru_maxrss / 1024, size, usage.ru_utime + usage.ru_stime)
    return best


def _floor_codec(vmcore: Path, codec: str, level: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run([str(PY), "-c", _FLOOR, str(vmcore), codec, str(level)], capture_output=True,
                             text=True, check=True, cwd=ROOT, env={**ENV, "PYTHONPATH": str(ROOT / "src")})
        best = min(best, float(out.stdout.strip()))
    return best


def _read_floor(vmcore: Path, repeat: int) -> float:
    return _run(["dd", f"if={vmcore}", "of=/dev/null", "bs=1M"], None, repeat).wall


def _default_vmcore() -> Path:
    status = Path("/tmp/lab-status.txt")
    best: Path | None = None
    if status.exists():
        for line in status.read_text().splitlines():
            name, _, path = line.partition(" ")
            p = Path(path)
            if "mix" in name and p.exists() and (best is None or p.stat().st_size > best.stat().st_size):
                best = p
    if best is None:
        raise SystemExit("no vmcore given and none in /tmp/lab-status.txt")
    return best


def _convert_cases(vmcore: Path, ours: Path, theirs: Path, repeat: int, conv_threads: list[int],
                   dump_threads: list[int]) -> None:
    """ELF -> kdump without filtering: kdumpy convert (and kdumpy dump -d 0) against makedumpfile -d 0."""
    header = (f"{'convert (-d 0)':<22}{'threads':>8}{'kdumpy s':>10}{'ref s':>9}{'wall x':>8}{'cpu s':>7}"
              f"{'ref cpu':>8}{'size x':>8}{'RSS MiB':>9}{'ref RSS':>9}  kdumpy command")
    print()
    print(header)
    print("-" * len(header))
    for codec in ("lzo", "zlib"):
        opt = CODEC_OPT[codec]
        ref = _run(["makedumpfile", opt, "-d", "0", str(vmcore), str(theirs)], theirs, repeat)
        runs: list[tuple[str, int, Run]] = []
        for n in conv_threads:
            runs.append(("convert", n, _run([*KDUMPY, "convert", str(vmcore), str(ours), "--format", "kdump",
                                              "--codec", codec, "--threads", str(n), "-f"],
                                             ours, repeat, warm=True)))
        for n in dump_threads:
            runs.append(("dump -d 0", n, _run([*KDUMPY, "dump", opt, "-d", "0", "--message-level", "0",
                                                "--num-threads", str(n), str(vmcore), str(ours)],
                                               ours, repeat, warm=True)))
        for name, n, mine in runs:
            size_x = f"{mine.size / ref.size:8.3f}" if ref.size else f"{'-':>8}"
            print(f"{codec:<22}{n:>8}{mine.wall:>10.3f}{ref.wall:>9.3f}{mine.wall / ref.wall:>8.2f}"
                  f"{mine.cpu:>7.2f}{ref.cpu:>8.2f}{size_x}{mine.rss_mib:>9.1f}{ref.rss_mib:>9.1f}  {name}")
            sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vmcore", nargs="?", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="lzo and zlib at -d 31 only")
    ap.add_argument("--out-dir", type=Path, default=Path("/dev/shm"), help="where both tools write")
    ap.add_argument("--src", type=Path, help="run the kdumpy of this source tree (its src/ directory)")
    ap.add_argument("--threads", default="0,1,2", help="kdumpy --num-threads values (default 0,1,2)")
    ap.add_argument("--cases", default="dump,convert",
                    help="case groups: dump (kdumpy dump), convert (kdumpy convert); default both")
    ap.add_argument("--convert-threads", default="1",
                    help="kdumpy convert --threads values (default 1, its default)")
    args = ap.parse_args()
    vmcore = args.vmcore or _default_vmcore()
    upstream = os.environ.get("MAKEDUMPFILE_UPSTREAM")
    size_gib = vmcore.stat().st_size / (1 << 30)
    threads = [int(t) for t in args.threads.split(",")]
    cache = tempfile.TemporaryDirectory(prefix="kdumpy-bench-pyc-")
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = cache.name
    if args.src:
        ENV["PYTHONPATH"] = str(args.src.resolve() / "src")
    print(f"vmcore: {vmcore} ({size_gib:.2f} GiB); kdumpy from {args.src or ROOT}; output to {args.out_dir}")
    _read_floor(vmcore, 1)  # warm the page cache
    print(f"floor: plain read (dd bs=1M): {_read_floor(vmcore, args.repeat):.3f} s")
    start = _run([*KDUMPY, "--version"], None, args.repeat, warm=True)
    print(f"floor: kdumpy start-up (kdumpy --version): {start.wall:.3f} s, {start.rss_mib:.1f} MiB")
    header = (f"{'case':<22}{'threads':>8}{'kdumpy s':>10}{'ref s':>9}{'wall x':>8}{'cpu s':>7}{'ref cpu':>8}"
              f"{'size x':>8}{'RSS MiB':>9}{'ref RSS':>9}  ref")
    groups = set(args.cases.split(","))
    if "dump" in groups:
        print(header)
        print("-" * len(header))
    cases = [] if "dump" not in groups else [(31, "lzo"), (31, "zlib")] if args.quick else [
        (31, "lzo"), (31, "zlib"), (31, "zlib libz"), (1, "lzo"), (1, "zlib"), (1, "zlib libz"), (31, "zstd"),
        (31, "snappy"), (1, "zstd"), (1, "snappy")]
    with tempfile.TemporaryDirectory(prefix="kdumpy-bench-", dir=args.out_dir) as tmp:
        ours, theirs = Path(tmp, "kdumpy.out"), Path(tmp, "ref.out")
        for level, case_name in cases:
            codec, _, deflate = case_name.partition(" ")
            opt = CODEC_OPT[codec]
            extra = ["--deflate", deflate] if deflate else []
            refs: list[tuple[str, Run | float]] = []
            if codec in ("lzo", "zlib"):
                refs.append(("makedumpfile", _run(["makedumpfile", opt, "-d", str(level), str(vmcore),
                                                   str(theirs)], theirs, args.repeat)))
            else:
                refs.append((f"{codec} floor", _floor_codec(vmcore, codec, level, args.repeat)))
            if upstream:
                refs.append(("upstream", _run([upstream, opt, "-d", str(level), str(vmcore), str(theirs)],
                                              theirs, args.repeat)))
            for n in threads:
                mine = _run([*KDUMPY, "dump", opt, *extra, "-d", str(level), "--message-level", "0",
                             "--num-threads", str(n), str(vmcore), str(ours)], ours, args.repeat, warm=True)
                for name, ref in refs:
                    case = f"-d {level:<2} {case_name:<16}{n:>8}{mine.wall:>10.3f}"
                    if isinstance(ref, Run):
                        size_x = f"{mine.size / ref.size:8.3f}" if ref.size else f"{'-':>8}"
                        print(f"{case}{ref.wall:>9.3f}{mine.wall / ref.wall:>8.2f}{mine.cpu:>7.2f}"
                              f"{ref.cpu:>8.2f}{size_x}{mine.rss_mib:>9.1f}{ref.rss_mib:>9.1f}  {name}")
                    else:
                        print(f"{case}{ref:>9.3f}{mine.wall / ref:>8.2f}{mine.cpu:>7.2f}{'-':>8}{'-':>8}"
                              f"{mine.rss_mib:>9.1f}{'-':>9}  {name}")
                sys.stdout.flush()
        if "convert" in groups:
            _convert_cases(vmcore, ours, theirs, args.repeat,
                           [int(t) for t in args.convert_threads.split(",")], [0])
    cache.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
