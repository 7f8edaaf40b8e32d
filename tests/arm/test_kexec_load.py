"""The kexec_load(2) loader: setup header and zero page of a bzImage, the capture kernel's e820 map,
the ELF core header read back by kdumpy's ELF reader, the purgatory's machine code, and the segment
layout; the syscall itself is injected (the real one never runs here)."""

from __future__ import annotations

import errno
import io
import itertools
import json
import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kdumpy.arm import kexec
from kdumpy.arm import kexec_load as kl
from kdumpy.arm.root import Root
from kdumpy.arm.status import EXIT_ARMED, EXIT_NOT_LOADED
from kdumpy.cli import main
from kdumpy.errors import UsageError
from kdumpy.formats.elf import EM_X86_64, PT_NOTE, ElfCore
from kdumpy.lab.cache import cache_dir

RELEASE_61 = "6.1.0-56-amd64"
PAGE = 4096
CRASH = kl.RamRange(0x2F000000, 0x37000000)  # "Crash kernel" of tests/arm/conftest.py IOMEM_1G

# /sys/firmware/memmap of the lab's 1G QEMU guest (SeaBIOS), plus an ACPI and an NVS range.
MEMMAP = [
    (0x0, 0x9FBFF, "System RAM"),
    (0x9FC00, 0x9FFFF, "Reserved"),
    (0xF0000, 0xFFFFF, "Reserved"),
    (0x100000, 0x3FFDFFFF, "System RAM"),
    (0x3FFE0000, 0x3FFEFFFF, "ACPI Tables"),
    (0x3FFF0000, 0x3FFFFFFF, "ACPI Non-volatile Storage"),
    (0xFFFC0000, 0xFFFFFFFF, "Reserved"),
]
CPU_NOTES = [(0x3F83D000, 368), (0x3F93D000, 368)]
VMCOREINFO = (0x11F2000, 0x1024)


def lab_bzimage() -> Path | None:
    """The Debian 6.1 vmlinuz of the lab cache, when `kdumpy lab fetch` has run."""
    path = cache_dir(None) / "kernels" / RELEASE_61 / "vmlinuz"
    return path if path.exists() else None


def synthetic_bzimage(make_bzimage: Callable[..., bytes], init_size: int = 40 << 20) -> bytes:
    """conftest's fake bzImage completed with what a 64-bit loader reads: setup_sects, the jump that
    ends the header, kernel_alignment, relocatable, pref_address and init_size."""
    data = bytearray(make_bzimage())
    data[0x1F1] = 4
    data[0x200:0x202] = b"\xeb\x6a"  # jmp to 0x26c: the header is 0x1f1..0x26c, as in Debian's 6.1
    struct.pack_into("<I", data, 0x230, 0x200000)
    data[0x234] = 1
    struct.pack_into("<Q", data, 0x258, 0x1000000)
    struct.pack_into("<I", data, 0x260, init_size)
    return bytes(data) + b"\x90" * 0x10000  # a protected-mode "kernel"


def add_kexec_files(
    base: Path, memmap: Sequence[tuple[int, int, str]] = MEMMAP, notes: Sequence[tuple[int, int]] = CPU_NOTES
) -> Path:
    """What the loader reads beyond conftest's root: memmap, crash_notes, vmcoreinfo."""
    for i, (start, end, name) in enumerate(memmap):
        d = base / f"sys/firmware/memmap/{i}"
        d.mkdir(parents=True)
        (d / "start").write_text(f"{start:#x}\n")
        (d / "end").write_text(f"{end:#x}\n")
        (d / "type").write_text(name + "\n")
    for n, (addr, size) in enumerate(notes):
        d = base / f"sys/devices/system/cpu/cpu{n}"
        d.mkdir(parents=True)
        (d / "crash_notes").write_text(f"{addr:x}\n")
        (d / "crash_notes_size").write_text(f"{size}\n")
    (base / "sys/kernel/vmcoreinfo").write_text(f"{VMCOREINFO[0]:x} {VMCOREINFO[1]:x}\n")
    return base


@pytest.fixture
def kroot(fake_root: Callable[..., Path], make_bzimage: Callable[..., bytes]) -> Path:
    base = add_kexec_files(fake_root())
    (base / f"boot/vmlinuz-{RELEASE_61}").write_bytes(synthetic_bzimage(make_bzimage))
    return base


