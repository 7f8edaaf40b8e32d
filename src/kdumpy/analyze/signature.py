"""A crash signature for grouping duplicates: the panic class plus the top frames of the crash, with
everything that changes from boot to boot left out (addresses, KASLR, offsets, pids, timestamps,
compiler clone suffixes).

Two dumps of the same bug on the same code get the same signature; the offsets inside functions are
left out too, so a rebuilt kernel with the same call path still matches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kdumpy.analyze.crashlog import CrashLog, Frame, normalise_function, top_frames

__all__ = ["FRAMES", "Signature", "signature"]

FRAMES = 3
"""How many frames go into a signature."""


@dataclass(frozen=True)
class Signature:
    """A crash signature."""

    text: str
    """Human-readable form: "class: frame < caller < caller"."""
    id: str
    """16 hex digits of SHA-256 over `text`: short enough to paste, long enough not to collide."""
    frames: tuple[str, ...]
    """The normalised frames it was made from, innermost first."""


def _name(f: Frame) -> str:
    name = normalise_function(f.function)
    return f"{name} [{f.module}]" if f.module else name


def signature(crash: CrashLog, frames: list[Frame] | None = None) -> Signature:
    """The signature of a crash; `frames` replaces the log's trace (e.g. drgn's stack trace)."""
    chosen: list[str] = []
    if crash.rip is not None:
        chosen.append(_name(crash.rip))
    elif crash.top_frame is not None:
        # For a hung task the top frame was chosen past the sleeping frames: start from it.
        chosen.append(crash.top_frame)
    trace = top_frames(frames if frames is not None else crash.trace)
    names = [_name(f) for f in trace]
    if chosen and chosen[0] in names:
        names = names[names.index(chosen[0]) + 1 :]
    for name in names:
        if len(chosen) >= FRAMES:
            break
        if not chosen or name != chosen[-1]:
            chosen.append(name)
    text = f"{crash.crash_class}: " + (" < ".join(chosen) if chosen else "(no trace)")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Signature(text, digest, tuple(chosen))
