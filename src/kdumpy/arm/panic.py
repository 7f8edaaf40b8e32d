"""The panic policy: which faults become a panic (and so a dump), and what happens after.

Eight settings are sysctls: applied at once through /proc/sys and persisted in
/etc/sysctl.d/90-kdumpy-panic.conf for the next boots. panic_on_taint is a boot parameter only
(kernel/panic.c reads it with early_param): it goes into the bootloader drop-in and takes effect at
the next boot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdumpy.arm.root import Root
from kdumpy.errors import UsageError

__all__ = [
    "SYSCTLS",
    "SYSCTL_FILE",
    "TAINTS",
    "PanicError",
    "Setting",
    "apply",
    "persist",
    "show",
    "taint_mask",
    "taint_names",
    "taint_param",
]

SYSCTL_FILE = "/etc/sysctl.d/90-kdumpy-panic.conf"

# kdumpy's key -> sysctl name (the /proc/sys path with dots).
SYSCTLS: dict[str, str] = {
    "panic_on_oops": "kernel.panic_on_oops",
    "panic_on_warn": "kernel.panic_on_warn",
    "softlockup_panic": "kernel.softlockup_panic",
    "hardlockup_panic": "kernel.hardlockup_panic",
    "hung_task_panic": "kernel.hung_task_panic",
    "unknown_nmi_panic": "kernel.unknown_nmi_panic",
    "panic_on_oom": "vm.panic_on_oom",
    "panic": "kernel.panic",
}

# Taint flags (include/linux/panic.h, 6.1 and 6.12): bit, letter, TAINT_ name.
TAINTS: tuple[tuple[int, str, str], ...] = (
    (0, "P", "PROPRIETARY_MODULE"),
    (1, "F", "FORCED_MODULE"),
    (2, "S", "CPU_OUT_OF_SPEC"),
    (3, "R", "FORCED_RMMOD"),
    (4, "M", "MACHINE_CHECK"),
    (5, "B", "BAD_PAGE"),
    (6, "U", "USER"),
    (7, "D", "DIE"),
    (8, "A", "OVERRIDDEN_ACPI_TABLE"),
    (9, "W", "WARN"),
    (10, "C", "CRAP"),
    (11, "I", "FIRMWARE_WORKAROUND"),
    (12, "O", "OOT_MODULE"),
    (13, "E", "UNSIGNED_MODULE"),
    (14, "L", "SOFTLOCKUP"),
    (15, "K", "LIVEPATCH"),
    (16, "X", "AUX"),
    (17, "T", "RANDSTRUCT"),
    (18, "N", "TEST"),
)
TAINT_FLAGS_MAX = (1 << len(TAINTS)) - 1


class PanicError(UsageError):
    """A panic-policy setting that cannot be applied."""


def taint_mask(spec: str) -> int:
    """A panic_on_taint value as a mask: "0x280" (hex, as the kernel reads it), or taint letters
    and names separated by commas ("D,W", "DIE,WARN", "die")."""
    spec = spec.strip()
    if spec.lower().startswith("0x"):
        try:
            mask = int(spec, 16)
        except ValueError as e:
            raise PanicError(f"panic_on_taint {spec!r} is not a hex mask") from e
    else:
        mask = 0
        by_letter = {letter: bit for bit, letter, _ in TAINTS}
        by_name = {name.lower(): bit for bit, _, name in TAINTS}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part in by_letter:
                mask |= 1 << by_letter[part]
            elif part.lower() in by_name:
                mask |= 1 << by_name[part.lower()]
            elif part.lower().removeprefix("taint_") in by_name:
                mask |= 1 << by_name[part.lower().removeprefix("taint_")]
            else:
                letters = "".join(letter for _, letter, _ in TAINTS)
                raise PanicError(
                    f"panic_on_taint: unknown taint {part!r} (letters {letters}, names such as DIE, WARN)"
                )
    if mask & ~TAINT_FLAGS_MAX:
        raise PanicError(f"panic_on_taint {spec!r} sets bits beyond the kernel's {len(TAINTS)} taint flags")
    if mask == 0:
        raise PanicError("panic_on_taint needs at least one taint flag (the kernel rejects 0)")
    return mask


def taint_names(mask: int) -> list[str]:
    return [f"{letter} ({name})" for bit, letter, name in TAINTS if mask >> bit & 1]


def taint_param(mask: int, nousertaint: bool) -> str:
    """The value of the boot parameter: "<hex mask>[,nousertaint]" (kernel/panic.c)."""
    return f"{mask:#x}" + (",nousertaint" if nousertaint else "")


def _proc_path(key: str) -> str:
    return "/proc/sys/" + SYSCTLS[key].replace(".", "/")


@dataclass(frozen=True)
class Setting:
    key: str
    sysctl: str
    current: int | None
    """What the running kernel has now (None: this kernel has no such sysctl)."""
    configured: int | None
    """What the settings file asks for."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sysctl": self.sysctl,
            "current": self.current,
            "configured": self.configured,
        }


def show(root: Root, configured: dict[str, int]) -> list[Setting]:
    return [
        Setting(key, SYSCTLS[key], root.read_int(_proc_path(key)), configured.get(key)) for key in SYSCTLS
    ]


def apply(root: Root, values: dict[str, int]) -> list[str]:
    """Write each sysctl now; returns warnings (sysctls this kernel does not have)."""
    warnings = []
    for key, value in values.items():
        if key not in SYSCTLS:
            raise PanicError(f"{key} is not a panic sysctl ({', '.join(SYSCTLS)})")
        path = _proc_path(key)
        if not root.exists(path):
            warnings.append(f"{SYSCTLS[key]}: not in this kernel ({path} is missing); persisted only")
            continue
        try:
            root.write(path, f"{value}\n")
        except OSError as e:
            raise PanicError(f"cannot set {SYSCTLS[key]}={value}: {e.strerror}") from e
    return warnings


def persist(root: Root, values: dict[str, int]) -> str | None:
    """Write the sysctl.d file for the next boots (removed when `values` is empty); its host path."""
    path = root.path(SYSCTL_FILE)
    if not values:
        path.unlink(missing_ok=True)
        return None
    lines = ["# Written by kdumpy panic-policy from /etc/kdumpy/kdumpy.toml [panic]; edit that file instead."]
    lines += [f"{SYSCTLS[k]} = {v}" for k, v in values.items() if k in SYSCTLS]
    root.write_file(SYSCTL_FILE, "\n".join(lines) + "\n")
    return SYSCTL_FILE
