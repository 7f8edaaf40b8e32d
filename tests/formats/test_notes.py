"""Note blobs, per-CPU NT_PRSTATUS decoding and the VMCOREINFO note."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdumpy.errors import CorruptDumpError, DumpError, UnsupportedError
from kdumpy.formats.notes import (
    EM_386,
    EM_X86_64,
    NT_PRSTATUS,
    Note,
    PrStatus,
    build_notes,
    cpu_notes,
    find_vmcoreinfo,
    parse_notes,
)

# fmt: off
X86_64_REGS = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
]
I386_REGS = [
    "ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "xds", "xes", "xfs", "xgs", "orig_eax", "eip", "xcs",
    "eflags", "esp", "xss",
]
# fmt: on


def kernel_note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """A note as the kernel's append_elf_note() lays it out, written independently of build_notes."""
    namesz = len(name) + 1
    out = struct.pack("<III", namesz, len(desc), ntype) + name + b"\0"
    out += b"\0" * (-namesz % 4)
    out += desc + b"\0" * (-len(desc) % 4)
    return out


def x86_64_prstatus_desc(pid: int, regs: dict[str, int]) -> bytes:
    """struct elf_prstatus for x86_64, byte by byte at the kernel's offsets."""
    desc = bytearray(336)
    struct.pack_into("<iii", desc, 0, 11, 1, 0)  # si_signo SIGSEGV, si_code, si_errno
    struct.pack_into("<h", desc, 12, 11)  # pr_cursig
    struct.pack_into("<i", desc, 32, pid)  # pr_pid
    struct.pack_into("<i", desc, 36, 1)  # pr_ppid
    struct.pack_into("<qq", desc, 48, 5, 6)  # pr_utime
    for i, name in enumerate(X86_64_REGS):
        struct.pack_into("<Q", desc, 112 + 8 * i, regs.get(name, 0))
    struct.pack_into("<i", desc, 328, 1)  # pr_fpvalid
    return bytes(desc)


VMCOREINFO_TEXT = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff82a1b2c0\n"


def kernel_blob() -> bytes:
    cpu0 = x86_64_prstatus_desc(1234, {"rip": 0xFFFFFFFF81000010, "rsp": 0xFFFFC90000013E58})
    cpu1 = x86_64_prstatus_desc(0, {"rip": 0xFFFFFFFF81000020, "rsp": 0xFFFFC90000083E58})
    # VMCOREINFO desc length not a multiple of 4, to exercise padding.
    vmci = VMCOREINFO_TEXT + b"CRASHTIME=1700000000\n"
    assert len(vmci) % 4
    return (
        kernel_note(b"CORE", NT_PRSTATUS, cpu0)
        + kernel_note(b"CORE", NT_PRSTATUS, cpu1)
        + kernel_note(b"VMCOREINFO", 0, vmci)
    )


def test_parse_kernel_blob_names_types_and_desc_offsets() -> None:
    blob = kernel_blob()
    notes = parse_notes(blob)
    assert [(n.name, n.type) for n in notes] == [(b"CORE", 1), (b"CORE", 1), (b"VMCOREINFO", 0)]
    for n in notes:
        assert blob[n.desc_offset : n.desc_offset + len(n.desc)] == n.desc
    # name "CORE\0" is 5 bytes, padded to 8, after a 12-byte header
    assert notes[0].desc_offset == 20
    assert len(notes[0].desc) == 336


def test_build_is_byte_exact_inverse_of_a_kernel_blob() -> None:
    blob = kernel_blob()
    assert build_notes(parse_notes(blob)) == blob


def test_terminator_and_trailing_zero_padding_are_accepted_and_dropped() -> None:
    blob = kernel_blob()
    padded = blob + bytes(12) + bytes(100)
    assert parse_notes(padded) == parse_notes(blob)
    assert build_notes(parse_notes(padded)) == blob
    # fewer than 12 zero bytes after the last note
    assert parse_notes(blob + bytes(7)) == parse_notes(blob)


def test_parsing_stops_at_the_terminator() -> None:
    blob = kernel_note(b"CORE", 1, bytes(8)) + bytes(12) + kernel_note(b"LINUX", 5, b"x")
    assert [n.name for n in parse_notes(blob)] == [b"CORE"]


def test_empty_blob_has_no_notes() -> None:
    assert parse_notes(b"") == []
    assert build_notes([]) == b""


