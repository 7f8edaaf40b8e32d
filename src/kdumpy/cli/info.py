"""`kdumpy info DUMP...`: what a dump is and what it holds."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "info",
        help="describe dump files: format, kernel, crash time, pages",
        description="Describe each dump: format, codec, kernel release, crash time, dump level, pages "
        "present and excluded, CPUs, completeness and split part.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="ELF vmcore, kdump-compressed or flattened file")
    p.add_argument("--json", action="store_true", help="print one JSON object per dump (a list)")
    p.set_defaults(func=run)


def describe(path: str) -> dict[str, Any]:
    """The facts `info` prints about one dump."""
    from kdumpy.memory.dump import PageState, open_dump

    with open_dump(path) as dump:
        info = dump.vmcoreinfo
        counts = dump.page_counts()
        crashtime = info.crashtime if info else None
        out: dict[str, Any] = {
            "path": path,
            "size": os.path.getsize(path),
            "format": dump.format,
            "release": info.osrelease if info else None,
            "build_id": info.build_id if info else None,
            "crash_time": (
                dt.datetime.fromtimestamp(crashtime, dt.UTC).isoformat() if crashtime is not None else None
            ),
            "page_size": dump.page_size,
            "cpus": len(dump.cpus),
            "complete": not dump.incomplete and counts[PageState.INCOMPLETE] == 0,
            "ram_bytes": sum(r.end - r.start for r in dump.ranges),
            "max_pfn": dump.max_pfn,
            "pages": {
                "present": int(counts[PageState.PRESENT]),
                "excluded": int(counts[PageState.EXCLUDED]),
                "incomplete": int(counts[PageState.INCOMPLETE]),
            },
            "vmcoreinfo": info is not None,
        }
        out.update(dump.metadata())
        return out


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render(d: dict[str, Any]) -> str:
    pages = d["pages"]
    lines = [
        f"{d['path']}:",
        f"  format        {d['format']}" + (f" ({d['codec']})" if "codec" in d else ""),
        f"  kernel        {d['release'] or 'unknown (no VMCOREINFO)'}",
        f"  crash time    {d['crash_time'] or 'unknown'}",
    ]
    if "dump_level" in d:
        lines.append(f"  dump level    {d['dump_level']}")
    lines += [
        f"  memory        {_human(d['ram_bytes'])} of RAM, page size {d['page_size']}",
        f"  pages         {pages['present']} present, {pages['excluded']} excluded"
        + (f", {pages['incomplete']} missing (incomplete)" if pages["incomplete"] else ""),
        f"  cpus          {d['cpus']}",
        f"  complete      {'yes' if d['complete'] else 'NO: the dump was cut short'}",
        f"  file size     {_human(d['size'])}",
    ]
    if "split_range" in d:
        lo, hi = d["split_range"]
        lines.append(f"  split part    pfns {lo:#x}-{hi:#x}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    results = [describe(p) for p in args.dumps]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(render(r) for r in results))
    return 0
