"""`kdumpy lab`: crash real Debian kernels in QEMU, capture and report on them.

kdumpy lab fetch      resolve, download and unpack the kernels; build the guest images
kdumpy lab crash      one crash scenario (kernel, trigger, workload, RAM, crashkernel, ...)
kdumpy lab snapshot   QEMU dump-guest-memory of a running guest
kdumpy lab demo       the whole cycle on 6.1, with a report of the dump
kdumpy lab catalog    every trigger on every kernel; the table goes into docs/lab.md
kdumpy lab fixtures   make (or find cached) the vmcores the test suite uses
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kdumpy.errors import LabError

__all__ = ["register"]

_KERNELS = ("6.1", "6.12")
_TRIGGERS = ("sysrq", "oom", "hung-task", "nmi", "oops", "bug", "warn", "softlockup")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _cache(args: argparse.Namespace) -> Path:
    from kdumpy.lab.cache import cache_dir

    return cache_dir(args.cache)


def _fetch(args: argparse.Namespace) -> int:
    from kdumpy.lab import assets, initramfs
    from kdumpy.lab.disk import data_disk
    from kdumpy.lab.module import crash_module

    cache = _cache(args)
    for series in args.kernel or _KERNELS:
        k = assets.kernel(series, cache)
        _say(f"{series}: {k.release} ({k.package} {k.version}) {k.vmlinuz}")
        _say(f"    initramfs {initramfs.build(k, cache)}")
        if not args.no_module:
            _say(f"    crash module {crash_module(k, cache)}")
        if args.debug_vmlinux:
            _say(f"    debug vmlinux {assets.debug_vmlinux(k, cache)}")
    _say(f"data disk {data_disk(cache)}")
    _say(f"manifest {cache / 'manifest.json'}")
    return 0


def _crash(args: argparse.Namespace) -> int:
    from kdumpy.lab.report import dump_dmesg, panic_lines, shows
    from kdumpy.lab.scenario import TRIGGERS, Scenario, run_crash

    cache = _cache(args)
    crashkernel = args.crashkernel or ("256M" if args.capture_cmd else "128M")
    sc = Scenario(
        kernel=args.kernel,
        trigger=args.trigger,
        workload=args.workload,
        ram=args.ram,
        crashkernel=crashkernel,
        la57=args.la57,
        capture_cpus=args.capture_cpus,
        capture_cmd=args.capture_cmd,
        elf32=args.elf32,
    )
    sc.check()
    out = Path(args.out) if args.out else cache / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{sc.name()}"
    _say(f"scenario {sc.name()} -> {out}")
    result = run_crash(
        sc,
        out,
        cache,
        accel=args.accel,
        timeout=args.timeout,
        progress=_say,
        echo=sys.stderr if args.verbose else None,
    )
    _say("timings: " + ", ".join(f"{k} {v}s" for k, v in result.timings.items()))
    if result.vmcore is None:
        _say(f"capture command finished (rc=0); results in {out}")
        return 0
    _say(f"vmcore {result.vmcore} ({result.vmcore.stat().st_size} bytes)")
    log = dump_dmesg(result.vmcore)
    (out / "dmesg.txt").write_text(log)
    for line in panic_lines(log, limit=12):
        _say("  " + line)
    found = shows(log, TRIGGERS[sc.trigger].expect)
    if found is None:
        raise LabError(f"the dump's log does not show the {sc.trigger} crash (see {out / 'dmesg.txt'})")
    _say(f"the dump's log shows {found!r}")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from kdumpy.lab.snapshot import snapshot

    cache = _cache(args)
    suffix = "elf" if args.format == "elf" else "kdump"
    dest = (
        Path(args.out) if args.out else cache / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-snapshot.{suffix}"
    )
    r = snapshot(
        args.kernel,
        dest,
        cache,
        ram=args.ram,
        workload=args.workload,
        fmt=args.format,
        la57=args.la57,
        accel=args.accel,
        timeout=args.timeout,
        progress=_say,
    )
    _say(f"{r.path}: {r.release}, VMCOREINFO note {'present' if r.has_vmcoreinfo else 'MISSING'}")
    return 0 if r.has_vmcoreinfo else 1


def _demo(args: argparse.Namespace) -> int:
    from kdumpy.lab.demo import demo

    cache = _cache(args)
    out = Path(args.out) if args.out else cache / "runs" / "demo"
    return demo(
        cache,
        out,
        kernel=args.kernel,
        trigger=args.trigger,
        accel=args.accel,
        timeout=args.timeout,
        write=_say,
    )


def _catalog(args: argparse.Namespace) -> int:
    from kdumpy.lab.catalog import catalog, table, update_doc
    from kdumpy.lab.scenario import choose_accel

    cache = _cache(args)
    outcomes = catalog(
        cache,
        kernels=args.kernel or _KERNELS,
        triggers=args.trigger or _TRIGGERS,
        ram=args.ram,
        accel=args.accel,
        progress=_say,
    )
    from kdumpy.lab import assets, initramfs

    k = assets.kernel("6.1", cache)
    accel = choose_accel(args.accel, k, initramfs.build(k, cache), cache)
    text = table(outcomes, args.ram, accel)
    _say(text)
    if args.doc:
        update_doc(Path(args.doc), text)
        _say(f"table written to {args.doc}")
    return 0 if all(o.ok for o in outcomes) else 1


def _fixtures(args: argparse.Namespace) -> int:
    from kdumpy.lab import fixtures

    names = args.name or list(fixtures.NAMED)
    paths = {}
    for name in names:
        _say(f"== {name}")
        paths[name] = str(
            fixtures.named_vmcore(
                name, Path(args.cache) if args.cache else None, progress=lambda m: _say("   " + m)
            )
        )
        _say(f"   {paths[name]}")
    if args.json:
        print(json.dumps(paths, indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser(
        "lab",
        help="crash real Debian kernels in QEMU, capture and report on them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    cmds.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache", help="lab cache directory (default $KDUMPY_LAB_CACHE or ~/.cache/kdumpy/lab)"
    )
    guest = argparse.ArgumentParser(add_help=False)
    guest.add_argument(
        "--accel",
        default="auto",
        choices=("auto", "kvm", "tcg"),
        help="auto: KVM only if a bounded probe boot proves it works, else TCG",
    )
    guest.add_argument(
        "--timeout", type=float, default=900, help="seconds for the whole guest run (default 900)"
    )

    p = cmds.add_parser(
        "fetch", parents=[common], help="download and unpack the kernels, build the guest images"
    )
    p.add_argument("--kernel", action="append", choices=_KERNELS, help="only this series (repeatable)")
    p.add_argument(
        "--debug-vmlinux", action="store_true", help="also the debug vmlinux (about 1 GB download each)"
    )
    p.add_argument("--no-module", action="store_true", help="do not build the crash module")
    p.set_defaults(func=_fetch)

    p = cmds.add_parser("crash", parents=[common, guest], help="run one crash scenario")
    p.add_argument("--kernel", default="6.1", choices=_KERNELS)
    p.add_argument("--trigger", default="sysrq", choices=_TRIGGERS)
    p.add_argument("--workload", default="idle", choices=("idle", "mix"))
    p.add_argument("--ram", default="1G", help="guest RAM, QEMU syntax (default 1G)")
    p.add_argument(
        "--crashkernel", help="crashkernel= of the first kernel (default 128M, 256M with --capture-cmd)"
    )
    p.add_argument("--out", help="directory for the capture and the console log")
    p.add_argument("--la57", action="store_true", help="5-level paging (plain -cpu max under TCG)")
    p.add_argument("--capture-cpus", type=int, default=1, help="nr_cpus= of the capture kernel (default 1)")
    p.add_argument(
        "--elf32",
        action="store_true",
        help="arm with `kdumpy load --elf32-core-headers`: an ELFCLASS32 /proc/vmcore",
    )
    p.add_argument(
        "--capture-cmd",
        help="shell command for the capture kernel, run in the host root "
        "({out}: the output directory, {python}: kdumpy's interpreter)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="copy the guest console to stderr")
    p.set_defaults(func=_crash)

    p = cmds.add_parser("snapshot", parents=[common, guest], help="dump-guest-memory of a running guest")
    p.add_argument("--kernel", default="6.1", choices=_KERNELS)
    p.add_argument("--workload", default="idle", choices=("idle", "mix"))
    p.add_argument("--ram", default="1G")
    p.add_argument("--format", default="elf", choices=("elf", "kdump-zlib"))
    p.add_argument("--la57", action="store_true")
    p.add_argument("--out", help="the dump file to write")
    p.set_defaults(func=_snapshot)

    p = cmds.add_parser("demo", parents=[common, guest], help="boot, arm, crash, capture and report (6.1)")
    p.add_argument("--kernel", default="6.1", choices=_KERNELS)
    p.add_argument("--trigger", default="sysrq", choices=_TRIGGERS)
    p.add_argument("--out", help="directory for the capture (default <cache>/runs/demo)")
    p.set_defaults(func=_demo)

    p = cmds.add_parser(
        "catalog", parents=[common, guest], help="every trigger on every kernel, with timings"
    )
    p.add_argument("--kernel", action="append", choices=_KERNELS)
    p.add_argument("--trigger", action="append", choices=_TRIGGERS)
    p.add_argument("--ram", default="512M")
    p.add_argument("--doc", help="markdown file to put the table into (e.g. docs/lab.md)")
    p.set_defaults(func=_catalog)

    p = cmds.add_parser("fixtures", parents=[common], help="make or find the test suite's cached vmcores")
    p.add_argument("name", nargs="*", help="fixture names (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_fixtures)
