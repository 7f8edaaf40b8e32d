"""The initramfs writer, checked against GNU cpio (no guest needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kdumpy.lab.initramfs import CpioWriter, init_script


def _archive() -> bytes:
    cpio = CpioWriter(bytearray())
    cpio.directory("bin")
    cpio.chardev("dev-console", 5, 1)
    cpio.file("bin/hello", b"hello\n" * 3, 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("odd", b"x")  # a size that is not a multiple of 4
    return cpio.finish()


def test_archive_is_padded_to_512_bytes_for_concatenation() -> None:
    assert len(_archive()) % 512 == 0


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed (tools/setup.sh)")
def test_gnu_cpio_reads_every_member_with_its_content(tmp_path: Path) -> None:
    listing = subprocess.run(
        ["cpio", "-t", "-v"], input=_archive(), capture_output=True, check=True, timeout=30
    ).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()]
    assert names == ["bin", "dev-console", "bin/hello", "bin/sh", "odd"]
    subprocess.run(
        ["cpio", "-i", "-d", "--quiet", "bin/hello", "odd"],
        input=_archive(),
        cwd=tmp_path,
        check=True,
        timeout=30,
    )
    assert (tmp_path / "bin" / "hello").read_bytes() == b"hello\n" * 3
    assert (tmp_path / "odd").read_bytes() == b"x"


def test_guest_init_script_is_shipped_as_package_data() -> None:
    script = init_script()
    assert script.startswith(b"#!/bin/sh\n")
    assert b"KDUMPY-LAB: " in script
