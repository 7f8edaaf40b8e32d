"""Memory composition: how the crashed machine's page frames divide up, as far as the dump can tell.

Today this is what the dump itself records: pages present, excluded by the dump level, never written
(an incomplete dump), and, in a kdump-compressed file, the zero pages that share one stored page.
Pages by kernel use (page cache, anonymous, slab, free, ...) need the collector's classifier of
struct page arrays; `PageClassifier` is the seam where it plugs in: give `composition()` one and
its categories replace "present".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kdumpy.memory.dump import Dump, KdumpDump, PageState

__all__ = ["Composition", "PageClassifier", "composition"]

PageClassifier = Callable[[int, int], dict[str, int]]
"""Given a pfn range [lo, hi) of present pages, the number of pages in each kernel category
(e.g. {"page cache": n, "anonymous": m, ...}); the collector's classifier will provide one."""

_CHUNK = 1 << 20  # pfns per page_states() call


@dataclass
class Composition:
    """Page counts by category."""

    page_size: int
    """Bytes per page."""
    categories: dict[str, int] = field(default_factory=dict)
    """Category name to number of pages, in display order; they add up to `total`."""
    source: str = "dump"
    """"dump": categories from the dump's own records; "classifier": from struct page."""
    note: str = ""
    """What the categories can and cannot tell."""

    @property
    def total(self) -> int:
        return sum(self.categories.values())


def _zero_pages(dump: Dump) -> int | None:
    """Pages stored as the shared zero page of a kdump-compressed file, or None if not known."""
    if not isinstance(dump, KdumpDump):
        return None
    dd = dump.dd
    zero_off = dd.zero_page_offset()
    if zero_off is None:
        return None
    _, descs = dd.descriptors(0, dd.max_mapnr)
    offsets: npt.NDArray[np.int64] = descs["offset"]
    return int(np.count_nonzero(offsets == zero_off))


def composition(dump: Dump, classifier: PageClassifier | None = None) -> Composition:
    """Count the dump's page frames by state (and by kernel category, given a classifier)."""
    counts = np.zeros(4, dtype=np.int64)
    for lo in range(0, dump.max_pfn, _CHUNK):
        states = dump.page_states(lo, min(dump.max_pfn, lo + _CHUNK))
        counts += np.bincount(states, minlength=4)[:4]
    present = int(counts[PageState.PRESENT])
    comp = Composition(dump.page_size)
    if classifier is not None:
        comp.categories.update(classifier(0, dump.max_pfn))
        comp.source = "classifier"
    else:
        zero = _zero_pages(dump)
        if zero:
            comp.categories["present"] = present - zero
            comp.categories["zero (shared page)"] = zero
        else:
            comp.categories["present"] = present
        comp.note = (
            "from the dump's page records; pages by kernel use (page cache, anonymous, slab, free) "
            "need the collector's page classifier"
        )
    comp.categories["excluded"] = int(counts[PageState.EXCLUDED])
    if counts[PageState.INCOMPLETE]:
        comp.categories["not written (incomplete dump)"] = int(counts[PageState.INCOMPLETE])
    return comp
