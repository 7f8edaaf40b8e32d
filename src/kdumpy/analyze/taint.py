"""Kernel taint flags: the letters of the "Tainted:" field and the bits of `tainted_mask`.

The table follows `taint_flags[]` in kernel/panic.c (and Documentation/admin-guide/tainted-kernels.rst):
bit number, the letter printed when set, and the name of the TAINT_* constant. Bit 0 prints "P" when
set and "G" when clear, so "G" alone means a clean kernel as far as modules go.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["TAINT_FLAGS", "TaintFlag", "decode_letters", "decode_mask", "parse_tainted_field"]


class TaintFlag(NamedTuple):
    """One taint flag."""

    bit: int
    """Bit in tainted_mask."""
    letter: str
    """Letter in the "Tainted:" field when set."""
    name: str
    """TAINT_* name, without the prefix."""
    meaning: str
    """What it says, in a few words."""


TAINT_FLAGS: tuple[TaintFlag, ...] = (
    TaintFlag(0, "P", "PROPRIETARY_MODULE", "proprietary module loaded"),
    TaintFlag(1, "F", "FORCED_MODULE", "module force-loaded"),
    TaintFlag(2, "S", "CPU_OUT_OF_SPEC", "CPU out of specification"),
    TaintFlag(3, "R", "FORCED_RMMOD", "module force-unloaded"),
    TaintFlag(4, "M", "MACHINE_CHECK", "machine check exception"),
    TaintFlag(5, "B", "BAD_PAGE", "bad page referenced"),
    TaintFlag(6, "U", "USER", "tainted from user space"),
    TaintFlag(7, "D", "DIE", "kernel died (oops or BUG) earlier"),
    TaintFlag(8, "A", "OVERRIDDEN_ACPI_TABLE", "ACPI table overridden"),
    TaintFlag(9, "W", "WARN", "a warning was issued"),
    TaintFlag(10, "C", "CRAP", "staging driver loaded"),
    TaintFlag(11, "I", "FIRMWARE_WORKAROUND", "firmware bug workaround"),
    TaintFlag(12, "O", "OOT_MODULE", "out-of-tree module loaded"),
    TaintFlag(13, "E", "UNSIGNED_MODULE", "unsigned module loaded"),
    TaintFlag(14, "L", "SOFTLOCKUP", "soft lockup occurred"),
    TaintFlag(15, "K", "LIVEPATCH", "kernel live-patched"),
    TaintFlag(16, "X", "AUX", "auxiliary (distribution) taint"),
    TaintFlag(17, "T", "RANDSTRUCT", "built with struct randomisation plugin"),
    TaintFlag(18, "N", "TEST", "test module loaded"),
)

_BY_LETTER = {f.letter: f for f in TAINT_FLAGS}

# "CPU: 0 PID: 1 Comm: init Kdump: loaded Tainted: G      D    O       6.1.0-56-amd64 #1 ..."
# The field is one column per flag (a space when clear), followed by the release.
_TAINTED = re.compile(r"\bTainted: ([A-Z ]+?)\s+\S*\d\S* #")
# 6.10+ also prints "Tainted: [D]=DIE, [O]=OOT_MODULE" on a line of its own.
_VERBOSE = re.compile(r"\[([A-Z])\]=([A-Z_]+)")


def decode_letters(letters: str) -> list[TaintFlag]:
    """The flags a "Tainted:" field shows ("G" and spaces are not taints; unknown letters are kept
    with a made-up name so nothing is lost)."""
    out = []
    for c in letters:
        if c in (" ", "G"):
            continue
        flag = _BY_LETTER.get(c)
        out.append(flag if flag is not None else TaintFlag(-1, c, f"UNKNOWN_{c}", "unknown taint letter"))
    return out


def decode_mask(mask: int) -> list[TaintFlag]:
    """The flags set in `tainted_mask`."""
    known = [f for f in TAINT_FLAGS if mask >> f.bit & 1]
    extra = mask & ~sum(1 << f.bit for f in TAINT_FLAGS)
    bit = 0
    while extra:
        if extra & 1:
            known.append(TaintFlag(bit, "?", f"BIT_{bit}", "unknown taint bit"))
        extra >>= 1
        bit += 1
    return known


def parse_tainted_field(line: str) -> list[TaintFlag] | None:
    """The flags of a "CPU: ... Tainted: ..." line, [] for "Not tainted", None if the line has neither."""
    if "Not tainted" in line:
        return []
    m = _TAINTED.search(line)
    if m:
        return decode_letters(m.group(1))
    pairs = _VERBOSE.findall(line)
    if line.lstrip().startswith("Tainted:") and pairs:
        return decode_letters("".join(letter for letter, _ in pairs))
    return None
