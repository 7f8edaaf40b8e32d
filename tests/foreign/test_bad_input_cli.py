"""Damaged dumps at the command line: `kdumpy info X` and `kdumpy convert X OUT` on kdump-compressed,
ELF and flattened files cut short at many offsets or with absurd header fields.

Each run must end with a non-zero exit and exactly one stderr line starting "kdumpy: error:", or, for
a dump that is readable but incomplete, exit 0 and say it is incomplete. Never a traceback, never more
than a few seconds, never an allocation sized by an unchecked field: the child runs with a 1 GiB
address-space limit. The dumps are small synthetic ones from kdumpy's own writers.
"""

from __future__ import annotations

import os
import re
import resource
import struct
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.foreign.conftest import (
    DISK_DUMP_HEADER,
    FLAT_RECORD,
    HEADER_OFFSETS,
    SUB_HEADER_OFFSETS,
    KdumpLayout,
    kdumpy,
    kdumpy_bin,
)
from tests.synthetic import PAGE, elf_vmcore

pytestmark = pytest.mark.foreign

MEMORY_LIMIT = 1 << 30
TIME_LIMIT = 10.0
"""Seconds a run may take (interpreter start included; a healthy run takes well under one)."""

ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD, PT_NOTE = 1, 4


@dataclass(frozen=True)
class Dumps:
    """The intact synthetic dumps the cases damage."""

    elf: bytes
    kdump: bytes
    flat: bytes
    layout: KdumpLayout
    phdrs: list[tuple[int, tuple[int, ...]]]
    """(file offset, fields) of each ELF program header."""


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> Dumps:
    d = tmp_path_factory.mktemp("bad-input")
    # RAM in two ranges; the second has an excluded tail (filesz < memsz) so bitmap 2 differs from 1.
    elf = elf_vmcore(d / "vmcore", [(0x1000, 0x20000, 0x20000), (0x100000, 0x30000, 0x40000)])
    kd, flat = d / "dump.kdump", d / "dump.flat"
    kdumpy("convert", elf, kd, "--format", "kdump", "--codec", "zlib", timeout=60)
    kdumpy("convert", elf, flat, "--format", "flat", "--codec", "zlib", timeout=60)
    raw = elf.read_bytes()
    eh = ELF64_EHDR.unpack_from(raw)
    phoff, phnum = eh[5], eh[10]
    phdrs = [(phoff + i * ELF64_PHDR.size, ELF64_PHDR.unpack_from(raw, phoff + i * ELF64_PHDR.size))
             for i in range(phnum)]  # fmt: skip
    return Dumps(raw, kd.read_bytes(), flat.read_bytes(), KdumpLayout.parse(kd), phdrs)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_limited(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="")
    cmd = [os.fspath(kdumpy_bin()), *args]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
            preexec_fn=_limit_memory,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed it
        proc = subprocess.CompletedProcess(cmd, -9, "", f"(killed after {TIME_LIMIT:.0f} s)")
    return proc, time.monotonic() - t0


def assert_fails_cleanly(path: Path, tmp_path: Path, *, info_reads_no_pages: bool = False) -> None:
    """`info` and `convert` each give one error line and a non-zero exit, or read it as incomplete.

    With `info_reads_no_pages` (damage inside one stored page), `info` may describe the dump as it is:
    it does not decompress pages; `convert`, which does, must still fail cleanly.
    """
    out = tmp_path / f"{path.name}.out"
    runs = (["info", os.fspath(path)], ["convert", os.fspath(path), os.fspath(out), "-f"])
    with ThreadPoolExecutor(len(runs)) as pool:
        results = list(pool.map(_run_limited, runs))
    for args, (proc, seconds) in zip(runs, results, strict=True):
        what = f"kdumpy {args[0]} on {path.name}: exit {proc.returncode}, stderr {proc.stderr!r}"
        assert "Traceback" not in proc.stderr, what
        assert proc.returncode != -9 and seconds < TIME_LIMIT, f"{what}: took {seconds:.1f} s"
        if proc.returncode == 0 and args[0] == "info" and info_reads_no_pages:
            continue
        if proc.returncode == 0:
            if args[0] == "info":
                complete = re.search(r"^\s*complete\s+(.*)$", proc.stdout, re.M)
                assert complete and not complete[1].startswith("yes"), (
                    f"{what}: exit 0, and says it is complete"
                )
            else:
                assert "incomplete" in proc.stderr.lower(), f"{what}: exit 0 without saying it is incomplete"
        else:
            lines = proc.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("kdumpy: error:"), what
    out.unlink(missing_ok=True)


# --- the cases --------------------------------------------------------------------------------------

Damage = Callable[[Dumps], tuple[str, bytes]]
"""Returns (file name, damaged content)."""


