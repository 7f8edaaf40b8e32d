"""Page classification on struct page arrays built with numpy: the decision chain, page types old and
new, compound pages, buddy orders, and multi-page exclusions across cycles."""

from __future__ import annotations

import numpy as np
import pytest

from kdumpy.formats.vmcoreinfo import VmcoreInfo
from kdumpy.memory.pages import Category, Excluder, PageLayout, classify

# A 6.1-like kernel (PG_slab, ~PG_buddy page types, compound_order/dtor in page[1]) ...
INFO_61 = """OSRELEASE=6.1.0
PAGESIZE=4096
SIZE(page)=64
OFFSET(page.flags)=0
OFFSET(page.mapping)=24
OFFSET(page._mapcount)=48
OFFSET(page.private)=40
OFFSET(page.compound_dtor)=16
OFFSET(page.compound_order)=17
OFFSET(page.compound_head)=8
LENGTH(zone.free_area)=11
NUMBER(PG_lru)=4
NUMBER(PG_private)=13
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=19
NUMBER(PG_slab)=9
NUMBER(PG_hwpoison)=23
NUMBER(PG_head_mask)=65536
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129
NUMBER(HUGETLB_PAGE_DTOR)=2
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257
"""
# ... and a 6.12-like one (PGTY_x << 24 page types, the order in page[1].flags, no PG_slab).
INFO_612 = """OSRELEASE=6.12.0
PAGESIZE=4096
SIZE(page)=64
OFFSET(page.flags)=0
OFFSET(page.mapping)=24
OFFSET(page._mapcount)=48
OFFSET(page.private)=40
OFFSET(page.compound_head)=8
LENGTH(zone.free_area)=11
NUMBER(PG_lru)=5
NUMBER(PG_private)=14
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=17
NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-184549376
NUMBER(PG_hwpoison)=20
NUMBER(PG_head_mask)=64
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456
NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-201326592
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-251658240
"""


def _layout(text: str) -> PageLayout:
    return PageLayout.from_vmcoreinfo(VmcoreInfo(text))


def _pages(layout: PageLayout, n: int) -> np.ndarray:  # type: ignore[type-arg]
    pages = np.zeros(n, dtype=layout.dtype)
    pages["_mapcount"] = 0xFFFFFFFF  # -1: no mapcount, no page type
    return pages


