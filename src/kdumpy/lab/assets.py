"""Lab assets: the stock Debian kernels, resolved through their metapackages, with the few modules a
guest needs, and (on demand) their debug vmlinux.

Everything lives under the lab cache; `manifest.json` there records what was resolved, so a Debian
point release moves the lab to the new kernel instead of breaking it.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdumpy.errors import LabError
from kdumpy.lab.cache import locked, package_version, run

__all__ = ["SERIES", "Kernel", "debug_vmlinux", "host_tools", "kernel", "manifest", "resolve"]

# The generic flavour: the cloud flavour has no 9p (CONFIG_NET_9P is not set).
SERIES = {"6.1": "linux-image-amd64", "6.12": "linux-image-6.12-amd64"}

# What a guest loads, in this order, with dependencies added by modprobe: virtio transport and disk,
# the 9p stack for the host root and the output share, fw_cfg for -device vmcoreinfo (QEMU's
# dump-guest-memory reads the note through it), ext4 for the workload's disk.
GUEST_MODULES = ("virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "qemu_fw_cfg", "ext4")

# The host tools a guest runs (through the host root) and whose versions key cached dumps.
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "kexec-tools", "makedumpfile")


@dataclass(frozen=True)
class Kernel:
    """One unpacked Debian kernel in the lab cache."""

    series: str
    """The lab's name for it: "6.1" or "6.12"."""
    release: str
    """`uname -r` of the kernel, e.g. 6.1.0-56-amd64; also OSRELEASE in its VMCOREINFO."""
    package: str
    """The image package, e.g. linux-image-6.1.0-56-amd64."""
    version: str
    """The Debian version of that package, e.g. 6.1.192-2."""
    vmlinuz: Path
    """The signed bzImage, booted by QEMU and loaded by kexec."""
    modules: tuple[Path, ...]
    """Uncompressed .ko files in load order (dependencies first)."""


def _apt_depends(package: str) -> str:
    out = run(["apt-cache", "depends", package], what=f"apt-cache depends {package}", timeout=60)
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise LabError(f"{package} depends on no linux-image package (apt-cache depends)")


def _apt_version(package: str) -> str:
    out = run(
        ["apt-cache", "show", "--no-all-versions", package], what=f"apt-cache show {package}", timeout=60
    )
    m = re.search(r"^Version: (\S+)$", out, re.M)
    if not m:
        raise LabError(f"apt-cache knows no version of {package}; run apt-get update")
    return m.group(1)


def resolve(series: str) -> tuple[str, str, str]:
    """(package, Debian version, release) of a series' current kernel, through its metapackage."""
    if series not in SERIES:
        raise LabError(f"unknown kernel series {series!r}: choose one of {', '.join(SERIES)}")
    package = _apt_depends(SERIES[series])
    return package, _apt_version(package), package.removeprefix("linux-image-")


def _download(package: str, version: str, debs: Path) -> Path:
    """The .deb of package=version in `debs`, fetched with apt-get download if missing."""
    debs.mkdir(parents=True, exist_ok=True)
    # apt names files with the epoch's colon escaped.
    pattern = f"{package}_{version.replace(':', '%3a')}_*.deb"
    found = sorted(debs.glob(pattern))
    if not found:
        run(
            ["apt-get", "download", "-q", f"{package}={version}"],
            cwd=debs,
            timeout=1800,
            what=f"apt-get download {package}",
        )
        found = sorted(debs.glob(pattern))
    if not found:
        raise LabError(f"apt-get download {package}={version} left no .deb in {debs}")
    return found[0]


