"""Preflight: the kdump guide's prerequisites on this system, each pass / warn / fail with its fix.

The kernel configuration comes from /boot/config-$(uname -r), else /proc/config.gz. The guide's
options (Documentation/admin-guide/kdump/kdump.rst): KEXEC (kdumpy needs KEXEC_FILE), SYSFS,
DEBUG_INFO for analysis, CRASH_DUMP and PROC_VMCORE for the capture kernel, RELOCATABLE so the
system kernel can be its own capture kernel, PHYSICAL_START.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdumpy.arm import crashkernel as ck
from kdumpy.arm.kexec import read_bzimage, read_state
from kdumpy.arm.root import Root

__all__ = ["Check", "kernel_config", "pe_signed", "run", "secure_boot"]

SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    """pass, warn or fail."""
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def kernel_config(root: Root, release: str, path: str | None = None) -> tuple[dict[str, str] | None, str]:
    """CONFIG_* = value of the running kernel ("y", "m", "0x1000000", ...; unset ones absent), from
    `path` when given (a config file, gzip-compressed if it ends in .gz)."""
    for cand in (path,) if path else (f"/boot/config-{release}", "/proc/config.gz"):
        text = root.read_gzip(cand) if cand.endswith(".gz") else root.read(cand)
        if text:
            cfg = {}
            for line in text.splitlines():
                if line.startswith("CONFIG_") and "=" in line:
                    k, _, v = line.partition("=")
                    cfg[k.removeprefix("CONFIG_")] = v.strip().strip('"')
            return cfg, cand
    return None, ""


def pe_signed(data: bytes) -> bool | None:
    """Whether a PE/COFF image (an EFI-stub vmlinuz) carries an Authenticode signature: a non-empty
    security data directory. None when the file is not PE."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe : pe + 4] != b"PE\0\0" or len(data) < pe + 24 + 2:
        return None
    opt = pe + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    if magic == 0x20B:
        count_at, dirs = opt + 108, opt + 112
    elif magic == 0x10B:
        count_at, dirs = opt + 92, opt + 96
    else:
        return None
    if len(data) < dirs + 5 * 8:
        return None
    (count,) = struct.unpack_from("<I", data, count_at)
    if count < 5:
        return False
    size: int = struct.unpack_from("<II", data, dirs + 4 * 8)[1]
    return size > 0


def secure_boot(root: Root) -> bool | None:
    """The SecureBoot EFI variable (4 bytes of attributes, then the value), or None without EFI."""
    data = root.read_bytes(SECURE_BOOT_VAR)
    if data is None or len(data) < 5:
        return None
    return data[4] == 1


def lockdown(root: Root) -> str | None:
    text = root.read("/sys/kernel/security/lockdown")
    if not text or "[" not in text:
        return None
    return text.split("[", 1)[1].split("]", 1)[0]


_OPTIONS: tuple[tuple[str, str, str], ...] = (
    # option, status when missing, why
    ("KEXEC_FILE", "fail", "kdumpy loads the capture kernel with kexec_file_load"),
    ("SYSFS", "fail", "kexec_crash_loaded and kexec_crash_size live in sysfs"),
    ("CRASH_DUMP", "fail", "the capture kernel (this same kernel) must be able to export a dump"),
    ("PROC_VMCORE", "fail", "the capture kernel exports the dead kernel's memory as /proc/vmcore"),
    ("RELOCATABLE", "fail", "the system kernel is its own capture kernel only if it is relocatable"),
    ("DEBUG_INFO", "warn", "analysis (crash, drgn) needs a vmlinux with debug info"),
    ("MAGIC_SYSRQ", "warn", "`kdumpy test` crashes through /proc/sysrq-trigger"),
)


