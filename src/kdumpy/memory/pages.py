"""struct page arrays for a range of pfns, and their classification into makedumpfile's page categories.

Everything comes from VMCOREINFO: the struct page layout (`SIZE(page)`, `OFFSET(page.*)`), the page
flag numbers (`NUMBER(PG_*)`), the page-type values (`NUMBER(PAGE_*_MAPCOUNT_VALUE)`), the buddy
order bound (`LENGTH(zone.free_area)`) and the memory model (`SYMBOL(mem_section)`). The struct pages
themselves are found the way makedumpfile finds them: `mem_section` is decoded to each section's
`mem_map`, and the virtual addresses go through the kernel's own page tables (vmemmap is mapped with
2 MiB pages on x86_64, so that is one walk per section).

A range of pfns becomes one numpy structured array (`PageLayout.dtype`), one vector of candidate
categories (`classify`), and `Excluder` applies makedumpfile's multi-page exclusions in pfn order
(a buddy block or compound page excludes the pages it covers, which are then not looked at again).
Where a rule cannot be decided from what the kernel exports, pages are kept and `PageLayout.notes`
says which rule and why, once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from kdumpy.errors import KdumpyError, VmcoreinfoError
from kdumpy.formats.vmcoreinfo import VmcoreInfo
from kdumpy.memory.dump import PageState
from kdumpy.memory.kernel import Kernel

__all__ = [
    "Category",
    "Excluder",
    "MemMap",
    "PageLayout",
    "classify",
]

L_ZERO, L_CACHE, L_CACHE_PRI, L_USER, L_FREE = 1, 2, 4, 8, 16  # dump_level bits (makedumpfile.h)

_PAGE_MAPPING_ANON = 0x1
_SECTION_MARKED_PRESENT = 0x1
# Low bits of mem_section.section_mem_map are flags (SECTION_MARKED_PRESENT .. SECTION_MAP_LAST_BIT,
# 5 or 6 of them depending on the kernel); the encoded mem_map is aligned far beyond that.
_SECTION_MAP_MASK = ~0x3F
# Since 6.12 page types are `PGTY_<type> << 24` and the kernel tests the top byte only
# (`page_type >> 24 == PGTY_x`, include/linux/page-flags.h); before, the value is ~PG_<type> and
# makedumpfile (like us) compares the whole 32-bit word.
_PGTY_SHIFT = 24


class Category(IntEnum):
    """Why a page is left out of a dump (0: it is kept). The order is makedumpfile's report order."""

    KEEP = 0
    ZERO = 1
    CACHE = 2
    CACHE_PRIVATE = 3
    USER = 4
    FREE = 5
    HWPOISON = 6
    OFFLINE = 7


