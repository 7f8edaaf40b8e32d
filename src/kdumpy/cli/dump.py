"""`kdumpy dump`: makedumpfile's command line, so kdumpy can be the core collector.

    kdumpy dump [-c|-l|-p|-z] [-E] [-d LEVEL] [-f] [-L SIZE] [--num-threads N] [--message-level N]
                [--deflate libdeflate|libz] VMCORE DUMPFILE
    kdumpy dump -F [...] VMCORE > FLATFILE          kdumpy dump -R DUMPFILE < FLATFILE
    kdumpy dump --split [...] VMCORE DUMPFILE1 DUMPFILE2 ...
    kdumpy dump --dump-dmesg VMCORE LOGFILE          kdumpy dump --mem-usage VMCORE

The options mean what they mean to makedumpfile; the exit status is 0 on success, 1 on failure.
The arguments are parsed here rather than by the top-level parser so that makedumpfile's
options, including unknown ones, get makedumpfile's treatment (getopt order, one clear error).
"""

from __future__ import annotations

import argparse
import os
import sys

from kdumpy.cli import add_deflate_option

# argparse puts "usage: " in front.
_USAGE = """kdumpy dump [-c|-l|-p|-z] [-E] [-F] [-d LEVEL] [-f] [-L SIZE] [--num-threads N]
                   [--message-level N] [--split] [--dry-run] [--deflate libdeflate|libz]
                   VMCORE [DUMPFILE ...]
       kdumpy dump -R DUMPFILE < FLATFILE
       kdumpy dump --dump-dmesg VMCORE LOGFILE
       kdumpy dump --mem-usage VMCORE"""

# makedumpfile options kdumpy accepts and ignores: they tune makedumpfile's own memory and I/O.
_IGNORED_WITH_ARG = ("--cyclic-buffer", "--work-dir", "--splitblock-size", "-b")
_IGNORED_FLAGS = ("--non-mmap", "--non-cyclic")
# makedumpfile options kdumpy does not implement (yet): a clear error rather than a different dump.
_UNSUPPORTED = (
    "-x", "-i", "-g", "--config", "--eppic", "--reassemble", "--vtop", "--partial-dmesg",
    "--show-stats", "-e", "--extension", "--xen-syms", "--xen-vmcoreinfo", "-X", "--xen_phys_start",
    "--mem-usage-sort", "--generate-vmcoreinfo", "--exclude-xen-dom",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dump",
        help="filter and write a crash dump, as makedumpfile (the core collector)",
        add_help=False,
        prefix_chars="\0",  # every argument goes to _parser(), makedumpfile-style
        usage=_USAGE,
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B")
    mult = units.get(t[-1:], 1)
    if t[-1:] in units:
        t = t[:-1]
    try:
        n = int(t, 10) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use a number with K, M or G)") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}")
    return n


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _BadArgs(message)


class _BadArgs(Exception):
    pass