def _config_checks(root: Root, release: str, config: str | None) -> list[Check]:
    cfg, source = kernel_config(root, release, config)
    if cfg is None:
        return [
            Check(
                "kernel config",
                "warn",
                f"no /boot/config-{release} and no /proc/config.gz: the kernel options cannot be checked",
                "install the kernel's config file (Debian ships /boot/config-* in linux-image-*)",
            )
        ]
    out = [Check("kernel config", "pass", f"read from {source}")]
    version = ck.model_for(release).version if release else (0, 0)
    options = list(_OPTIONS)
    if version >= (6, 9):
        # 6.9 split crash_reserve.c out of crash_core.c behind its own option.
        options.insert(2, ("CRASH_RESERVE", "fail", "crashkernel= is honoured only with CRASH_RESERVE"))
    for opt, missing, why in options:
        value = cfg.get(opt)
        if value in ("y", "m"):
            out.append(Check(f"CONFIG_{opt}", "pass", f"CONFIG_{opt}={value}"))
        else:
            fix = f"use a kernel built with CONFIG_{opt}=y"
            if opt == "DEBUG_INFO":
                fix = "build with CONFIG_DEBUG_INFO=y; without it only dmesg and raw reads work"
            out.append(Check(f"CONFIG_{opt}", missing, f"CONFIG_{opt} is not set: {why}", fix))
    if cfg.get("KEXEC") != "y" and cfg.get("KEXEC_FILE") == "y":
        out.append(
            Check(
                "CONFIG_KEXEC",
                "pass",
                "CONFIG_KEXEC not set; kexec_file_load is enough for kdumpy "
                "(`kdumpy load --elf32-core-headers`, which uses kexec_load, would fail)",
            )
        )
    start = cfg.get("PHYSICAL_START")
    if start:
        if cfg.get("RELOCATABLE") == "y":
            out.append(Check("CONFIG_PHYSICAL_START", "pass", f"{start} (relocatable: loads anywhere)"))
        else:
            out.append(
                Check(
                    "CONFIG_PHYSICAL_START",
                    "warn",
                    f"{start} and not relocatable: the reservation must start there",
                    f"boot with crashkernel=SIZE@{start}",
                )
            )
    if cfg.get("DEBUG_INFO") == "y":
        dbg = f"/usr/lib/debug/boot/vmlinux-{release}"
        if root.exists(dbg):
            out.append(Check("debug vmlinux", "pass", dbg))
        else:
            out.append(
                Check(
                    "debug vmlinux",
                    "warn",
                    f"{dbg} is not installed: crash and drgn need it to analyse a dump",
                    f"apt install linux-image-{release}-dbg (Debian)",
                )
            )
    return out


def _reservation_checks(root: Root, release: str, kernel: Path | None, initrd: Path | None) -> list[Check]:
    res = ck.reservation(root)
    cmdline = (root.read("/proc/cmdline") or "").strip()
    out = []
    ev: ck.Evaluation | None = None
    rec: ck.Evaluation | None = None
    recommended = ck.RECOMMENDED
    try:
        ram, above, _source = ck.system_ram(root)
        model = ck.model_for(release, root.machine()) if release else ck.KernelModel((6, 12))
        ev = ck.evaluate(cmdline, ram, model, ram_above_4g=above)
        recommended, rec = ck.recommend(ram, model)
    except ck.CrashkernelError:
        pass
    set_fix = f"kdumpy crashkernel --set {recommended!s}, then update-grub and reboot"
    if res.size == 0:
        why = "; ".join(ev.reasons) if ev is not None else "no crashkernel= on the command line"
        words = ck.crashkernel_args(cmdline)
        what = f"{' '.join(words)} reserved nothing" if words else "booted without crashkernel="
        out.append(
            Check(
                "reservation", "fail", f"no memory reserved for the capture kernel: {what} ({why})", set_fix
            )
        )
        return out
    regions = ", ".join(f"{s:#x}-{e:#x}" for s, e in res.regions) or "not shown in /proc/iomem"
    out.append(Check("reservation", "pass", f"{ck.fmt_size(res.size)} reserved ({regions})"))
    if ev is not None and ev.size != res.size:
        out.append(
            Check(
                "reservation model",
                "warn",
                f"kdumpy evaluates this command line to {ck.fmt_size(ev.size)}, the kernel reserved "
                f"{ck.fmt_size(res.size)} (shrunk through kexec_crash_size, or a rule kdumpy does not model)",
            )
        )
    image = read_bzimage(root.path(kernel)) if kernel else None
    init_size = 0
    if image is not None:
        try:
            with root.path(kernel).open("rb") as f:  # type: ignore[arg-type]
                head = f.read(0x264)
            init_size = struct.unpack_from("<I", head, 0x260)[0] if len(head) >= 0x264 else 0
        except OSError:
            init_size = 0
    initrd_size = 0
    if initrd is not None:
        try:
            initrd_size = root.path(initrd).stat().st_size
        except OSError:
            initrd_size = 0
    need = init_size + initrd_size
    if need and res.size < need:
        out.append(
            Check(
                "reservation size",
                "fail",
                f"{ck.fmt_size(res.size)} cannot hold the capture kernel ({init_size >> 20} MiB to run) "
                f"and its initrd ({initrd_size >> 20} MiB)",
                set_fix,
            )
        )
    elif rec is not None and rec.size and res.size < rec.size:
        out.append(
            Check(
                "reservation size",
                "warn",
                f"{ck.fmt_size(res.size)} is less than kdumpy's capture environment wants here "
                f"({ck.fmt_size(rec.size)}): it may run out of memory while saving",
                set_fix,
            )
        )
    else:
        out.append(
            Check("reservation size", "pass", f"{ck.fmt_size(res.size)} is enough for kdumpy's capture")
        )
    if res.loaded:
        state = read_state(root) or {}
        how = ""
        if state.get("loader") == "kexec_load":
            n = state.get("elf_class") or "?"
            how = f" (by kdumpy with kexec_load and ELF{n} core headers)"
        out.append(Check("capture kernel loaded", "pass", f"/sys/kernel/kexec_crash_loaded is 1{how}"))
    else:
        out.append(
            Check(
                "capture kernel loaded",
                "warn",
                "nothing is loaded: a crash now reboots without a dump",
                "kdumpy load",
            )
        )
    return out


