"""The guests' initramfs: busybox-static, the lab's /init, and the kernel's guest modules.

One image serves both the first and the capture kernel: /init tells them apart by /proc/vmcore.
Everything else a guest runs (kexec, python, makedumpfile, kdumpy) comes from the host's root,
mounted read-only over 9p, so the image stays small and needs no shared-library closure.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kdumpy.lab.assets import Kernel
from kdumpy.lab.cache import digest, locked, package_version

__all__ = ["CpioWriter", "build", "init_script"]

BUSYBOX = Path("/bin/busybox")


@dataclass
class CpioWriter:
    """An uncompressed cpio archive in the "newc" format, which the kernel unpacks into its rootfs."""

    data: bytearray
    _ino: int = 1

    def _member(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self._align(4)
        self.data += body
        self._align(4)

    def _align(self, n: int) -> None:
        self.data += b"\0" * (-len(self.data) % n)

    def directory(self, name: str) -> None:
        self._member(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._member(name, stat.S_IFREG | mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._member(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._member(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._member("TRAILER!!!", 0)
        # Pad to 512 bytes: the kernel drops a member that follows unless it starts on a 4-byte
        # boundary (lab pitfall 1), and 512 keeps any later concatenation safe.
        self._align(512)
        return bytes(self.data)


def init_script() -> bytes:
    """The guest's /init (a busybox shell script shipped as package data)."""
    return resources.files("kdumpy.lab").joinpath("guest/init.sh").read_bytes()


def build(k: Kernel, cache: Path) -> Path:
    """The initramfs for kernel `k`, rebuilt when the kernel, its modules, /init or busybox change."""
    init = init_script()
    key = digest(k.release, k.version, *(m.name for m in k.modules), init, package_version("busybox-static"))
    path = cache / "initrd" / f"{k.release}-{key}.cpio"
    with locked(cache / "locks" / "assets"):
        if path.exists():
            return path
        cpio = CpioWriter(bytearray())
        for d in ("bin", "dev", "proc", "sys", "tmp", "out", "hostroot", "lib", "lib/modules"):
            cpio.directory(d)
        # Without /dev/console the kernel starts init with no stdin/stdout.
        cpio.chardev("dev/console", 5, 1)
        cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        cpio.symlink("bin/sh", "busybox")
        cpio.file("init", init, 0o755)
        for m in k.modules:
            cpio.file(f"lib/modules/{m.name}", m.read_bytes())
        cpio.file("lib/modules/order", "".join(f"{m.name}\n" for m in k.modules).encode())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(cpio.finish())
        tmp.replace(path)
    return path
