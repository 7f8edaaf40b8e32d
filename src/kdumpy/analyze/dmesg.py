"""The kernel log, read from a dump with VMCOREINFO alone.

Three layouts, chosen by what the kernel exports (never by its version number):

* the lockless printk ring buffer (Linux 5.10+, commit 896fbe20b4e2 "printk: use the lockless
  ringbuffer"): `SYMBOL(prb)` and the `printk_ringbuffer` / `prb_desc` / `printk_info` offsets;
* variable-length `struct printk_log` records in `log_buf` (3.5 to 5.9; named `struct log` before
  3.11): `SIZE(printk_log)` or `SIZE(log)`, `SYMBOL(log_first_idx)`, `SYMBOL(log_next_idx)`;
* the plain character buffer before 3.5: `SYMBOL(log_end)`.

`format_dmesg()` renders records exactly as Debian's makedumpfile 1.7.2 `--dump-dmesg` does, and
with `caller_id=True` adds the caller column of newer makedumpfile (1.7.3+). Each array (descriptors,
infos, text ring, log_buf) is read in one go; a page the dump lacks costs only the records on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from kdumpy.analyze.readmem import Span, read_span
from kdumpy.errors import VmcoreinfoError
from kdumpy.formats.vmcoreinfo import VmcoreInfo
from kdumpy.memory.kernel import Kernel

__all__ = ["KernelLog", "PrintkRecord", "format_dmesg", "log_json", "read_log"]

# Descriptor state_var: the top two bits are the state, the rest the descriptor id
# (kernel/printk/printk_ringbuffer.h, DESC_SV_BITS = BITS_PER_LONG).
_DESC_SV_BITS = 64
_DESC_FLAGS_SHIFT = _DESC_SV_BITS - 2
_DESC_ID_MASK = (1 << _DESC_FLAGS_SHIFT) - 1
_DESC_COMMITTED = 1
_DESC_FINALIZED = 2
# The first word of a text block is the id of the descriptor that owns it.
_BLK_ID_SIZE = 8
# printk_info.caller_id: bit 31 set means a CPU number, else a task id.
_CALLER_CPU = 0x80000000
# makedumpfile prints the caller as "[%*s] " with PID_CHARS_DEFAULT = 8.
_CALLER_WIDTH = 8


@dataclass(frozen=True)
class PrintkRecord:
    """One message of the kernel log."""

    seq: int | None
    """Sequence number (None where the layout does not store it)."""
    ts_nsec: int
    """Timestamp, nanoseconds since boot (local_clock)."""
    text: bytes
    """Message text as stored, without a trailing newline."""
    level: int | None
    """syslog level, 0 (emerg) to 7 (debug); None if the layout cannot be inferred."""
    facility: int | None
    """syslog facility (0 kernel, 1 user via /dev/kmsg, ...); None if unknown."""
    caller_id: int | None
    """Raw caller id (a task id, or a CPU number with bit 31 set); None if the kernel keeps none."""

    @property
    def caller(self) -> str | None:
        """ "T<pid>" or "C<cpu>", as the kernel's PRINTK_CALLER and makedumpfile print it."""
        if self.caller_id is None:
            return None
        if self.caller_id & _CALLER_CPU:
            return f"C{self.caller_id & ~_CALLER_CPU}"
        return f"T{self.caller_id}"


@dataclass
class KernelLog:
    """What could be read of the kernel log."""

    layout: str
    """"lockless" (5.10+), "printk_log" (3.5 to 5.9) or "log_buf" (plain text, before 3.5)."""
    records: list[PrintkRecord]
    """Records in log order (empty for the plain-text layout)."""
    has_caller_id: bool = False
    """The kernel stores a caller id per record."""
    raw: bytes | None = None
    """The plain-text log of kernels before 3.5, in order."""
    missing: list[str] = field(default_factory=list)
    """What could not be read, one sentence each; empty when the log is complete."""

    @property
    def complete(self) -> bool:
        return not self.missing


def read_log(kernel: Kernel) -> KernelLog:
    """The kernel log of the dump behind `kernel`. Raises VmcoreinfoError when the kernel exports
    none of the known layouts, and AddressError / PageError when even the log's header is gone."""
    info = kernel.info
    if info.symbol("prb") is not None and info.size("printk_ringbuffer") is not None:
        return _read_lockless(kernel, info)
    if info.symbol("log_buf") is not None and info.symbol("log_buf_len") is not None:
        if info.symbol("log_end") is not None:
            return _read_plain(kernel, info)
        if info.symbol("log_first_idx") is not None and info.symbol("log_next_idx") is not None:
            return _read_printk_log(kernel, info)
    raise VmcoreinfoError(
        "VMCOREINFO describes no kernel log layout kdumpy knows (no SYMBOL(prb) with "
        "SIZE(printk_ringbuffer), nor SYMBOL(log_buf) with its indices)"
    )