def _run(layout: PageLayout, pages: np.ndarray, level: int, first: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    cat, order = classify(layout, pages, np.ones(len(pages), dtype=bool), first, level)
    return Excluder(first + len(pages)).apply(first, cat, order)


def test_layout_from_61_and_612_vmcoreinfo() -> None:
    old, new = _layout(INFO_61), _layout(INFO_612)
    assert old.types["buddy"] == 0xFFFFFF7F and not old.order_in_flags and old.notes == []
    assert new.types["slab"] == 0xF5000000 and new.order_in_flags and new.notes == []


def test_missing_rules_are_noted_and_pages_kept() -> None:
    text = "\n".join(line for line in INFO_612.splitlines() if "SLAB" not in line and "BUDDY" not in line)
    layout = _layout(text)
    assert any("slab" in n for n in layout.notes) and any("free pages" in n for n in layout.notes)
    pages = _pages(layout, 4)
    pages["_mapcount"][0] = 0xF0000000  # buddy, but the kernel did not say so
    pages["mapping"][1] = 0xFFFF000000000001  # anon, but slab cannot be told apart
    assert _run(layout, pages, 31).tolist() == [0, 0, 0, 0]


def test_decision_chain_61() -> None:
    layout = _layout(INFO_61)
    pages = _pages(layout, 8)
    pages["flags"][0] = 1 << 4  # LRU, not private: non-private cache
    pages["flags"][1] = (1 << 4) | (1 << 13)  # LRU + private: private cache
    pages["mapping"][2] = 0xFFFF888000000001  # anon
    pages["flags"][3] = 1 << 23  # hwpoison
    pages["_mapcount"][4] = 0xFFFFFEFF  # offline (-257)
    pages["flags"][5] = (1 << 10) | (1 << 19)  # swapcache + swapbacked: cache
    pages["flags"][6] = 1 << 10  # swapcache alone: not cache
    assert _run(layout, pages, 31).tolist() == [
        Category.CACHE, Category.CACHE_PRIVATE, Category.USER, Category.HWPOISON, Category.OFFLINE,
        Category.CACHE, 0, 0,
    ]
    # -d 2 leaves private cache; hwpoison and offline go whatever the level.
    assert _run(layout, pages, 2).tolist()[:5] == [Category.CACHE, 0, 0, Category.HWPOISON, Category.OFFLINE]
    assert _run(layout, pages, 0).tolist()[:5] == [0, 0, 0, Category.HWPOISON, Category.OFFLINE]


def test_buddy_block_covers_its_pages_and_bad_orders_are_kept() -> None:
    layout = _layout(INFO_61)
    pages = _pages(layout, 32)
    pages["_mapcount"][0] = 0xFFFFFF7F
    pages["private"][0] = 3  # 8 free pages
    pages["flags"][2] = 1 << 4  # an LRU page inside the block: covered by the block, counted as free
    pages["_mapcount"][16] = 0xFFFFFF7F
    pages["private"][16] = 11  # order == LENGTH(zone.free_area): not a free block, and not cache either
    pages["flags"][16] = 1 << 4
    out = _run(layout, pages, 31)
    assert out[:8].tolist() == [Category.FREE] * 8
    assert out[8:].tolist() == [0] * 24
    assert _run(layout, pages, 15)[2] == Category.CACHE  # without -d 16 the page is seen on its own


def test_slab_page_with_bit0_in_mapping_is_not_anonymous_on_612() -> None:
    layout = _layout(INFO_612)
    pages = _pages(layout, 2)
    pages["_mapcount"][:] = 0xF5000000
    pages["mapping"][:] = 0x0000000100000001  # 6.2+: slab counters lie where mapping was
    assert _run(layout, pages, 31).tolist() == [0, 0]


def test_hugetlb_and_compound_order_61_and_612() -> None:
    for text in (INFO_61, INFO_612):
        layout = _layout(text)
        pages = _pages(layout, 16)
        head = 8
        pages["flags"][head] = layout.head_mask
        pages["compound_head"][head + 1 : head + 8] = 0xFFFF888000000000 + head * 64 + 1
        if layout.order_in_flags:
            pages["flags"][head + 1] = 3
            pages["_mapcount"][head] = layout.types["hugetlb"]
        else:
            pages["compound_order"][head + 1] = 3
            pages["compound_dtor"][head + 1] = 2
        out = _run(layout, pages, 8)
        assert out.tolist() == [0] * 8 + [Category.USER] * 8, text[:15]
        assert _run(layout, pages, 7).tolist() == [0] * 16  # tails are never classified alone


def test_misaligned_order_is_ignored() -> None:
    layout = _layout(INFO_612)
    pages = _pages(layout, 8)
    pages["flags"][2] = layout.head_mask | (1 << 5)  # an LRU head
    pages["flags"][3] = 2  # order 2 at pfn 2: not aligned, so one page only
    assert _run(layout, pages, 2).tolist() == [0, 0, Category.CACHE, 0, 0, 0, 0, 0]


def test_multi_page_exclusion_continues_into_next_cycle() -> None:
    layout = _layout(INFO_61)
    ex = Excluder(64)
    a = _pages(layout, 32)
    a["_mapcount"][16] = 0xFFFFFF7F
    a["private"][16] = 5  # 32 pages from pfn 16: half in the next cycle
    b = _pages(layout, 32)
    b["flags"][4] = 1 << 4  # would be cache on its own, but lies inside the block
    ones = np.ones(32, dtype=bool)
    out_a = ex.apply(0, *classify(layout, a, ones, 0, 31))
    out_b = ex.apply(32, *classify(layout, b, ones, 32, 31))
    assert out_a.tolist() == [0] * 16 + [Category.FREE] * 16
    assert out_b.tolist() == [Category.FREE] * 16 + [0] * 16


@pytest.mark.parametrize(
    "value,mapcount,expected",
    [
        (0xF0000000, 0xF0000000, True),  # 6.12+: PGTY_buddy << 24, the top byte decides
        (0xF0000000, 0xF0000123, True),
        (0xFFFFFF7F, 0xFFFFFF7F, True),  # before: ~PG_buddy, the whole word
        (0xFFFFFF7F, 0xFFFFFE7F, False),
    ],
)
def test_page_type_comparison_by_era(value: int, mapcount: int, expected: bool) -> None:
    text = INFO_61.replace("-129", str(value - (1 << 32)))
    layout = _layout(text)
    pages = _pages(layout, 1)
    pages["_mapcount"][0] = mapcount
    assert bool(_run(layout, pages, 16)[0] == Category.FREE) is expected
