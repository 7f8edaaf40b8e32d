"""Typed errors. Every layer may import this module; it imports nothing of kdumpy.

The CLI turns any `KdumpyError` into one line on stderr and the error's `exit_code`.
Messages say what is wrong and, where it helps, what to do; they never need a traceback.
"""

from __future__ import annotations

__all__ = [
    "AddressError",
    "CorruptDumpError",
    "DumpError",
    "KdumpyError",
    "LabError",
    "PageError",
    "PageExcludedError",
    "PageIncompleteError",
    "PageMissingError",
    "TruncatedDumpError",
    "UnsupportedError",
    "UsageError",
    "VmcoreinfoError",
]


class KdumpyError(Exception):
    """Base of every error kdumpy raises on purpose."""

    exit_code: int = 1


class UsageError(KdumpyError):
    """The command line or a setting is wrong."""

    exit_code = 2


class DumpError(KdumpyError):
    """A dump file cannot be read as what it claims to be."""


class CorruptDumpError(DumpError):
    """A header or record holds a value that cannot be right (bad magic, offset past the end, ...)."""


class TruncatedDumpError(CorruptDumpError):
    """The file ends before a record it announces."""


class UnsupportedError(KdumpyError):
    """Valid input that kdumpy does not handle (an architecture, a codec, a format version)."""


class VmcoreinfoError(KdumpyError):
    """VMCOREINFO is missing, or lacks a key a job needs."""


class AddressError(KdumpyError):
    """A virtual address does not translate (not mapped, or its page table is not in the dump)."""


class PageError(KdumpyError):
    """A physical page cannot be read from the dump."""

    def __init__(self, paddr: int, why: str) -> None:
        super().__init__(f"page at physical address {paddr:#x} {why}")
        self.paddr = paddr


class PageExcludedError(PageError):
    """The page was filtered out when the dump was made (it is RAM, but not in the file)."""

    def __init__(self, paddr: int) -> None:
        super().__init__(paddr, "was excluded from the dump")


class PageMissingError(PageError):
    """The address is not RAM in this dump (a memory hole, or past the end)."""

    def __init__(self, paddr: int) -> None:
        super().__init__(paddr, "is not in the dump (memory hole)")


class PageIncompleteError(PageError):
    """The dump was cut short before this page was written."""

    def __init__(self, paddr: int) -> None:
        super().__init__(paddr, "was never written (incomplete dump)")


class LabError(KdumpyError):
    """A lab step failed: an asset could not be built, a guest did not reach a marker in time."""
