"""Dump levels (`-d`): makedumpfile's bits, their names, and parsing of the option.

A level is a bitmask of page kinds left out of the dump (`makedumpfile.h`, DL_EXCLUDE_*):
1 zero pages, 2 non-private cache, 4 all cache, 8 user data, 16 free pages; 31 excludes them all.
Whatever the level, hwpoison and offline pages are always left out.
"""

from __future__ import annotations

from kdumpy.errors import UsageError
from kdumpy.memory.pages import Category

__all__ = [
    "DL_EXCLUDE_CACHE",
    "DL_EXCLUDE_CACHE_PRI",
    "DL_EXCLUDE_FREE",
    "DL_EXCLUDE_USER_DATA",
    "DL_EXCLUDE_ZERO",
    "MAX_DUMP_LEVEL",
    "REPORT_NAMES",
    "describe",
    "parse_levels",
]

DL_EXCLUDE_ZERO = 0x1
DL_EXCLUDE_CACHE = 0x2
DL_EXCLUDE_CACHE_PRI = 0x4
DL_EXCLUDE_USER_DATA = 0x8
DL_EXCLUDE_FREE = 0x10
MAX_DUMP_LEVEL = 31

_BIT_NAMES = {
    DL_EXCLUDE_ZERO: "zero pages",
    DL_EXCLUDE_CACHE: "non-private cache",
    DL_EXCLUDE_CACHE_PRI: "private cache",
    DL_EXCLUDE_USER_DATA: "user data",
    DL_EXCLUDE_FREE: "free pages",
}

REPORT_NAMES: dict[Category, str] = {
    Category.ZERO: "Pages filled with zero",
    Category.CACHE: "Non-private cache pages",
    Category.CACHE_PRIVATE: "Private cache pages",
    Category.USER: "User process data pages",
    Category.FREE: "Free pages",
    Category.HWPOISON: "Hwpoison pages",
    Category.OFFLINE: "Offline pages",
}
"""The per-category lines of makedumpfile's report (`print_report()`), in its order."""


def describe(level: int) -> str:
    """What a level leaves out, in words: "zero pages, free pages" or "nothing filtered"."""
    parts = [name for bit, name in _BIT_NAMES.items() if level & bit]
    return ", ".join(parts) if parts else "nothing filtered"


def parse_levels(text: str) -> list[int]:
    """`-d` as makedumpfile takes it: one level 0..31, or a comma list tried in turn ("11,31")."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            level = int(part, 10)
        except ValueError:
            raise UsageError(f"invalid dump level {part!r}: give a number from 0 to 31") from None
        if not 0 <= level <= MAX_DUMP_LEVEL:
            raise UsageError(f"invalid dump level {level}: give a number from 0 to 31")
        out.append(level)
    if not out:
        raise UsageError("no dump level given")
    return out
