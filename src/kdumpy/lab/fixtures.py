"""Real vmcores for tests, cached on disk across runs: one crash run per scenario, repeated only when
one of the lab's inputs changes (kernel package, /init, workload, crash module, host tools).

tests/conftest.py turns these functions into the session fixtures vmcore_61, vmcore_612, ...
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kdumpy.errors import LabError
from kdumpy.lab import assets, initramfs
from kdumpy.lab.cache import cache_dir, digest, locked
from kdumpy.lab.scenario import TRIGGERS, WORKLOAD_SCRIPT, Scenario, run_crash

__all__ = ["NAMED", "STATUS_FILE", "debug_vmlinux", "kernels", "named_vmcore", "vmcore"]

STATUS_FILE = Path("/tmp/lab-status.txt")

# The fixtures other tests use, by name.
NAMED: dict[str, Scenario] = {
    "vmcore_61": Scenario(kernel="6.1"),
    "vmcore_612": Scenario(kernel="6.12"),
    # Armed with `kdumpy load --elf32-core-headers`: the kernel's own ELFCLASS32 /proc/vmcore.
    "vmcore_61_elf32": Scenario(kernel="6.1", elf32=True),
    "vmcore_612_la57": Scenario(kernel="6.12", la57=True),
    "vmcore_61_mixed": Scenario(kernel="6.1", workload="mix"),
    "vmcore_612_mixed": Scenario(kernel="6.12", workload="mix"),
}


def _key(sc: Scenario, cache: Path) -> str:
    k = assets.kernel(sc.kernel, cache)
    initrd = initramfs.build(k, cache)
    guest = Path(__file__).resolve().parent / "guest"
    inputs: list[str | bytes] = [
        sc.name(),
        repr(sc),
        k.release,
        k.version,
        initrd.name,
        repr(sorted(assets.host_tools().items())),
        repr(TRIGGERS[sc.trigger]),
    ]
    if sc.workload != "idle" or sc.trigger == "oom":
        inputs.append(WORKLOAD_SCRIPT.read_bytes())
    if TRIGGERS[sc.trigger].module:
        inputs.append((guest / "kdumpy_lab_crash.c").read_bytes())
    if sc.elf32:
        # kdumpy's kexec_load loader writes the ELF core header the capture kernel re-emits: a
        # changed loader must not be tested on an old capture.
        inputs.append((Path(__file__).resolve().parents[1] / "arm" / "kexec_load.py").read_bytes())
    return digest(*inputs)


def vmcore(
    kernel: str,
    trigger: str = "sysrq",
    workload: str = "idle",
    ram: str = "1G",
    *,
    la57: bool = False,
    crashkernel: str = "128M",
    elf32: bool = False,
    cache: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The path of a cached ELF vmcore (a copy of /proc/vmcore, mode 0600) for this scenario, made
    by a crash run in QEMU if the cache has none for the current inputs."""
    sc = Scenario(
        kernel=kernel,
        trigger=trigger,
        workload=workload,
        ram=ram,
        crashkernel=crashkernel,
        la57=la57,
        elf32=elf32,
    )
    return _vmcore(sc, cache_dir(cache), progress)


def named_vmcore(name: str, cache: Path | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """The vmcore of one of the NAMED fixtures; also records its path in STATUS_FILE."""
    if name not in NAMED:
        raise LabError(f"no vmcore fixture named {name!r}: choose one of {', '.join(NAMED)}")
    path = _vmcore(NAMED[name], cache_dir(cache), progress)
    _record_status(name, path)
    return path


def _vmcore(sc: Scenario, cache: Path, progress: Callable[[str], None] | None) -> Path:
    sc.check()
    key = _key(sc, cache)
    root = cache / "vmcores"
    final = root / f"{sc.name()}-{key}"
    with locked(cache / "locks" / f"vmcore-{sc.name()}"):
        if (final / "vmcore").exists():
            return final / "vmcore"
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{sc.name()}-", dir=root))
        try:
            run_crash(sc, work, cache, progress=progress, timeout=900)
            work.rename(final)
            _drop_stale(root, sc, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final / "vmcore"


def _drop_stale(root: Path, sc: Scenario, keep: Path) -> None:
    """Remove older captures of the same scenario (about 1 GB each) once they are a day old: not at
    once, because a test session started earlier may still be reading them."""
    now = time.time()
    for old in root.glob(f"{sc.name()}-*"):
        # The glob also matches longer names ("6.1-...-ck128M-elf32-<hash>" for "6.1-...-ck128M"):
        # only <name>-<hash> is this scenario's.
        if old.name.rsplit("-", 1)[0] != sc.name():
            continue
        if old != keep and now - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)


def _record_status(name: str, path: Path) -> None:
    """Keep `name path` lines in STATUS_FILE, one per fixture, for people waiting on them."""
    lines: dict[str, str] = {}
    try:
        for line in STATUS_FILE.read_text().splitlines():
            if " " in line:
                n, p = line.split(" ", 1)
                lines[n] = p
    except OSError:
        pass
    lines[name] = str(path)
    with contextlib.suppress(OSError):
        STATUS_FILE.write_text("".join(f"{n} {p}\n" for n, p in sorted(lines.items())))


def debug_vmlinux(kernel: str, cache: Path | None = None) -> Path:
    """The debug vmlinux of a series' current kernel (downloads about 1 GB the first time)."""
    c = cache_dir(cache)
    path = assets.debug_vmlinux(assets.kernel(kernel, c), c)
    _record_status(f"vmlinux_{kernel.replace('.', '')}", path)
    return path


def kernels(cache: Path | None = None) -> dict[str, dict[str, str]]:
    """The resolved kernels: {series: {"release", "package", "version", "vmlinuz"}}."""
    c = cache_dir(cache)
    out = {}
    for series in assets.SERIES:
        k = assets.kernel(series, c)
        out[series] = {
            "release": k.release,
            "package": k.package,
            "version": k.version,
            "vmlinuz": str(k.vmlinuz),
        }
    return out
