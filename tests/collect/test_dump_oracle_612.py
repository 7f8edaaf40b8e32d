"""`kdumpy dump` on 6.12 against an oracle built from the kernel's own types (drgn + debug vmlinux).

Debian's makedumpfile 1.7.2 predates 6.12 (it misses slab and hugetlb page types and the folio order),
so on 6.12 the reference is computed here independently of VMCOREINFO and of kdumpy's classifier:
struct page offsets, page flag numbers, `enum pagetype` and the folio order come from the debug info,
the struct pages are read through drgn, and makedumpfile's decision chain is applied with the
kernel's own tests (`page_type >> 24 == PGTY_x`, `folio->_flags_1 & 0xff`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdumpy.collect.pipeline import filter_pages
from kdumpy.memory.dump import PageState, open_dump
from kdumpy.memory.pages import Category

pytestmark = [pytest.mark.foreign, pytest.mark.lab]

drgn = pytest.importorskip("drgn")

LEVELS = [1, 2, 4, 8, 16, 31]


def _program(vmcore: Path, vmlinux: Path) -> object:
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    return prog


def _oracle(prog: object, vmcore: Path, level: int) -> tuple[np.ndarray, dict[Category, int]]:  # type: ignore[type-arg]
    """(excluded mask per pfn, counts per category) by the kernel's rules, from debug info."""
    prog: drgn.Program = prog  # type: ignore[no-redef]
    page_t = prog.type("struct page")
    size = page_t.size
    off = {m: drgn.offsetof(page_t, m) for m in ("flags", "mapping", "page_type", "private", "compound_head")}
    folio_t = prog.type("struct folio")
    flags1 = drgn.offsetof(folio_t, "_flags_1") - size  # in page[1]
    pf = prog.type("enum pageflags")
    pg = {name: value for name, value in pf.enumerators}  # type: ignore[misc]
    pt = {name: value for name, value in prog.type("enum pagetype").enumerators}  # type: ignore[misc]
    nr_orders = prog.type("struct zone").member("free_area").type.length
    vmemmap = prog["vmemmap_base"].value_()
    with open_dump(str(vmcore)) as dump:
        max_pfn = dump.max_pfn
        states = dump.page_states(0, max_pfn)
    raw = np.frombuffer(prog.read(vmemmap, max_pfn * size), dtype=np.uint8).reshape(max_pfn, size)

    def u64(o: int) -> np.ndarray:  # type: ignore[type-arg]
        return raw[:, o : o + 8].copy().view("<u8").ravel()

    flags, mapping, private, chead = (u64(off[k]) for k in ("flags", "mapping", "private", "compound_head"))
    ptype = raw[:, off["page_type"] : off["page_type"] + 4].copy().view("<u4").ravel()
    nxt_flags1 = np.zeros(max_pfn, dtype=np.uint64)
    nxt_flags1[:-1] = raw[1:, flags1 : flags1 + 8].copy().view("<u8").ravel()

    def bit(name: str) -> np.ndarray:  # type: ignore[type-arg]
        return (flags >> np.uint64(pg[name])) & np.uint64(1) == 1

    def is_type(name: str) -> np.ndarray:  # type: ignore[type-arg]
        return (ptype >> np.uint32(24)) == np.uint32(pt[name])

    ram = states != PageState.MISSING
    head, tail = bit("PG_head"), (chead & np.uint64(1)) == 1
    order = np.where(head, nxt_flags1 & np.uint64(0xFF), 0).astype(np.int64)
    pfns = np.arange(max_pfn, dtype=np.int64)
    order[(pfns & ((1 << np.minimum(order, 62)) - 1)) != 0] = 0
    slab = is_type("PGTY_slab")
    anon = ((mapping & np.uint64(1)) == 1) & ~slab
    lru = bit("PG_lru")
    # PG_swapcache is an alias of PG_owner_priv_1 in enum pageflags.
    swapcache = bit("PG_swapcache" if "PG_swapcache" in pg else "PG_owner_priv_1") & bit("PG_swapbacked")
    cache = lru | swapcache
    private_flag = bit("PG_private")
    hugetlb = head & is_type("PGTY_hugetlb")
    buddy = is_type("PGTY_buddy") & ~slab
    hwpoison = bit("PG_hwpoison") if "PG_hwpoison" in pg else np.zeros(max_pfn, dtype=bool)
    offline = is_type("PGTY_offline") & ~slab
    free = bool(level & 16) & buddy
    # makedumpfile's chain, first match wins; a buddy page with a bad order is kept, full stop.
    conditions = [
        ~ram | tail,
        free & (private >= np.uint64(nr_orders)),
        free,
        bool(level & 2) & cache & ~private_flag & ~anon,
        bool(level & 4) & cache & ~anon & private_flag,
        bool(level & 4) & cache & ~anon,
        bool(level & 8) & (anon | hugetlb),
        hwpoison,
        offline,
    ]
    choices = [0, 0, Category.FREE, Category.CACHE, Category.CACHE_PRIVATE, Category.CACHE,
               Category.USER, Category.HWPOISON, Category.OFFLINE]
    cat = np.select(conditions, choices, 0).astype(np.uint8)
    nr = np.where(cat == Category.FREE, private.astype(np.int64), order)
    excluded = np.zeros(max_pfn, dtype=np.uint8)
    until = 0
    for p in np.flatnonzero(cat).tolist():
        if p < until:
            continue
        end = min(p + (1 << int(nr[p])), max_pfn)
        excluded[p:end] = cat[p]
        until = end
    counts = {c: int((excluded == c).sum()) for c in Category if c not in (Category.KEEP, Category.ZERO)}
    return excluded, counts


@pytest.mark.parametrize("name", ["vmcore_612", "vmcore_612_mixed"])
def test_dump_levels_agree_with_debuginfo_oracle_on_612(
    name: str, request: pytest.FixtureRequest, vmlinux_612: Path
) -> None:
    vmcore: Path = request.getfixturevalue(name)
    prog = _program(vmcore, vmlinux_612)
    for level in LEVELS:
        excluded, counts = _oracle(prog, vmcore, level)
        with open_dump(str(vmcore)) as dump:
            result = filter_pages(dump, level)
            present = dump.page_states(0, dump.max_pfn) == PageState.PRESENT
        ours = np.unpackbits(result.bitmap2, bitorder="little")[: len(excluded)].astype(bool)
        expected = present & (excluded == 0)
        diff = np.flatnonzero(ours != expected)
        assert len(diff) == 0, f"-d {level}: {len(diff)} pfns differ, first {diff[:10].tolist()}"
        assert {c: n for c, n in result.excluded.items() if c != Category.ZERO} == counts, f"-d {level}"
