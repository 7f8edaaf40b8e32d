"""Full crash cycles on real Debian kernels (through the session fixtures): the captured /proc/vmcore
is an ELF core with the right VMCOREINFO, and makedumpfile reads the crash out of it."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ELFCLASS32, ELFCLASS64 = 1, 2
PT_NOTE = 4
ET_CORE = 4


def _notes(path: Path) -> dict[str, bytes]:
    """Name -> descriptor of every note in the PT_NOTE segments (a minimal ELF core reader, so this
    test does not depend on kdumpy.formats)."""
    with path.open("rb") as f:
        ident = f.read(16)
        assert ident[:4] == b"\x7fELF", "not an ELF file"
        cls = ident[4]
        # e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum
        ehdr = struct.Struct("<HHIQQQIHHH" if cls == ELFCLASS64 else "<HHIIIIIHHH")
        e_type, _, _, _, e_phoff, _, _, _, e_phentsize, e_phnum = ehdr.unpack(f.read(ehdr.size))
        phdr = struct.Struct("<IIQQQQQQ" if cls == ELFCLASS64 else "<IIIIIIII")
        assert e_type == ET_CORE
        notes: dict[str, bytes] = {}
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            fields = phdr.unpack(f.read(phdr.size))
            p_type, p_offset, p_filesz = (
                (fields[0], fields[2], fields[5]) if cls == ELFCLASS64 else (fields[0], fields[1], fields[4])
            )
            if p_type != PT_NOTE:
                continue
            f.seek(p_offset)
            data = f.read(p_filesz)
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, _ntype = struct.unpack_from("<III", data, pos)
                pos += 12
                name = data[pos : pos + namesz].rstrip(b"\0").decode()
                pos += (namesz + 3) & ~3
                notes.setdefault(name, data[pos : pos + descsz])
                pos += (descsz + 3) & ~3
    return notes


def _vmcoreinfo(path: Path) -> dict[str, str]:
    text = _notes(path)["VMCOREINFO"].decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _dmesg(path: Path, tmp_path: Path) -> str:
    out = tmp_path / "dmesg.txt"
    subprocess.run(
        ["makedumpfile", "--dump-dmesg", str(path), str(out)], check=True, capture_output=True, timeout=120
    )
    return out.read_text(errors="replace")


def _elf_class(path: Path) -> int:
    with path.open("rb") as f:
        return f.read(5)[4]


@pytest.mark.parametrize("fixture, series", [("vmcore_61", "6.1"), ("vmcore_612", "6.12")])
def test_sysrq_crash_is_captured_with_vmcoreinfo_and_dmesg(
    fixture: str,
    series: str,
    request: pytest.FixtureRequest,
    lab_kernels: dict[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    vmcore: Path = request.getfixturevalue(fixture)
    assert vmcore.stat().st_mode & 0o777 == 0o600
    assert _elf_class(vmcore) == ELFCLASS64
    info = _vmcoreinfo(vmcore)
    assert info["OSRELEASE"] == lab_kernels[series]["release"]
    assert "sysrq triggered crash" in _dmesg(vmcore, tmp_path)


def test_elf32_vmcore_is_elfclass32(
    vmcore_61_elf32: Path, lab_kernels: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    assert _elf_class(vmcore_61_elf32) == ELFCLASS32
    assert _vmcoreinfo(vmcore_61_elf32)["OSRELEASE"] == lab_kernels["6.1"]["release"]
    assert "sysrq triggered crash" in _dmesg(vmcore_61_elf32, tmp_path)


def test_la57_vmcore_has_five_level_paging(
    vmcore_612_la57: Path, lab_kernels: dict[str, dict[str, str]]
) -> None:
    info = _vmcoreinfo(vmcore_612_la57)
    assert info["OSRELEASE"] == lab_kernels["6.12"]["release"]
    assert info["NUMBER(pgtable_l5_enabled)"] == "1"


@pytest.mark.parametrize("fixture", ["vmcore_61_mixed", "vmcore_612_mixed"])
def test_mixed_workload_vmcore_records_its_workload(fixture: str, request: pytest.FixtureRequest) -> None:
    vmcore: Path = request.getfixturevalue(fixture)
    info = _vmcoreinfo(vmcore)
    assert "OSRELEASE" in info
    report = (vmcore.parent / "workload.json").read_text()
    assert '"hugetlb": ' in report
    assert '"anon_random": ' in report


def test_debug_vmlinux_matches_the_61_vmcore_in_crash(vmlinux_61: Path, vmcore_61: Path) -> None:
    # crash refuses a vmlinux that does not match the dump, so its `log` proves both are right.
    proc = subprocess.run(
        ["crash", "-s", str(vmlinux_61), str(vmcore_61)],
        input="log\nquit\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Kernel panic - not syncing: sysrq triggered crash" in proc.stdout, proc.stderr[-2000:]


def test_debug_vmlinux_612_is_the_612_kernel(
    vmlinux_612: Path, lab_kernels: dict[str, dict[str, str]]
) -> None:
    out = subprocess.run(
        ["readelf", "-S", "-W", str(vmlinux_612)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert ".debug_info" in out
    proc = subprocess.run(
        ["grep", "-a", "-m1", "-o", f"Linux version {lab_kernels['6.12']['release']}", str(vmlinux_612)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0
