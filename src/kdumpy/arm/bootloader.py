"""Boot parameters for the next boot, through GRUB's drop-in directory (Debian: /etc/default/grub.d/).

kdumpy owns one file, /etc/default/grub.d/kdumpy.cfg, which update-grub sources after
/etc/default/grub and the drop-ins that sort before it (Debian's kdump-tools.cfg among them). The
kernel uses the last plain crashkernel= of its command line, so kdumpy's value wins over theirs.
It holds crashkernel= and panic_on_taint= (boot parameters only: no sysctl can set them later).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from kdumpy.arm.root import Root
from kdumpy.errors import KdumpyError

__all__ = ["DROPIN", "DROPIN_DIR", "BootloaderError", "Dropin", "apply_command", "others", "read", "write"]

DROPIN_DIR = "/etc/default/grub.d"
DROPIN = f"{DROPIN_DIR}/kdumpy.cfg"
_LINE = re.compile(r'^GRUB_CMDLINE_LINUX_DEFAULT="\$GRUB_CMDLINE_LINUX_DEFAULT ?(.*)"\s*$', re.M)


class BootloaderError(KdumpyError):
    """The boot parameters cannot be written where the bootloader reads them."""


@dataclass
class Dropin:
    """The boot parameters kdumpy adds, by name (crashkernel, panic_on_taint)."""

    params: dict[str, str]

    def words(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.params.items()]


def read(root: Root) -> Dropin:
    text = root.read(DROPIN) or ""
    params: dict[str, str] = {}
    m = _LINE.search(text)
    if m:
        for word in m.group(1).split():
            key, _, value = word.partition("=")
            params[key] = value
    return Dropin(params)


def write(root: Root, **changes: str | None) -> Path | None:
    """Set (a string) or drop (None) parameters in kdumpy's drop-in; returns its path, or None when
    the drop-in was removed because nothing is left in it."""
    if not root.path(DROPIN_DIR).parent.is_dir():
        raise BootloaderError(
            f"{root.path('/etc/default')} does not exist: kdumpy writes GRUB drop-ins only; add "
            f"{' '.join(f'{k}={v}' for k, v in changes.items() if v)} to your bootloader's command line"
        )
    drop = read(root)
    for key, value in changes.items():
        if value is None:
            drop.params.pop(key, None)
        else:
            if any(c.isspace() or c in "\"'$`\\" for c in value):
                raise BootloaderError(f"{key}={value!r}: a boot parameter value cannot hold spaces or quotes")
            drop.params[key] = value
    path = root.path(DROPIN)
    if not drop.params:
        path.unlink(missing_ok=True)
        return None
    text = (
        "# Written by kdumpy (kdumpy crashkernel --set, kdumpy panic-policy): parameters for the next boot.\n"
        "# update-grub sources this after /etc/default/grub; the last crashkernel= on a command line wins.\n"
        f'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT {" ".join(drop.words())}"\n'
    )
    return root.write_file(DROPIN, text)


def others(root: Root, key: str = "crashkernel") -> list[tuple[str, str]]:
    """(file, value) of every other GRUB setting of `key`=, in the order update-grub reads them."""
    found: list[tuple[str, str]] = []
    files = [root.path("/etc/default/grub")]
    d = root.path(DROPIN_DIR)
    if d.is_dir():
        files += sorted(p for p in d.glob("*.cfg") if p.name != Path(DROPIN).name)
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            for m in re.finditer(rf"(?:^|[\s\"']){re.escape(key)}=([^\s\"']+)", line):
                found.append(("/" + str(f.relative_to(root.prefix)), m.group(1)))
    return found


def apply_command(root: Root) -> str:
    """The one command that regenerates the bootloader configuration."""
    for cmd, path in (
        ("update-grub", "/usr/sbin/update-grub"),
        ("grub2-mkconfig -o /boot/grub2/grub.cfg", "/usr/sbin/grub2-mkconfig"),
        ("grub-mkconfig -o /boot/grub/grub.cfg", "/usr/sbin/grub-mkconfig"),
    ):
        if root.exists(path):
            return cmd
    return shlex.join(["update-grub"])
