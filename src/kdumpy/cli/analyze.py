"""Commands that read a dump: `dmesg`, `report` and `shell`."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dmesg",
        help="print the kernel log from a dump",
        description="Print the crashed kernel's log, read with VMCOREINFO alone (the lockless printk ring "
        "buffer of 5.10+, or the older log_buf). The text is byte for byte what makedumpfile --dump-dmesg "
        "writes. Works on every format; on an incomplete dump it prints what it can and says on stderr "
        "what is missing.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="the dump (several files: a --split set)")
    p.add_argument(
        "--caller-id",
        action="store_true",
        help="add the caller column ([T<pid>] or [C<cpu>]) as upstream makedumpfile prints it",
    )
    p.add_argument(
        "--json", action="store_true", help="print records (seq, ts_nsec, level, facility, caller, text)"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the log to FILE instead of stdout")
    p.set_defaults(func=run_dmesg)

    p = sub.add_parser(
        "report",
        help="triage report: panic, class, trace, taints, registers, signature",
        description="What killed the machine: kernel release and build, crash time and uptime, the panic "
        "line and its class, the crashing CPU and task, the call trace, taints, modules, the crashing "
        "CPU's registers, memory composition and a crash signature for grouping duplicates. Needs only "
        "the dump; --vmlinux adds drgn's stack trace of the crashed thread.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="the dump (several files: a --split set)")
    p.add_argument("--vmlinux", metavar="PATH", help="debug vmlinux of the crashed kernel (needs drgn)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page to FILE")
    p.set_defaults(func=run_report)

    p = sub.add_parser(
        "shell",
        help="open drgn on a dump",
        description="Open drgn's interactive shell on the dump (drgn -c DUMP -s VMLINUX), kdump-compressed "
        "files included. Needs drgn: pip install 'kdumpy[drgn]'.",
    )
    p.add_argument("dumps", nargs=1, metavar="DUMP")
    p.add_argument("--vmlinux", metavar="PATH", required=True, help="debug vmlinux of the crashed kernel")
    p.set_defaults(func=run_shell)


def _dump_arg(dumps: list[str]) -> str | list[str]:
    return dumps[0] if len(dumps) == 1 else dumps


def run_dmesg(args: argparse.Namespace) -> int:
    from kdumpy.analyze.dmesg import format_dmesg, log_json, read_log
    from kdumpy.errors import AddressError, DumpError, PageError
    from kdumpy.memory.dump import open_dump
    from kdumpy.memory.kernel import Kernel

    with open_dump(_dump_arg(args.dumps)) as dump:
        try:
            log = read_log(Kernel(dump))
        except (PageError, AddressError) as e:
            what = " (the dump is incomplete)" if dump.incomplete else ""
            raise DumpError(f"the kernel log's header is not in the dump{what}: {e}") from e
        incomplete = dump.incomplete
    if args.json:
        data = (json.dumps(log_json(log), indent=1) + "\n").encode()
    else:
        data = format_dmesg(log, caller_id=args.caller_id)
        if args.caller_id and not log.has_caller_id:
            print("kdumpy: note: this kernel stores no caller id; printed without it", file=sys.stderr)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    for m in log.missing:
        print(f"kdumpy: note: {m}", file=sys.stderr)
    if incomplete and not log.missing:
        print("kdumpy: note: the dump is incomplete, but the whole log is in it", file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from kdumpy.analyze.report import make_report, render_text, report_json

    report = make_report(args.dumps, vmlinux=args.vmlinux)
    if args.json:
        sys.stdout.write(json.dumps(report_json(report), indent=1) + "\n")
    else:
        sys.stdout.write(render_text(report))
    if args.html:
        from kdumpy.analyze.html import render_html

        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(report))
    sys.stdout.flush()
    return 0


def run_shell(args: argparse.Namespace) -> int:
    from kdumpy.analyze.drgn import shell

    shell(args.dumps, args.vmlinux)
    return 0  # not reached: the process is now drgn
