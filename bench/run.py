"""Benchmark of `kdumpy dump` against makedumpfile, the codec floor and a plain read.

    .venv/bin/python bench/run.py [VMCORE] [--repeat N] [--quick]

VMCORE defaults to the lab's largest mixed-workload vmcore (see docs/performance.md for making a
4 GiB one). Every run is a fresh process; wall time is the best of --repeat runs (the page cache is
warmed first, so both tools read from memory), peak RSS is that process's ru_maxrss (os.wait4).
Cases: -d 31 and -d 1 with lzo and zlib against Debian's makedumpfile (one thread, its best), kdumpy
at 1 and 2 threads; zstd and snappy against the codec floor (the same pages compressed by the codec
alone in one process); an upstream makedumpfile is added when $MAKEDUMPFILE_UPSTREAM names one.
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

_FLOOR = r"""
import sys, time
import numpy as np
from kdumpy.memory.dump import open_dump
from kdumpy.formats.codecs import get_codec
from kdumpy.collect.pipeline import dumpable_runs, filter_pages, zero_mask
dump = open_dump(sys.argv[1]); codec = get_codec(sys.argv[2]); level = int(sys.argv[3])
filt = filter_pages(dump, level)
pages = []
for pfn, n in dumpable_runs(filt.bitmap2, 0, filt.max_mapnr):
    data = dump.read_pages(pfn, n)
    if level & 1:
        z = zero_mask(data, dump.page_size)
        data = np.frombuffer(data, dtype=np.uint8).reshape(n, -1)[~z].tobytes()
    pages.append(data)
t = time.perf_counter()
for data in pages:
    codec.compress_many(data, dump.page_size, 1)
print(time.perf_counter() - t)
"""


@dataclass
class Run:
    wall: float
    rss_mib: float
    size: int


def _run(cmd: list[str], out: Path | None, repeat: int, stdout: int | None = None) -> Run:
    best = Run(float("inf"), 0.0, 0)
    for _ in range(repeat):
        if out is not None and out.exists():
            out.unlink()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
        size = out.stat().st_size if out is not None and out.exists() else 0
        if wall < best.wall:
            best = Run(wall, usage.ru_maxrss / 1024, size)
    return best


def _floor_codec(vmcore: Path, codec: str, level: int) -> float:
    out = subprocess.run([str(PY), "-c", _FLOOR, str(vmcore), codec, str(level)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip())


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vmcore", nargs="?", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="lzo and zlib at -d 31 only")
    args = ap.parse_args()
    vmcore = args.vmcore or _default_vmcore()
    upstream = os.environ.get("MAKEDUMPFILE_UPSTREAM")
    size_gib = vmcore.stat().st_size / (1 << 30)
    print(f"vmcore: {vmcore} ({size_gib:.2f} GiB)")
    _read_floor(vmcore, 1)  # warm the page cache
    print(f"floor: plain read (dd bs=1M): {_read_floor(vmcore, args.repeat):.3f} s")
    header = (f"{'case':<22}{'threads':>8}{'kdumpy s':>10}{'ref s':>9}{'wall x':>8}{'size x':>8}"
              f"{'RSS MiB':>9}{'ref RSS':>9}  ref")
    print(header)
    print("-" * len(header))
    cases = [(31, "lzo"), (31, "zlib")] if args.quick else [
        (31, "lzo"), (31, "zlib"), (1, "lzo"), (1, "zlib"), (31, "zstd"), (31, "snappy"), (1, "zstd"),
        (1, "snappy")]
    with tempfile.TemporaryDirectory(prefix="kdumpy-bench-") as tmp:
        ours, theirs = Path(tmp, "kdumpy.out"), Path(tmp, "ref.out")
        for level, codec in cases:
            opt = CODEC_OPT[codec]
            refs: list[tuple[str, Run | float]] = []
            if codec in ("lzo", "zlib"):
                refs.append(("makedumpfile", _run(["makedumpfile", opt, "-d", str(level), str(vmcore),
                                                   str(theirs)], theirs, args.repeat)))
            else:
                refs.append((f"{codec} floor", _floor_codec(vmcore, codec, level)))
            if upstream:
                refs.append(("upstream", _run([upstream, opt, "-d", str(level), str(vmcore), str(theirs)],
                                              theirs, args.repeat)))
            for threads in (1, 2):
                mine = _run([*KDUMPY, "dump", opt, "-d", str(level), "--message-level", "0",
                             "--num-threads", str(threads), str(vmcore), str(ours)], ours, args.repeat)
                for name, ref in refs:
                    if isinstance(ref, Run):
                        size_x = f"{mine.size / ref.size:8.3f}" if ref.size else f"{'-':>8}"
                        print(f"-d {level:<2} {codec:<16}{threads:>8}{mine.wall:>10.3f}{ref.wall:>9.3f}"
                              f"{mine.wall / ref.wall:>8.2f}{size_x}{mine.rss_mib:>9.1f}"
                              f"{ref.rss_mib:>9.1f}  {name}")
                    else:
                        print(f"-d {level:<2} {codec:<16}{threads:>8}{mine.wall:>10.3f}{ref:>9.3f}"
                              f"{mine.wall / ref:>8.2f}{'-':>8}{mine.rss_mib:>9.1f}{'-':>9}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
