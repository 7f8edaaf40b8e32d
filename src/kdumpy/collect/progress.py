"""Progress line and message levels, as makedumpfile has them (`--message-level`, print_info.c).

The level is a bitmask: 1 progress, 2 common messages, 4 errors, 8 debug, 16 report; default 7.
The progress line (`Copying data : [ 42.0 %] /  12.3 MB/s  eta: 3s`) is redrawn in place with `\r`
on a terminal, at most once per `_MIN_INTERVAL`; elsewhere only the final line of each step is printed,
so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = [
    "DEFAULT_MESSAGE_LEVEL",
    "ML_COMMON",
    "ML_DEBUG",
    "ML_ERROR",
    "ML_PROGRESS",
    "ML_REPORT",
    "Messages",
]

ML_PROGRESS = 0x01
ML_COMMON = 0x02
ML_ERROR = 0x04
ML_DEBUG = 0x08
ML_REPORT = 0x10
DEFAULT_MESSAGE_LEVEL = ML_PROGRESS | ML_COMMON | ML_ERROR
_MAX_MESSAGE_LEVEL = 31
_MIN_INTERVAL = 0.5  # seconds between redraws
_SPIN = "/|\\-"
_STEP_WIDTH = 28


class Messages:
    """Where the collector's messages go, filtered by message level.

    Progress, errors and debug go to `err`; common messages and the report to `out` (both standard
    error when the dump itself goes to standard output).
    """

    def __init__(
        self, level: int = DEFAULT_MESSAGE_LEVEL, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        if not 0 <= level <= _MAX_MESSAGE_LEVEL:
            raise ValueError(f"message level {level} is not in 0..31")
        self.level = level
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self._tty = bool(getattr(self.err, "isatty", lambda: False)())
        self._step = ""
        self._t0 = 0.0
        self._last = 0.0
        self._spin = 0
        self._said: set[str] = set()

    def common(self, text: str) -> None:
        if self.level & ML_COMMON:
            print(text, file=self.out, flush=True)

    def common_once(self, text: str) -> None:
        """A common message said at most once per run (undecidable rules, fallbacks)."""
        if text not in self._said:
            self._said.add(text)
            self.common(text)

    def error(self, text: str) -> None:
        if self.level & ML_ERROR:
            print(text, file=self.err, flush=True)

    def debug(self, text: str) -> None:
        if self.level & ML_DEBUG:
            print(text, file=self.err, flush=True)

    def report(self, text: str) -> None:
        if self.level & ML_REPORT:
            print(text, file=self.out, flush=True)

    def start(self, step: str) -> None:
        """Begin a step of the progress line ("Excluding unnecessary pages", "Copying data")."""
        self._step = step
        self._t0 = self._last = time.monotonic()

    def progress(self, done: int, total: int, unit_bytes: int = 0) -> None:
        """Redraw the progress line: `done` of `total` units of `unit_bytes` bytes each."""
        if not self.level & ML_PROGRESS or not self._tty:
            return
        now = time.monotonic()
        if now - self._last < _MIN_INTERVAL and done < total:
            return
        self._last = now
        self.err.write("\r" + self._line(done, total, unit_bytes, now))
        self.err.flush()

    def finish(self, total: int, unit_bytes: int = 0) -> None:
        """End the step: its line at 100 % and, with debug messages, how long it took."""
        now = time.monotonic()
        if self.level & ML_PROGRESS:
            line = self._line(total, total, unit_bytes, now)
            self.err.write(("\r" + line + "\n") if self._tty else line + "\n")
            self.err.flush()
        self.debug(f"STEP [{self._step:<{_STEP_WIDTH - 1}}] : {now - self._t0:.6f} seconds")

    def _line(self, done: int, total: int, unit_bytes: int, now: float) -> str:
        permille = 1000 if total <= 0 else min(1000, done * 1000 // total)
        elapsed = max(now - self._t0, 1e-9)
        self._spin = (self._spin + 1) % len(_SPIN)
        rate = ""
        if unit_bytes and done:
            rate = f"{done * unit_bytes / elapsed / 1e6:8.1f} MB/s"
        eta = ""
        if 0 < done < total:
            eta = f"eta: {_duration(elapsed * (total - done) / done)}"
        pct = f"[{permille // 10:3d}.{permille % 10} %]"
        return f"{self._step:<{_STEP_WIDTH}}: {pct} {_SPIN[self._spin]} {rate} {eta}"


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"
