"""Time `kdumpy dmesg` and `kdumpy report` (no vmlinux) on a kdump-compressed dump (issue 5's < 2 s).

    .venv/bin/python bench/analysis.py VMCORE [--codec lzo] [--repeat 3]

VMCORE is any dump kdumpy reads; it is first converted to kdump-compressed in a temporary directory
(under /dev/shm when it exists), so the timed runs read the format the target names. Each command
runs as a separate program, start-up included, as a user runs it; the best and worst wall times print.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KDUMPY = [sys.executable, "-m", "kdumpy"]


def _timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*KDUMPY, *args], check=True, stdout=subprocess.DEVNULL, timeout=600)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vmcore", type=Path)
    p.add_argument("--codec", default="lzo", choices=("zlib", "lzo", "snappy", "zstd", "none"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        dump = Path(tmp) / "dump.kdump"
        subprocess.run(
            [*KDUMPY, "convert", str(args.vmcore), str(dump), "--format", "kdump", "--codec", args.codec],
            check=True,
            stderr=subprocess.DEVNULL,
            timeout=1800,
        )
        size = dump.stat().st_size
        print(
            f"input {args.vmcore} ({args.vmcore.stat().st_size / 2**30:.2f} GiB), "
            f"as kdump-compressed {args.codec}: {size / 2**20:.0f} MiB"
        )
        print(f"{'command':<10} {'best s':>8} {'worst s':>8}  (target < 2 s)")
        for cmd in ("dmesg", "report"):
            times = [_timed([cmd, str(dump)]) for _ in range(args.repeat)]
            print(f"{cmd:<10} {min(times):8.2f} {max(times):8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