@dataclass
class PageLayout:
    """What VMCOREINFO says about struct page and the page-classification rules."""

    size: int
    """SIZE(page)."""
    offsets: dict[str, int]
    """Byte offsets inside struct page of the fields read: flags, mapping, _mapcount, private,
    compound_head, and (in page[1]) compound_order / compound_dtor when exported."""
    pg: dict[str, int]
    """Page flag numbers: lru, private, swapcache, swapbacked, slab, hwpoison (those exported)."""
    head_mask: int
    """NUMBER(PG_head_mask)."""
    types: dict[str, int]
    """Page-type values as unsigned 32-bit: buddy, slab, hugetlb, offline, unaccepted (those exported)."""
    hugetlb_dtor: int | None
    """NUMBER(HUGETLB_PAGE_DTOR): page[1].compound_dtor of a hugetlb page (up to 6.5)."""
    pg_hugetlb: int | None
    """NUMBER(PG_hugetlb): a flag of page[1] (6.6 to 6.8)."""
    order_in_flags: bool
    """The compound order is the low byte of page[1].flags (6.6+, after the compound_order field went)."""
    max_order: int | None
    """LENGTH(zone.free_area): a buddy order at or above it is not a free block."""
    notes: list[str] = field(default_factory=list)
    """Rules that cannot be decided from VMCOREINFO (pages concerned are kept), one line each."""

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> PageLayout:
        size = info.require_size("page")
        offsets: dict[str, int] = {"flags": info.require_offset("page", "flags")}
        for member in ("mapping", "_mapcount", "private", "compound_head", "compound_order", "compound_dtor"):
            off = info.offset("page", member)
            if off is None and member in ("compound_order", "compound_dtor"):
                # 6.3-6.5 export them as folio._folio_order / _folio_dtor, offsets in the folio, i.e.
                # from the head page: page[1] starts SIZE(page) into it.
                f = info.offset("folio", f"_folio_{member.split('_')[1]}")
                off = f - size if f is not None and f >= size else None
            if off is not None:
                offsets[member] = off
        pg = {}
        for name in ("lru", "private", "swapcache", "swapbacked", "slab", "hwpoison"):
            n = info.number(f"PG_{name}")
            if n is not None:
                pg[name] = n
        types = {}
        for name in ("buddy", "slab", "hugetlb", "offline", "unaccepted"):
            v = info.number(f"PAGE_{name.upper()}_MAPCOUNT_VALUE")
            if v is not None:
                types[name] = v & 0xFFFFFFFF
        head_mask = info.number("PG_head_mask")
        layout = cls(
            size=size,
            offsets=offsets,
            pg=pg,
            head_mask=head_mask or 0,
            types=types,
            hugetlb_dtor=info.number("HUGETLB_PAGE_DTOR"),
            pg_hugetlb=info.number("PG_hugetlb"),
            # makedumpfile's rule (and the kernel's since 6.6, "mm: free up a word in the first tail
            # page"): the order is page[1].flags & 0xff when the kernel marks hugetlb the new way.
            order_in_flags="hugetlb" in types or info.number("PG_hugetlb") is not None,
            max_order=info.length("zone.free_area"),
        )
        layout._check(info)
        return layout

    def _check(self, info: VmcoreInfo) -> None:
        note = self.notes.append
        for name in ("lru", "private", "swapcache"):
            if name not in self.pg:
                raise VmcoreinfoError(f"VMCOREINFO lacks NUMBER(PG_{name}): pages cannot be classified")
        if "mapping" not in self.offsets:
            raise VmcoreinfoError("VMCOREINFO lacks OFFSET(page.mapping): pages cannot be classified")
        if "slab" not in self.pg and "slab" not in self.types:
            note("slab pages cannot be recognised (no NUMBER(PG_slab) nor PAGE_SLAB_MAPCOUNT_VALUE): "
                 "anonymous, free and offline pages are kept")
        if "buddy" not in self.types or "private" not in self.offsets or "_mapcount" not in self.offsets:
            note("free pages cannot be recognised (no PAGE_BUDDY_MAPCOUNT_VALUE, page.private or "
                 "page._mapcount): free pages are kept")
        elif self.max_order is None:
            note("LENGTH(zone.free_area) is missing: buddy orders cannot be checked, free pages are kept")
        if not self.head_mask or "compound_head" not in self.offsets:
            note("compound pages cannot be recognised (no PG_head_mask or page.compound_head): "
                 "only their first pages are classified")
        elif not self.order_in_flags and "compound_order" not in self.offsets:
            note("the order of compound pages is not exported: only their head pages are excluded")
        if self.hugetlb_dtor is None and self.pg_hugetlb is None and "hugetlb" not in self.types:
            note("hugetlb pages cannot be recognised: they are kept")
        elif (
            "hugetlb" not in self.types
            and self.pg_hugetlb is None
            and "compound_dtor" not in self.offsets
        ):
            note("hugetlb pages cannot be recognised (no compound_dtor offset): they are kept")

    @property
    def dtype(self) -> np.dtype[np.void]:
        """One struct page as a numpy record: the fields classification reads, at their offsets."""
        names, formats, offs = [], [], []
        for name, fmt in (
            ("flags", "<u8"),
            ("mapping", "<u8"),
            ("_mapcount", "<u4"),
            ("private", "<u8"),
            ("compound_head", "<u8"),
            ("compound_order", "u1"),
            ("compound_dtor", "u1"),
        ):
            if name in self.offsets:
                names.append(name)
                formats.append(fmt)
                offs.append(self.offsets[name])
        return np.dtype({"names": names, "formats": formats, "offsets": offs, "itemsize": self.size})


