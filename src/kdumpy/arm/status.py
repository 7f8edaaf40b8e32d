"""Is kdump armed? The answer and an exit code a script can test.

Exit codes (like an LSB status: 0 when operational, 3 when not running):
    0  armed: memory reserved and a capture kernel loaded
    3  not armed: memory is reserved but nothing is loaded (`kdumpy load` fixes it)
    4  cannot be armed: no memory reserved (needs crashkernel= and a reboot)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kdumpy.arm import crashkernel as ck
from kdumpy.arm.kexec import read_state
from kdumpy.arm.root import Root

__all__ = ["EXIT_ARMED", "EXIT_NOT_LOADED", "EXIT_NO_RESERVATION", "Status", "status"]

EXIT_ARMED = 0
EXIT_NOT_LOADED = 3
EXIT_NO_RESERVATION = 4


@dataclass(frozen=True)
class Status:
    reservation: ck.Reservation
    release: str
    """The running kernel."""
    crashkernel: list[str]
    """crashkernel= words of /proc/cmdline."""
    loaded: dict[str, Any] | None
    """What `kdumpy load` recorded (kernel, initrd, cmdline, release), if anything."""
    stale: bool
    """The loaded kernel or initrd file changed on disk after it was loaded (a kernel update)."""

    @property
    def armed(self) -> bool:
        return self.reservation.loaded

    @property
    def code(self) -> int:
        if self.reservation.loaded:
            return EXIT_ARMED
        if self.reservation.size > 0:
            return EXIT_NOT_LOADED
        return EXIT_NO_RESERVATION

    @property
    def state(self) -> str:
        return {EXIT_ARMED: "armed", EXIT_NOT_LOADED: "not loaded", EXIT_NO_RESERVATION: "no reservation"}[
            self.code
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "armed": self.armed,
            "exit_code": self.code,
            "release": self.release,
            "crashkernel": self.crashkernel,
            "reservation": self.reservation.as_dict(),
            "loaded": self.loaded if self.armed else None,
            "stale": self.stale,
        }


def status(root: Root) -> Status:
    res = ck.reservation(root)
    cmdline = root.read("/proc/cmdline") or ""
    state = read_state(root)
    stale = False
    if state and res.loaded:
        loaded_at = int(state.get("loaded_at", 0))
        for key in ("kernel", "initrd"):
            path = state.get(key)
            if path:
                try:
                    stale |= os.stat(root.path(path)).st_mtime > loaded_at + 1
                except OSError:
                    stale = True
    return Status(res, root.release(), ck.crashkernel_args(cmdline), state, stale)