def parse_header(data: bytes) -> ElfCore:
    """kdumpy's own ELF reader on an elfcorehdr: p_offset is a physical address there, so the "file"
    is declared as large as physical memory (only the headers are read)."""
    return ElfCore(io.BytesIO(data), 1 << 40)


def plan_for(base: Path, elf_class: int = 32, initrd: bool = True) -> kl.LoadPlan:
    return kl.build_plan(
        Root(base),
        Path(f"/boot/vmlinuz-{RELEASE_61}"),
        Path(f"/boot/initrd.img-{RELEASE_61}") if initrd else None,
        "console=ttyS0 nr_cpus=1",
        elf_class=elf_class,
    )


# --- the image and the zero page ----------------------------------------------------------------


def test_setup_header_of_the_debian_61_bzimage() -> None:
    path = lab_bzimage()
    if path is None:
        pytest.skip("the lab's 6.1 vmlinuz is not cached (kdumpy lab fetch)")
    data = path.read_bytes()
    hdr = kl.read_setup_header(data, path.name)
    assert hdr.protocol >= (2, 12) and hdr.loads_64bit and hdr.relocatable
    assert hdr.kernel_alignment == 0x200000  # CONFIG_PHYSICAL_ALIGN of Debian's config
    assert hdr.pref_address == 0x1000000  # CONFIG_PHYSICAL_START
    assert len(hdr.header) == 0x202 + data[0x201] - 0x1F1
    assert hdr.payload_offset == (data[0x1F1] + 1) * 512
    # init_size covers the decompressed kernel, so it is larger than the compressed payload.
    assert hdr.init_size > len(data) - hdr.payload_offset
    assert hdr.cmdline_size == 2047


def test_boot_params_of_the_debian_61_bzimage_keep_its_header_and_set_the_loader_fields() -> None:
    path = lab_bzimage()
    if path is None:
        pytest.skip("the lab's 6.1 vmlinuz is not cached (kdumpy lab fetch)")
    data = path.read_bytes()
    hdr = kl.read_setup_header(data)
    e820 = [kl.E820Entry(0, 0x9FC00, kl.E820_RAM), kl.E820Entry(0x37000000, 0x7FFF000, kl.E820_RAM)]
    bp = kl.boot_params(
        hdr,
        cmdline_addr=0x1_3B4F_1000,
        initrd_addr=0x3AF9_6000,
        initrd_size=5591552,
        e820=e820,
        acpi_rsdp=0xF59C0,
    )
    assert len(bp) == PAGE
    assert bp[0x1EF] == 0  # the sentinel: a clean zero page, so nothing is "sanitized" away
    assert bp[0x210] == 0xFF  # type_of_loader
    assert struct.unpack_from("<I", bp, 0x228)[0] == 0x3B4F_1000  # cmd_line_ptr, low half
    assert struct.unpack_from("<I", bp, 0x0C8)[0] == 0x1  # ext_cmd_line_ptr, high half
    assert struct.unpack_from("<II", bp, 0x218) == (0x3AF9_6000, 5591552)  # ramdisk_image, ramdisk_size
    assert struct.unpack_from("<II", bp, 0x0C0) == (0, 0)  # ext_ramdisk_image, ext_ramdisk_size
    assert struct.unpack_from("<Q", bp, 0x070)[0] == 0xF59C0  # acpi_rsdp_addr (protocol 2.14+)
    assert bp[0x1E8] == 2
    assert struct.unpack_from("<QQI", bp, 0x2D0 + 20) == (0x37000000, 0x7FFF000, 1)
    # Every other byte of the setup header is the image's.
    changed = {0x210, *range(0x218, 0x220), *range(0x228, 0x22C)}
    end = 0x1F1 + len(hdr.header)
    assert all(bp[i] == data[i] for i in range(0x1F1, end) if i not in changed)
    assert not any(bp[end:0x2D0]) and not any(bp[0x2D0 + 40 :])


def test_setup_header_refusals(make_bzimage: Callable[..., bytes]) -> None:
    good = synthetic_bzimage(make_bzimage)
    with pytest.raises(kl.LegacyLoadError, match="not a bzImage"):
        kl.read_setup_header(b"\0" * 0x1000)
    no64 = bytearray(good)
    struct.pack_into("<H", no64, 0x236, 0)
    with pytest.raises(kl.LegacyLoadError, match="no 64-bit entry"):
        kl.read_setup_header(bytes(no64))
    fixed = bytearray(good)
    fixed[0x234] = 0
    with pytest.raises(kl.LegacyLoadError, match="not relocatable"):
        kl.read_setup_header(bytes(fixed))


