"""Shared helpers of the cross-check tests: run kdumpy and the foreign tools, convert each real vmcore
once per session, compare dumps page by page, and parse the kdump-compressed layout independently of
kdumpy (from makedumpfile's diskdump_mod.h, ../shared/reference/formats-and-rules.md §1.1).

tests/collect/test_convert_real.py imports from here too; the conversions are shared through one
session-wide `Artifacts`, so a 1 GB vmcore is converted once per codec however many tests read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kdumpy.memory.dump import Dump, PageState, open_dump

__all__ = [
    "CODECS",
    "DISK_DUMP_HEADER",
    "FLAT_RECORD",
    "HEADER_FIELDS",
    "KDUMP_SUB_HEADER",
    "PAGE_DESC",
    "SUB_HEADER_FIELDS",
    "Artifacts",
    "KdumpLayout",
    "PageDigest",
    "assert_pages_match_source",
    "assert_same_pages",
    "kdumpy",
    "kdumpy_bin",
    "page_digest",
    "run",
    "session_artifacts",
    "tool",
]

CODECS = ("zlib", "lzo", "snappy", "zstd", "none")
CHUNK = 1024
"""Pages hashed together when comparing two dumps (4 MiB of 4 KiB pages)."""

# --- the kdump-compressed layout, declared here once and independently of kdumpy -----------------

DISK_DUMP_HEADER = struct.Struct("<8si65s65s65s65s65s65s6xqqIiiIIIIIIi")
"""struct disk_dump_header (LP64): 464 bytes at offset 0."""
HEADER_FIELDS = (
    "signature", "header_version", "sysname", "nodename", "release", "version", "machine", "domainname",
    "tv_sec", "tv_usec", "status", "block_size", "sub_hdr_size", "bitmap_blocks", "max_mapnr",
    "total_ram_blocks", "device_blocks", "written_blocks", "current_cpu", "nr_cpus",
)  # fmt: skip
HEADER_OFFSETS = {
    "signature": 0, "header_version": 8, "tv_sec": 408, "status": 424, "block_size": 428,
    "sub_hdr_size": 432, "bitmap_blocks": 436, "max_mapnr": 440, "nr_cpus": 460,
}  # fmt: skip
KDUMP_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
"""struct kdump_sub_header (LP64): 104 bytes at offset block_size."""
SUB_HEADER_FIELDS = (
    "phys_base", "dump_level", "split", "start_pfn", "end_pfn", "offset_vmcoreinfo", "size_vmcoreinfo",
    "offset_note", "size_note", "offset_eraseinfo", "size_eraseinfo", "start_pfn_64", "end_pfn_64",
    "max_mapnr_64",
)  # fmt: skip
SUB_HEADER_OFFSETS = {
    name: off
    for name, off in zip(
        SUB_HEADER_FIELDS, (0, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96), strict=True
    )
}
PAGE_DESC = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
"""struct page_desc: 24 bytes per set bit of bitmap 2."""
FLAT_RECORD = struct.Struct(">qq")
"""struct makedumpfile_data_header of the flattened stream (big-endian offset, size)."""


@dataclass
class KdumpLayout:
    """Where each part of a kdump-compressed file lies, as makedumpfile's readers compute it."""

    header: dict[str, Any]
    sub: dict[str, Any]
    block_size: int
    bitmap1: tuple[int, int]
    """(offset, length) of the first bitmap (padded to whole blocks)."""
    bitmap2: tuple[int, int]
    table: tuple[int, int]
    """(offset, length) of the page_desc table: num_dumpable * 24 bytes."""
    data: tuple[int, int]
    """(offset, length) from the end of the table to the end of the file."""
    num_dumpable: int

    @classmethod
    def parse(cls, path: Path) -> KdumpLayout:
        with path.open("rb") as f:
            head = f.read(DISK_DUMP_HEADER.size)
            header = dict(zip(HEADER_FIELDS, DISK_DUMP_HEADER.unpack(head), strict=True))
            bs = header["block_size"]
            f.seek(bs)
            sub = dict(
                zip(SUB_HEADER_FIELDS, KDUMP_SUB_HEADER.unpack(f.read(KDUMP_SUB_HEADER.size)), strict=True)
            )
            half = header["bitmap_blocks"] * bs // 2
            off1 = (1 + header["sub_hdr_size"]) * bs
            f.seek(off1 + half)
            bitmap2 = np.frombuffer(f.read(half), dtype=np.uint8)
        num = int(np.unpackbits(bitmap2).sum())
        table = off1 + 2 * half
        size = path.stat().st_size
        return cls(
            header=header,
            sub=sub,
            block_size=bs,
            bitmap1=(off1, half),
            bitmap2=(off1 + half, half),
            table=(table, num * PAGE_DESC.itemsize),
            data=(table + num * PAGE_DESC.itemsize, size - table - num * PAGE_DESC.itemsize),
            num_dumpable=num,
        )

    def sections(self) -> list[tuple[str, int, int]]:
        """(name, offset, length) of each part, in file order."""
        bs = self.block_size
        return [
            ("disk_dump_header", 0, bs),
            ("kdump_sub_header+notes", bs, self.header["sub_hdr_size"] * bs),
            ("bitmap1", *self.bitmap1),
            ("bitmap2", *self.bitmap2),
            ("page_desc table", *self.table),
            ("page data", *self.data),
        ]

    def descs(self, path: Path) -> npt.NDArray[np.void]:
        with path.open("rb") as f:
            f.seek(self.table[0])
            return np.frombuffer(f.read(self.table[1]), dtype=PAGE_DESC)