# -- lockless ring buffer (5.10+) --


def _u64_field(rows: npt.NDArray[np.uint8], off: int) -> npt.NDArray[np.uint64]:
    return np.ascontiguousarray(rows[:, off : off + 8]).view("<u8").ravel()


def _u32_field(rows: npt.NDArray[np.uint8], off: int) -> npt.NDArray[np.uint32]:
    return np.ascontiguousarray(rows[:, off : off + 4]).view("<u4").ravel()


def _u16_field(rows: npt.NDArray[np.uint8], off: int) -> npt.NDArray[np.uint16]:
    return np.ascontiguousarray(rows[:, off : off + 2]).view("<u2").ravel()


def _pages_note(what: str, span: Span) -> str:
    lost = sum(g.end - g.start for g in span.gaps)
    return f"{what}: {lost} of {len(span.data)} bytes are not in the dump ({span.gaps[0].why})"


def _read_lockless(kernel: Kernel, info: VmcoreInfo) -> KernelLog:
    ring_size = info.require_size("printk_ringbuffer")
    off_desc_ring = info.require_offset("printk_ringbuffer", "desc_ring")
    off_text_ring = info.require_offset("printk_ringbuffer", "text_data_ring")
    off_count_bits = info.require_offset("prb_desc_ring", "count_bits")
    off_descs = info.require_offset("prb_desc_ring", "descs")
    off_infos = info.require_offset("prb_desc_ring", "infos")
    off_head = info.require_offset("prb_desc_ring", "head_id")
    off_tail = info.require_offset("prb_desc_ring", "tail_id")
    off_counter = info.offset("atomic_long_t", "counter") or 0
    desc_size = info.require_size("prb_desc")
    off_state = info.require_offset("prb_desc", "state_var")
    off_lpos = info.require_offset("prb_desc", "text_blk_lpos")
    off_begin = info.require_offset("prb_data_blk_lpos", "begin")
    off_next = info.require_offset("prb_data_blk_lpos", "next")
    info_size = info.require_size("printk_info")
    off_seq = info.require_offset("printk_info", "seq")
    off_ts = info.require_offset("printk_info", "ts_nsec")
    off_text_len = info.require_offset("printk_info", "text_len")
    off_caller = info.offset("printk_info", "caller_id")
    off_size_bits = info.require_offset("prb_data_ring", "size_bits")
    off_data = info.require_offset("prb_data_ring", "data")

    prb_addr = kernel.read_u64(info.require_symbol("prb"))
    prb = kernel.read(prb_addr, ring_size)

    def u32(o: int) -> int:
        return int.from_bytes(prb[o : o + 4], "little")

    def u64(o: int) -> int:
        return int.from_bytes(prb[o : o + 8], "little")

    count_bits = u32(off_desc_ring + off_count_bits)
    size_bits = u32(off_text_ring + off_size_bits)
    if count_bits > 30 or size_bits > 34:
        raise VmcoreinfoError(
            f"printk ring buffer at {prb_addr:#x} looks corrupt "
            f"(count_bits {count_bits}, size_bits {size_bits})"
        )
    count = 1 << count_bits
    text_size = 1 << size_bits
    head_id = u64(off_desc_ring + off_head + off_counter)
    tail_id = u64(off_desc_ring + off_tail + off_counter)

    missing: list[str] = []
    descs = read_span(kernel, u64(off_desc_ring + off_descs), count * desc_size)
    infos = read_span(kernel, u64(off_desc_ring + off_infos), count * info_size)
    text = read_span(kernel, u64(off_text_ring + off_data), text_size)
    for what, span in (("descriptors", descs), ("record infos", infos), ("text ring", text)):
        if span.gaps:
            missing.append(_pages_note(f"printk {what}", span))

    drows = np.frombuffer(descs.data, dtype=np.uint8).reshape(count, desc_size)
    irows = np.frombuffer(infos.data, dtype=np.uint8).reshape(count, info_size)

    # The ids from tail to head inclusive, as makedumpfile walks them. A consistent ring never
    # holds more than `count` of them; a larger distance means a corrupt head or tail.
    n_ids = ((head_id - tail_id) & _DESC_ID_MASK) + 1
    if n_ids > count:
        missing.append(f"descriptor ids from tail {tail_id} to head {head_id} exceed the ring: read {count}")
        tail_id = (head_id - count + 1) & _DESC_ID_MASK
        n_ids = count
    ids = (np.uint64(tail_id) + np.arange(n_ids, dtype=np.uint64)) & np.uint64(_DESC_ID_MASK)
    idx = (ids % np.uint64(count)).astype(np.int64)

    sv = _u64_field(drows, off_state + off_counter)[idx]
    state = sv >> np.uint64(_DESC_FLAGS_SHIFT)
    ok = ((sv & np.uint64(_DESC_ID_MASK)) == ids) & ((state == _DESC_COMMITTED) | (state == _DESC_FINALIZED))
    size_mask = np.uint64(text_size - 1)
    begin = _u64_field(drows, off_lpos + off_begin)[idx] & size_mask
    nxt = _u64_field(drows, off_lpos + off_next)[idx] & size_mask
    ok &= begin != nxt  # data-less records
    # A block that wraps is stored whole at the start of the ring; skip the block's id word.
    begin = np.where(begin > nxt, np.uint64(0), begin) + np.uint64(_BLK_ID_SIZE)
    text_len = _u16_field(irows, off_text_len)[idx].astype(np.uint64)
    # Truncated records: clamp to the block (makedumpfile compares unsigned, so no clamp when
    # next < begin).
    clamp = (nxt >= begin) & (nxt - begin < text_len)
    text_len = np.where(clamp, nxt - begin, text_len)
    seq = _u64_field(irows, off_seq)[idx]
    ts = _u64_field(irows, off_ts)[idx]
    caller = _u32_field(irows, off_caller)[idx] if off_caller is not None else None
    # facility and the flags:5/level:3 byte follow text_len (u16) in struct printk_info; VMCOREINFO
    # does not export them, so use them only where caller_id sits right after them.
    facility = level = None
    if off_caller == off_text_len + 4:
        facility = irows[:, off_text_len + 2][idx]
        level = irows[:, off_text_len + 3][idx] >> 5

    lost_desc = lost_text = 0
    if descs.gaps or infos.gaps:
        bad = np.zeros(n_ids, dtype=bool)
        for span, size in ((descs, desc_size), (infos, info_size)):
            for g in span.gaps:
                bad |= (idx * size < g.end) & (g.start < (idx + 1) * size)
        lost_desc = int(np.count_nonzero(bad))
        ok &= ~bad

    data = text.data
    records: list[PrintkRecord] = []
    for i in np.flatnonzero(ok).tolist():
        b = int(begin[i])
        e = min(b + int(text_len[i]), text_size)
        if text.gaps and text.missing(b, e):
            lost_text += 1
            continue
        records.append(
            PrintkRecord(
                seq=int(seq[i]),
                ts_nsec=int(ts[i]),
                text=data[b:e],
                level=int(level[i]) if level is not None else None,
                facility=int(facility[i]) if facility is not None else None,
                caller_id=int(caller[i]) if caller is not None else None,
            )
        )
    if lost_desc:
        missing.append(f"{lost_desc} records lost with their descriptors")
    if lost_text:
        missing.append(f"{lost_text} records lost with their text")
    return KernelLog("lockless", records, has_caller_id=off_caller is not None, missing=missing)