# --- e820 ------------------------------------------------------------------------------------


def test_capture_e820_keeps_low_ram_firmware_ranges_and_the_usable_crash_memory(kroot: Path) -> None:
    usable = [kl.RamRange(CRASH.start, CRASH.end - PAGE)]
    e820 = kl.capture_e820(Root(kroot), usable)
    assert [(e.addr, e.addr + e.size, e.type) for e in e820] == [
        (0x0, 0x9FC00, kl.E820_RAM),  # firmware RAM below 1 MiB only
        (0x9FC00, 0xA0000, kl.E820_RESERVED),
        (0xF0000, 0x100000, kl.E820_RESERVED),
        (CRASH.start, CRASH.end - PAGE, kl.E820_RAM),
        (0x3FFE0000, 0x3FFF0000, kl.E820_ACPI),
        (0x3FFF0000, 0x40000000, kl.E820_NVS),
        (0xFFFC0000, 0x100000000, kl.E820_RESERVED),
    ]


def test_capture_e820_refuses_more_entries_than_the_zero_page_holds(
    fake_root: Callable[..., Path],
) -> None:
    many = [(0x100000 + i * 0x2000, 0x100000 + i * 0x2000 + 0xFFF, "Reserved") for i in range(130)]
    base = add_kexec_files(fake_root(), memmap=many)
    with pytest.raises(kl.LegacyLoadError, match="holds 128"):
        kl.capture_e820(Root(base), [CRASH])


# --- the ELF core header ---------------------------------------------------------------------

NOTES = [kl.ElfNote(a, s, f"cpu {i}") for i, (a, s) in enumerate(CPU_NOTES)] + [
    kl.ElfNote(*VMCOREINFO, "vmcoreinfo")
]
RAM = [kl.RamRange(0x1000, 0x9FC00), kl.RamRange(0x100000, CRASH.start), kl.RamRange(CRASH.end, 0x3FFE0000)]
PAGE_OFFSET = 0xFFFF9A3BC0000000  # a KASLR direct-map base: its low 32 bits are not 0


@pytest.mark.parametrize("elf_class", [32, 64])
def test_elfcorehdr_reads_back_with_kdumpys_elf_reader(elf_class: int) -> None:
    data = kl.elfcorehdr(elf_class, NOTES, RAM, page_offset=PAGE_OFFSET)
    core = parse_header(data)
    assert core.elf_class == elf_class and core.machine == EM_X86_64 and data[4] == elf_class // 32
    notes = [p for p in core.phdrs if p.type == PT_NOTE]
    assert [(p.offset, p.paddr, p.filesz, p.memsz) for p in notes] == [
        (n.paddr, n.paddr, n.size, n.size) for n in NOTES
    ]
    assert [(p.offset, p.paddr, p.memsz) for p in core.loads] == [(r.start, r.start, r.size) for r in RAM]
    mask = (1 << elf_class) - 1
    assert [p.vaddr for p in core.loads] == [(PAGE_OFFSET + r.start) & mask for r in RAM]
    assert all(p.flags == 7 and p.filesz == p.memsz for p in core.loads)
    ehsize, phentsize = {32: (52, 32), 64: (64, 56)}[elf_class]
    assert len(data) == ehsize + (len(NOTES) + len(RAM)) * phentsize


def test_elfcorehdr_elf64_puts_the_kernel_text_load_first() -> None:
    text = kl.RamRange(0x1E000000, 0x21400000)
    core = parse_header(kl.elfcorehdr(64, NOTES, RAM, kernel_text=(0xFFFFFFFF9E000000, text)))
    first = core.loads[0]
    assert (first.vaddr, first.paddr, first.memsz) == (0xFFFFFFFF9E000000, text.start, text.size)
    assert len(core.loads) == len(RAM) + 1


def test_elfcorehdr_elf32_refuses_ram_above_4gib() -> None:
    with pytest.raises(kl.LegacyLoadError, match="ELF32 cannot describe physical 0x100000000"):
        kl.elfcorehdr(32, NOTES, [*RAM, kl.RamRange(1 << 32, 5 << 30)])
    kl.elfcorehdr(64, NOTES, [*RAM, kl.RamRange(1 << 32, 5 << 30)])  # ELF64 can