# --- running commands ------------------------------------------------------------------------------


def kdumpy_bin() -> Path:
    """The `kdumpy` console script of the interpreter running the tests (.venv/bin/kdumpy)."""
    here = Path(sys.executable).with_name("kdumpy")
    if here.exists():
        return here
    found = shutil.which("kdumpy")
    if found is None:
        pytest.fail("the kdumpy command is not installed next to the test interpreter nor on PATH")
    return Path(found)


def tool(name: str) -> str:
    """Path of a foreign tool the README's setup installs; its absence is a failed setup, not a skip."""
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found is None:
        pytest.fail(f"{name} is not installed (the README's setup installs it)")
    return found


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    stdin: Path | None = None,
    stdout: Path | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command bounded in time; stdin/stdout may be files. Fails the test with stderr when `check`."""
    args = [os.fspath(c) for c in cmd]
    fin = stdin.open("rb") if stdin is not None else subprocess.DEVNULL
    fout = stdout.open("wb") if stdout is not None else subprocess.PIPE
    try:
        proc = subprocess.run(
            args, stdin=fin, stdout=fout, stderr=subprocess.PIPE, timeout=timeout, check=False, env=env
        )
    finally:
        for f in (fin, fout):
            if not isinstance(f, int):
                f.close()
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")[-3000:]
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{err}")
    return proc


def kdumpy(
    *args: str | os.PathLike[str], timeout: float = 300, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    return run([kdumpy_bin(), *args], timeout=timeout, **kw)


def info_json(path: Path | Sequence[Path]) -> list[dict[str, Any]]:
    paths = [path] if isinstance(path, Path) else list(path)
    out = kdumpy("info", "--json", *paths, timeout=120).stdout
    result: list[dict[str, Any]] = json.loads(out)
    return result


# --- comparing dumps page by page -------------------------------------------------------------------


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b - a)) for a, b in edges.reshape(-1, 2)]


def _read_present(dump: Dump, lo: int, present: npt.NDArray[np.bool_]) -> Iterator[tuple[int, bytes]]:
    for a, n in _runs(present):
        yield lo + a, dump.read_pages(lo + a, n)


@dataclass(frozen=True)
class PageDigest:
    """What a dump holds, in a form two dumps can be compared by: page states and content hashes."""

    states: npt.NDArray[np.uint8]
    """PageState of every pfn in [0, max_pfn)."""
    chunks: dict[int, bytes] = field(default_factory=dict)
    """blake2b of the present pages' bytes of each CHUNK-pfn window that has any, by first pfn."""

    @property
    def present(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.states == PageState.PRESENT)