def _bit(values: npt.NDArray[np.uint64], nr: int | None) -> npt.NDArray[np.bool_]:
    if nr is None or not 0 <= nr < 64:
        return np.zeros(values.shape, dtype=np.bool_)
    out: npt.NDArray[np.bool_] = (values & np.uint64(1 << nr)) != 0
    return out


def _is_type(mapcount: npt.NDArray[np.uint32], value: int | None) -> npt.NDArray[np.bool_]:
    if value is None:
        return np.zeros(mapcount.shape, dtype=np.bool_)
    out: npt.NDArray[np.bool_]
    if value & ((1 << _PGTY_SHIFT) - 1) == 0 and value >> _PGTY_SHIFT >= 0x80:
        out = (mapcount >> np.uint32(_PGTY_SHIFT)) == np.uint32(value >> _PGTY_SHIFT)
    else:
        out = mapcount == np.uint32(value)
    return out


def classify(
    layout: PageLayout,
    pages: npt.NDArray[np.void],
    valid: npt.NDArray[np.bool_],
    first_pfn: int,
    dump_level: int,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Candidate category and order of each page of `pages` (struct pages of consecutive pfns from
    `first_pfn`; `valid` false where there is no struct page or the pfn is not RAM).

    Returns (category, order): a page of category c > 0 excludes itself and the 2**order - 1 pages after
    it. makedumpfile's decision chain, first match wins (`__exclude_unnecessary_pages()`): tail pages
    are skipped; free (buddy) pages and unaccepted pages (-d 16); non-private cache (-d 2); all cache
    (-d 4); anonymous and hugetlb pages (-d 8); then, whatever the level, hwpoison and offline pages.
    Candidates inside another page's multi-page exclusion are dropped later, by `Excluder`.
    """
    n = len(pages)
    zeros_u8 = np.zeros(n, dtype=np.uint8)
    if n == 0:
        return zeros_u8, zeros_u8.copy()
    o = layout.offsets
    # Each field once into its own array: the record array's fields are strided (one struct page
    # apart), and every later test on a strided field would touch a cache line per page.
    flags = np.ascontiguousarray(pages["flags"])
    mapping = np.ascontiguousarray(pages["mapping"])
    mapcount = np.ascontiguousarray(pages["_mapcount"]) if "_mapcount" in o else np.zeros(n, dtype=np.uint32)
    private = np.ascontiguousarray(pages["private"]) if "private" in o else np.zeros(n, dtype=np.uint64)
    pfns = np.arange(first_pfn, first_pfn + n, dtype=np.uint64)

    # Slab first: since 6.2 a slab's counters lie where page.mapping was, so bit 0 of "mapping" may be
    # set on a slab page (6.1 and before: slab_cache, a pointer, lies there).
    slab = _bit(flags, layout.pg.get("slab")) | _is_type(mapcount, layout.types.get("slab"))
    no_slab_rule = "slab" not in layout.pg and "slab" not in layout.types

    # Compound pages: the head's page[1] gives the order (and, up to 6.5, the destructor).
    compound = bool(layout.head_mask) and "compound_head" in o
    tail = (pages["compound_head"] & np.uint64(1)) != 0 if compound else np.zeros(n, dtype=np.bool_)
    head = np.zeros(n, dtype=np.bool_)
    if compound:
        head[:-1] = (flags[:-1] & np.uint64(layout.head_mask)) != 0  # the last one has no page[1] here
    order = np.zeros(n, dtype=np.uint64)
    hugetlb = np.zeros(n, dtype=np.bool_)
    if head.any():
        nxt_flags = np.empty(n, dtype=np.uint64)
        nxt_flags[:-1] = flags[1:]
        nxt_flags[-1] = 0
        if layout.order_in_flags:
            order = np.where(head, nxt_flags & np.uint64(0xFF), 0).astype(np.uint64)
        elif "compound_order" in o:
            nxt = np.zeros(n, dtype=np.uint64)
            nxt[:-1] = pages["compound_order"][1:]
            order = np.where(head, nxt, 0).astype(np.uint64)
        if "hugetlb" in layout.types:
            hugetlb = head & _is_type(mapcount, layout.types["hugetlb"])
        elif layout.pg_hugetlb is not None:
            hugetlb = head & _bit(nxt_flags, layout.pg_hugetlb)
        elif layout.hugetlb_dtor is not None and "compound_dtor" in o:
            dtor = np.zeros(n, dtype=np.uint64)
            dtor[:-1] = pages["compound_dtor"][1:]
            hugetlb = head & (dtor == np.uint64(layout.hugetlb_dtor))
        # An order too large, or a head not aligned to it, is not an order (makedumpfile: "Invalid order").
        bad = (order >= 64) | ((pfns & ((np.uint64(1) << np.minimum(order, 63)) - np.uint64(1))) != 0)
        order[bad] = 0

    level = dump_level
    cat = np.zeros(n, dtype=np.uint8)
    nr_order = order.copy()
    undecided = valid & ~tail

    def take(mask: npt.NDArray[np.bool_], category: int) -> None:
        nonlocal undecided
        m = mask & undecided
        cat[m] = category
        undecided &= ~m

    # Free pages: a buddy block of 2**private pages; an order out of range means "not a free block",
    # and the page is then not looked at again (makedumpfile: "Invalid free page order").
    if level & L_FREE and "buddy" in layout.types and "private" in o and layout.max_order is not None:
        buddy = ~slab & _is_type(mapcount, layout.types["buddy"]) & undecided
        if no_slab_rule:
            buddy[:] = False
        good = buddy & (private < np.uint64(layout.max_order))
        nr_order = np.where(good, private, nr_order)
        take(good, Category.FREE)
        undecided &= ~(buddy & ~good)
        if "unaccepted" in layout.types:
            unacc = _is_type(mapcount, layout.types["unaccepted"]) & undecided
            nr_order = np.where(unacc, np.uint64(layout.max_order - 1), nr_order)
            take(unacc, Category.FREE)
    cache = _bit(flags, layout.pg["lru"])
    swapcache = _bit(flags, layout.pg["swapcache"])
    if "swapbacked" in layout.pg:
        swapcache &= _bit(flags, layout.pg["swapbacked"])  # PG_swapcache means it only with PG_swapbacked
    cache |= swapcache
    is_private = _bit(flags, layout.pg["private"])
    anon = ((mapping & np.uint64(_PAGE_MAPPING_ANON)) != 0) & ~slab
    if level & L_CACHE:
        take(cache & ~is_private & ~anon, Category.CACHE)
    if level & L_CACHE_PRI:
        take(cache & ~anon & is_private, Category.CACHE_PRIVATE)
        take(cache & ~anon, Category.CACHE)
    if level & L_USER:
        take(hugetlb | (anon if not no_slab_rule else np.zeros(n, dtype=np.bool_)), Category.USER)
    take(_bit(flags, layout.pg.get("hwpoison")), Category.HWPOISON)
    if not no_slab_rule:
        take(~slab & _is_type(mapcount, layout.types.get("offline")), Category.OFFLINE)
    nr_order[cat == 0] = 0
    return cat, np.minimum(nr_order, 63).astype(np.uint8)


class Excluder:
    """Applies candidate exclusions in pfn order, cycle after cycle, as makedumpfile does.

    A candidate of order k excludes its pfn and the 2**k - 1 after it, which are not examined again,
    even in the next cycle; a candidate inside an earlier exclusion is dropped.
    """

    def __init__(self, max_pfn: int) -> None:
        self.max_pfn = max_pfn
        self._pending_end = 0  # pfns below this (from an earlier cycle) are covered
        self._pending_cat = 0

    @property
    def covered_until(self) -> int:
        """pfns below this are covered by an exclusion begun in an earlier cycle."""
        return self._pending_end

    def apply(
        self, first_pfn: int, cat: npt.NDArray[np.uint8], order: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.uint8]:
        """Final category of each pfn of the cycle [first_pfn, first_pfn + len(cat))."""
        n = len(cat)
        end = first_pfn + n
        out = cat.copy()
        # The tail of a range started in an earlier cycle.
        cover = 0
        if self._pending_end > first_pfn:
            cover = min(self._pending_end, end) - first_pfn
            out[:cover] = self._pending_cat
        multi = np.flatnonzero((order > 0) & (cat > 0))
        multi = multi[multi >= cover]
        if len(multi) == 0:
            return out
        # Walk the multi-page candidates in pfn order: few (free blocks, compound heads).
        delta = np.zeros(n + 1, dtype=np.int16)
        covered_until = cover
        for i in multi.tolist():
            if i < covered_until:
                continue
            stop = i + (1 << int(order[i]))
            c = int(cat[i])
            hi = min(stop, n)
            delta[i] += c
            delta[hi] -= c
            covered_until = stop
            if stop > n:
                self._pending_end, self._pending_cat = min(first_pfn + stop, self.max_pfn), c
        # Accepted ranges do not overlap, so the running sum is the category inside each of them;
        # single-page candidates inside a range give way to the range's category.
        ranges = np.cumsum(delta[:n]).astype(np.uint8)
        covered = ranges > 0
        out[covered] = ranges[covered]
        return out


@dataclass(frozen=True)
class _Section:
    first_pfn: int
    last_pfn: int  # exclusive
    mem_map: int  # struct page vaddr of first_pfn, or 0 if the section has no mem_map


class MemMap:
    """Where the struct page of each pfn lies: mem_section decoded (SPARSEMEM), read through the page tables.

    Sections without a mem_map, and struct pages that cannot be read, give pages that are kept.
    """

    def __init__(self, kernel: Kernel, layout: PageLayout, max_pfn: int) -> None:
        self.kernel = kernel
        self.layout = layout
        self.max_pfn = max_pfn
        info = kernel.info
        page_shift = (kernel.page_size - 1).bit_length()
        section_bits = info.number("SECTION_SIZE_BITS") or 27
        physmem_bits = info.number("MAX_PHYSMEM_BITS") or (52 if kernel.mmu.levels == 5 else 46)
        self.pages_per_section = 1 << (section_bits - page_shift)
        sym = info.symbol("mem_section")
        size_ms = info.size("mem_section")
        off_map = info.offset("mem_section", "section_mem_map")
        if sym is None or size_ms is None or off_map is None:
            raise VmcoreinfoError(
                "VMCOREINFO lacks SYMBOL(mem_section), SIZE(mem_section) or "
                "OFFSET(mem_section.section_mem_map): only SPARSEMEM kernels are supported"
            )
        nr_mem_sections = 1 << (physmem_bits - section_bits)
        per_root = kernel.page_size // size_ms
        length = info.length("mem_section")
        # SPARSEMEM_EXTREME: mem_section is an array of NR_SECTION_ROOTS pointers to pages of sections.
        extreme = length is None or length == -(-nr_mem_sections // per_root)
        nr_sections = -(-max_pfn // self.pages_per_section)
        sections: list[_Section] = []
        if extreme:
            nroots = -(-nr_sections // per_root)
            roots = np.frombuffer(kernel.read(sym, 8 * nroots), dtype="<u8")
            for nr in range(nr_sections):
                root = int(roots[nr // per_root])
                sections.append(self._section(nr, root + (nr % per_root) * size_ms + off_map if root else 0))
        else:
            for nr in range(nr_sections):
                sections.append(self._section(nr, sym + nr * size_ms + off_map))
        self.sections = sections
        self._buf = np.empty(0, dtype=np.uint8)

    def _section(self, nr: int, map_addr: int) -> _Section:
        first = nr * self.pages_per_section
        last = min(first + self.pages_per_section, self.max_pfn)
        if not map_addr:
            return _Section(first, last, 0)
        try:
            coded = self.kernel.read_u64(map_addr)
        except KdumpyError:
            return _Section(first, last, 0)
        if not coded & _SECTION_MARKED_PRESENT:
            return _Section(first, last, 0)
        # The kernel stores mem_map - section_start_pfn (sparse_encode_mem_map()).
        coded &= _SECTION_MAP_MASK & 0xFFFFFFFFFFFFFFFF
        if not coded:
            return _Section(first, last, 0)
        mem_map = (coded + first * self.layout.size) & 0xFFFFFFFFFFFFFFFF
        return _Section(first, last, mem_map)

    def read(self, lo: int, hi: int) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_]]:
        """Struct pages of pfns [lo, hi) as a `layout.dtype` array, and which of them could be read
        (the others read as zeros). The array is valid until the next call: its buffer is reused."""
        size = self.layout.size
        n = hi - lo
        if len(self._buf) < n * size:
            self._buf = np.empty(n * size, dtype=np.uint8)
        raw = self._buf[: n * size]
        valid = np.zeros(n, dtype=np.bool_)
        for paddr, pfn, count in self._mapped(lo, hi):
            i = pfn - lo
            if self._read_into(paddr, raw[i * size : (i + count) * size]):
                valid[i : i + count] = True
        raw.reshape(n, size)[~valid] = 0
        return raw.view(self.layout.dtype), valid

    def read_every(self, lo: int, hi: int, step: int) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_]]:
        """As `read`, for the pfns lo, lo + step, ... below hi only (a struct page each, the ones
        between not read)."""
        size = self.layout.size
        n = -(-(hi - lo) // step)
        raw = np.zeros(n * size, dtype=np.uint8)
        valid = np.zeros(n, dtype=np.bool_)
        for paddr, pfn, count in self._mapped(lo, hi):
            first = lo + -(-(pfn - lo) // step) * step
            for at in range(first, pfn + count, step):
                i = (at - lo) // step
                valid[i] = self._read_into(paddr + (at - pfn) * size, raw[i * size : (i + 1) * size])
        return raw.view(self.layout.dtype), valid  # a record not read stays zeros

    def _mapped(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        """(paddr, first pfn, count) of the struct pages of pfns [lo, hi) that are mapped, in pieces
        none of which crosses a page-table mapping."""
        size = self.layout.size
        pps = self.pages_per_section
        for s in self.sections[lo // pps : -(-hi // pps)]:
            a, b = max(lo, s.first_pfn), min(hi, s.last_pfn)
            if a >= b or not s.mem_map:
                continue
            for paddr, pfn, count in self._pieces(s.mem_map + (a - s.first_pfn) * size, a, b - a):
                if paddr is not None:
                    yield paddr, pfn, count

    def _read_into(self, paddr: int, out: npt.NDArray[np.uint8]) -> bool:
        """Fill `out` from `paddr`; False when part of it is not in the dump (those pages are kept)."""
        dump = self.kernel.dump
        ps = dump.page_size
        first, nbytes = paddr // ps, len(out)
        whole = paddr % ps == 0 and nbytes % ps == 0  # the vmemmap is mapped in pages or 2 MiB pages
        try:
            if not whole:
                out[:] = np.frombuffer(dump.read(paddr, nbytes), dtype=np.uint8)
            elif bool(np.all(dump.page_states(first, first + nbytes // ps) == PageState.PRESENT)):
                dump.read_pages_into(first, nbytes // ps, out.data)  # straight into the buffer
            else:
                return False
        except KdumpyError:
            return False
        return True

    def _pieces(self, vaddr: int, pfn: int, count: int) -> Iterator[tuple[int | None, int, int]]:
        """(paddr, pfn, count) pieces of a run of struct pages, none crossing a page-table mapping;
        paddr None where the vmemmap is not mapped."""
        size = self.layout.size
        while count > 0:
            paddr: int | None
            try:
                paddr, mapping = self.kernel.mmu.walk(vaddr)
            except KdumpyError:
                paddr, mapping = None, self.kernel.page_size
            room = (mapping - vaddr % mapping) // size
            n = max(1, min(count, room))
            yield paddr, pfn, n
            vaddr += n * size
            pfn += n
            count -= n