# --- the purgatory ---------------------------------------------------------------------------

BASE, ZERO_PAGE, ENTRY = 0x3B4F2000, 0x3B4F0000, 0x37000200


def test_purgatory_loads_a_flat_gdt_at_its_own_address() -> None:
    page = kl.purgatory(BASE, ZERO_PAGE, ENTRY)
    limit, base = struct.unpack_from("<HQ", page, 0x80)
    assert (limit, base) == (31, BASE + 0x100)
    null, _, cs, ds = struct.unpack_from("<4Q", page, 0x100)
    assert null == 0
    assert cs == 0x00AF9A000000FFFF  # __BOOT_CS 0x10: present, ring 0, code, L=1 (64-bit)
    assert ds == 0x00CF92000000FFFF  # __BOOT_DS 0x18: present, ring 0, data, flat 4 GiB
    assert len(page) <= PAGE


def test_purgatory_disassembles_to_the_64_bit_boot_protocol_handover(tmp_path: Path) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    page = kl.purgatory(BASE, ZERO_PAGE, ENTRY)
    code = tmp_path / "purgatory.bin"
    code.write_bytes(page[:0x80])
    cmd = [
        objdump,
        "-D",
        "-b",
        "binary",
        "-m",
        "i386:x86-64",
        "-M",
        "intel",
        f"--adjust-vma={BASE:#x}",
        str(code),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    # "address:<TAB>bytes<TAB>instruction  # target"; continuation lines of long instructions have no
    # instruction field.
    rows = [ln.split("\t") for ln in out.splitlines()]
    addrs = [int(r[0].strip().rstrip(":"), 16) for r in rows if len(r) == 3]
    lines = [" ".join(r[2].split("#")[0].split()) for r in rows if len(r) == 3]
    lines = ["lretq" if ln in ("retfq", "rex.W retf", "lretq") else ln for ln in lines]
    start = lines[: lines.index("jmp rax") + 1]
    assert start == [
        "cli",
        "lgdt [rip+0x78]",
        "lea rsp,[rip+0xff1]",
        "mov eax,0x18",
        "mov ds,eax",
        "mov es,eax",
        "mov ss,eax",
        "mov fs,eax",
        "mov gs,eax",
        "push 0x10",
        "lea rax,[rip+0x3]",
        "push rax",
        "lretq",
        f"movabs rsi,{ZERO_PAGE:#x}",
        f"movabs rax,{ENTRY:#x}",
        "jmp rax",
    ]
    # lgdt reads the pointer at 0x80, rsp starts at the page's end, lretq lands on the movabs.
    assert f"# {BASE + 0x80:#x}" in out and f"# {BASE + PAGE:#x}" in out
    assert f"# {addrs[lines.index(f'movabs rsi,{ZERO_PAGE:#x}')]:#x}" in out


# --- the plan --------------------------------------------------------------------------------


def test_plan_segments_are_page_aligned_disjoint_and_inside_the_crash_region(kroot: Path) -> None:
    plan = plan_for(kroot)
    assert plan.crash == CRASH
    spans = sorted((s.mem, s.mem + s.memsz) for s in plan.segments)
    for s in plan.segments:
        assert s.mem % PAGE == 0 and s.memsz % PAGE == 0, s.what
        assert CRASH.start <= s.mem and s.mem + s.memsz <= CRASH.end, s.what
        assert len(s.data) <= s.memsz, s.what
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert [s.what for s in plan.segments] == [
        "kernel",
        "initrd",
        "boot_params",
        "cmdline",
        "purgatory",
        "elfcorehdr",
    ]
    seg = {s.what: s for s in plan.segments}
    # The kernel at a kernel_alignment boundary with init_size of room; the entry is the purgatory.
    assert seg["kernel"].mem % 0x200000 == 0 and seg["kernel"].memsz >= 40 << 20
    assert plan.kernel_entry == seg["kernel"].mem + 0x200
    assert plan.entry == seg["purgatory"].mem
    # The ELF core header sits at the top, is named on the command line and is not RAM for the capture kernel.
    hdr = seg["elfcorehdr"]
    assert hdr.mem + hdr.memsz == CRASH.end
    assert plan.cmdline.endswith(f" elfcorehdr={hdr.mem:#x}")
    assert seg["cmdline"].data == plan.cmdline.encode() + b"\0"
    ram = [(e.addr, e.addr + e.size) for e in plan.e820 if e.type == kl.E820_RAM]
    assert (CRASH.start, hdr.mem) in ram
    assert not any(a < hdr.mem + hdr.memsz and hdr.mem < b for a, b in ram)
    # The zero page points at the command line and the initrd.
    bp = seg["boot_params"].data
    assert struct.unpack_from("<I", bp, 0x228)[0] == seg["cmdline"].mem
    assert struct.unpack_from("<II", bp, 0x218) == (seg["initrd"].mem, len(seg["initrd"].data))
    assert bp[0x1E8] == len(plan.e820)
    # The purgatory hands the zero page and the kernel's 64-bit entry over.
    assert struct.pack("<Q", seg["boot_params"].mem) in seg["purgatory"].data
    assert struct.pack("<Q", plan.kernel_entry) in seg["purgatory"].data


def test_plan_elfcorehdr_lists_cpu_notes_vmcoreinfo_and_ram_outside_the_crash_region(kroot: Path) -> None:
    plan = plan_for(kroot, elf_class=32)
    core = parse_header(next(s.data for s in plan.segments if s.what == "elfcorehdr"))
    assert core.elf_class == 32
    assert [(p.paddr, p.memsz) for p in core.phdrs if p.type == PT_NOTE] == [*CPU_NOTES, VMCOREINFO]
    # System RAM less the crash region and the low 1 MiB (left out as kexec_file_load does).
    assert [(p.paddr, p.paddr + p.memsz) for p in core.loads] == [
        (0x100000, CRASH.start),
        (CRASH.end, 0x3FFE0000),
    ]


def test_plan_without_initrd_has_no_initrd_segment(kroot: Path) -> None:
    plan = plan_for(kroot, initrd=False)
    assert "initrd" not in [s.what for s in plan.segments]
    bp = next(s.data for s in plan.segments if s.what == "boot_params")
    assert struct.unpack_from("<II", bp, 0x218) == (0, 0)


def test_plan_refuses_a_crash_region_too_small_for_init_size(
    fake_root: Callable[..., Path], make_bzimage: Callable[..., bytes]
) -> None:
    base = add_kexec_files(fake_root())
    (base / f"boot/vmlinuz-{RELEASE_61}").write_bytes(synthetic_bzimage(make_bzimage, init_size=128 << 20))
    with pytest.raises(kl.LegacyLoadError, match=r"region \(128 MiB at 0x2f000000\) is too small"):
        plan_for(base)


def test_plan_refuses_without_a_reservation(
    fake_root: Callable[..., Path], make_bzimage: Callable[..., bytes]
) -> None:
    base = add_kexec_files(fake_root(crash_size=0))
    (base / f"boot/vmlinuz-{RELEASE_61}").write_bytes(synthetic_bzimage(make_bzimage))
    with pytest.raises(kl.LegacyLoadError, match="no crashkernel reservation"):
        plan_for(base)


def test_plan_elf32_refuses_a_machine_with_ram_above_4gib(kroot: Path) -> None:
    iomem = kroot / "proc/iomem"
    iomem.write_text(iomem.read_text() + "100000000-13fffffff : System RAM\n")
    with pytest.raises(kl.LegacyLoadError, match="above 4 GiB"):
        plan_for(kroot, elf_class=32)
    assert plan_for(kroot, elf_class=64).ram[-1] == kl.RamRange(1 << 32, 0x140000000)


def test_plan_with_the_real_debian_61_bzimage_fits_128m(kroot: Path) -> None:
    path = lab_bzimage()
    if path is None:
        pytest.skip("the lab's 6.1 vmlinuz is not cached (kdumpy lab fetch)")
    shutil.copyfile(path, kroot / f"boot/vmlinuz-{RELEASE_61}")
    plan = plan_for(kroot)
    kernel = plan.segments[0]
    assert kernel.what == "kernel" and kernel.memsz == 0x3F98000  # Debian 6.1's init_size, page aligned
    assert kernel.mem == CRASH.start


# --- load ------------------------------------------------------------------------------------


class FakeKexecLoad:
    """Records each call; raises `fail`; marks `root` loaded as the kernel would."""

    def __init__(self, fail: int | None = None, root: Path | None = None) -> None:
        self.calls: list[tuple[int, list[kl.Segment], int]] = []
        self.fail = fail
        self.root = root

    def __call__(self, entry: int, segments: Sequence[kl.Segment], flags: int) -> None:
        self.calls.append((entry, list(segments), flags))
        if self.fail is not None:
            raise OSError(self.fail, "fake")
        if self.root is not None:
            (self.root / "sys/kernel/kexec_crash_loaded").write_text("1\n")


def test_load_elf32_calls_kexec_load_on_crash_and_records_the_load(kroot: Path) -> None:
    call = FakeKexecLoad()
    result = kl.load_elf32(
        Root(kroot), Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "console=ttyS0", syscall=call
    )
    [(entry, segments, flags)] = call.calls
    assert flags == 0x1 | (62 << 16)  # KEXEC_ON_CRASH | KEXEC_ARCH_X86_64
    assert entry == next(s.mem for s in segments if s.what == "purgatory")
    assert result.cmdline.startswith("console=ttyS0 elfcorehdr=0x")
    state = json.loads((kroot / "run/kdumpy/loaded.json").read_text())
    assert state["loader"] == "kexec_load" and state["elf_class"] == 32
    assert state["cmdline"] == result.cmdline and state["release"] == RELEASE_61
    assert kexec.read_state(Root(kroot)) == state


def test_load_legacy_explains_the_kernels_errno(kroot: Path) -> None:
    with pytest.raises(kl.LegacyLoadError, match="outside the crashkernel region 0x2f000000-0x36ffffff"):
        kl.load_legacy(
            Root(kroot),
            Path(f"/boot/vmlinuz-{RELEASE_61}"),
            None,
            "",
            syscall=FakeKexecLoad(errno.EADDRNOTAVAIL),
        )
    with pytest.raises(kl.LegacyLoadError, match="CONFIG_KEXEC"):
        kl.load_legacy(
            Root(kroot), Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "", syscall=FakeKexecLoad(errno.ENOSYS)
        )


def test_load_legacy_refuses_the_real_syscall_under_a_root_prefix(kroot: Path) -> None:
    with pytest.raises(UsageError, match="refusing to call kexec_load"):
        kl.load_legacy(Root(kroot), Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (errno.EPERM, "needs root"),
        (errno.EACCES, "verify the image's signature.*kexec_file_load instead"),
        (errno.EINVAL, "EINVAL"),
        (errno.EBUSY, "in progress"),
    ],
)
def test_load_legacy_errno_sentences(kroot: Path, code: int, text: str) -> None:
    with pytest.raises(kl.LegacyLoadError, match=text):
        kl.load_legacy(
            Root(kroot), Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "", syscall=FakeKexecLoad(code)
        )


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        ("sys/kernel/security/lockdown", "none [integrity] confidentiality\n", "lockdown 'integrity'"),
        ("sys/kernel/security/lockdown", "none integrity [confidentiality]\n", "lockdown 'confidentiality'"),
        ("proc/sys/kernel/kexec_load_disabled", "1\n", "kexec_load_disabled=1"),
    ],
)
def test_load_legacy_refuses_before_the_syscall_what_the_kernel_refuses(
    kroot: Path, path: str, value: str, text: str
) -> None:
    (kroot / path).write_text(value)
    call = FakeKexecLoad()
    with pytest.raises(kl.LegacyLoadError, match=text):
        kl.load_elf32(Root(kroot), Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "", syscall=call)
    assert call.calls == []


