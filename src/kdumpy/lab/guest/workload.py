"""kdumpy lab guest workloads, run inside a guest (chroot into the host root) by the project's venv
interpreter. Standard library only.

  workload.py mix --disk DIR --report FILE   fill memory with known kinds of pages, then hold them
  workload.py oom                            allocate until the OOM killer runs (vm.panic_on_oom)

`mix` writes /tmp/kdumpy-lab-ready when everything is in place, then sleeps until the crash.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import time
from pathlib import Path

MIB = 1 << 20
PAGE = mmap.PAGESIZE
# Linux's MAP_HUGETLB; Python's mmap module passes unknown flag bits through.
MAP_HUGETLB = 0x40000
READY = Path("/tmp/kdumpy-lab-ready")

# MiB of each kind in a 1 GiB guest with crashkernel=128M; what remains is free memory.
SIZES = {
    "page_cache_read": 56,
    "page_cache_written": 16,
    "tmpfs": 32,
    "anon_random": 64,
    "anon_zero": 64,
    "hugetlb": 32,
}


def _page_cache(disk: Path, report: dict[str, object]) -> None:
    # Reading the files brings their pages into the page cache (clean); the written file adds
    # dirty then written-back pages.
    n = 0
    for f in sorted((disk / "data").iterdir()):
        with f.open("rb") as fh:
            while chunk := fh.read(MIB):
                n += len(chunk)
    report["page_cache_read"] = n
    out = disk / "written.bin"
    with out.open("wb") as fh:
        for i in range(SIZES["page_cache_written"]):
            fh.write(bytes([i & 0xFF]) * MIB)
    report["page_cache_written"] = SIZES["page_cache_written"] * MIB


def _tmpfs(report: dict[str, object]) -> None:
    seed = os.urandom(MIB)
    with open("/tmp/kdumpy-lab-tmpfs.bin", "wb") as fh:
        for i in range(SIZES["tmpfs"]):
            # Distinct pages without paying for urandom on every MiB (slow under TCG).
            fh.write(seed[i:] + seed[:i])
    report["tmpfs"] = SIZES["tmpfs"] * MIB


def _anon(report: dict[str, object]) -> list[mmap.mmap]:
    held = []
    random_map = mmap.mmap(-1, SIZES["anon_random"] * MIB)
    for off in range(0, len(random_map), MIB):
        random_map[off : off + MIB] = os.urandom(MIB)
    held.append(random_map)
    report["anon_random"] = len(random_map)
    zero_map = mmap.mmap(-1, SIZES["anon_zero"] * MIB)
    # Writing a zero byte makes the kernel allocate a real (zero-filled) page, not map the zero page.
    for off in range(0, len(zero_map), PAGE):
        zero_map[off] = 0
    held.append(zero_map)
    report["anon_zero"] = len(zero_map)
    return held


def _hugetlb(report: dict[str, object]) -> mmap.mmap | None:
    size = SIZES["hugetlb"] * MIB
    huge = 2 * MIB
    try:
        Path("/proc/sys/vm/nr_hugepages").write_text(f"{size // huge}\n")
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB)
    except OSError as e:
        report["hugetlb_error"] = str(e)
        return None
    for off in range(0, size, huge):
        m[off : off + huge] = (off // huge).to_bytes(8, "little") * (huge // 8)
    report["hugetlb"] = size
    return m


def mix(disk: Path, report_path: Path) -> None:
    started = time.monotonic()
    report: dict[str, object] = {"sizes_mib": SIZES}
    _page_cache(disk, report)
    _tmpfs(report)
    held: list[object] = list(_anon(report))
    held.append(_hugetlb(report))
    report["meminfo"] = Path("/proc/meminfo").read_text().splitlines()
    report["seconds"] = round(time.monotonic() - started, 2)
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    READY.write_text(f"{report['seconds']}s\n")
    while True:
        time.sleep(3600)


def oom() -> None:
    held = []
    while True:
        # Filled, not just reserved: the pages must really be allocated for the OOM killer to run.
        held.append(b"\x01" * (16 * MIB))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("mix")
    p.add_argument("--disk", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    sub.add_parser("oom")
    args = parser.parse_args()
    if args.what == "mix":
        mix(args.disk, args.report)
    else:
        oom()


if __name__ == "__main__":
    main()
