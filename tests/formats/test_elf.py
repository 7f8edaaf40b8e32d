"""ELF core reader and writer: round trips, layouts of other writers, and hostile input."""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdumpy.errors import CorruptDumpError, DumpError, TruncatedDumpError, UnsupportedError
from kdumpy.formats.elf import (
    ELF_INCOMPLETE,
    EM_386,
    EM_X86_64,
    PN_XNUM,
    PT_LOAD,
    PT_NOTE,
    ElfCore,
    ElfCoreWriter,
    LoadSpec,
)
from kdumpy.formats.notes import NT_PRSTATUS, Note, PrStatus, build_notes, cpu_notes, find_vmcoreinfo
from kdumpy.formats.vmcoreinfo import VmcoreInfo

PAGE = 4096
DIRECT_MAP = 0xFFFF888000000000
KERNEL_TEXT = 0xFFFFFFFF81000000


class FileSink:
    """The smallest sink: positional writes into a regular file."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self) -> None:
        os.close(self.fd)


def notes_blob() -> bytes:
    regs = {"rip": 0xFFFFFFFF81001234, "rsp": 0xFFFFC90000013E58, "rbp": 0xFFFFC90000013E80}
    vmci = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1700000000\n"
    return build_notes(
        [
            Note(b"CORE", NT_PRSTATUS, PrStatus(pid=42, registers=regs).to_desc(EM_X86_64)),
            Note(b"CORE", NT_PRSTATUS, PrStatus(pid=0, registers=regs).to_desc(EM_X86_64)),
            Note(b"VMCOREINFO", 0, vmci),
        ]
    )


def pattern(paddr: int, n: int) -> bytes:
    """Recognisable page content: each 8-byte word holds its own physical address."""
    start = paddr - paddr % 8
    words = b"".join(struct.pack("<Q", a) for a in range(start, paddr + n + 8, 8))
    return words[paddr - start : paddr - start + n]


def write_core(
    path: Path,
    loads: Sequence[LoadSpec],
    *,
    elf_class: int = 64,
    machine: int = EM_X86_64,
    note_data: bytes | None = None,
    incomplete: bool = False,
    chunk: int = 3000,
) -> ElfCoreWriter:
    sink = FileSink(path)
    try:
        w = ElfCoreWriter(
            sink,
            elf_class=elf_class,
            machine=machine,
            note_data=notes_blob() if note_data is None else note_data,
            loads=loads,
        )
        w.write_headers()
        for i, spec in enumerate(loads):
            # Written in uneven chunks, last chunk first, to show writes are positional.
            pieces = list(range(0, spec.filesz, chunk))
            for off in reversed(pieces):
                n = min(chunk, spec.filesz - off)
                w.write_load_data(i, off, pattern(spec.paddr + off, n))
        if incomplete:
            w.write_headers(incomplete=True)
    finally:
        sink.close()
    return w


def open_core(path: Path) -> ElfCore:
    data = path.read_bytes()
    return ElfCore(io.BytesIO(data), len(data))


LOADS64 = [
    LoadSpec(paddr=0x1000000, vaddr=KERNEL_TEXT, filesz=3 * PAGE, memsz=3 * PAGE),
    LoadSpec(paddr=0x1000, vaddr=DIRECT_MAP + 0x1000, filesz=0x9F000, memsz=0x9F000),
    LoadSpec(paddr=0x100000, vaddr=DIRECT_MAP + 0x100000, filesz=2 * PAGE, memsz=300 * PAGE),  # excluded tail
    LoadSpec(paddr=0x200000, vaddr=DIRECT_MAP + 0x200000, filesz=0, memsz=256 * PAGE),  # all excluded
    LoadSpec(paddr=0x1_0000_0000, vaddr=DIRECT_MAP + 0x1_0000_0000, filesz=PAGE, memsz=PAGE),
]


def check_round_trip(path: Path, w: ElfCoreWriter, loads: Sequence[LoadSpec], elf_class: int) -> ElfCore:
    data = path.read_bytes()
    assert len(data) == w.end_offset
    core = ElfCore(io.BytesIO(data), len(data))
    assert core.elf_class == elf_class
    assert core.machine == EM_X86_64
    assert core.e_type == 4
    assert not core.incomplete
    assert core.phdrs == w.phdrs
    assert core.phdrs[0].type == PT_NOTE
    assert [p.type for p in core.phdrs[1:]] == [PT_LOAD] * len(loads)
    assert core.truncated_loads == []
    assert core.note_data() == notes_blob()
    for spec, ph, off in zip(loads, core.loads, w.load_offsets, strict=True):
        assert (ph.paddr, ph.filesz, ph.memsz, ph.flags, ph.offset) == (
            spec.paddr,
            spec.filesz,
            spec.memsz,
            7,
            off,
        )
        if spec.filesz:
            assert ph.offset % PAGE == spec.paddr % PAGE
            assert core.read_at(ph.offset, ph.filesz) == pattern(spec.paddr, spec.filesz)
        else:
            assert ph.offset == 0
    return core


def test_elf64_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    w = write_core(path, LOADS64)
    core = check_round_trip(path, w, LOADS64, 64)
    assert [p.vaddr for p in core.loads] == [s.vaddr for s in LOADS64]
    notes = core.notes()
    cpus = [PrStatus.from_note(n, core.machine) for n in cpu_notes(notes)]
    assert [c.pid for c in cpus] == [42, 0]
    assert cpus[0].registers["rip"] == 0xFFFFFFFF81001234
    vmci = find_vmcoreinfo(notes)
    assert vmci is not None
    assert VmcoreInfo(vmci.desc).osrelease == "6.1.0-test"
    nd = core.note_data()
    for n in notes:
        assert nd[n.desc_offset : n.desc_offset + len(n.desc)] == n.desc


def test_load_data_offsets_are_page_aligned_and_in_order(tmp_path: Path) -> None:
    w = write_core(tmp_path / "vmcore", LOADS64)
    with_data = [o for o, s in zip(w.load_offsets, LOADS64, strict=True) if s.filesz]
    assert all(o % PAGE == 0 for o in with_data)
    assert with_data == sorted(with_data)
    assert with_data[0] >= w.note_offset + len(notes_blob())


def test_unaligned_paddr_keeps_its_offset_within_the_page(tmp_path: Path) -> None:
    # /proc/vmcore places data so that file offset and paddr agree modulo the page size.
    loads = [LoadSpec(paddr=0x9FC00 + 0x123, vaddr=DIRECT_MAP, filesz=0x100, memsz=0x100)]
    w = write_core(tmp_path / "vmcore", loads)
    assert w.load_offsets[0] % PAGE == 0xD23
    check_round_trip(tmp_path / "vmcore", w, loads, 64)


def test_elf32_round_trip_truncates_vaddr_like_kexec_tools(tmp_path: Path) -> None:
    loads = [
        LoadSpec(paddr=0x1000000, vaddr=KERNEL_TEXT, filesz=PAGE, memsz=PAGE),
        LoadSpec(paddr=0x1000, vaddr=DIRECT_MAP + 0x1000, filesz=0x9F000, memsz=0x9F000),
        LoadSpec(paddr=0x100000, vaddr=0xC0100000, filesz=PAGE, memsz=0xBFF00000 - 0x100000),
    ]
    path = tmp_path / "vmcore32"
    w = write_core(path, loads, elf_class=32)
    core = check_round_trip(path, w, loads, 32)
    # kexec-tools assigns the 64-bit address to Elf32_Addr p_vaddr: the low 32 bits remain.
    assert [p.vaddr for p in core.loads] == [0x81000000, 0x1000, 0xC0100000]
    # An x86_64 kernel's prstatus notes stay 336 bytes in an ELF32 core.
    assert PrStatus.from_note(cpu_notes(core.notes())[0], core.machine).pid == 42
    data = path.read_bytes()
    assert data[4] == 1 and struct.unpack_from("<H", data, 42)[0] == 32  # ELFCLASS32, e_phentsize


@pytest.mark.parametrize(
    "spec",
    [
        LoadSpec(paddr=0x1_0000_0000, vaddr=0, filesz=PAGE, memsz=PAGE),
        LoadSpec(paddr=0xFFFF_F000, vaddr=0, filesz=PAGE, memsz=2 * PAGE),  # crosses 4 GiB
        LoadSpec(paddr=0x1_2345_6000, vaddr=0, filesz=0, memsz=PAGE),
    ],
)
def test_elf32_refuses_memory_above_4gib(tmp_path: Path, spec: LoadSpec) -> None:
    sink = FileSink(tmp_path / "x")
    try:
        with pytest.raises(UnsupportedError, match=f"ELF32.*{spec.paddr:#x}.*4 GiB"):
            ElfCoreWriter(sink, elf_class=32, machine=EM_X86_64, note_data=b"", loads=[spec])
    finally:
        sink.close()


def test_incomplete_flag_set_by_rewriting_headers(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    write_core(path, LOADS64[:2], incomplete=True)
    core = open_core(path)
    assert core.incomplete
    assert core.e_flags & ELF_INCOMPLETE
    write_core(path, LOADS64[:2])
    assert not open_core(path).incomplete


def test_extended_numbering_round_trip(tmp_path: Path) -> None:
    n = PN_XNUM  # with the PT_NOTE that makes PN_XNUM + 1 program headers
    loads = [LoadSpec(paddr=i * PAGE, vaddr=DIRECT_MAP + i * PAGE, filesz=0, memsz=PAGE) for i in range(n)]
    loads[-1] = LoadSpec(paddr=(n - 1) * PAGE, vaddr=DIRECT_MAP, filesz=PAGE, memsz=PAGE)
    path = tmp_path / "vmcore"
    write_core(path, loads)
    data = path.read_bytes()
    e_shoff, e_phnum, e_shnum = struct.unpack_from("<Q", data, 40)[0], *struct.unpack_from("<H2xH", data, 56)
    assert e_phnum == PN_XNUM and e_shnum == 1
    assert struct.unpack_from("<I", data, e_shoff + 44)[0] == n + 1  # sh_info
    core = ElfCore(io.BytesIO(data), len(data))
    assert len(core.phdrs) == n + 1
    assert len(core.loads) == n
    last = core.loads[-1]
    assert core.read_at(last.offset, PAGE) == pattern(last.paddr, PAGE)
    assert core.note_data() == notes_blob()


def test_write_load_data_checks_bounds(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "x")
    try:
        w = ElfCoreWriter(sink, elf_class=64, machine=EM_X86_64, note_data=b"", loads=LOADS64[:1])
        with pytest.raises(ValueError):
            w.write_load_data(0, 3 * PAGE - 1, b"ab")
        with pytest.raises(IndexError):
            w.write_load_data(1, 0, b"a")
        with pytest.raises(ValueError):
            ElfCoreWriter(sink, elf_class=64, machine=EM_X86_64, note_data=b"",
                          loads=[LoadSpec(paddr=0, vaddr=0, filesz=2, memsz=1)])  # fmt: skip
        with pytest.raises(ValueError):
            ElfCoreWriter(sink, elf_class=16, machine=EM_X86_64, note_data=b"", loads=[])
    finally:
        sink.close()


# --- other writers' layouts ----------------------------------------------------------------------


def qemu_style_core(nloads: int = 2, *, xnum: bool = False) -> tuple[bytes, list[tuple[int, bytes]]]:
    """An ELF64 core laid out as QEMU's dump-guest-memory does: section headers at 64, program
    headers after them (at 192 with two section headers). Built by hand, without our structs."""
    notes = notes_blob()
    phnum = nloads + 1
    shnum = 2
    shoff = 64
    phoff = shoff + shnum * 64
    note_off = phoff + phnum * 56
    data_off = note_off + len(notes)
    segs = [(0x100000 * (i + 1), pattern(0x100000 * (i + 1), 2 * PAGE)) for i in range(nloads)]
    ehdr = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0,
        4, EM_X86_64, 1, 0, phoff, shoff, 0, 64, 56,
        PN_XNUM if xnum else phnum, 64, shnum, 1,
    )  # fmt: skip
    shdrs = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum if xnum else 0, 0, 0)
    shdrs += struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, 0, 0, 0, 0, 1, 0)  # an empty SHT_STRTAB
    phdrs = struct.pack("<IIQQQQQQ", PT_NOTE, 0, note_off, 0, 0, len(notes), len(notes), 0)
    off = data_off
    for paddr, content in segs:
        phdrs += struct.pack("<IIQQQQQQ", PT_LOAD, 0, off, 0, paddr, len(content), len(content), 0)
        off += len(content)
    blob = ehdr + shdrs + phdrs + notes + b"".join(c for _, c in segs)
    assert phoff == 192
    return blob, segs


@pytest.mark.parametrize("xnum", [False, True])
def test_reads_qemu_layout_with_section_headers_before_program_headers(xnum: bool) -> None:
    blob, segs = qemu_style_core(xnum=xnum)
    core = ElfCore(io.BytesIO(blob), len(blob))
    assert [p.paddr for p in core.loads] == [paddr for paddr, _ in segs]
    for ph, (_, content) in zip(core.loads, segs, strict=True):
        assert core.read_at(ph.offset, ph.filesz) == content
    assert [n.name for n in core.notes()] == [b"CORE", b"CORE", b"VMCOREINFO"]


def test_notes_of_several_pt_note_segments_each_with_a_terminator() -> None:
    # Before the capture kernel merges them, each CPU's PT_NOTE ends with a zero header and padding.
    cpu = Note(b"CORE", NT_PRSTATUS, PrStatus(pid=7, registers={"rip": 1}).to_desc(EM_X86_64))
    seg1 = build_notes([cpu]) + bytes(12) + bytes(64)
    seg2 = build_notes([Note(b"VMCOREINFO", 0, b"OSRELEASE=6.12.9\n")]) + bytes(12)
    note_off = 64 + 2 * 56
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 4, EM_X86_64, 1, 0, 64, 0, 0,
                       64, 56, 2, 0, 0, 0)  # fmt: skip
    ph = struct.pack("<IIQQQQQQ", PT_NOTE, 0, note_off, 0, 0, len(seg1), len(seg1), 0)
    ph += struct.pack("<IIQQQQQQ", PT_NOTE, 0, note_off + len(seg1), 0, 0, len(seg2), len(seg2), 0)
    blob = ehdr + ph + seg1 + seg2
    core = ElfCore(io.BytesIO(blob), len(blob))
    notes = core.notes()
    assert [n.name for n in notes] == [b"CORE", b"VMCOREINFO"]
    assert core.note_data() == seg1 + seg2
    for n in notes:
        assert core.note_data()[n.desc_offset : n.desc_offset + len(n.desc)] == n.desc


# --- probing -------------------------------------------------------------------------------------


def test_probe() -> None:
    blob, _ = qemu_style_core()
    assert ElfCore.probe(blob[:64])
    assert not ElfCore.probe(blob[:17])
    assert not ElfCore.probe(b"KDUMP   " + bytes(100))
    exec_elf = bytearray(blob[:64])
    exec_elf[16] = 2  # ET_EXEC
    assert not ElfCore.probe(bytes(exec_elf))
    big = bytearray(blob[:64])
    big[5] = 2
    struct.pack_into(">H", big, 16, 4)
    assert ElfCore.probe(bytes(big))


# --- hostile input -------------------------------------------------------------------------------


def exercise(data: bytes) -> ElfCore:
    """Everything a reader does with an ELF vmcore; any failure must be a DumpError."""
    core = ElfCore(io.BytesIO(data), len(data))
    core.note_data()
    notes = core.notes()
    if core.machine in (EM_X86_64, EM_386):
        for n in cpu_notes(notes):
            PrStatus.from_note(n, core.machine)
    vmci = find_vmcoreinfo(notes)
    if vmci is not None:
        VmcoreInfo(vmci.desc).items()
    for ph in core.loads:
        if ph.filesz:
            core.read_at(ph.offset, min(ph.filesz, 1 << 20))
            core.read_at(ph.offset + ph.filesz - 1, 1)
    return core


@pytest.fixture(scope="module")
def small_core(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("elf") / "vmcore"
    loads = [
        LoadSpec(paddr=0x1000, vaddr=DIRECT_MAP + 0x1000, filesz=2 * PAGE, memsz=2 * PAGE),
        LoadSpec(paddr=0x100000, vaddr=DIRECT_MAP + 0x100000, filesz=PAGE, memsz=4 * PAGE),
    ]
    write_core(path, loads)
    return path.read_bytes()


@pytest.mark.parametrize("elf_class", [64, 32])
def test_truncated_at_every_header_offset_raises_dump_error(tmp_path: Path, elf_class: int) -> None:
    path = tmp_path / "vmcore"
    loads = [LoadSpec(paddr=0x1000, vaddr=0x1000, filesz=PAGE, memsz=PAGE)]
    w = write_core(path, loads, elf_class=elf_class)
    data = path.read_bytes()
    # Every cut inside the headers and notes: open or note reading must fail with a DumpError.
    for cut in range(w.load_offsets[0]):
        if cut >= w.note_offset + len(notes_blob()):
            break
        with pytest.raises(DumpError):
            exercise(data[:cut])


def test_truncated_inside_load_data_opens_and_reports_the_missing_part(small_core: bytes) -> None:
    full = ElfCore(io.BytesIO(small_core), len(small_core))
    last = full.loads[-1]
    for cut in (last.offset, last.offset + 1, last.offset + PAGE // 2, last.offset + PAGE - 1):
        data = small_core[:cut]
        core = ElfCore(io.BytesIO(data), len(data))
        assert core.truncated_loads == [last]
        assert core.notes() == full.notes()
        have = cut - last.offset
        assert core.read_at(last.offset, have) == small_core[last.offset : cut]
        with pytest.raises(TruncatedDumpError):
            core.read_at(last.offset, have + 1)
        with pytest.raises(DumpError):
            exercise(data)


def test_truncated_at_many_offsets_never_raises_anything_but_dump_error(small_core: bytes) -> None:
    for cut in range(0, len(small_core), 97):
        with contextlib.suppress(DumpError):
            exercise(small_core[:cut])


def patched(data: bytes, fmt: str, offset: int, *values: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


@pytest.mark.parametrize(
    ("fmt", "offset", "values", "error", "message"),
    [
        ("<4s", 0, (b"\x7fELG",), CorruptDumpError, "not an ELF file"),
        ("<B", 4, (3,), CorruptDumpError, "EI_CLASS"),
        ("<B", 5, (0,), CorruptDumpError, "EI_DATA"),
        ("<H", 16, (2,), CorruptDumpError, "not a core dump"),
        ("<Q", 32, (1 << 40,), CorruptDumpError, "outside the file"),  # e_phoff past the end
        ("<Q", 32, (8,), CorruptDumpError, "outside the file"),  # e_phoff inside the ELF header
        ("<H", 54, (40,), CorruptDumpError, "e_phentsize"),
        ("<H", 56, (0xFFFE,), TruncatedDumpError, "65534"),  # absurd e_phnum
        ("<H", 56, (PN_XNUM,), CorruptDumpError, "PN_XNUM"),  # no section header to hold the count
    ],
)
def test_bad_header_fields(
    small_core: bytes, fmt: str, offset: int, values: tuple[int, ...], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        exercise(patched(small_core, fmt, offset, *values))


def test_absurd_extended_count_in_sh_info(small_core: bytes) -> None:
    # e_phnum = PN_XNUM, e_shoff -> a section header whose sh_info claims 2**32 - 1 program headers.
    shoff = len(small_core)
    data = small_core + struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 1, 0, 0xFFFFFFFF, 0, 0)
    data = patched(data, "<Q", 40, shoff)
    data = patched(data, "<H", 56, PN_XNUM)
    data = patched(data, "<HH", 58, 64, 1)
    with pytest.raises(TruncatedDumpError, match="4294967295"):
        exercise(data)
    with pytest.raises(CorruptDumpError, match="e_shentsize"):
        exercise(patched(data, "<H", 58, 40))
    with pytest.raises(CorruptDumpError, match="section header 0"):
        exercise(patched(data, "<Q", 40, shoff + 1))


def phdr_at(data: bytes, index: int) -> int:
    phoff = struct.unpack_from("<Q", data, 32)[0]
    return int(phoff + 56 * index)


def test_load_with_filesz_above_memsz_is_corrupt(small_core: bytes) -> None:
    at = phdr_at(small_core, 1)
    with pytest.raises(CorruptDumpError, match="p_filesz"):
        exercise(patched(small_core, "<QQ", at + 32, 3 * PAGE, 2 * PAGE))


def test_load_past_the_end_is_recorded_as_truncated(small_core: bytes) -> None:
    at = phdr_at(small_core, 1)
    data = patched(small_core, "<Q", at + 8, 1 << 50)  # p_offset far past the end
    core = ElfCore(io.BytesIO(data), len(data))
    assert [p.paddr for p in core.truncated_loads] == [0x1000]
    with pytest.raises(TruncatedDumpError):
        core.read_at(core.truncated_loads[0].offset, PAGE)


def test_note_segment_past_the_end_is_truncated(small_core: bytes) -> None:
    at = phdr_at(small_core, 0)
    with pytest.raises(TruncatedDumpError, match="PT_NOTE"):
        exercise(patched(small_core, "<QQQ", at + 32, 1 << 33, 1 << 33, 4))  # huge p_filesz


def test_note_running_past_the_end_of_its_segment_is_corrupt(small_core: bytes) -> None:
    at = phdr_at(small_core, 0)
    note_off = struct.unpack_from("<Q", small_core, at + 8)[0]
    with pytest.raises(CorruptDumpError, match="runs past the end"):
        exercise(patched(small_core, "<I", note_off + 4, 0x7FFFFFF0))  # first note's descsz


def test_big_endian_is_unsupported_with_a_clear_message(small_core: bytes) -> None:
    with pytest.raises(UnsupportedError, match="big-endian"):
        ElfCore(io.BytesIO(patched(small_core, "<B", 5, 2)), len(small_core))


def test_empty_and_tiny_files() -> None:
    for data in (b"", b"\x7f", b"\x7fELF", b"\x7fELF\x02\x01\x01" + bytes(20)):
        with pytest.raises(TruncatedDumpError):
            ElfCore(io.BytesIO(data), len(data))
    with pytest.raises(CorruptDumpError, match="not an ELF"):
        ElfCore(io.BytesIO(b"MZ"), 2)


def test_file_shorter_than_the_size_given_is_truncated(small_core: bytes) -> None:
    core = ElfCore(io.BytesIO(small_core[: len(small_core) - 10]), len(small_core))
    last = core.loads[-1]
    with pytest.raises(TruncatedDumpError, match="ends early"):
        core.read_at(last.offset, last.filesz)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_header_corruption_never_escapes_as_another_exception(
    small_core: bytes, data: st.DataObject
) -> None:
    at = phdr_at(small_core, 0)
    note_off = struct.unpack_from("<Q", small_core, at + 8)[0]
    limit = note_off + 64  # ELF header, program headers and the first note's header
    buf = bytearray(small_core)
    for _ in range(data.draw(st.integers(1, 6))):
        buf[data.draw(st.integers(0, limit - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DumpError, UnsupportedError):
        exercise(bytes(buf))


# --- real vmcores from the lab (session fixtures in tests/conftest.py) ---------------------------

REAL = [("vmcore_61", 64, "6.1."), ("vmcore_612", 64, "6.12."), ("vmcore_61_elf32", 32, "6.1.")]


@pytest.mark.lab
@pytest.mark.parametrize(("name", "elf_class", "release"), REAL)
def test_real_vmcore_headers_notes_and_registers(
    name: str, elf_class: int, release: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(name)
    with open(path, "rb") as f:
        core = ElfCore(f, os.fstat(f.fileno()).st_size)
        assert core.elf_class == elf_class
        assert core.machine == EM_X86_64  # in ELF32 too: vmcore.c's elf_check_arch wants it
        assert not core.incomplete
        assert core.truncated_loads == []
        assert core.loads and max(p.offset + p.filesz for p in core.loads) == core.size
        notes = core.notes()
        # /proc/vmcore merges the notes into one PT_NOTE without terminators: a byte-exact round trip.
        assert build_notes(notes) == core.note_data()
        vmci = find_vmcoreinfo(notes)
        assert vmci is not None
        info = VmcoreInfo(vmci.desc)
        assert info.osrelease is not None and info.osrelease.startswith(release)
        assert info.pagesize == PAGE
        assert info.crashtime and info.crashtime > 1_600_000_000
        assert info.symbol("init_uts_ns") is not None
        cpus = [PrStatus.from_note(n, core.machine) for n in cpu_notes(notes)]
        assert cpus
        for cpu in cpus:
            assert cpu.registers["rip"] >= 0xFFFF800000000000  # kernel text
            assert cpu.registers["rsp"] != 0
        for p in core.loads:
            assert len(core.read_at(p.offset + p.filesz - PAGE, PAGE)) == PAGE
