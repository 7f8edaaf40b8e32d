"""The root prefix every OS path of the arming jobs goes through.

`Root("/")` is the running system. Any other prefix is a directory tree shaped like one (tests build
such trees with /proc/cmdline, /proc/iomem, /sys/kernel/kexec_* ... as plain files), so the logic
runs without root and without touching the running kernel. `KDUMPY_ROOT` sets the prefix for the
CLI (or the hidden `--root DIR` option).
"""

from __future__ import annotations

import gzip
import os
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV", "Root"]

ENV = "KDUMPY_ROOT"


@dataclass(frozen=True)
class Root:
    """A root directory: `/` for the running system, or a tree that stands in for it."""

    prefix: Path = Path("/")
    """The directory that plays `/`."""

    @classmethod
    def from_arg(cls, arg: str | None) -> Root:
        """`--root DIR`, else $KDUMPY_ROOT, else `/`."""
        value = arg or os.environ.get(ENV) or "/"
        return cls(Path(value).resolve())

    @property
    def is_live(self) -> bool:
        """Whether this is the running system's own root (so its kernel is the running kernel)."""
        return self.prefix == Path("/")

    def path(self, p: str | os.PathLike[str]) -> Path:
        """The absolute OS path `p` (e.g. "/proc/cmdline") under this root."""
        rel = os.fspath(p).lstrip("/")
        return self.prefix / rel

    def exists(self, p: str) -> bool:
        return self.path(p).exists()

    def read(self, p: str) -> str | None:
        """The text of `p`, or None when it does not exist or cannot be read."""
        try:
            return self.path(p).read_text(errors="replace")
        except OSError:
            return None

    def read_bytes(self, p: str) -> bytes | None:
        try:
            return self.path(p).read_bytes()
        except OSError:
            return None

    def read_gzip(self, p: str) -> str | None:
        """A gzip-compressed text file such as /proc/config.gz."""
        try:
            with gzip.open(self.path(p), "rt", errors="replace") as f:
                return f.read()
        except (OSError, EOFError):
            return None

    def read_int(self, p: str) -> int | None:
        """A file holding one integer (sysfs and /proc/sys style), or None."""
        text = self.read(p)
        if text is None:
            return None
        try:
            return int(text.split()[0], 0)
        except (ValueError, IndexError):
            return None

    def write(self, p: str, text: str) -> None:
        """Write `text` to `p` (a sysctl, a sysfs attribute, a config file) at once."""
        path = self.path(p)
        with path.open("w") as f:
            f.write(text)

    def write_file(self, p: str, text: str, mode: int = 0o644) -> Path:
        """Replace the regular file `p` atomically (temporary file, then rename), making parents."""
        path = self.path(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.kdumpy-tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)
        return path

    def release(self) -> str:
        """`uname -r` of the kernel this root runs: /proc/sys/kernel/osrelease."""
        text = self.read("/proc/sys/kernel/osrelease")
        if text and text.strip():
            return text.strip()
        return platform.release() if self.is_live else ""

    def machine(self) -> str:
        """The architecture (`uname -m`): /proc/sys/kernel/arch where the kernel has it (5.?+),
        else the running machine's."""
        text = self.read("/proc/sys/kernel/arch")
        if text and text.strip():
            return text.strip()
        return platform.machine()
