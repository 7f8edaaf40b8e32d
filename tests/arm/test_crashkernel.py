"""crashkernel= evaluated as the kernel does: memparse, the kdump guide's examples, range boundaries
and the 128 MiB roundup, invalid forms, ,high/,low, several values on one line, and where 6.1
(legacy x86 reservation) and 6.12 (reserve_crashkernel_generic) differ."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kdumpy.arm import crashkernel as ck
from kdumpy.arm.root import Root
from kdumpy.cli import main

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
V61 = ck.model_for("6.1.0-56-amd64")
V612 = ck.model_for("6.12.117+deb12-amd64")
BOTH = (V61, V612)
# The lab's 1G QEMU guest: memblock counts 0x1000-0x9f000 and 0x100000-0x3ffe0000.
LAB_1G = 0x9E000 + 0x3FEE0000


@pytest.mark.parametrize(
    ("text", "value", "end"),
    [
        ("64M", 64 * M, 3),
        ("64m", 64 * M, 3),
        ("1g", G, 2),
        ("1048576k", G, 8),
        ("2T", 2 * T, 2),
        ("1P", 1 << 50, 2),
        ("1E", 1 << 60, 2),
        ("16E", 0, 3),  # 16 << 60 wraps at 64 bits, as unsigned long long does
        ("0x4000000", 64 * M, 9),
        ("0X10M", 16 * M, 5),
        ("0x", 0, 1),  # no hex digit after 0x: octal 0, stops at the x
        ("010M", 8 * M, 4),  # leading 0: octal
        ("09M", 0, 1),  # octal stops at 9
        ("M", 0, 1),  # a lone suffix reads as 0 and is consumed
        ("", 0, 0),
        ("abc", 0, 0),
        ("128M@16M", 128 * M, 4),
    ],
)
def test_memparse_reads_numbers_like_lib_cmdline(text: str, value: int, end: int) -> None:
    assert ck.memparse(text) == (value, end)


# (command line, RAM, expected size for 6.1, expected size for 6.12, offset, low size)
CASES: list[tuple[str, int, int, int, int, int]] = [
    # Documentation/admin-guide/kdump/kdump.rst
    ("crashkernel=64M@16M", G, 64 * M, 64 * M, 16 * M, 0),
    ("crashkernel=128M@32M", G, 128 * M, 128 * M, 32 * M, 0),
    ("crashkernel=256M@256M", 2 * G, 256 * M, 256 * M, 256 * M, 0),
    ("crashkernel=256M@0", 2 * G, 256 * M, 256 * M, 0, 0),
    ("crashkernel=256M", 2 * G, 256 * M, 256 * M, 0, 0),
    ("crashkernel=512M-2G:64M,2G-:128M", 256 * M, 0, 0, 0, 0),  # "smaller than 512M: nothing"
    ("crashkernel=512M-2G:64M,2G-:128M", G, 64 * M, 64 * M, 0, 0),
    ("crashkernel=512M-2G:64M,2G-:128M", 16 * G, 128 * M, 128 * M, 0, 0),
    ("crashkernel=256M,high crashkernel=128M,low", 16 * G, 256 * M, 256 * M, 0, 128 * M),
    ("crashkernel=256M,high crashkernel=0,low", 16 * G, 256 * M, 256 * M, 0, 0),
    ("crashkernel=256M,high", 16 * G, 256 * M, 256 * M, 0, 256 * M),  # x86 default low size
    ("crashkernel=256M,high", 2 * G, 256 * M, 256 * M, 0, 0),  # nothing above 4G: no low part
    # range boundaries: start inclusive, end exclusive, RAM rounded up to 128M first
    ("crashkernel=512M-2G:64M,2G-:128M", 384 * M, 0, 0, 0, 0),
    ("crashkernel=512M-2G:64M,2G-:128M", 384 * M + 1, 64 * M, 64 * M, 0, 0),  # rounds to 512M
    ("crashkernel=512M-2G:64M,2G-:128M", 1920 * M, 64 * M, 64 * M, 0, 0),
    ("crashkernel=512M-2G:64M,2G-:128M", 1920 * M + 1, 128 * M, 128 * M, 0, 0),  # rounds to 2G
    ("crashkernel=512M-2G:64M,2G-:128M", 2 * G, 128 * M, 128 * M, 0, 0),
    ("crashkernel=0-1G:64M,1G-:96M", LAB_1G, 96 * M, 96 * M, 0, 0),  # 1023.5M rounds to 1G
    ("crashkernel=0-1G:64M,1G-:96M", 896 * M, 64 * M, 64 * M, 0, 0),
    ("crashkernel=1G-:128M", LAB_1G, 128 * M, 128 * M, 0, 0),
    ("crashkernel=512M-2G:64M@16M", G, 64 * M, 64 * M, 16 * M, 0),
    ("crashkernel=0-2G:64M,2G-:4G", G, 64 * M, 64 * M, 0, 0),  # entries after the match unread
    # invalid forms: nothing is reserved
    ("crashkernel=0-512M:2G,512M-:64M", G, 0, 0, 0, 0),  # an examined size >= RAM
    ("crashkernel=0-:1G", G, 0, 0, 0, 0),  # size >= rounded RAM
    ("crashkernel=1G-512M:64M", 4 * G, 0, 0, 0, 0),  # end <= start
    ("crashkernel=512M:64M", G, 0, 0, 0, 0),  # '-' expected
    ("crashkernel=512M-2G64M", G, 0, 0, 0, 0),  # no ':' before the space: simple syntax, bad char
    ("crashkernel=512M-2G:", G, 0, 0, 0, 0),
    ("crashkernel=512M-2G:64M@", G, 0, 0, 0, 0),  # memory value expected after '@'
    ("crashkernel=64X", G, 0, 0, 0, 0),
    ("crashkernel=", G, 0, 0, 0, 0),
    ("crashkernel=auto", G, 0, 0, 0, 0),  # RHEL's old "auto" is not upstream syntax
    ("crashkernel=09M", G, 0, 0, 0, 0),
    ("crashkernel=M", G, 0, 0, 0, 0),
    ("crashkernel=16E", G, 0, 0, 0, 0),
    ("crashkernel=64M,low", G, 0, 0, 0, 0),  # ,low alone reserves nothing
    ("crashkernel=64M,highx", G, 0, 0, 0, 0),
    ("crashkernel=0,high", 16 * G, 0, 0, 0, 0),
    ("console=ttyS0 quiet", G, 0, 0, 0, 0),
    # accepted oddities of the kernel's parser
    ("crashkernel=64M@", G, 64 * M, 64 * M, 0, 0),
    ("crashkernel=64M@16Mjunk", G, 64 * M, 64 * M, 16 * M, 0),
    ("crashkernel=0-1G:64Mjunk", 512 * M, 64 * M, 64 * M, 0, 0),
    ("xcrashkernel=64M", G, 64 * M, 64 * M, 0, 0),  # found by strstr()
    ("crashkernel=0x6000000", G, 96 * M, 96 * M, 0, 0),
    ("crashkernel=010M", G, 8 * M, 8 * M, 0, 0),
    ("crashkernel=1T", 2 * T, T, T, 0, 256 * M),  # no room below 4G: high, plus the low default
    # several crashkernel= on one line: the last plain one is used
    ("crashkernel=64M crashkernel=96M", G, 96 * M, 96 * M, 0, 0),
    ("crashkernel=96M crashkernel=256M,high", 16 * G, 96 * M, 96 * M, 0, 0),
    ("crashkernel=256M,high crashkernel=96M crashkernel=128M,low", 16 * G, 96 * M, 96 * M, 0, 0),
    # sizes the RAM cannot hold
    ("crashkernel=1G", LAB_1G, 0, 0, 0, 0),
    ("crashkernel=1G", 2 * G, G, G, 0, 0),
    # where 6.1 and 6.12 differ
    ("crashkernel=4G-:256M crashkernel=96M,high", G, 96 * M, 0, 0, 0),  # 6.1 falls back to ,high
    ("crashkernel=foo crashkernel=96M,high", G, 96 * M, 0, 0, 0),
    ("crashkernel=0 crashkernel=96M,high", G, 96 * M, 0, 0, 0),
    ("crashkernel=64M@0x20800000", G, 64 * M, 0, 0x20800000, 0),  # 6.12: CRASH_ALIGN is 16M
    ("crashkernel=64M@0x20080000", G, 0, 0, 0, 0),  # not even 1M-aligned
    ("crashkernel=256M,high crashkernel=bad,low", 16 * G, 256 * M, 0, 0, 256 * M),
]


@pytest.mark.parametrize(("cmdline", "ram", "size61", "size612", "offset", "low"), CASES)
def test_evaluation_matches_the_kernel(
    cmdline: str, ram: int, size61: int, size612: int, offset: int, low: int
) -> None:
    for model, size in ((V61, size61), (V612, size612)):
        ev = ck.evaluate(cmdline, ram, model)
        assert ev.size == size, (model.name(), ev.reasons)
        if size:
            assert ev.offset == offset, (model.name(), ev.reasons)
            assert ev.low_size == low, (model.name(), ev.reasons)
        else:
            assert (ev.offset, ev.low_size) == (0, 0)


def test_range_syntax_names_the_matched_entry() -> None:
    ev = ck.evaluate("crashkernel=512M-2G:64M,2G-:128M", 3 * G, V612)
    assert ev.syntax == "range"
    assert ev.matched == ck.RangeEntry(2 * G, None, 128 * M)
    assert [e.text() for e in ev.entries] == ["512M-2G:64M", "2G-:128M"]
    assert any("2G-:128M matches" in r for r in ev.reasons)


def test_the_128m_roundup_decides_a_range_just_below_its_start() -> None:
    # 1023.5 MiB of memblock RAM is 1 GiB for the range syntax, but not for a plain size check.
    ev = ck.evaluate("crashkernel=1G-:128M", LAB_1G, V61)
    assert ev.total_mem == G and ev.size == 128 * M


def test_swiotlb_raises_the_default_low_size() -> None:
    ev = ck.evaluate("crashkernel=256M,high swiotlb=262144", 16 * G, V612)
    assert ev.low_size == 512 * M + 8 * M


def test_cma_suffix_is_known_only_from_616() -> None:
    line = "crashkernel=64M crashkernel=32M,cma"
    assert ck.evaluate(line, 4 * G, V612).size == 0
    assert ck.evaluate(line, 4 * G, ck.model_for("6.16")).size == 64 * M


def test_arm64_default_low_size_is_128m() -> None:
    ev = ck.evaluate("crashkernel=512M,high", 16 * G, ck.model_for("6.1", "aarch64"))
    assert (ev.size, ev.low_size) == (512 * M, 128 * M)


def test_model_for_reads_the_release() -> None:
    assert not ck.model_for("6.1.0-56-amd64").generic
    assert ck.model_for("6.7.0").generic and ck.model_for("6.12.117+deb12-amd64").size_check
    with pytest.raises(Exception, match="kernel version"):
        ck.model_for("unknown")


def test_system_ram_sums_top_level_system_ram_of_iomem(fake_root: Callable[..., Path]) -> None:
    ram, above, source = ck.system_ram(Root(fake_root()))
    assert (ram, above) == (LAB_1G, 0)
    assert "iomem" in source


def test_system_ram_falls_back_to_meminfo_when_iomem_is_hidden(fake_root: Callable[..., Path]) -> None:
    # Non-root readers see 00000000-00000000 for every entry.
    hidden = "00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n"
    ram, _, source = ck.system_ram(Root(fake_root(iomem=hidden)))
    assert ram == 863804 * K and "MemTotal" in source


def test_reservation_reads_sysfs_and_iomem(fake_root: Callable[..., Path]) -> None:
    res = ck.reservation(Root(fake_root(loaded=1)))
    assert res.size == 128 * M and res.loaded
    assert res.regions == ((0x2F000000, 0x36FFFFFF),)


def test_cli_json_reports_size_offset_low_and_range(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_root()
    rc = main(["crashkernel", "--root", str(root), "--json", "--ram", "3G", "512M-2G:64M,2G-:128M@0x1000000"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["size"] == 128 * M and out["offset"] == 16 * M and out["low_size"] == 0
    assert out["range"]["text"] == "2G-:128M" and out["ram_source"] == "--ram"
    assert out["kernel_model"].startswith("6.1 ")


def test_cli_defaults_to_the_running_command_line_and_ram(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_root(release="6.12.117+deb12-amd64")
    assert main(["crashkernel", "--root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["size"] == 128 * M and out["ram"] == LAB_1G
    assert out["current"]["size"] == 128 * M


def test_cli_kernel_version_selects_the_rules(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_root()
    line = "crashkernel=4G-:256M crashkernel=96M,high"
    for version, size in (("6.1", 96 * M), ("6.12", 0)):
        main(["crashkernel", "--root", str(root), "--json", "--kernel-version", version, "--cmdline", line])
        assert json.loads(capsys.readouterr().out)["size"] == size


def test_cli_recommend_and_set_write_the_grub_dropin(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_root()
    assert main(["crashkernel", "--root", str(root), "--recommend", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["recommended"] == ck.RECOMMENDED and rec["size"] == 192 * M
    (root / "etc/default/grub.d/kdump-tools.cfg").write_text(
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=384M-:128M"\n'
    )
    assert main(["crashkernel", "--root", str(root), "--set", "512M-2G:192M,2G-:256M"]) == 0
    out = capsys.readouterr().out
    assert "update-grub" in out and "kdump-tools.cfg also sets crashkernel=384M-:128M" in out
    text = (root / "etc/default/grub.d/kdumpy.cfg").read_text()
    assert (
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=512M-2G:192M,2G-:256M"' in text
    )


def test_cli_set_refuses_a_value_that_reserves_nothing(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_root()
    assert main(["crashkernel", "--root", str(root), "--set", "2G-:256M"]) == 2
    assert "would reserve nothing" in capsys.readouterr().err
    assert not (root / "etc/default/grub.d/kdumpy.cfg").exists()