def test_plan_refuses_another_architecture(kroot: Path) -> None:
    (kroot / "proc/sys/kernel/arch").write_text("aarch64\n")
    with pytest.raises(kl.LegacyLoadError, match="x86_64, not aarch64"):
        plan_for(kroot)


# --- kdumpy load --elf32-core-headers -------------------------------------------------------------

FileCall = tuple[int, int, bytes | None, int]


def cli_syscalls(monkeypatch: pytest.MonkeyPatch, base: Path) -> tuple[FakeKexecLoad, list[FileCall]]:
    """The CLI's syscalls replaced (the real ones refuse a root prefix): kexec_load by a FakeKexecLoad,
    kexec_file_load (load and unload) by a recorder; both set kexec_crash_loaded as the kernel does."""
    legacy = FakeKexecLoad(root=base)
    monkeypatch.setattr(kl, "_syscall_for", lambda root, syscall: legacy)
    file_calls: list[FileCall] = []

    def file_load(kfd: int, ifd: int, cmdline: bytes | None, flags: int) -> None:
        file_calls.append((kfd, ifd, cmdline, flags))
        loaded = flags & kexec.KEXEC_FILE_UNLOAD == 0
        (base / "sys/kernel/kexec_crash_loaded").write_text(f"{int(loaded)}\n")

    monkeypatch.setattr(kexec, "_syscall_for", lambda root, syscall: file_load)
    return legacy, file_calls