# -- struct printk_log records (3.5 to 5.9) --


def _read_printk_log(kernel: Kernel, info: VmcoreInfo) -> KernelLog:
    # Before 3.11 the record was `struct log` (commit 62e32ac3505a renamed it).
    name = "printk_log" if info.size("printk_log") is not None else "log"
    rec_size = info.require_size(name)
    off_ts = info.require_offset(name, "ts_nsec")
    off_len = info.require_offset(name, "len")
    off_text_len = info.require_offset(name, "text_len")
    off_caller = info.offset(name, "caller_id")

    buf_addr = kernel.read_u64(info.require_symbol("log_buf"))
    buf_len = kernel.read_u32(info.require_symbol("log_buf_len"))
    first = kernel.read_u32(info.require_symbol("log_first_idx"))
    nxt = kernel.read_u32(info.require_symbol("log_next_idx"))
    span = read_span(kernel, buf_addr, buf_len)
    buf = span.data
    missing = [_pages_note("log_buf", span)] if span.gaps else []

    def u16(o: int) -> int:
        return int.from_bytes(buf[o : o + 2], "little")

    # u16 len, u16 text_len, u16 dict_len, u8 facility, u8 flags:5 level:3 (include/linux/printk.h
    # before 5.10); not in VMCOREINFO, so only trusted when len and text_len are where they say.
    layout_known = off_text_len == off_len + 2
    records: list[PrintkRecord] = []
    seen: set[int] = set()
    ptr = first
    lost = 0
    while ptr != nxt:
        if ptr in seen:
            missing.append(f"log_buf is corrupt: a cycle at index {ptr:#x}; stopped there")
            break
        seen.add(ptr)
        if ptr < 0 or ptr > buf_len - rec_size:
            missing.append(f"log_buf is corrupt: index {ptr:#x} outside the buffer; stopped there")
            break
        # A record of length 0 marks the end of the buffer: the record is the one at the start.
        rec = ptr if u16(ptr + off_len) else 0
        tl = u16(rec + off_text_len)
        t0 = rec + rec_size
        if span.gaps and span.missing(rec, t0 + tl):
            lost += 1
        else:
            records.append(
                PrintkRecord(
                    seq=None,
                    ts_nsec=int.from_bytes(buf[rec + off_ts : rec + off_ts + 8], "little"),
                    text=buf[t0 : t0 + tl],
                    level=buf[off_len + 7 + rec] >> 5 if layout_known else None,
                    facility=buf[off_len + 6 + rec] if layout_known else None,
                    caller_id=(
                        int.from_bytes(buf[rec + off_caller : rec + off_caller + 4], "little")
                        if off_caller is not None
                        else None
                    ),
                )
            )
        step = u16(ptr + off_len)
        ptr = ptr + step if step else u16(off_len)
    if lost:
        missing.append(f"{lost} records lost with their text")
    return KernelLog("printk_log", records, has_caller_id=off_caller is not None, missing=missing)