def _parser() -> _Parser:
    p = _Parser(prog="kdumpy dump", usage=_USAGE, add_help=False, allow_abbrev=False,
                description="Filter a crash dump (VMCORE, e.g. /proc/vmcore) and write it as a "
                "kdump-compressed or ELF file, as makedumpfile does.")
    comp = p.add_mutually_exclusive_group()
    comp.add_argument("-c", dest="codec", action="store_const", const="zlib", help="compress pages with zlib")
    comp.add_argument("-l", dest="codec", action="store_const", const="lzo", help="compress pages with lzo")
    comp.add_argument("-p", dest="codec", action="store_const", const="snappy", help="with snappy")
    comp.add_argument("-z", dest="codec", action="store_const", const="zstd", help="with zstd")
    add_deflate_option(p)
    p.add_argument("-d", dest="level", default="0", metavar="LEVEL",
                   help="dump level: 1 zero, 2 cache, 4 private cache, 8 user, 16 free pages; "
                   "sum them (31: all); a comma list is tried in turn when -L is hit")
    p.add_argument("-E", dest="elf", action="store_true", help="write ELF instead of kdump-compressed")
    p.add_argument("-F", dest="flat", action="store_true",
                   help="write the flattened format (to standard output when no DUMPFILE is given)")
    p.add_argument("-R", dest="rebuild", action="store_true",
                   help="rebuild DUMPFILE from the flattened format on standard input")
    p.add_argument("-f", dest="force", action="store_true", help="overwrite existing files")
    p.add_argument("-L", dest="limit", type=_size, metavar="SIZE",
                   help="limit the output size (K, M, G); the dump is then marked incomplete")
    p.add_argument("--split", action="store_true", help="write the dump in several DUMPFILEs")
    p.add_argument("--num-threads", type=int, default=0, metavar="N",
                   help="compression threads beside the one reading and writing (default 0: one "
                   "thread does everything); the dump is the same whatever N")
    p.add_argument("--message-level", type=int, default=None, metavar="N",
                   help="1 progress, 2 common, 4 error, 8 debug, 16 report; default 7")
    p.add_argument("-D", dest="debug", action="store_true", help="debug messages (message level 31)")
    p.add_argument("--dump-dmesg", action="store_true", help="write the kernel log to LOGFILE")
    p.add_argument("--mem-usage", action="store_true", help="print the page composition of VMCORE")
    p.add_argument("--dry-run", action="store_true", help="do everything but write the dump")
    p.add_argument("--check-params", action="store_true", help="only check the options")
    p.add_argument("-h", "--help", action="store_true", help="show this help")
    p.add_argument("-v", "--version", action="store_true", help="show the version")
    for opt in _IGNORED_WITH_ARG:
        p.add_argument(opt, dest="ignored_" + opt.strip("-").replace("-", "_"), help=argparse.SUPPRESS)
    for opt in _IGNORED_FLAGS:
        p.add_argument(opt, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("files", nargs="*", metavar="FILE")
    return p


def _unsupported(argv: list[str]) -> list[str]:
    bad = []
    for a in argv:
        name = a.split("=", 1)[0]
        if name in _UNSUPPORTED:
            bad.append(name)
    return bad


def run(args: argparse.Namespace) -> int:
    # numpy's OpenBLAS starts one spinning thread per CPU when it loads (about 50 ms of wall time on a
    # 2-CPU host, and CPU taken from the compression threads); the collector does no linear algebra.
    # Read when the library loads: only effective before numpy's first import, which comes below.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv: list[str] = list(args.args)
    try:
        return _run(argv)
    except _BadArgs as e:
        print(f"kdumpy dump: {e}", file=sys.stderr)
        print("Try `kdumpy dump --help' for more information.", file=sys.stderr)
        return 1


def _run(argv: list[str]) -> int:
    from kdumpy.errors import KdumpyError

    bad = _unsupported(argv)
    if bad:
        raise _BadArgs(f"makedumpfile option(s) not supported by kdumpy: {', '.join(bad)}")
    parser = _parser()
    opts, unknown = parser.parse_known_args(argv)
    if unknown:
        raise _BadArgs(f"unknown option(s): {' '.join(unknown)}")
    if opts.help:
        parser.print_help()
        return 0
    if opts.version:
        from kdumpy import __version__

        print(f"kdumpy dump {__version__} (makedumpfile-compatible collector)")
        return 0
    try:
        return _dispatch(opts)
    except KdumpyError as e:
        print(f"kdumpy dump: {e}", file=sys.stderr)
        print("\nkdumpy Failed.", file=sys.stderr)
        return 1
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"kdumpy dump: {e.strerror or e}{where}", file=sys.stderr)
        print("\nkdumpy Failed.", file=sys.stderr)
        return 1


def _dispatch(opts: argparse.Namespace) -> int:
    from kdumpy.collect.levels import parse_levels
    from kdumpy.collect.progress import DEFAULT_MESSAGE_LEVEL, Messages

    files: list[str] = opts.files
    if opts.rebuild:
        return _rebuild(files, opts.force)
    level_msgs = 31 if opts.debug else opts.message_level
    if level_msgs is None:
        level_msgs = DEFAULT_MESSAGE_LEVEL
    if not 0 <= level_msgs <= 31:
        raise _BadArgs(f"invalid message level {level_msgs}: give a number from 0 to 31")
    to_stdout = opts.flat and len(files) == 1
    messages = Messages(level_msgs, out=sys.stderr if to_stdout else sys.stdout)
    if opts.dump_dmesg:
        return _dmesg(files, opts.force)
    if opts.mem_usage:
        return _mem_usage(files, messages)
    levels = parse_levels(opts.level)
    if opts.check_params:
        return 0
    if not files:
        raise _BadArgs("no VMCORE given")
    vmcore, outputs = files[0], files[1:]
    if opts.flat and not outputs:
        outputs = ["-"]
    if opts.dry_run:
        outputs = outputs or ["/dev/null"]
    elif not outputs:
        raise _BadArgs("no DUMPFILE given")
    if len(outputs) > 1 and not opts.split:
        raise _BadArgs(f"too many arguments: {' '.join(outputs[1:])} (several DUMPFILEs need --split)")
    if opts.split and len(outputs) < 2:
        raise _BadArgs("--split needs at least two DUMPFILEs")
    return _collect(vmcore, outputs, opts, levels, messages)