def test_cli_load_elf32_core_headers_loads_with_kexec_load_and_status_shows_it(
    kroot: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, file_calls = cli_syscalls(monkeypatch, kroot)
    (kroot / "etc/kdumpy").mkdir(parents=True)
    (kroot / "etc/kdumpy/kdumpy.toml").write_text('[capture]\nappend = "panic=1"\nnr_cpus = 2\n')
    r = ["--root", str(kroot)]
    assert main(["load", *r, "--elf32-core-headers", "--append", "lab.role=capture"]) == 0
    out = capsys.readouterr().out
    assert (
        f"loaded /boot/vmlinuz-{RELEASE_61} ({RELEASE_61}) with kexec_load, ELF32 core headers, "
        "into 128M reserved" in out
    )
    assert file_calls == []  # not kexec_file_load
    [(entry, segments, flags)] = legacy.calls
    assert flags == kl.KEXEC_ON_CRASH | kl.KEXEC_ARCH_X86_64
    seg = {s.what: s for s in segments}
    assert entry == seg["purgatory"].mem
    assert seg["initrd"].data == (kroot / f"boot/initrd.img-{RELEASE_61}").read_bytes()
    assert parse_header(seg["elfcorehdr"].data).elf_class == 32
    # The command line the capture kernel gets is the one printed: the settings file's and --append's
    # words as for kexec_file_load, and the elfcorehdr= of the header's segment last.
    line = seg["cmdline"].data.rstrip(b"\0").decode()
    assert f"  command line: {line}\n" in out
    words = line.split()
    assert {"nr_cpus=2", "panic=1", "lab.role=capture", "console=ttyS0"} <= set(words)
    assert "crashkernel=128M" not in words and "quiet" not in words
    assert words[-1] == f"elfcorehdr={seg['elfcorehdr'].mem:#x}"

    assert main(["status", *r]) == EXIT_ARMED
    out = capsys.readouterr().out
    assert "loader: kexec_load, ELF32 core headers (/proc/vmcore will be ELFCLASS32)" in out
    assert f"command line: {line}" in out
    assert main(["status", *r, "--json"]) == EXIT_ARMED
    st = json.loads(capsys.readouterr().out)["loaded"]
    assert st["loader"] == "kexec_load" and st["elf_class"] == 32 and st["cmdline"] == line
    main(["check", *r, "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    loaded = checks["capture kernel loaded"]
    assert loaded["status"] == "pass" and "kexec_load and ELF32 core headers" in loaded["detail"]

    # kexec_file_load's unload frees whatever image is loaded.
    assert main(["unload", *r]) == 0
    assert file_calls[-1][3] == kexec.KEXEC_FILE_UNLOAD | kexec.KEXEC_FILE_ON_CRASH
    assert main(["status", *r]) == EXIT_NOT_LOADED


def test_cli_load_json_names_the_loader(
    kroot: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, file_calls = cli_syscalls(monkeypatch, kroot)
    r = ["--root", str(kroot), "--json"]
    assert main(["load", *r]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["loader"] == "kexec_file_load" and "elf_class" not in out
    assert len(file_calls) == 1 and legacy.calls == []
    assert main(["load", *r, "--elf32-core-headers", "--no-initrd"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["loader"] == "kexec_load" and out["elf_class"] == 32 and out["initrd"] is None
    assert " elfcorehdr=0x" in out["cmdline"]
    assert len(file_calls) == 1 and len(legacy.calls) == 1
    assert "initrd" not in {s.what for s in legacy.calls[0][1]}


def test_cli_load_elf32_dry_run_shows_the_layout_and_loads_nothing(
    kroot: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, file_calls = cli_syscalls(monkeypatch, kroot)
    r = ["--root", str(kroot), "--elf32-core-headers", "--dry-run", "--append", "panic=1"]
    assert main(["load", *r, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["loader"] == "kexec_load" and plan["elf_class"] == 32 and "refused" not in plan
    assert plan["kernel"] == f"/boot/vmlinuz-{RELEASE_61}"
    layout = plan["layout"]
    assert layout["elf_class"] == 32 and [s["what"] for s in layout["segments"]] == [
        "kernel", "initrd", "boot_params", "cmdline", "purgatory", "elfcorehdr",
    ]  # fmt: skip
    assert plan["cmdline"] == layout["cmdline"] and plan["cmdline"].endswith(
        f"elfcorehdr={layout['elfcorehdr']:#x}"
    )
    assert "panic=1" in plan["cmdline"].split() and "crashkernel=128M" not in plan["cmdline"]
    assert main(["load", *r]) == 0
    text = capsys.readouterr().out
    assert "loader: kexec_load" in text and f"crash region: {CRASH.start:#x}-{CRASH.end - 1:#x}" in text
    assert f"  elfcorehdr   {layout['elfcorehdr']:#012x}" in text
    assert legacy.calls == [] and file_calls == []
    # Under lockdown the plan is still shown, with the reason the kernel would refuse it.
    (kroot / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    assert main(["load", *r, "--json"]) == 0
    assert "lockdown 'integrity'" in json.loads(capsys.readouterr().out)["refused"]


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        ("sys/kernel/security/lockdown", "none [integrity] confidentiality\n", "lockdown 'integrity'"),
        ("proc/sys/kernel/kexec_load_disabled", "1\n", "kexec_load_disabled=1"),
        ("proc/sys/kernel/arch", "aarch64\n", "x86_64, not aarch64"),
    ],
)
def test_cli_load_elf32_refusals_are_one_line(
    kroot: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    path: str,
    value: str,
    text: str,
) -> None:
    legacy, file_calls = cli_syscalls(monkeypatch, kroot)
    (kroot / path).write_text(value)
    assert main(["load", "--root", str(kroot), "--elf32-core-headers"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err
    assert legacy.calls == [] and file_calls == []


def test_cli_load_elf32_without_a_reservation_is_one_line(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = add_kexec_files(fake_root(crash_size=0))
    for extra in (["--dry-run"], []):
        assert main(["load", "--root", str(base), "--elf32-core-headers", *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no crashkernel reservation" in err


def test_plan_takes_page_offset_and_kernel_text_from_proc_kcore(kroot: Path) -> None:
    # /proc/kcore's headers: a KCORE_TEXT load (_text.._end, with its physical address), a
    # KCORE_VMALLOC one (no physical address) and a KCORE_RAM one (p_vaddr = __va(p_paddr)).
    phdrs = [
        (1, 7, 0x1000, 0xFFFFFFFF9B400000, 0x22600000, 0x3430000, 0x3430000, 0x1000),
        (1, 7, 0x2000, 0xFFFFB5E640000000, 0xFFFFFFFFFFFFFFFF, 1 << 40, 1 << 40, 0x1000),
        (1, 7, 0x3000, PAGE_OFFSET + 0x100000, 0x100000, 0x3FEE0000, 0x3FEE0000, 0x1000),
    ]
    ident = b"\x7fELF\x02\x01\x01".ljust(16, b"\0")
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 4, 62, 1, 0, 64, 0, 0, 64, 56, len(phdrs), 0, 0, 0)
    (kroot / "proc/kcore").write_bytes(ehdr + b"".join(struct.pack("<IIQQQQQQ", *p) for p in phdrs))
    core64 = parse_header(
        next(s.data for s in plan_for(kroot, elf_class=64).segments if s.what == "elfcorehdr")
    )
    text, *ram = core64.loads
    assert (text.vaddr, text.paddr, text.memsz) == (0xFFFFFFFF9B400000, 0x22600000, 0x3430000)
    assert [p.vaddr - p.paddr for p in ram] == [PAGE_OFFSET] * len(ram)
    core32 = parse_header(
        next(s.data for s in plan_for(kroot, elf_class=32).segments if s.what == "elfcorehdr")
    )
    assert len(core32.loads) == len(ram)  # no kernel-text load in ELF32
    assert [p.vaddr for p in core32.loads] == [(PAGE_OFFSET + p.paddr) & 0xFFFFFFFF for p in core32.loads]
