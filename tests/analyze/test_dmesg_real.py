"""dmesg on real vmcores of Debian kernels, against Debian's makedumpfile 1.7.2 --dump-dmesg (byte
for byte, ELF and kdump-compressed inputs) and drgn's get_dmesg() with the debug vmlinux."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kdumpy.analyze.dmesg import KernelLog, format_dmesg, read_log
from kdumpy.cli import main
from kdumpy.memory.dump import open_dump
from kdumpy.memory.kernel import Kernel

pytestmark = pytest.mark.lab

VMCORES = [
    "vmcore_61",
    "vmcore_612",
    "vmcore_61_mixed",
    "vmcore_612_mixed",
    "vmcore_61_elf32",
    "vmcore_612_la57",
]


def ours(path: Path | list[Path], caller_id: bool = False) -> bytes:
    with open_dump(path) as dump:  # type: ignore[arg-type]
        return format_dmesg(read_log(Kernel(dump)), caller_id=caller_id)


def log_of(path: Path) -> KernelLog:
    with open_dump(path) as dump:
        return read_log(Kernel(dump))


def makedumpfile_dmesg(path: Path, tmp: Path) -> bytes:
    out = tmp / f"dmesg-{path.name}.txt"
    out.unlink(missing_ok=True)
    subprocess.run(["makedumpfile", "--dump-dmesg", str(path), str(out)], check=True, capture_output=True)
    return out.read_bytes()


needs_makedumpfile = pytest.mark.skipif(
    shutil.which("makedumpfile") is None, reason="makedumpfile not installed"
)


@pytest.mark.foreign
@needs_makedumpfile
@pytest.mark.parametrize("name", VMCORES)
def test_elf_equals_makedumpfile(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path: Path = request.getfixturevalue(name)
    assert ours(path) == makedumpfile_dmesg(path, tmp_path)


@pytest.fixture(scope="module")
def filtered(
    vmcore_61_mixed: Path, vmcore_612_mixed: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """makedumpfile's own -d 31 output of the mixed vmcores: zlib-compressed, and uncompressed."""
    tmp = tmp_path_factory.mktemp("kdump")
    out = {}
    for tag, src in (("61", vmcore_61_mixed), ("612", vmcore_612_mixed)):
        for kind, opts in (("zlib", ["-c"]), ("raw", [])):
            dst = tmp / f"{tag}.d31.{kind}.kdump"
            subprocess.run(
                ["makedumpfile", *opts, "-d", "31", str(src), str(dst)], check=True, capture_output=True
            )
            out[f"{tag}-{kind}"] = dst
    return out


@pytest.mark.foreign
@needs_makedumpfile
@pytest.mark.parametrize("key", ["61-zlib", "612-zlib", "61-raw", "612-raw"])
def test_kdump_compressed_equals_makedumpfile(key: str, filtered: dict[str, Path], tmp_path: Path) -> None:
    assert ours(filtered[key]) == makedumpfile_dmesg(filtered[key], tmp_path)


@pytest.mark.foreign
@needs_makedumpfile
@pytest.mark.parametrize("name", ["vmcore_61_mixed", "vmcore_612_mixed"])
def test_kdumpy_zstd_copy_equals_makedumpfile_on_the_original(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Debian's makedumpfile has no zstd: the zstd copy is checked against the ELF original.
    src: Path = request.getfixturevalue(name)
    full = tmp_path / "full.zstd.kdump"
    assert main(["convert", str(src), str(full), "--format", "kdump", "--codec", "zstd"]) == 0
    assert ours(full) == makedumpfile_dmesg(src, tmp_path)


@pytest.mark.foreign
@needs_makedumpfile
def test_unprintable_bytes_match_makedumpfile(filtered: dict[str, Path], tmp_path: Path) -> None:
    """Patch non-ASCII bytes into a stored text-ring page of an uncompressed kdump file: makedumpfile
    prints them as signed chars (\\xffffffe2), and so must we."""
    raw = tmp_path / "raw.kdump"
    shutil.copyfile(filtered["61-raw"], raw)
    with open_dump(raw) as dump:
        kernel = Kernel(dump)
        info = kernel.info
        prb = kernel.read_u64(info.require_symbol("prb"))
        data = kernel.read_u64(
            prb
            + info.require_offset("printk_ringbuffer", "text_data_ring")
            + info.require_offset("prb_data_ring", "data")
        )
        at = kernel.read(data, 8192).index(b"Command line:")
        paddr = kernel.translate(data + at)
        _, descs = dump.dd.descriptors(paddr // 4096, paddr // 4096 + 1)  # type: ignore[attr-defined]
        assert int(descs[0]["flags"]) == 0  # stored uncompressed
        offset = int(descs[0]["offset"]) + paddr % 4096
    with open(raw, "r+b") as f:
        f.seek(offset)
        f.write(b"C\xe2\x80\x01\x7f")
    got = ours(raw)
    assert b"C\\xffffffe2\\xffffff80\\x01\\x7fnd line:" in got
    assert got == makedumpfile_dmesg(raw, tmp_path)


def test_caller_column_as_upstream_prints_it(vmcore_61: Path) -> None:
    plain = ours(vmcore_61).splitlines()
    with_caller = ours(vmcore_61, caller_id=True).splitlines()
    assert len(plain) == len(with_caller)
    assert with_caller[0].startswith(b"[    0.000000] [      T0] Linux version")
    # Continuation lines are indented past the caller column too.
    assert all(w.startswith(b" " * 26) for p, w in zip(plain, with_caller, strict=True) if p.startswith(b" "))


# -- drgn, with the debug vmlinux --


@pytest.fixture(scope="module")
def drgn_program_61(vmcore_61: Path, vmlinux_61: Path) -> object:
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore_61))
    prog.load_debug_info([str(vmlinux_61)])
    return prog


@pytest.fixture(scope="module")
def drgn_program_612(vmcore_612: Path, vmlinux_612: Path) -> object:
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore_612))
    prog.load_debug_info([str(vmlinux_612)])
    return prog


@pytest.mark.foreign
@pytest.mark.parametrize("series", ["61", "612"])
def test_equals_drgn_get_dmesg_line_for_line(series: str, request: pytest.FixtureRequest) -> None:
    from drgn.helpers.linux.printk import get_dmesg, get_printk_records

    prog = request.getfixturevalue(f"drgn_program_{series}")
    path: Path = request.getfixturevalue(f"vmcore_{series}")
    log = log_of(path)
    # Record by record: the same text, time, sequence, level, facility and caller.
    theirs = get_printk_records(prog)
    assert [
        (r.seq, r.timestamp, r.text, r.level, r.facility, r.caller_tid, r.caller_cpu) for r in theirs
    ] == [
        (
            r.seq,
            r.ts_nsec,
            r.text,
            r.level,
            r.facility,
            None if r.caller is None or r.caller.startswith("C") else int(r.caller[1:]),
            int(r.caller[1:]) if r.caller and r.caller.startswith("C") else None,
        )
        for r in log.records
    ]
    # Line by line: drgn does not indent the continuation lines of a multi-line record, makedumpfile
    # (and so kdumpy) indents them to the prefix's width; otherwise the text is the same.
    mine = [ln[15:] if ln.startswith(b" " * 15) else ln for ln in format_dmesg(log).splitlines()]
    assert get_dmesg(prog).splitlines() == mine