def _collect(vmcore: str, outputs: list[str], opts: argparse.Namespace, levels: list[int],
             messages: object) -> int:
    from kdumpy.collect.dump import DumpJob, run_dump
    from kdumpy.collect.progress import Messages
    from kdumpy.memory.dump import open_dump

    assert isinstance(messages, Messages)
    if opts.dry_run:
        return _dry_run(vmcore, levels[0], opts, messages)
    with open_dump(vmcore) as dump:
        result = None
        for i, level in enumerate(levels):
            job = DumpJob(
                dump_level=level,
                codec=opts.codec or "none",
                deflate=opts.deflate,
                elf=opts.elf,
                flattened=opts.flat,
                threads=opts.num_threads,
                limit=opts.limit,
                force=opts.force or i > 0,
            )
            result = run_dump(dump, outputs, job, messages)
            if result.complete or i == len(levels) - 1:
                break
            messages.common(f"Retrying with dump level {levels[i + 1]}.")
        assert result is not None
    messages.report(result.report())
    if outputs != ["-"]:
        messages.common(f"The dumpfile is saved to {', '.join(outputs)}.")
    if not result.complete:
        messages.common("\nkdumpy Failed.")
        return 1
    messages.common("\nkdumpy Completed.")
    return 0


def _dry_run(vmcore: str, level: int, opts: argparse.Namespace, messages: object) -> int:
    from kdumpy.collect.dump import DumpResult, work_sizes
    from kdumpy.collect.pipeline import filter_pages, original_pages
    from kdumpy.collect.progress import Messages
    from kdumpy.memory.dump import open_dump
    from kdumpy.memory.pages import Category

    assert isinstance(messages, Messages)
    with open_dump(vmcore) as dump:
        filt = filter_pages(dump, level, messages, cycle=work_sizes()[0])
        ex = dict(filt.excluded)
        ex[Category.ZERO] = 0
        result = DumpResult(filt.max_mapnr, original_pages(dump, filt), ex)
    messages.report(result.report())
    messages.common("\nkdumpy Completed (dry run: nothing written; zero pages not counted).")
    return 0


def _mem_usage(files: list[str], messages: object) -> int:
    from kdumpy.collect.dump import mem_usage
    from kdumpy.collect.progress import Messages
    from kdumpy.errors import UnsupportedError
    from kdumpy.memory.dump import open_dump

    assert isinstance(messages, Messages)
    if len(files) != 1:
        raise _BadArgs("--mem-usage takes one VMCORE (a dump file)")
    if files[0] == "/proc/kcore":
        raise UnsupportedError(
            "--mem-usage on /proc/kcore (the live system) is not supported yet: give a dump file"
        )
    with open_dump(files[0]) as dump:
        print(mem_usage(dump, messages))
    return 0


def _dmesg(files: list[str], force: bool) -> int:
    import argparse
    import os

    from kdumpy.cli.analyze import run_dmesg
    from kdumpy.errors import UsageError

    if len(files) != 2:
        raise _BadArgs("--dump-dmesg takes VMCORE and LOGFILE")
    vmcore, logfile = files
    if os.path.exists(logfile) and not force:
        raise UsageError(f"{logfile} exists; use -f to overwrite it")
    # The same text as `kdumpy dmesg` (makedumpfile --dump-dmesg's, byte for byte).
    return run_dmesg(argparse.Namespace(dumps=[vmcore], json=False, caller_id=False, output=logfile))


def _rebuild(files: list[str], force: bool) -> int:
    from kdumpy.cli.convert import run_rebuild

    if len(files) != 1:
        raise _BadArgs("-R takes one DUMPFILE (the flattened stream comes on standard input)")
    return run_rebuild(argparse.Namespace(flat=None, file=files[0], force=force))