# -- plain character buffer (before 3.5) --


def _read_plain(kernel: Kernel, info: VmcoreInfo) -> KernelLog:
    buf_addr = kernel.read_u64(info.require_symbol("log_buf"))
    buf_len = kernel.read_u32(info.require_symbol("log_buf_len"))
    log_end = kernel.read_u32(info.require_symbol("log_end"))
    span = read_span(kernel, buf_addr, buf_len)
    missing = [_pages_note("log_buf", span)] if span.gaps else []
    if log_end < buf_len:
        raw = span.data[:log_end]
    else:
        index = log_end & (buf_len - 1)
        raw = span.data[index:] + span.data[:index]
    return KernelLog("log_buf", [], raw=raw, missing=missing)


# -- rendering --

# makedumpfile keeps a byte when isprint() or isspace() holds in the C locale, and prints any other
# as "\x%02x" of a *signed* char: bytes from 0x80 come out as "\xffffff80" and up.
_UNPRINTABLE = re.compile(rb"[^\t-\r -~]")


def _escape(m: re.Match[bytes]) -> bytes:
    c = m.group()[0]
    return b"\\x%02x" % (c if c < 0x80 else c + 0xFFFFFF00)


def format_record(rec: PrintkRecord, caller_id: bool = False) -> bytes:
    """One record as makedumpfile prints it: "[%5llu.%06lu] " (and the caller column), the text with
    unprintable bytes escaped and each embedded newline followed by the prefix's width of spaces."""
    sec, nsec = divmod(rec.ts_nsec, 1_000_000_000)
    prefix = b"[%5d.%06d] " % (sec, nsec // 1000)
    if caller_id and rec.caller is not None:
        prefix += b"[%*s] " % (_CALLER_WIDTH, rec.caller.encode())
    text = rec.text
    if _UNPRINTABLE.search(text):
        text = _UNPRINTABLE.sub(_escape, text)
    if b"\n" in text:
        text = text.replace(b"\n", b"\n" + b" " * len(prefix))
    return prefix + text + b"\n"


def format_dmesg(log: KernelLog, caller_id: bool = False) -> bytes:
    """The whole log, byte for byte as `makedumpfile --dump-dmesg` writes it (Debian 1.7.2), or with
    the caller column of makedumpfile 1.7.3+ when `caller_id` is set and the kernel stores it."""
    if log.raw is not None:
        return log.raw
    return b"".join(format_record(r, caller_id) for r in log.records)


def log_json(log: KernelLog) -> dict[str, Any]:
    """The log as a JSON-ready mapping: layout, completeness and one object per record."""
    out: dict[str, Any] = {
        "layout": log.layout,
        "complete": log.complete,
        "missing": log.missing,
        "records": [
            {
                "seq": r.seq,
                "ts_nsec": r.ts_nsec,
                "level": r.level,
                "facility": r.facility,
                "caller": r.caller,
                "text": r.text.decode("utf-8", "backslashreplace"),
            }
            for r in log.records
        ],
    }
    if log.raw is not None:
        out["text"] = log.raw.decode("utf-8", "backslashreplace")
    return out
