"""dmesg on small synthetic vmcores: printk ring buffers laid out in memory as the kernel lays them
out, in the kernel image's linear mapping (so no page tables are needed)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.synthetic import PAGE, elf_vmcore, notes

from kdumpy.analyze.dmesg import PrintkRecord, format_dmesg, format_record, read_log
from kdumpy.cli import main
from kdumpy.memory.dump import open_dump
from kdumpy.memory.kernel import Kernel

KIMG = 0xFFFFFFFF80000000  # __START_KERNEL_map: with phys_base 0, vaddr = KIMG + paddr

BASE_INFO = (
    "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nNUMBER(phys_base)=0\nSYMBOL(init_top_pgt)=ffffffff80001000\n"
)

# struct printk_ringbuffer and friends as 6.1/6.12 export them.
LOCKLESS_INFO = """SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(printk_ringbuffer.fail)=80
SIZE(prb_desc_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
SIZE(prb_data_blk_lpos)=16
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
OFFSET(printk_info.dev_info)=24
SIZE(prb_data_ring)=32
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(prb_data_ring.head_lpos)=16
OFFSET(prb_data_ring.tail_lpos)=24
SIZE(atomic_long_t)=8
OFFSET(atomic_long_t.counter)=0
"""

PRB_VAR = 0x2000  # physical address of `prb` (the pointer)
PRB = 0x2100  # the struct printk_ringbuffer
DESCS = 0x3000
INFOS = 0x4000
TEXT = 0x8000
ID_MASK = (1 << 62) - 1


@dataclass
class Msg:
    text: bytes
    ts: int = 1_500_000
    level: int = 6
    caller: int = 1
    state: int = 2  # finalized


def _memory(pages: int) -> bytearray:
    return bytearray(pages * PAGE)


def _to_content(mem: bytearray) -> dict[int, bytes]:
    return {i: bytes(mem[i * PAGE : (i + 1) * PAGE]) for i in range(len(mem) // PAGE)}


def build_lockless(
    tmp: Path,
    msgs: list[Msg],
    *,
    count_bits: int = 4,
    size_bits: int = 10,
    first_id: int = 0,
    start_lpos: int = 0,
    excluded_from: int | None = None,
) -> Path:
    """A vmcore whose ring holds `msgs`, written as prb_reserve()/data_alloc() would."""
    count, size = 1 << count_bits, 1 << size_bits
    mem = _memory((TEXT + size) // PAGE + 1)
    lpos = start_lpos
    ids = []
    for seq, (i, m) in enumerate(zip(range(first_id, first_id + len(msgs)), msgs, strict=True)):
        blk = (8 + len(m.text) + 7) & ~7 if m.text else 0  # data-less: begin == next
        begin = lpos
        if lpos % size + blk > size:
            # Does not fit before the end: the block goes to the start of the next wrap.
            lpos += size - lpos % size
        data_at = lpos % size
        nxt = lpos + blk
        struct.pack_into("<Q", mem, TEXT + data_at, i)
        mem[TEXT + data_at + 8 : TEXT + data_at + 8 + len(m.text)] = m.text
        d = DESCS + (i % count) * 24
        struct.pack_into("<QQQ", mem, d, (m.state << 62) | i, begin, nxt)
        inf = INFOS + (i % count) * 88
        struct.pack_into("<QQHBBI", mem, inf, seq, m.ts, len(m.text), 0, m.level << 5, m.caller)
        lpos = nxt
        ids.append(i)
    struct.pack_into("<Q", mem, PRB_VAR, KIMG + PRB)
    struct.pack_into("<I", mem, PRB, count_bits)
    struct.pack_into("<QQQQ", mem, PRB + 8, KIMG + DESCS, KIMG + INFOS, ids[-1], ids[0])
    struct.pack_into("<I", mem, PRB + 48, size_bits)
    struct.pack_into("<Q", mem, PRB + 56, KIMG + TEXT)
    info = BASE_INFO + LOCKLESS_INFO + f"SYMBOL(prb)={KIMG + PRB_VAR:x}\n"
    filesz = excluded_from if excluded_from is not None else len(mem)
    return elf_vmcore(
        tmp / "vmcore", [(0, filesz, len(mem))], content=_to_content(mem), note_data=notes(1, info)
    )


def dmesg_of(path: Path, caller_id: bool = False) -> bytes:
    with open_dump(path) as dump:
        return format_dmesg(read_log(Kernel(dump)), caller_id=caller_id)


def test_records_print_as_makedumpfile_does(tmp_path: Path) -> None:
    path = build_lockless(
        tmp_path, [Msg(b"Linux version 6.1.0", ts=0), Msg(b"second", ts=12_345_678_901, caller=0x80000001)]
    )
    assert dmesg_of(path) == b"[    0.000000] Linux version 6.1.0\n[   12.345678] second\n"


def test_caller_column_is_eight_wide(tmp_path: Path) -> None:
    path = build_lockless(tmp_path, [Msg(b"a", caller=1), Msg(b"b", caller=0x80000001)])
    assert dmesg_of(path, caller_id=True) == b"[    0.001500] [      T1] a\n[    0.001500] [      C1] b\n"


def test_embedded_newline_is_indented_to_the_prefix(tmp_path: Path) -> None:
    path = build_lockless(tmp_path, [Msg(b"one\ntwo")])
    assert dmesg_of(path) == b"[    0.001500] one\n               two\n"


def test_unprintable_bytes_escape_as_signed_chars() -> None:
    # makedumpfile passes a signed char to "\\x%02x": 0xe2 prints as \xffffffe2 (seen on 1.7.2).
    rec = PrintkRecord(0, 0, b"C\xe2\x80\x01and\ttab\x7f", 6, 0, None)
    assert format_record(rec) == b"[    0.000000] C\\xffffffe2\\xffffff80\\x01and\ttab\\x7f\n"


def test_uncommitted_and_dataless_records_are_skipped(tmp_path: Path) -> None:
    path = build_lockless(tmp_path, [Msg(b"kept"), Msg(b"reserved", state=0), Msg(b""), Msg(b"last")])
    assert dmesg_of(path) == b"[    0.001500] kept\n[    0.001500] last\n"


def test_block_that_wraps_is_read_from_the_start_of_the_ring(tmp_path: Path) -> None:
    # 1 KiB ring, starting near its end: the second block wraps to offset 0.
    msgs = [Msg(b"x" * 40), Msg(b"wrapped message " * 3), Msg(b"after")]
    path = build_lockless(tmp_path, msgs, start_lpos=1024 * 5 - 64, first_id=100)
    out = dmesg_of(path).decode()
    assert out.splitlines() == [f"[    0.001500] {m.text.decode()}" for m in msgs]


def test_id_counter_wraps_within_the_descriptor_ring(tmp_path: Path) -> None:
    # ids 14..17 in a 16-entry ring: indices 14, 15, 0, 1.
    msgs = [Msg(f"m{i}".encode()) for i in range(4)]
    path = build_lockless(tmp_path, msgs, first_id=14)
    assert dmesg_of(path) == b"".join(b"[    0.001500] m%d\n" % i for i in range(4))


def test_level_facility_and_seq_in_records(tmp_path: Path) -> None:
    path = build_lockless(tmp_path, [Msg(b"emerg", level=0), Msg(b"debug", level=7, caller=0x80000002)])
    with open_dump(path) as dump:
        log = read_log(Kernel(dump))
    assert [(r.seq, r.level, r.facility, r.caller) for r in log.records] == [
        (0, 0, 0, "T1"),
        (1, 7, 0, "C2"),
    ]
    assert log.complete and log.layout == "lockless"


def test_missing_text_page_loses_only_its_records(tmp_path: Path) -> None:
    # 8 KiB text ring over two pages; the second page is excluded from the dump.
    msgs = [Msg(b"a" * 1000) for _ in range(7)] + [Msg(b"late " * 10)]
    path = build_lockless(tmp_path, msgs, size_bits=13, excluded_from=TEXT + PAGE)
    with open_dump(path) as dump:
        log = read_log(Kernel(dump))
    texts = [r.text for r in log.records]
    assert texts == [m.text for m in msgs[:4]]  # 4 * 1008 bytes fit in the first page
    assert any("text ring" in m and "excluded" in m for m in log.missing)
    assert any("4 records lost" in m for m in log.missing)


def test_cli_dmesg_json_and_note_for_missing(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    msgs = [Msg(b"a" * 1000) for _ in range(7)]
    path = build_lockless(tmp_path, msgs, size_bits=13, excluded_from=TEXT + PAGE)
    assert main(["dmesg", "--json", str(path)]) == 0
    out, err = capsysbinary.readouterr()
    doc = json.loads(out)
    assert doc["complete"] is False and len(doc["records"]) == 4
    assert set(doc["records"][0]) == {"seq", "ts_nsec", "level", "facility", "caller", "text"}
    assert b"records lost" in err


# -- struct printk_log (3.5 to 5.9) --

LOG_BUF = 0x3000
LOG_VARS = 0x2000  # log_buf (pointer), log_buf_len, log_first_idx, log_next_idx


def _printk_log_record(ts: int, text: bytes, level: int = 6) -> bytes:
    size = (16 + len(text) + 7) & ~7
    head = struct.pack("<QHHHBB", ts, size, len(text), 0, 0, level << 5)
    return (head + text).ljust(size, b"\0")


def build_printk_log(tmp: Path, recs: list[bytes], first: int, nxt: int, buf_len: int = 4096) -> Path:
    mem = _memory((LOG_BUF + buf_len) // PAGE + 1)
    struct.pack_into("<QIII", mem, LOG_VARS, KIMG + LOG_BUF, buf_len, first, nxt)
    for off, blob in recs:  # type: ignore[misc]
        mem[LOG_BUF + off : LOG_BUF + off + len(blob)] = blob
    info = BASE_INFO + (
        f"SYMBOL(log_buf)={KIMG + LOG_VARS:x}\nSYMBOL(log_buf_len)={KIMG + LOG_VARS + 8:x}\n"
        f"SYMBOL(log_first_idx)={KIMG + LOG_VARS + 12:x}\nSYMBOL(log_next_idx)={KIMG + LOG_VARS + 16:x}\n"
        "SIZE(printk_log)=16\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n"
        "OFFSET(printk_log.text_len)=10\n"
    )
    return elf_vmcore(
        tmp / "vmcore", [(0, len(mem), len(mem))], content=_to_content(mem), note_data=notes(1, info)
    )


def test_printk_log_records_with_wrap_marker(tmp_path: Path) -> None:
    a = _printk_log_record(1_000, b"first")
    b = _printk_log_record(2_000_000_000, b"second", level=3)
    c = _printk_log_record(3_000_000_000, b"wrapped")
    # a at 4000..4024 is followed by a zero-length marker at 4024... (buffer of 4096 bytes): the
    # reader goes on at offset 0, where c lives; b sits before it in the buffer order.
    first = 4096 - len(a) - 24 - len(b)
    recs = [(first, b), (first + len(b), a), (first + len(b) + len(a), b"\0" * 16), (0, c)]
    path = build_printk_log(tmp_path, recs, first, len(c))  # type: ignore[arg-type]
    with open_dump(path) as dump:
        log = read_log(Kernel(dump))
    assert log.layout == "printk_log"
    assert format_dmesg(log) == b"[    2.000000] second\n[    0.000001] first\n[    3.000000] wrapped\n"
    assert [r.level for r in log.records] == [3, 6, 6]


def test_printk_log_cycle_stops_with_a_note(tmp_path: Path) -> None:
    a = _printk_log_record(0, b"loop")
    # A record whose length points back to itself through the wrap marker: index 0 forever.
    recs = [(0, a), (len(a), b"\0" * 16)]
    path = build_printk_log(tmp_path, recs, 0, 2048)  # type: ignore[arg-type]
    with open_dump(path) as dump:
        log = read_log(Kernel(dump))
    assert log.records and all(r.text == b"loop" for r in log.records)
    assert any("cycle" in m for m in log.missing)