@pytest.mark.parametrize("cut", [1, 11, 12, 15, 19, 20, 100, 355])
def test_note_running_past_the_end_is_corrupt(cut: int) -> None:
    blob = kernel_note(b"CORE", 1, bytes(336))
    with pytest.raises(CorruptDumpError):
        parse_notes(blob[:cut])


def test_huge_descsz_is_corrupt_not_allocated() -> None:
    blob = struct.pack("<III", 5, 0xFFFFFFFF, 1) + b"CORE\0\0\0\0"
    with pytest.raises(CorruptDumpError, match="runs past the end"):
        parse_notes(blob)


def test_stray_nonzero_tail_is_corrupt() -> None:
    with pytest.raises(CorruptDumpError):
        parse_notes(kernel_note(b"CORE", 1, b"") + b"\1\0\0")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_dump_error(data: bytes) -> None:
    try:
        notes = parse_notes(data)
    except DumpError:
        return
    for n in notes:
        assert data[n.desc_offset : n.desc_offset + len(n.desc)] == n.desc


notes_strategy = st.lists(
    st.builds(
        Note,
        name=st.binary(max_size=20),
        type=st.integers(0, 2**32 - 1),
        desc=st.binary(max_size=64),
    ).filter(lambda n: n.name or n.desc or n.type),
    max_size=8,
)


@given(notes_strategy)
def test_notes_round_trip(notes: list[Note]) -> None:
    blob = build_notes(notes)
    assert len(blob) % 4 == 0
    back = parse_notes(blob)
    assert [(n.name, n.type, n.desc) for n in back] == [(n.name, n.type, n.desc) for n in notes]
    for n in back:
        assert blob[n.desc_offset : n.desc_offset + len(n.desc)] == n.desc
    assert build_notes(back) == blob


def test_build_refuses_a_note_that_would_read_as_the_terminator() -> None:
    with pytest.raises(ValueError):
        build_notes([Note(b"", 0, b"")])


def test_find_vmcoreinfo_and_cpu_notes() -> None:
    notes = parse_notes(kernel_note(b"LINUX", 0x100, b"dev") + kernel_blob())
    vmci = find_vmcoreinfo(notes)
    assert vmci is not None and vmci.desc.startswith(b"OSRELEASE=6.1.0-test\n")
    assert [n.desc for n in cpu_notes(notes)] == [n.desc for n in notes[1:3]]
    assert find_vmcoreinfo(notes[:1]) is None
    # A "CORE" note of another type (NT_PRFPREG = 2) is not a CPU.
    assert cpu_notes([Note(b"CORE", 2, b"")]) == []


def test_x86_64_prstatus_decodes_registers_pid_and_times() -> None:
    regs = {name: 0x1000 + i for i, name in enumerate(X86_64_REGS)}
    regs["rip"] = 0xFFFFFFFF81234567
    note = Note(b"CORE", NT_PRSTATUS, x86_64_prstatus_desc(4321, regs))
    pr = PrStatus.from_note(note, EM_X86_64)
    assert pr.pid == 4321
    assert pr.registers == regs
    assert list(pr.registers) == X86_64_REGS
    assert (pr.signo, pr.cursig, pr.ppid, pr.utime, pr.fpvalid) == (11, 11, 1, (5, 6), 1)
    assert pr.to_desc() == note.desc


def test_i386_prstatus_decodes() -> None:
    desc = bytearray(144)
    struct.pack_into("<i", desc, 24, 77)  # pr_pid
    for i in range(17):
        struct.pack_into("<I", desc, 72 + 4 * i, 0xC0000000 + i)
    struct.pack_into("<i", desc, 140, 1)
    pr = PrStatus.from_note(Note(b"CORE", 1, bytes(desc)), EM_386)
    assert pr.pid == 77
    assert list(pr.registers) == I386_REGS
    assert pr.registers["eip"] == 0xC0000000 + 12
    assert pr.fpvalid == 1
    assert pr.to_desc() == bytes(desc)


def test_prstatus_of_wrong_size_is_corrupt() -> None:
    with pytest.raises(CorruptDumpError, match="336"):
        PrStatus.from_note(Note(b"CORE", 1, bytes(144)), EM_X86_64)


def test_prstatus_of_other_machine_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="183"):
        PrStatus.from_note(Note(b"CORE", 1, bytes(392)), 183)  # EM_AARCH64


def test_prstatus_to_desc_rejects_unknown_register() -> None:
    with pytest.raises(ValueError):
        PrStatus(pid=1, registers={"pc": 1}).to_desc(EM_X86_64)
