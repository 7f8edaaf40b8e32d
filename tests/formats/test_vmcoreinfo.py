"""VMCOREINFO text: every key kind, makedumpfile's parsing rules, tolerance and typed errors."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdumpy.errors import VmcoreinfoError
from kdumpy.formats.vmcoreinfo import VmcoreInfo

# Shaped like a 6.1 x86_64 kernel's note (kernel/vmcore_info.c, arch/x86/kernel/crash_core_64.c).
TEXT = (
    "OSRELEASE=6.1.0-27-amd64\n"
    "BUILD-ID=0123456789abcdef0123456789abcdef01234567\n"
    "PAGESIZE=4096\n"
    "SYMBOL(init_uts_ns)=ffffffff82a1b2c0\n"
    "OFFSET(uts_namespace.name)=0\n"
    "SYMBOL(mem_section)=ffff88813ffd2000\n"
    "LENGTH(mem_section)=2048\n"
    "SIZE(page)=64\n"
    "OFFSET(page.flags)=0\n"
    "OFFSET(page._refcount)=52\n"
    "LENGTH(zone.free_area)=11\n"
    "NUMBER(PG_lru)=4\n"
    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n"
    "NUMBER(phys_base)=0\n"
    "NUMBER(VMALLOC_START)=0xffffc90000000000\n"
    "CONFIG_SPARSEMEM_VMEMMAP=y\n"
    "KERNELOFFSET=1c000000\n"
    "CRASHTIME=1700000000\n"
    "SRCFILE(pud_t)=arch/x86/include/asm/pgtable_types.h\n"
)


def test_every_key_kind_is_typed() -> None:
    v = VmcoreInfo(TEXT.encode())
    assert v.osrelease == "6.1.0-27-amd64"
    assert v.build_id == "0123456789abcdef0123456789abcdef01234567"
    assert v.pagesize == 4096
    assert v.symbol("init_uts_ns") == 0xFFFFFFFF82A1B2C0
    assert v.offset("uts_namespace", "name") == 0
    assert v.offset("page", "_refcount") == 52
    assert v.size("page") == 64
    assert v.length("mem_section") == 2048
    assert v.length("zone.free_area") == 11
    assert v.number("PG_lru") == 4
    assert v.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert v.number("phys_base") == 0
    assert v.number("VMALLOC_START") == 0xFFFFC90000000000
    assert v.config("SPARSEMEM_VMEMMAP") is True
    assert v.config("X86_PAE") is False
    assert v.kerneloffset == 0x1C000000
    assert v.crashtime == 1700000000
    assert v.get("SRCFILE(pud_t)") == "arch/x86/include/asm/pgtable_types.h"


def test_absent_keys_are_none() -> None:
    v = VmcoreInfo(b"OSRELEASE=6.12.0\n")
    assert v.symbol("prb") is None
    assert v.offset("page", "lru") is None
    assert v.size("zone") is None
    assert v.length("node_data") is None
    assert v.number("pgtable_l5_enabled") is None
    assert v.pagesize is None and v.crashtime is None and v.kerneloffset is None and v.build_id is None
    assert "OSRELEASE" in v and "PAGESIZE" not in v


def test_items_keep_order_duplicates_and_unknown_keys() -> None:
    v = VmcoreInfo("A=1\nHWERR(foo)=3\nA=2\nX=a=b\n")
    assert v.items() == [("A", "1"), ("HWERR(foo)", "3"), ("A", "2"), ("X", "a=b")]
    assert v.get("A") == "1"  # first occurrence wins, as in makedumpfile
    assert v.get("HWERR(foo)") == "3"
    assert v.get("X") == "a=b"


def test_tolerates_nuls_cr_blank_lines_and_lines_without_equals() -> None:
    text = b"OSRELEASE=6.12.1\r\n\n\ngarbage line\nPAGESIZE=4096\r\n\0\0\0\0"
    v = VmcoreInfo(text)
    assert v.raw == b"OSRELEASE=6.12.1\r\n\n\ngarbage line\nPAGESIZE=4096\r\n"
    assert v.items() == [("OSRELEASE", "6.12.1"), ("PAGESIZE", "4096")]
    assert v.pagesize == 4096


def test_text_after_an_inner_nul_is_not_seen() -> None:
    v = VmcoreInfo(b"OSRELEASE=6.1\n\0PAGESIZE=4096\n")
    assert v.osrelease == "6.1"
    assert v.pagesize is None


def test_str_and_bytes_give_the_same_result() -> None:
    assert VmcoreInfo(TEXT).items() == VmcoreInfo(TEXT.encode()).items()
    assert VmcoreInfo(TEXT).raw == TEXT.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", 10),
        ("-129", -129),
        ("0x10", 16),
        ("ff", 255),  # not decimal: makedumpfile falls back to base 16
        ("0XFF", 255),
        ("-0x81", -129),
        ("+7", 7),
    ],
)
def test_number_tries_base_10_then_16(value: str, expected: int) -> None:
    assert VmcoreInfo(f"NUMBER(x)={value}\n").number("x") == expected


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ("NUMBER(x)=1_000\n", lambda v: v.number("x")),
        ("NUMBER(x)=\n", lambda v: v.number("x")),
        ("NUMBER(x)=12q\n", lambda v: v.number("x")),
        ("SIZE(page)=-64\n", lambda v: v.size("page")),
        ("OFFSET(page.lru)=zz\n", lambda v: v.offset("page", "lru")),
        ("LENGTH(a)=1.5\n", lambda v: v.length("a")),
        ("SYMBOL(prb)=0\n", lambda v: v.symbol("prb")),
        ("SYMBOL(prb)=ffffffffffffffff\n", lambda v: v.symbol("prb")),
        ("SYMBOL(prb)=-1\n", lambda v: v.symbol("prb")),
        ("SYMBOL(prb)=xyz\n", lambda v: v.symbol("prb")),
        ("PAGESIZE=4095\n", lambda v: v.pagesize),
        ("PAGESIZE=0x1000\n", lambda v: v.pagesize),
        ("CRASHTIME=soon\n", lambda v: v.crashtime),
        ("KERNELOFFSET=-5\n", lambda v: v.kerneloffset),
    ],
)
def test_bad_value_raises_only_from_its_accessor_naming_key_and_value(
    text: str, call: Callable[[VmcoreInfo], object]
) -> None:
    v = VmcoreInfo("OSRELEASE=6.1\n" + text)  # parsing itself never fails
    assert v.osrelease == "6.1"
    key, _, value = text.strip().partition("=")
    with pytest.raises(VmcoreinfoError) as err:
        call(v)
    assert key in str(err.value)
    assert repr(value) in str(err.value)


def test_symbol_accepts_0x_prefix() -> None:
    assert VmcoreInfo("SYMBOL(a)=0xffffffff81000000\n").symbol("a") == 0xFFFFFFFF81000000


def test_require_accessors() -> None:
    v = VmcoreInfo(TEXT)
    assert v.require_symbol("mem_section") == 0xFFFF88813FFD2000
    assert v.require_offset("page", "flags") == 0
    assert v.require_size("page") == 64
    assert v.require_length("zone.free_area") == 11
    assert v.require_number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    cases: list[tuple[Callable[[], int], str]] = [
        (lambda: v.require_symbol("prb"), "SYMBOL(prb)"),
        (lambda: v.require_offset("page", "lru"), "OFFSET(page.lru)"),
        (lambda: v.require_size("zone"), "SIZE(zone)"),
        (lambda: v.require_length("node_data"), "LENGTH(node_data)"),
        (lambda: v.require_number("pgtable_l5_enabled"), "NUMBER(pgtable_l5_enabled)"),
    ]
    for call, key in cases:
        with pytest.raises(VmcoreinfoError, match=f"^VMCOREINFO has no {re.escape(key)}$"):
            call()


_key = st.text(st.characters(blacklist_characters="=\n\r\0", blacklist_categories=["Cs"]), max_size=20)
_value = st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=["Cs"]), max_size=30)


@given(st.lists(st.tuples(_key, _value), max_size=30))
def test_items_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = "".join(f"{k}={v}\n" for k, v in pairs)
    info = VmcoreInfo(text)
    assert info.items() == pairs
    assert info.raw == text.encode()
    for k, _ in pairs:
        assert info.get(k) == next(v for k2, v in pairs if k2 == k)
        assert k in info


@given(st.integers(-(2**63), 2**64 - 1), st.booleans())
def test_number_round_trip(n: int, as_hex: bool) -> None:
    text = f"NUMBER(x)={n:#x}\n" if as_hex else f"NUMBER(x)={n}\n"
    assert VmcoreInfo(text).number("x") == n


@given(st.integers(1, 2**64 - 2))
def test_symbol_round_trip(addr: int) -> None:
    assert VmcoreInfo(f"SYMBOL(s)={addr:x}\n").symbol("s") == addr
