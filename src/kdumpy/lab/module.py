"""The lab's crash module (guest/kdumpy_lab_crash.c), built out of tree against Debian's
linux-headers-<release> with the kernel's own kbuild, one build per kernel, cached."""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

from kdumpy.errors import LabError
from kdumpy.lab.assets import Kernel
from kdumpy.lab.cache import digest, locked, package_version, run

__all__ = ["crash_module"]

NAME = "kdumpy_lab_crash"


def crash_module(k: Kernel, cache: Path) -> Path:
    """The built kdumpy_lab_crash.ko for kernel `k`."""
    source = resources.files("kdumpy.lab").joinpath(f"guest/{NAME}.c").read_bytes()
    headers = Path("/usr/src") / f"linux-headers-{k.release}"
    if not (headers / "Makefile").exists():
        raise LabError(
            f"{headers} is missing: install linux-headers-{k.release} (tools/setup.sh installs "
            f"the headers of the lab's kernels)"
        )
    key = digest(k.release, source, package_version(f"linux-headers-{k.release}"))
    dest = cache / "modules" / f"{k.release}-{key}" / f"{NAME}.ko"
    with locked(cache / "locks" / "assets"):
        if dest.exists():
            return dest
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            build = Path(tmp)
            (build / f"{NAME}.c").write_bytes(source)
            (build / "Kbuild").write_text(f"obj-m := {NAME}.o\n")
            run(
                ["make", "-C", headers, f"M={build}", "modules"],
                what=f"building {NAME}.ko for {k.release}",
                timeout=600,
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(build / f"{NAME}.ko", dest)
    return dest