def page_digest(paths: Path | Sequence[Path]) -> PageDigest:
    with open_dump(paths) as dump:
        states = dump.page_states(0, dump.max_pfn)
        chunks: dict[int, bytes] = {}
        for lo in range(0, len(states), CHUNK):
            present = states[lo : lo + CHUNK] == PageState.PRESENT
            if not present.any():
                continue
            h = hashlib.blake2b(digest_size=16)
            for _, data in _read_present(dump, lo, present):
                h.update(data)
            chunks[lo] = h.digest()
    return PageDigest(states, chunks)


def _first_difference(a: Path | Sequence[Path], b: Path | Sequence[Path], lo: int) -> str:
    """Which pfn and byte first differ in the window at `lo` (for a failure message)."""
    with open_dump(a) as da, open_dump(b) as db:
        hi = min(lo + CHUNK, da.max_pfn, db.max_pfn)
        present = da.page_states(lo, hi) == PageState.PRESENT
        for pfn, data in _read_present(da, lo, present):
            other = db.read_pages(pfn, len(data) // da.page_size)
            if data != other:
                i = next(k for k in range(len(data)) if data[k] != other[k])
                return (
                    f"pfn {pfn + i // da.page_size:#x} byte {i % da.page_size:#x}: "
                    f"{data[i : i + 8].hex()} != {other[i : i + 8].hex()}"
                )
    return "no byte differs on a second read"


def assert_same_pages(
    got: Path | Sequence[Path], want: Path | Sequence[Path], want_digest: PageDigest | None = None
) -> PageDigest:
    """`got` holds exactly the present pages of `want`, byte for byte. Returns got's digest."""
    g = page_digest(got)
    w = want_digest or page_digest(want)
    gp, wp = g.present, w.present
    if not np.array_equal(gp, wp):
        only_g = np.setdiff1d(gp, wp)[:5].tolist()
        only_w = np.setdiff1d(wp, gp)[:5].tolist()
        pytest.fail(
            f"present pages differ: {len(gp)} in {got} against {len(wp)} in {want}; "
            f"first only in got {[hex(p) for p in only_g]}, only in want {[hex(p) for p in only_w]}"
        )
    for lo, h in w.chunks.items():
        if g.chunks.get(lo) != h:
            pytest.fail(
                f"page content differs in pfns [{lo:#x}, {lo + CHUNK:#x}): {_first_difference(got, want, lo)}"
            )
    return g


@dataclass
class SubsetReport:
    """How a filtered dump relates to its source."""

    present: int
    excluded: int
    zero_present: int
    """Present pages whose content is all zeros."""


def assert_pages_match_source(
    got: Path | Sequence[Path], source: Path, *, everything: bool = False
) -> SubsetReport:
    """Every page `got` says is present equals the source's; every source page it lacks is EXCLUDED.

    With `everything`, `got` must hold every page the source holds.
    """
    present = excluded = zero = 0
    with open_dump(got) as dg, open_dump(source) as ds:
        zero_page = bytes(dg.page_size)
        end = max(dg.max_pfn, ds.max_pfn)
        for lo in range(0, end, 1 << 16):
            hi = min(end, lo + (1 << 16))
            sg, ss = dg.page_states(lo, hi), ds.page_states(lo, hi)
            src_present = ss == PageState.PRESENT
            got_present = sg == PageState.PRESENT
            bad = got_present & ~src_present
            assert not bad.any(), f"pfn {lo + int(np.argmax(bad)):#x} present in {got} but not in the source"
            lacking = src_present & ~got_present
            wrong = lacking & (sg != PageState.EXCLUDED)
            if wrong.any():
                i = int(np.argmax(wrong))
                pytest.fail(
                    f"pfn {lo + i:#x} is in the source but {PageState(int(sg[i])).name} in {got}"
                    " (a page left out must be EXCLUDED)"
                )
            if everything:
                assert not lacking.any(), (
                    f"pfn {lo + int(np.argmax(lacking)):#x} of the source is not in {got}"
                )
            hole = (ss == PageState.MISSING) & (sg != PageState.MISSING)
            assert not hole.any(), (
                f"pfn {lo + int(np.argmax(hole)):#x} is a hole in the source but not in {got}"
            )
            present += int(got_present.sum())
            excluded += int(lacking.sum())
            ps = dg.page_size
            for pfn, data in _read_present(dg, lo, got_present):
                want = ds.read_pages(pfn, len(data) // ps)
                if data != want:
                    i = next(k for k in range(len(data)) if data[k] != want[k])
                    pytest.fail(f"{got}: pfn {pfn + i // ps:#x} differs from the source at byte {i % ps:#x}")
                zero += sum(data[k : k + ps] == zero_page for k in range(0, len(data), ps))
    return SubsetReport(present, excluded, zero)


# --- one conversion per (source, format, codec) per session -----------------------------------------


class Artifacts:
    """Files made once per session: kdumpy conversions, makedumpfile outputs, page digests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[Any, ...], Path] = {}
        self._digests: dict[tuple[str, ...], PageDigest] = {}

    def _dir(self, src: Path) -> Path:
        d = self.root / f"{src.parent.name}-{src.name}"
        d.mkdir(exist_ok=True)
        return d

    def ours(
        self, src: Path, fmt: str = "kdump", codec: str = "zlib", *, elf32: bool = False,
        deflate: str = "libdeflate",
    ) -> Path:  # fmt: skip
        """`kdumpy convert src OUT --format fmt --codec codec --deflate deflate`, made once; fmt "elf32"
        is elf with --elf32."""
        if fmt == "elf32":
            fmt, elf32 = "elf", True
        key = ("ours", src, fmt, codec, elf32, deflate)
        if key not in self._made:
            suffix = {"kdump": "kdump", "flat": "flat", "elf": "elf32" if elf32 else "elf"}[fmt]
            name = codec if deflate == "libdeflate" else f"{codec}-{deflate}"
            out = self._dir(src) / f"ours-{name}.{suffix}"
            args = ["convert", src, out, "--format", fmt, "--codec", codec, "--deflate", deflate, "-f"]
            kdumpy(*args, *(["--elf32"] if elf32 else []), timeout=300)
            self._made[key] = out
        return self._made[key]

    def makedumpfile(self, src: Path, *opts: str, name: str) -> Path:
        """`makedumpfile -f OPTS src OUT` (output to a file), made once."""
        key = ("mdf", src, opts)
        if key not in self._made:
            out = self._dir(src) / name
            run([tool("makedumpfile"), "-f", *opts, src, out], timeout=300)
            self._made[key] = out
        return self._made[key]

    def remove_large(self, limit: int = 100 << 20) -> None:
        """Delete outputs over `limit` bytes (1 GB ELF and raw files), keeping the small ones to look at."""
        for key, path in list(self._made.items()):
            if path.exists() and path.stat().st_size > limit:
                path.unlink()
                del self._made[key]

    def digest(self, paths: Path | Sequence[Path]) -> PageDigest:
        key = tuple(os.fspath(p) for p in ([paths] if isinstance(paths, Path) else paths))
        if key not in self._digests:
            self._digests[key] = page_digest(paths)
        return self._digests[key]


_ARTIFACTS: Artifacts | None = None


def session_artifacts(factory: pytest.TempPathFactory) -> Artifacts:
    """The session's one `Artifacts` (shared by every test module that asks for it)."""
    global _ARTIFACTS
    if _ARTIFACTS is None:
        _ARTIFACTS = Artifacts(factory.mktemp("foreign"))
    return _ARTIFACTS


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artifacts]:
    made = session_artifacts(tmp_path_factory)
    yield made
    made.remove_large()