def _unpack_kernel(series: str, package: str, version: str, release: str, cache: Path) -> Kernel:
    deb = _download(package, version, cache / "debs")
    dest = cache / "kernels" / release
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "modules").mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        stage = Path(tmp)
        # The whole module tree is needed once, for depmod to compute dependencies; then only the
        # modules a guest loads are kept.
        run(["dpkg-deb", "-x", deb, stage], what=f"dpkg-deb -x {deb.name}", timeout=900)
        shutil.copy2(stage / "boot" / f"vmlinuz-{release}", dest / "vmlinuz")
        run(["depmod", "-b", stage, release], what="depmod", timeout=600)
        order: list[Path] = []
        for name in GUEST_MODULES:
            out = run(
                ["modprobe", "-d", stage, "-S", release, "--show-depends", name],
                what=f"modprobe --show-depends {name}",
                timeout=60,
            )
            for line in out.splitlines():
                parts = line.split()
                # "builtin NAME" lines need nothing; "insmod PATH [params]" lines name a file.
                if len(parts) >= 2 and parts[0] == "insmod":
                    path = Path(parts[1])
                    if path not in order:
                        order.append(path)
        modules: list[Path] = []
        for src in order:
            base = src.name
            target = dest / "modules" / re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", ".ko", base)
            # 6.12 ships .ko.xz: unpack here, busybox insmod takes plain ELF objects only.
            if base.endswith(".xz"):
                target.write_bytes(lzma.decompress(src.read_bytes()))
            elif base.endswith(".zst"):
                target.write_bytes(
                    subprocess.run(["zstd", "-dc", str(src)], capture_output=True, check=True).stdout
                )
            else:
                shutil.copy2(src, target)
            modules.append(target)
    k = Kernel(series, release, package, version, dest / "vmlinuz", tuple(modules))
    record = asdict(k)
    record["vmlinuz"] = str(k.vmlinuz)
    record["modules"] = [str(m) for m in k.modules]
    record["guest_modules"] = list(GUEST_MODULES)
    (dest / "kernel.json").write_text(json.dumps(record, indent=2) + "\n")
    return k


def _load_kernel(path: Path) -> Kernel | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("guest_modules") != list(GUEST_MODULES):
        return None
    k = Kernel(
        record["series"],
        record["release"],
        record["package"],
        record["version"],
        Path(record["vmlinuz"]),
        tuple(Path(m) for m in record["modules"]),
    )
    if not k.vmlinuz.exists() or not all(m.exists() for m in k.modules):
        return None
    return k


def kernel(series: str, cache: Path) -> Kernel:
    """The current kernel of a series, downloaded and unpacked into the cache if it is not there yet.

    When apt cannot answer (no network, no lists), the kernel recorded in the manifest is used.
    """
    try:
        package, version, release = resolve(series)
    except LabError:
        recorded = manifest(cache).get("kernels", {}).get(series)
        if not recorded:
            raise
        package, version, release = recorded["package"], recorded["version"], recorded["release"]
    with locked(cache / "locks" / "assets"):
        k = _load_kernel(cache / "kernels" / release / "kernel.json")
        if k is None or k.version != version:
            k = _unpack_kernel(series, package, version, release, cache)
        _record(cache, k)
    return k


def debug_vmlinux(k: Kernel, cache: Path) -> Path:
    """The kernel's debug vmlinux (for crash and drgn), extracted alone from the -dbg .deb, which is
    then deleted: the .deb is about 1 GB, the vmlinux about 630 MB."""
    dest = cache / "kernels" / k.release / "vmlinux"
    with locked(cache / "locks" / "assets"):
        if dest.exists():
            return dest
        package = f"linux-image-{k.release}-dbg"
        deb = _download(package, k.version, cache / "debs")
        member = f"./usr/lib/debug/boot/vmlinux-{k.release}"
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            try:
                tar = subprocess.run(
                    ["tar", "-x", "-C", tmp, member],
                    stdin=fsys.stdout,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                    check=False,
                )
            finally:
                if fsys.stdout:
                    fsys.stdout.close()
                fsys.wait(timeout=60)
            if tar.returncode != 0:
                raise LabError(f"extracting {member} from {deb.name} failed: {tar.stderr.strip()}")
            Path(tmp, member).rename(dest)
        deb.unlink()
    return dest


def host_tools() -> dict[str, str]:
    """Versions of the host packages that the lab runs, for the manifest and the cache keys."""
    return {p: package_version(p) for p in HOST_PACKAGES}


def manifest(cache: Path) -> dict[str, Any]:
    """What the lab resolved last: {"kernels": {series: {...}}, "tools": {package: version}}."""
    try:
        data: dict[str, Any] = json.loads((cache / "manifest.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def _record(cache: Path, k: Kernel) -> None:
    data = manifest(cache)
    data.setdefault("kernels", {})[k.series] = {
        "package": k.package,
        "version": k.version,
        "release": k.release,
        "vmlinuz": str(k.vmlinuz),
    }
    data["tools"] = host_tools()
    tmp = cache / "manifest.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(cache / "manifest.json")
