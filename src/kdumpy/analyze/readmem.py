"""Large reads of the dead kernel's virtual memory that survive holes in the dump.

`Kernel.read` stops at the first page that is not in the dump. The analysis jobs want the opposite:
read a whole array (the printk text ring, its descriptors) in as few physical reads as possible, and
where a page is missing, carry on with zeros and say which bytes are not real.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdumpy.errors import AddressError, PageError
from kdumpy.memory.kernel import Kernel

__all__ = ["Gap", "Span", "read_span"]


@dataclass(frozen=True)
class Gap:
    """Bytes of a span that the dump does not hold (they read as zeros)."""

    start: int
    """Offset of the first missing byte within the span."""
    end: int
    """Offset one past the last missing byte."""
    why: str
    """The error that made them unreadable, in one line."""


@dataclass
class Span:
    """`len(data)` bytes of virtual memory from `vaddr`, with the parts the dump lacks."""

    vaddr: int
    """First virtual address."""
    data: bytes
    """The bytes; zeros where `gaps` says so."""
    gaps: list[Gap] = field(default_factory=list)
    """Missing ranges, in order, not overlapping."""

    @property
    def complete(self) -> bool:
        return not self.gaps

    def missing(self, start: int, end: int) -> bool:
        """Whether any byte of [start, end) (offsets in the span) is missing."""
        return any(g.start < end and start < g.end for g in self.gaps)


def read_span(kernel: Kernel, vaddr: int, n: int) -> Span:
    """Read [vaddr, vaddr + n): translate page by page, then read each physically contiguous run in
    one call; pages that cannot be translated or read become zeros and a `Gap`."""
    ps = kernel.page_size
    # (offset in span, paddr or None, length) for each page piece, with the reason when None.
    pieces: list[tuple[int, int | None, int, str]] = []
    off = 0
    while off < n:
        va = vaddr + off
        chunk = min(n - off, ps - va % ps)
        try:
            pieces.append((off, kernel.translate(va), chunk, ""))
        except AddressError as e:
            pieces.append((off, None, chunk, str(e)))
        off += chunk

    out = bytearray(n)
    gaps: list[Gap] = []
    i = 0
    while i < len(pieces):
        start, paddr, length, why = pieces[i]
        if paddr is None:
            gaps.append(Gap(start, start + length, why))
            i += 1
            continue
        # Extend the run while the next piece follows on physically.
        j = i + 1
        end_paddr = paddr + length
        while j < len(pieces) and pieces[j][1] == end_paddr:
            end_paddr += pieces[j][2]
            j += 1
        run_len = end_paddr - paddr
        try:
            out[start : start + run_len] = kernel.dump.read(paddr, run_len)
        except PageError:
            # Some page of the run is missing: fall back to its pages one by one.
            for k in range(i, j):
                s, p, ln, _ = pieces[k]
                assert p is not None
                try:
                    out[s : s + ln] = kernel.dump.read(p, ln)
                except PageError as e:
                    gaps.append(Gap(s, s + ln, str(e)))
        i = j
    return Span(vaddr, bytes(out), _merge(gaps))


def _merge(gaps: list[Gap]) -> list[Gap]:
    merged: list[Gap] = []
    for g in sorted(gaps, key=lambda g: g.start):
        if merged and merged[-1].end == g.start:
            merged[-1] = Gap(merged[-1].start, g.end, merged[-1].why)
        else:
            merged.append(g)
    return merged