def _image_checks(root: Root, kernel: Path | None, initrd: Path | None) -> list[Check]:
    out = []
    if kernel is None or not root.path(kernel).is_file():
        out.append(
            Check(
                "capture kernel",
                "fail",
                f"{kernel} does not exist",
                "set [capture] kernel in /etc/kdumpy/kdumpy.toml, or install the kernel",
            )
        )
    elif not os.access(root.path(kernel), os.R_OK):
        out.append(Check("capture kernel", "fail", f"{kernel} is not readable", "run as root"))
    else:
        image = read_bzimage(root.path(kernel))
        if image is None and root.machine() == "x86_64":
            out.append(Check("capture kernel", "fail", f"{kernel} is not a bzImage", "use a vmlinuz"))
        else:
            rel = f" ({image.release})" if image is not None and image.release else ""
            out.append(Check("capture kernel", "pass", f"{kernel}{rel}"))
    if initrd is None:
        out.append(
            Check(
                "capture initrd",
                "warn",
                "no initrd: the capture kernel must find its root alone",
                "set [capture] initrd",
            )
        )
    elif not root.path(initrd).is_file():
        out.append(
            Check(
                "capture initrd",
                "fail",
                f"{initrd} does not exist",
                "rebuild it (update-initramfs -c -k $(uname -r))",
            )
        )
    else:
        out.append(Check("capture initrd", "pass", str(initrd)))
    return out


def _security_checks(root: Root, kernel: Path | None) -> list[Check]:
    out = []
    if (root.read_int("/proc/sys/kernel/kexec_load_disabled") or 0) == 1:
        out.append(
            Check(
                "kexec_load_disabled",
                "fail",
                "kernel.kexec_load_disabled=1: no kernel can be loaded until the next boot",
                "remove kernel.kexec_load_disabled from /etc/sysctl.d and reboot",
            )
        )
    lock = lockdown(root)
    sb = secure_boot(root)
    strict = (lock not in (None, "none")) or sb is True
    signed = None
    if kernel is not None:
        data = root.read_bytes(str(kernel))
        signed = pe_signed(data) if data is not None else None
    state = (
        f"lockdown {lock or 'unavailable'}, secure boot {'on' if sb else 'off' if sb is False else 'unknown'}"
    )
    if strict and signed is False:
        out.append(
            Check(
                "signature",
                "fail",
                f"{state}: only signed kernels load, and {kernel} is not signed",
                "use the distribution's signed vmlinuz",
            )
        )
    elif strict:
        out.append(Check("signature", "pass", f"{state}: kexec_file_load verifies {kernel} (signed)"))
    else:
        out.append(Check("lockdown", "pass", f"{state}: no signature is required"))
    return out


def _target_checks(root: Root, target: str) -> list[Check]:
    path = root.path(target)
    if not path.is_dir():
        return [Check("dump target", "warn", f"{target} does not exist", f"mkdir -p {target}")]
    if not os.access(path, os.W_OK):
        return [
            Check("dump target", "fail", f"{target} is not writable", "run as root, or choose another target")
        ]
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    try:
        ram = ck.system_ram(root)[0]
    except ck.CrashkernelError:
        ram = 0
    if ram and free < ram // 20:
        return [
            Check(
                "dump target",
                "fail",
                f"{target}: {free >> 20} MiB free; a filtered dump of {ram >> 20} MiB RAM often needs more",
                "free space or choose another target",
            )
        ]
    if ram and free < ram:
        return [
            Check(
                "dump target",
                "warn",
                f"{target}: {free >> 20} MiB free, less than RAM ({ram >> 20} MiB): a filtered dump only",
            )
        ]
    return [Check("dump target", "pass", f"{target}: {free >> 20} MiB free")]


def run(
    root: Root,
    *,
    release: str,
    kernel: Path | None,
    initrd: Path | None,
    target: str = "/var/crash",
    config: str | None = None,
) -> list[Check]:
    """Every check, in the order a person fixes them. `config` names the kernel config file when it
    is not at /boot/config-$(uname -r) or /proc/config.gz."""
    checks = _config_checks(root, release, config)
    checks += _reservation_checks(root, release, kernel, initrd)
    checks += _image_checks(root, kernel, initrd)
    checks += _security_checks(root, kernel)
    checks += _target_checks(root, target)
    return checks