def _kdump_cut_offsets(d: Dumps) -> list[tuple[str, int]]:
    lay, bs = d.layout, d.layout.block_size
    (b1, half), (b2, _), (table, tlen), (data, dlen) = lay.bitmap1, lay.bitmap2, lay.table, lay.data
    note_end = bs + 104 + lay.sub["size_note"]
    return [
        ("header", 0), ("header", 1), ("header", 7), ("header", 8), ("header", 12), ("header", 200),
        ("header", 408), ("header", 430), ("header", 463), ("header", DISK_DUMP_HEADER.size),
        ("header", bs - 1),
        ("sub-header", bs), ("sub-header", bs + 8), ("sub-header", bs + 60), ("sub-header", bs + 103),
        ("notes", bs + 104), ("notes", (bs + 104 + note_end) // 2), ("notes", note_end - 1),
        ("notes", b1 - 1),
        ("bitmap1", b1), ("bitmap1", b1 + 1), ("bitmap1", b1 + half // 2),
        ("bitmap2", b2), ("bitmap2", b2 + half - 1),
        ("table", table), ("table", table + 1), ("table", table + 24), ("table", table + 24 * 5 + 7),
        ("table", table + tlen - 1),
        ("data", data), ("data", data + 1), ("data", data + 100), ("data", data + dlen // 3),
        ("data", data + dlen // 2), ("data", data + dlen - 1),
    ]  # fmt: skip


def _elf_cut_offsets(d: Dumps) -> list[tuple[str, int]]:
    note = next(f for _, f in d.phdrs if f[0] == PT_NOTE)
    loads = [f for _, f in d.phdrs if f[0] == PT_LOAD]
    end_ph = d.phdrs[-1][0] + ELF64_PHDR.size
    return [
        ("ehdr", 0), ("ehdr", 4), ("ehdr", 16), ("ehdr", 40), ("ehdr", 63),
        ("phdrs", 64), ("phdrs", 64 + 30), ("phdrs", end_ph - 1),
        ("notes", note[2]), ("notes", note[2] + note[5] // 2), ("notes", note[2] + note[5] - 1),
        ("load", loads[0][2]), ("load", loads[0][2] + PAGE + 5), ("load", loads[-1][2] + 3 * PAGE),
        ("load", len(d.elf) - 1),
    ]  # fmt: skip


def _set(buf: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(buf)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _hdr(field: str, fmt: str, value: int) -> Damage:
    return lambda d: ("hdr.kdump", _set(d.kdump, HEADER_OFFSETS[field], fmt, value))


def _sub(field: str, fmt: str, value: int) -> Damage:
    return lambda d: ("sub.kdump", _set(d.kdump, d.layout.block_size + SUB_HEADER_OFFSETS[field], fmt, value))


def _desc(index: int, field_offset: int, fmt: str, value: int) -> Damage:
    return lambda d: ("desc.kdump", _set(d.kdump, d.layout.table[0] + 24 * index + field_offset, fmt, value))


def _all_descs_past_eof(d: Dumps) -> tuple[str, bytes]:
    out = bytearray(d.kdump)
    for i in range(d.layout.num_dumpable):
        struct.pack_into("<q", out, d.layout.table[0] + 24 * i, len(d.kdump) + PAGE * (i + 1))
    return "descs.kdump", bytes(out)


def _garbage_page(d: Dumps) -> tuple[str, bytes]:
    off, size = struct.unpack_from("<qI", d.kdump, d.layout.table[0])
    out = bytearray(d.kdump)
    out[off : off + size] = b"\xa5" * size
    return "garbage.kdump", bytes(out)


def _eraseinfo_huge(d: Dumps) -> tuple[str, bytes]:
    sub = d.layout.block_size
    buf = _set(d.kdump, sub + SUB_HEADER_OFFSETS["offset_eraseinfo"], "<q", len(d.kdump))
    return "erase.kdump", _set(buf, sub + SUB_HEADER_OFFSETS["size_eraseinfo"], "<Q", 1 << 62)


def _split_reversed(d: Dumps) -> tuple[str, bytes]:
    sub = d.layout.block_size
    buf = _set(d.kdump, sub + SUB_HEADER_OFFSETS["split"], "<i", 1)
    buf = _set(buf, sub + SUB_HEADER_OFFSETS["start_pfn_64"], "<Q", 100)
    return "split.kdump", _set(buf, sub + SUB_HEADER_OFFSETS["end_pfn_64"], "<Q", 1)


def _phdr(kind: int, field: int, value: int) -> Damage:
    # field: index in (p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align)
    def damage(d: Dumps) -> tuple[str, bytes]:
        off = next(o for o, f in d.phdrs if f[0] == kind)
        fmt = "<I" if field < 2 else "<Q"
        return "phdr.elf", _set(d.elf, off + (4 * field if field < 2 else 8 + 8 * (field - 2)), fmt, value)

    return damage


def _ehdr(offset: int, fmt: str, value: int) -> Damage:
    return lambda d: ("ehdr.elf", _set(d.elf, offset, fmt, value))


def _note_namesz(d: Dumps) -> tuple[str, bytes]:
    note = next(f for _, f in d.phdrs if f[0] == PT_NOTE)
    return "note.elf", _set(d.elf, note[2], "<I", 0xFFFFFFF0)


def _flat_records(d: Dumps) -> list[int]:
    """File offsets of the flattened stream's record headers."""
    pos, out = 4096, []
    while pos + 16 <= len(d.flat):
        off, size = FLAT_RECORD.unpack_from(d.flat, pos)
        out.append(pos)
        if off < 0:
            break
        pos += 16 + size
    return out


def _flat_record(index: int, offset: int | None, size: int | None) -> Damage:
    def damage(d: Dumps) -> tuple[str, bytes]:
        at = _flat_records(d)[index]
        old_off, old_size = FLAT_RECORD.unpack_from(d.flat, at)
        out = bytearray(d.flat)
        FLAT_RECORD.pack_into(
            out, at, old_off if offset is None else offset, old_size if size is None else size
        )
        return "record.flat", bytes(out)

    return damage


DAMAGES: dict[str, Damage] = {
    "kdump-signature": lambda d: ("sig.kdump", b"KDUMQ   " + d.kdump[8:]),
    "kdump-old-diskdump-signature": lambda d: ("sig.kdump", b"DISKDUMP" + d.kdump[8:]),
    "kdump-header-version-0": _hdr("header_version", "<i", 0),
    "kdump-header-version-99": _hdr("header_version", "<i", 99),
    "kdump-block-size-0": _hdr("block_size", "<i", 0),
    "kdump-block-size-3": _hdr("block_size", "<i", 3),
    "kdump-block-size-1g": _hdr("block_size", "<i", 1 << 30),
    "kdump-block-size-negative": _hdr("block_size", "<i", -4096),
    "kdump-sub-hdr-size-huge": _hdr("sub_hdr_size", "<i", 0x7FFFFFFF),
    "kdump-sub-hdr-size-negative": _hdr("sub_hdr_size", "<i", -1),
    "kdump-sub-hdr-size-0": _hdr("sub_hdr_size", "<i", 0),
    "kdump-bitmap-blocks-huge": _hdr("bitmap_blocks", "<I", 0xFFFFFFFF),
    "kdump-bitmap-blocks-0": _hdr("bitmap_blocks", "<I", 0),
    "kdump-status-every-codec": _hdr("status", "<I", 0x27),
    "kdump-max-mapnr-2e40": _sub("max_mapnr_64", "<Q", 1 << 40),
    "kdump-max-mapnr-u64-max": _sub("max_mapnr_64", "<Q", (1 << 64) - 1),
    "kdump-max-mapnr-past-bitmaps": lambda d: _sub("max_mapnr_64", "<Q", d.layout.bitmap1[1] * 8 + 1)(d),
    "kdump-offset-note-past-eof": _sub("offset_note", "<q", 1 << 40),
    "kdump-size-note-huge": _sub("size_note", "<Q", 1 << 62),
    "kdump-offset-vmcoreinfo-negative": _sub("offset_vmcoreinfo", "<q", -4096),
    "kdump-size-vmcoreinfo-huge": _sub("size_vmcoreinfo", "<Q", 1 << 62),
    "kdump-eraseinfo-huge": _eraseinfo_huge,
    "kdump-split-range-reversed": _split_reversed,
    "desc-offset-past-eof": _desc(0, 0, "<q", 1 << 40),
    "desc-offset-negative": _desc(0, 0, "<q", -1),
    "desc-size-huge": _desc(0, 8, "<I", 0xFFFFFFFF),
    "desc-size-0": _desc(1, 8, "<I", 0),
    "desc-flags-unknown": _desc(0, 12, "<I", 0x40),
    "desc-all-past-eof": _all_descs_past_eof,
    "desc-page-garbage": _garbage_page,
    "elf-magic": lambda d: ("magic.elf", b"\x7fELG" + d.elf[4:]),
    "elf-class-3": _ehdr(4, "<B", 3),
    "elf-phoff-past-eof": _ehdr(32, "<Q", 1 << 40),
    "elf-phnum-huge": _ehdr(56, "<H", 0xFFFE),
    "elf-phentsize-0": _ehdr(54, "<H", 0),
    "elf-phentsize-huge": _ehdr(54, "<H", 0xFFFF),
    "elf-note-offset-past-eof": _phdr(PT_NOTE, 2, 1 << 40),
    "elf-note-size-huge": _phdr(PT_NOTE, 5, 1 << 62),
    "elf-note-namesz-huge": _note_namesz,
    "elf-load-offset-past-eof": _phdr(PT_LOAD, 2, 1 << 40),
    "elf-load-filesz-huge": _phdr(PT_LOAD, 5, 1 << 62),
    "elf-load-memsz-huge": _phdr(PT_LOAD, 6, 1 << 62),
    "elf-load-paddr-huge": _phdr(PT_LOAD, 4, (1 << 64) - PAGE),
    "flat-no-end-marker": lambda d: ("noend.flat", d.flat[:-16]),
    "flat-cut-mid-record": lambda d: ("cut.flat", d.flat[: _flat_records(d)[2] + 20]),
    "flat-signature": lambda d: ("sig.flat", b"makedumpfilf" + d.flat[12:]),
    "flat-type-2": lambda d: ("type.flat", _set(d.flat, 16, ">q", 2)),
    "flat-record-size-huge": _flat_record(1, None, 1 << 62),
    "flat-record-offset-negative": _flat_record(1, -5, None),
    "flat-record-offset-huge": _flat_record(1, 1 << 62, None),
}


PAGE_DATA_DAMAGES = {"desc-page-garbage", "desc-size-0", "desc-flags-unknown"}
"""Damage that only reading the page shows (`info` checks where descriptors point, not what they hold)."""


@pytest.mark.parametrize("case", list(DAMAGES))
def test_damaged_dump_gives_one_error_line_or_reads_as_incomplete(
    case: str, dumps: Dumps, tmp_path: Path
) -> None:
    name, content = DAMAGES[case](dumps)
    path = tmp_path / name
    path.write_bytes(content)
    assert_fails_cleanly(path, tmp_path, info_reads_no_pages=case in PAGE_DATA_DAMAGES)


@pytest.mark.parametrize("fmt", ["kdump", "elf", "flat"])
def test_dump_cut_short_anywhere_gives_one_error_line_or_reads_as_incomplete(
    fmt: str, dumps: Dumps, tmp_path: Path
) -> None:
    content = {"kdump": dumps.kdump, "elf": dumps.elf, "flat": dumps.flat}[fmt]
    if fmt == "kdump":
        cuts = _kdump_cut_offsets(dumps)
    elif fmt == "elf":
        cuts = _elf_cut_offsets(dumps)
    else:
        records = _flat_records(dumps)
        cuts = [("header", 0), ("header", 20), ("header", 4095), ("record", records[1] + 8)]
        cuts += [("record", records[i] + 16 + 100) for i in (0, 2, len(records) // 2)]
        cuts += [("end marker", len(content) - 8)]

    def check(cut: tuple[str, int]) -> str | None:
        where, offset = cut
        path = tmp_path / f"cut-{where}-{offset:#x}.{fmt}"
        path.write_bytes(content[:offset])
        try:
            assert_fails_cleanly(path, tmp_path)
        except AssertionError as e:
            return f"cut in {where} at {offset:#x}: {e}"
        finally:
            path.unlink()
        return None

    with ThreadPoolExecutor(2) as pool:
        failures = [f for f in pool.map(check, cuts) if f]
    assert not failures, f"{len(failures)} of {len(cuts)} cuts:\n" + "\n".join(failures)


def test_intact_synthetic_dumps_convert_and_describe_cleanly(dumps: Dumps, tmp_path: Path) -> None:
    # The baseline the damaged cases start from must itself be fine.
    for name, content in (("ok.kdump", dumps.kdump), ("ok.elf", dumps.elf), ("ok.flat", dumps.flat)):
        path = tmp_path / name
        path.write_bytes(content)
        for args in (
            ["info", os.fspath(path)],
            ["convert", os.fspath(path), os.fspath(tmp_path / "o"), "-f"],
        ):
            proc, _ = _run_limited(args)
            assert proc.returncode == 0, proc.stderr
            assert "incomplete" not in proc.stdout.lower() and "cut short" not in proc.stdout
            assert "Traceback" not in proc.stderr


def test_elf32_output_of_memory_above_4_gib_is_refused_with_one_error_line(tmp_path: Path) -> None:
    elf = elf_vmcore(tmp_path / "vmcore", [(0x1000, 0x4000, 0x4000), (0x1_0000_0000, 0x4000, 0x4000)])
    out = tmp_path / "out.elf32"
    proc, _ = _run_limited(["convert", os.fspath(elf), os.fspath(out), "--format", "elf", "--elf32"])
    lines = proc.stderr.splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("kdumpy: error:"), proc.stderr
    assert "4 GiB" in lines[0] or "ELF32" in lines[0]
    assert not out.exists()
