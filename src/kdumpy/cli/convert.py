"""`kdumpy convert` and `kdumpy rebuild`: change a dump's format without filtering it."""

from __future__ import annotations

import argparse
import os
import sys

from kdumpy.cli import add_deflate_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        help="re-encode a dump: ELF, kdump-compressed or flattened",
        description="Write IN as OUT in another format, page for page (no filtering: see `kdumpy dump`). "
        "OUT is written as OUT-incomplete and renamed when whole. OUT '-' streams the flattened format "
        "to standard output.",
    )
    p.add_argument("input", metavar="IN", nargs="+", help="the dump (several files: a --split set)")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--format", choices=("elf", "kdump", "flat"), default="kdump", help="default: kdump")
    p.add_argument(
        "--codec",
        choices=("zlib", "lzo", "snappy", "zstd", "none"),
        default="zlib",
        help="page compression for kdump and flat (default: zlib)",
    )
    add_deflate_option(p)
    p.add_argument("--elf32", action="store_true", help="write ELF32 (memory must lie below 4 GiB)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="compression threads (default 1)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=run_convert)

    r = sub.add_parser(
        "rebuild",
        help="rebuild a flattened stream into a regular file (makedumpfile -R)",
        description="Rebuild makedumpfile's flattened format (-F) into a regular kdump-compressed file. "
        "With no arguments, reads standard input and writes standard output (which must be a file).",
    )
    r.add_argument("flat", metavar="FLAT", nargs="?", help="flattened input (default: standard input)")
    r.add_argument("file", metavar="FILE", nargs="?", help="output file (default: standard output)")
    r.add_argument("-f", "--force", action="store_true", help="overwrite FILE if it exists")
    r.set_defaults(func=run_rebuild)


def run_convert(args: argparse.Namespace) -> int:
    from kdumpy.collect.convert import convert
    from kdumpy.collect.output import DumpOutput
    from kdumpy.memory.dump import open_dump

    with open_dump(args.input) as dump:
        flat = args.format == "flat" or args.output == "-"
        fmt = "kdump" if args.format == "flat" else args.format
        with DumpOutput(args.output, flattened=flat, force=args.force) as out:
            res = convert(
                dump,
                out.sink,
                fmt,
                codec=args.codec,
                elf32=args.elf32,
                threads=args.threads,
                deflate=args.deflate,
            )
        incomplete = dump.incomplete or res.pages_incomplete > 0
    if incomplete:
        missing = (
            f"{res.pages_incomplete} pages were never written" if res.pages_incomplete else "it was cut short"
        )
        print(
            f"kdumpy: warning: the input is incomplete ({missing}); {args.output} is marked incomplete",
            file=sys.stderr,
        )
    if args.output != "-":
        print(
            f"{args.output}: {res.pages_written} pages written, {res.pages_excluded} excluded, "
            f"{res.seconds:.1f} s",
            file=sys.stderr,
        )
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    from kdumpy.collect.output import INCOMPLETE_SUFFIX
    from kdumpy.errors import UsageError
    from kdumpy.formats.flattened import rebuild
    from kdumpy.formats.io import FileSink

    if args.flat is None or args.flat == "-":
        if sys.stdin.isatty():
            raise UsageError("no input: give FLAT or pipe the flattened stream to standard input")
        stream = sys.stdin.buffer
    else:
        stream = open(args.flat, "rb")  # noqa: SIM115 - closed below
    try:
        if args.file is None or args.file == "-":
            if not os.path.isfile(f"/proc/self/fd/{sys.stdout.fileno()}"):
                raise UsageError(
                    "standard output must be a regular file: a rebuilt dump is written out of order"
                )
            rebuild(stream, FileSink(sys.stdout.fileno()))
            return 0
        if os.path.exists(args.file) and not args.force:
            raise UsageError(f"{args.file} exists; use -f to overwrite it")
        partial = args.file + INCOMPLETE_SUFFIX
        sink = FileSink(partial, mode=0o600, overwrite=True)
        try:
            rebuild(stream, sink)
        finally:
            sink.close()
        os.replace(partial, args.file)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return 0
