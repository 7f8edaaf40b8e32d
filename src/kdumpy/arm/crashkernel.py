"""`crashkernel=` evaluated exactly as the kernel reads it, for a given amount of RAM.

Two kernel models, because x86_64 changed in 6.7 (and the lab boots both sides of the change):

* legacy (up to 6.6; Debian's 6.1): `kernel/crash_core.c` parses, `arch/x86/kernel/setup.c`
  `reserve_crashkernel()` reserves. A plain crashkernel= that fails or yields 0 falls back to
  `,high`; an invalid `,low` means the default low size; there is no "size >= RAM" check (the
  allocation simply finds no room); a fixed @offset needs 1 MiB alignment.
* generic (6.7+, `reserve_crashkernel_generic`; moved to `kernel/crash_reserve.c` in 6.9; Debian's
  6.12): `,high` is read only when no plain crashkernel= exists at all; an invalid `,low` rejects
  the whole setting; a size of 0 or >= RAM is -EINVAL; a fixed @offset must be aligned to
  CRASH_ALIGN (16 MiB on x86). `,cma` is a known suffix from 6.16 on.

Common to both: the last crashkernel= without a known suffix is the one used, numbers are read by
`memparse()` (base 0: 0x hex and leading-0 octal; K M G T P E in either case), and the range syntax
rounds the RAM up to 128 MiB before it compares ("Firmware sometimes reserves some memory regions").
"System RAM" here is memblock_phys_mem_size() at boot, which `system_ram()` recovers from /proc/iomem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kdumpy.arm.root import Root
from kdumpy.errors import KdumpyError, UsageError

__all__ = [
    "CrashkernelError",
    "Evaluation",
    "KernelModel",
    "RangeEntry",
    "Reservation",
    "evaluate",
    "fmt_size",
    "iomem_entries",
    "memparse",
    "model_for",
    "parse_size",
    "recommend",
    "reservation",
    "system_ram",
]

MASK64 = (1 << 64) - 1
ULLONG_MAX = MASK64
SZ_1M = 1 << 20
SZ_128M = 128 << 20
SZ_4G = 1 << 32
SZ_64T = 64 << 40
NAME = "crashkernel="


class CrashkernelError(KdumpyError):
    """A crashkernel value or a RAM size that cannot be evaluated."""


@dataclass(frozen=True)
class KernelModel:
    """Which kernel's rules to apply."""

    version: tuple[int, int]
    """(major, minor) of the kernel whose rules are modelled."""
    arch: str = "x86_64"

    @property
    def generic(self) -> bool:
        """reserve_crashkernel_generic() and parse_crashkernel() with ,high/,low inside (x86 6.7+;
        arm64 has had the same order of parsing since its ,high support)."""
        return self.version >= (6, 7) or self.arch == "aarch64"

    @property
    def size_check(self) -> bool:
        """parse_crashkernel() rejects crash_size >= system_ram ("crash: Fix x86_32 crash memory
        reserve dead loop", 2024, before 6.12)."""
        return self.version >= (6, 11)

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Suffixes that make get_last_crashkernel() skip a crashkernel= when it looks for a plain one."""
        return (",high", ",low", ",cma") if self.version >= (6, 16) else (",high", ",low")

    @property
    def align(self) -> int:
        """Alignment of a fixed @offset: CRASH_ALIGN in the generic code (16M x86, 2M arm64); the
        legacy x86 code asked memblock for SZ_1M at the given base."""
        if not self.generic:
            return SZ_1M
        return 2 * SZ_1M if self.arch == "aarch64" else 16 * SZ_1M

    def name(self) -> str:
        kind = "generic" if self.generic else "legacy"
        return f"{self.version[0]}.{self.version[1]} {self.arch} ({kind})"


def model_for(release: str, arch: str = "x86_64") -> KernelModel:
    """The model for a kernel release such as "6.1.0-56-amd64" or "6.12"."""
    m = re.match(r"\s*(\d+)\.(\d+)", release)
    if not m:
        raise UsageError(f"cannot read a kernel version (major.minor) from {release!r}")
    return KernelModel((int(m.group(1)), int(m.group(2))), arch)


# --- numbers (lib/cmdline.c memparse, lib/kstrtox.c) ------------------------------------------


def _fixup_radix(s: str, i: int) -> tuple[int, int]:
    """_parse_integer_fixup_radix() with base 0: "0x" followed by a hex digit is hex, "0" octal."""
    if s[i : i + 1] == "0":
        if (
            s[i + 1 : i + 2].lower() == "x"
            and s[i + 2 : i + 3] != ""
            and s[i + 2] in "0123456789abcdefABCDEF"
        ):
            return 16, i + 2
        return 8, i
    return 10, i


def _strtoull(s: str, i: int) -> tuple[int, int]:
    """simple_strtoull(s + i, &end, 0): the value (wrapping at 64 bits) and the index after it."""
    base, j = _fixup_radix(s, i)
    value = 0
    while j < len(s):
        c = s[j].lower()
        if "0" <= c <= "9":
            digit = ord(c) - ord("0")
        elif "a" <= c <= "f":
            digit = ord(c) - ord("a") + 10
        else:
            break
        if digit >= base:
            break
        value = (value * base + digit) & MASK64
        j += 1
    return value, j


_SHIFTS = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def memparse(s: str, i: int = 0) -> tuple[int, int]:
    """memparse(): a number with an optional K/M/G/T/P/E suffix; (value, index after it).
    Like the kernel, a lone suffix letter reads as 0 and is consumed."""
    value, j = _strtoull(s, i)
    if j < len(s) and s[j].lower() in _SHIFTS:
        value = (value << _SHIFTS[s[j].lower()]) & MASK64
        j += 1
    return value, j


def parse_size(text: str, what: str = "size") -> int:
    """A whole size argument such as "1G", "1536M" or "0x40000000" (memparse, nothing left over)."""
    value, end = memparse(text.strip())
    if end == 0 or end != len(text.strip()):
        raise UsageError(f"{what} {text!r} is not a size (a number with an optional K, M, G, T suffix)")
    return value


def fmt_size(n: int) -> str:
    """Bytes as the largest exact K/M/G/T unit, e.g. 134217728 -> "128M" (else plain bytes)."""
    if n == 0:
        return "0"
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _human(n: int) -> str:
    """Bytes for a sentence: exact unit when there is one, else MiB with one decimal."""
    if n % SZ_1M == 0:
        return fmt_size(n)
    return f"{n / SZ_1M:.1f}M" if n >= SZ_1M else f"{n} bytes"


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeEntry:
    """One `start-[end]:size` entry of the range syntax."""

    start: int
    end: int | None
    """Exclusive; None for an open end (ULLONG_MAX in the kernel)."""
    size: int

    def text(self) -> str:
        end = fmt_size(self.end) if self.end is not None else ""
        return f"{fmt_size(self.start)}-{end}:{fmt_size(self.size)}"

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "size": self.size, "text": self.text()}


@dataclass
class _Parsed:
    """What __parse_crashkernel() returns for one lookup."""

    err: str | None = None
    """None (0), "ENOENT" (no such crashkernel=) or "EINVAL"."""
    size: int = 0
    base: int = 0
    value: str = ""
    """The text after crashkernel= up to the next space."""
    syntax: str = ""
    entries: list[RangeEntry] = field(default_factory=list)
    matched: RangeEntry | None = None
    message: str = ""
    """The kernel's own warning (pr_warn / pr_info) for this parse, if any."""


@dataclass
class Evaluation:
    """What the kernel would reserve for a command line and an amount of RAM."""

    model: KernelModel
    cmdline: str
    ram: int
    """System RAM as the kernel counts it (memblock_phys_mem_size())."""
    size: int = 0
    """Bytes that would be reserved (the "Crash kernel" region; 0 when nothing would be)."""
    offset: int = 0
    """The fixed @offset, or 0 for "found automatically"."""
    low_size: int = 0
    """Extra memory below 4 GiB the kernel reserves when the main region lands above 4 GiB."""
    high: bool = False
    """The ,high form was used."""
    syntax: str = "none"
    """simple, range, high, or none (no crashkernel= at all)."""
    value: str = ""
    """The crashkernel= value that was used."""
    entries: list[RangeEntry] = field(default_factory=list)
    matched: RangeEntry | None = None
    reasons: list[str] = field(default_factory=list)
    """Each step the kernel takes, in words."""

    @property
    def total_mem(self) -> int:
        """The RAM the range syntax compares: rounded up to 128 MiB."""
        return -(-self.ram // SZ_128M) * SZ_128M

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "offset": self.offset,
            "low_size": self.low_size,
            "high": self.high,
            "syntax": self.syntax,
            "value": self.value,
            "range": self.matched.as_dict() if self.matched else None,
            "ranges": [e.as_dict() for e in self.entries],
            "ram": self.ram,
            "ram_rounded": self.total_mem,
            "kernel_model": self.model.name(),
            "reasons": list(self.reasons),
        }


# --- the parser (kernel/crash_core.c, kernel/crash_reserve.c) -------------------------------


def _ends_with(cmdline: str, end: int, suffix: str) -> bool:
    q = end - len(suffix)
    return q >= 0 and cmdline[q:end] == suffix


def _last(cmdline: str, suffix: str | None, known: tuple[str, ...]) -> int | None:
    """get_last_crashkernel(): index of the last "crashkernel=" (found by substring, as strstr does)
    that has no known suffix (suffix None) or ends with `suffix`."""
    found = None
    p = cmdline.find(NAME)
    while p != -1:
        end = cmdline.find(" ", p)
        if end == -1:
            end = len(cmdline)
        if suffix is None:
            if not any(_ends_with(cmdline, end, s) for s in known):
                found = p
        elif _ends_with(cmdline, end, suffix):
            found = p
        p = cmdline.find(NAME, p + 1)
    return found


def _parse_mem(s: str, system_ram: int, out: _Parsed) -> None:
    """parse_crashkernel_mem(): `start-[end]:size[,...][@offset]`, RAM rounded up to 128 MiB."""
    total_mem = -(-system_ram // SZ_128M) * SZ_128M
    cur = 0
    while True:
        start, tmp = memparse(s, cur)
        if tmp == cur:
            out.err, out.message = "EINVAL", "crashkernel: Memory value expected"
            return
        cur = tmp
        if s[cur : cur + 1] != "-":
            out.err, out.message = "EINVAL", "crashkernel: '-' expected"
            return
        cur += 1
        end: int | None = None
        if s[cur : cur + 1] != ":":
            end, tmp = memparse(s, cur)
            if tmp == cur:
                out.err, out.message = "EINVAL", "crashkernel: Memory value expected"
                return
            cur = tmp
            if end <= start:
                out.err, out.message = "EINVAL", "crashkernel: end <= start"
                return
        if s[cur : cur + 1] != ":":
            out.err, out.message = "EINVAL", "crashkernel: ':' expected"
            return
        cur += 1
        size, tmp = memparse(s, cur)
        if tmp == cur:
            out.err, out.message = "EINVAL", "crashkernel: Memory value expected"
            return
        cur = tmp
        entry = RangeEntry(start, end, size)
        out.entries.append(entry)
        if size >= total_mem:
            out.err, out.message = "EINVAL", "crashkernel: invalid size"
            return
        if total_mem >= start and total_mem < (ULLONG_MAX if end is None else end):
            out.size, out.matched = size, entry
            break
        # `} while (*cur++ == ',');`
        nxt = s[cur : cur + 1]
        cur += 1
        if nxt != ",":
            break
    if out.size > 0:
        while cur < len(s) and s[cur] not in " @":
            cur += 1
        if s[cur : cur + 1] == "@":
            cur += 1
            out.base, tmp = memparse(s, cur)
            if tmp == cur:
                out.err, out.message = "EINVAL", "crashkernel: Memory value expected after '@'"
                return
    else:
        out.message = "crashkernel size resulted in zero bytes"


def _parse_simple(s: str, out: _Parsed) -> None:
    """parse_crashkernel_simple(): `size[@offset]`."""
    out.size, cur = memparse(s, 0)
    if cur == 0:
        out.err, out.message = "EINVAL", "crashkernel: memory value expected"
        return
    c = s[cur : cur + 1]
    if c == "@":
        out.base, cur = memparse(s, cur + 1)
    elif c not in (" ", ""):
        out.err, out.message = "EINVAL", f"crashkernel: unrecognized char: {c}"


def _parse_suffix(s: str, suffix: str, out: _Parsed) -> None:
    """parse_crashkernel_suffix(): `size,high` / `size,low` and nothing else up to the space."""
    out.size, cur = memparse(s, 0)
    if cur == 0:
        out.err, out.message = "EINVAL", "crashkernel: memory value expected"
        return
    if s[cur : cur + len(suffix)] != suffix:
        out.err, out.message = "EINVAL", f"crashkernel: unrecognized char: {s[cur : cur + 1]}"
        return
    cur += len(suffix)
    if s[cur : cur + 1] not in (" ", ""):
        out.err, out.message = "EINVAL", f"crashkernel: unrecognized char: {s[cur]}"


def _parse(cmdline: str, system_ram: int, suffix: str | None, model: KernelModel) -> _Parsed:
    """__parse_crashkernel()."""
    out = _Parsed()
    p = _last(cmdline, suffix, model.suffixes)
    if p is None:
        out.err = "ENOENT"
        return out
    s = cmdline[p + len(NAME) :]
    out.value = s.split(" ", 1)[0]
    if suffix is not None:
        out.syntax = suffix.lstrip(",")
        _parse_suffix(s, suffix, out)
        return out
    colon, space = s.find(":"), s.find(" ")
    if colon != -1 and (space == -1 or colon < space):
        out.syntax = "range"
        _parse_mem(s, system_ram, out)
    else:
        out.syntax = "simple"
        _parse_simple(s, out)
    return out


def _swiotlb_size(cmdline: str) -> int:
    """swiotlb_size_or_default(): 64 MiB, or `swiotlb=<slabs>` (2 KiB each, in segments of 128)."""
    found = re.findall(r"(?:^| )swiotlb=(\d+)", cmdline)
    if not found:
        return 64 * SZ_1M
    slabs = int(found[-1])
    slabs = -(-slabs // 128) * 128
    return slabs << 11 if slabs else 64 * SZ_1M


def default_low_size(model: KernelModel, cmdline: str) -> int:
    """DEFAULT_CRASH_KERNEL_LOW_SIZE: x86 max(swiotlb + 8M, 256M); arm64 128M."""
    if model.arch == "aarch64":
        return 128 * SZ_1M
    return max(_swiotlb_size(cmdline) + 8 * SZ_1M, 256 * SZ_1M)


def _describe(p: _Parsed, ev: Evaluation) -> None:
    if p.syntax == "range":
        ev.reasons.append(
            f"range syntax: RAM {_human(ev.ram)} rounds up to {fmt_size(ev.total_mem)} for the comparison"
        )
        for e in p.entries:
            if e is p.matched:
                ev.reasons.append(
                    f"{e.text()} matches ({fmt_size(e.start)} <= RAM < end): {fmt_size(e.size)}"
                )
            elif p.err and e is p.entries[-1] and p.message.endswith("invalid size"):
                ev.reasons.append(
                    f"{e.text()}: size {fmt_size(e.size)} >= RAM {fmt_size(ev.total_mem)}: the whole "
                    "value is invalid"
                )
            else:
                ev.reasons.append(f"{e.text()} does not match")


def evaluate(cmdline: str, ram: int, model: KernelModel, *, ram_above_4g: int | None = None) -> Evaluation:
    """What the kernel of `model` reserves for `cmdline` with `ram` bytes of System RAM.

    `ram_above_4g` decides whether a ,high region (or a low search that fails) lands above 4 GiB,
    where the extra low reservation applies; None estimates it as RAM beyond the first 3 GiB.
    """
    cmdline = cmdline.strip("\n")
    ev = Evaluation(model, cmdline, ram)
    above = max(0, ram - 3 * (1 << 30)) if ram_above_4g is None else ram_above_4g
    if model.generic:
        _evaluate_generic(cmdline, ram, model, above, ev)
    else:
        _evaluate_legacy(cmdline, ram, model, above, ev)
    return ev


def _nothing(ev: Evaluation, why: str) -> Evaluation:
    ev.size = ev.offset = ev.low_size = 0
    ev.reasons.append(why)
    return ev


def _use(ev: Evaluation, p: _Parsed, syntax: str) -> None:
    ev.syntax, ev.value, ev.entries, ev.matched = syntax, p.value, p.entries, p.matched
    ev.size, ev.offset = p.size, p.base


def _evaluate_legacy(cmdline: str, ram: int, model: KernelModel, above: int, ev: Evaluation) -> None:
    """arch/x86/kernel/setup.c reserve_crashkernel() up to 6.6."""
    p = _parse(cmdline, ram, None, model)
    if p.err == "ENOENT":
        ev.reasons.append("no plain crashkernel= on the command line")
    else:
        _use(ev, p, p.syntax)
        _describe(p, ev)
        if p.err:
            ev.reasons.append(f"crashkernel={p.value}: {p.message} (-EINVAL)")
        elif p.size == 0:
            ev.reasons.append(f"crashkernel={p.value}: {p.message or 'size 0'}")
    if p.err or p.size == 0:
        # 6.1: "if (ret != 0 || crash_size <= 0)" tries crashkernel=X,high next.
        h = _parse(cmdline, ram, ",high", model)
        if h.err == "ENOENT":
            _nothing(ev, "nothing is reserved" if ev.syntax != "none" else "no crashkernel= at all")
            return
        _use(ev, h, "high")
        if h.err or h.size == 0:
            _nothing(ev, f"crashkernel={h.value}: {h.message or 'size 0'}; nothing is reserved")
            return
        ev.high = True
        ev.reasons.append(f"crashkernel={h.value} is used (the plain value gave nothing)")
    if ev.offset:
        if ev.offset % SZ_1M:
            _nothing(ev, "crashkernel reservation failed - memory is in use (@offset not 1 MiB aligned)")
            return
        ev.reasons.append(f"fixed at {fmt_size(ev.offset)} (fails at boot if that memory is in use)")
    if ev.size >= ram:
        _nothing(ev, f"{fmt_size(ev.size)} >= RAM: crashkernel reservation failed - No suitable area found")
        return
    if _lands_high(ev, ram, above):
        low = _parse(cmdline, min(ram, SZ_4G), ",low", model)
        if low.err:
            ev.low_size = default_low_size(model, cmdline)
            how = "default" if low.err == "ENOENT" else f"default (crashkernel={low.value} is invalid)"
            ev.reasons.append(f"region above 4G: {fmt_size(ev.low_size)} of low memory ({how})")
        else:
            ev.low_size = low.size
            ev.reasons.append(f"region above 4G: crashkernel={low.value} low memory")
    ev.reasons.append(f"reserves {fmt_size(ev.size)}")


def _lands_high(ev: Evaluation, ram: int, above: int) -> bool:
    """Whether the region goes above 4 GiB: where @offset puts it; with ,high where there is room
    above; else below 4G first, above only when low memory has no room (both models)."""
    if ev.offset:
        return ev.offset >= SZ_4G
    if ev.high:
        return above >= ev.size
    return (ram - above) <= ev.size and above >= ev.size


def _evaluate_generic(cmdline: str, ram: int, model: KernelModel, above: int, ev: Evaluation) -> None:
    """parse_crashkernel() + reserve_crashkernel_generic(), 6.7 on."""
    p = _parse(cmdline, ram, None, model)
    low_size = 0
    if p.err == "ENOENT":
        h = _parse(cmdline, 0, ",high", model)
        if h.err == "ENOENT":
            _nothing(ev, "no crashkernel= at all")
            return
        _use(ev, h, "high")
        if h.err or h.size == 0:
            _nothing(ev, f"crashkernel={h.value}: {h.message or 'size 0'} (-EINVAL); nothing is reserved")
            return
        low = _parse(cmdline, 0, ",low", model)
        if low.err == "ENOENT":
            low_size = default_low_size(model, cmdline)
        elif low.err:
            _nothing(ev, f"crashkernel={low.value}: {low.message}: an invalid ,low rejects the whole setting")
            return
        else:
            low_size = low.size
        ev.high = True
    else:
        _use(ev, p, p.syntax)
        _describe(p, ev)
        if p.err:
            _nothing(ev, f"crashkernel={p.value}: {p.message} (-EINVAL); nothing is reserved")
            return
        if p.size == 0:
            hint = " (a ,high value is ignored when a plain crashkernel= is present)"
            has_high = _last(cmdline, ",high", model.suffixes) is not None
            _nothing(
                ev, f"crashkernel={p.value}: {p.message or 'size 0'} (-EINVAL)" + (hint if has_high else "")
            )
            return
    if model.size_check and ev.size >= ram:
        _nothing(ev, f"{fmt_size(ev.size)} >= System RAM {_human(ram)} (-EINVAL); nothing is reserved")
        return
    if ev.offset:
        if ev.offset % model.align:
            _nothing(
                ev,
                f"@{fmt_size(ev.offset)} is not aligned to {fmt_size(model.align)} (CRASH_ALIGN): "
                "crashkernel reservation failed - memory is in use",
            )
            return
        ev.reasons.append(f"fixed at {fmt_size(ev.offset)} (fails at boot if that memory is in use)")
    if ev.size >= ram:
        _nothing(ev, f"{fmt_size(ev.size)} >= RAM: cannot allocate crashkernel")
        return
    lands_high = _lands_high(ev, ram, above)
    if lands_high and not (ev.offset or ev.high):
        low_size = default_low_size(model, cmdline)  # pushed above 4G: the default low size
    if lands_high and low_size:
        ev.low_size = low_size
        ev.reasons.append(f"region above 4G: also {fmt_size(low_size)} below 4G")
    elif ev.high:
        ev.reasons.append("no RAM above 4G for it: falls back below 4G, no extra low region")
    ev.reasons.append(f"reserves {fmt_size(ev.size)}")


# --- the running system -----------------------------------------------------------------------


_IOMEM_LINE = re.compile(r"^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


def iomem_entries(text: str) -> list[tuple[int, int, int, str]]:
    """Every /proc/iomem entry: (depth, start, end inclusive, name); depth 0 is top-level (each level
    indents by two spaces)."""
    out = []
    for line in text.splitlines():
        m = _IOMEM_LINE.match(line)
        if m:
            out.append((len(m.group(1)) // 2, int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip()))
    return out


def _iomem_top(text: str) -> list[tuple[int, int, str]]:
    """Top-level /proc/iomem entries: (start, end inclusive, name)."""
    return [(s, e, n) for d, s, e, n in iomem_entries(text) if d == 0]


def system_ram(root: Root, page_size: int = 4096) -> tuple[int, int, str]:
    """(RAM, RAM above 4 GiB, source): the System RAM the kernel counted at boot.

    x86 builds memblock from the e820 RAM entries, trimmed to whole pages, and /proc/iomem lists
    the same entries as top-level "System RAM" (the "Crash kernel" region is nested inside them), so
    their sum, each rounded inward to pages, is memblock_phys_mem_size(). /proc/iomem shows zeros to
    non-root readers: then /sys/firmware/memmap (the firmware's map, a few pages larger) and last
    MemTotal (smaller: it leaves out the kernel's own reservations) are used.
    """

    def total(entries: list[tuple[int, int]]) -> tuple[int, int]:
        ram = hi = 0
        for start, end in entries:
            a = -(-start // page_size) * page_size
            b = ((end + 1) // page_size) * page_size
            if b > a:
                ram += b - a
                hi += max(0, b - max(a, SZ_4G))
        return ram, hi

    iomem = root.read("/proc/iomem")
    if iomem:
        ranges = [(s, e) for s, e, n in _iomem_top(iomem) if n == "System RAM"]
        if ranges and any(e for _s, e in ranges):
            ram, hi = total(ranges)
            return ram, hi, "/proc/iomem System RAM"
    memmap = root.path("/sys/firmware/memmap")
    if memmap.is_dir():
        ranges = []
        for d in sorted(memmap.iterdir()):
            try:
                if (d / "type").read_text().strip() == "System RAM":
                    ranges.append((int((d / "start").read_text(), 16), int((d / "end").read_text(), 16)))
            except (OSError, ValueError):
                continue
        if ranges:
            ram, hi = total(ranges)
            return ram, hi, "/sys/firmware/memmap System RAM"
    meminfo = root.read("/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    if m:
        ram = int(m.group(1)) * 1024
        return ram, max(0, ram - 3 * (1 << 30)), "/proc/meminfo MemTotal (an underestimate)"
    raise CrashkernelError(
        "cannot tell the System RAM: no /proc/iomem, /sys/firmware/memmap or /proc/meminfo"
    )


@dataclass(frozen=True)
class Reservation:
    """What the running kernel reserved."""

    size: int
    """/sys/kernel/kexec_crash_size (the main region; the low region is not counted there)."""
    regions: tuple[tuple[int, int], ...]
    """"Crash kernel" entries of /proc/iomem, as (start, end inclusive)."""
    loaded: bool
    """/sys/kernel/kexec_crash_loaded."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "regions": [{"start": s, "end": e, "size": e - s + 1} for s, e in self.regions],
            "loaded": self.loaded,
        }


def reservation(root: Root) -> Reservation:
    size = root.read_int("/sys/kernel/kexec_crash_size") or 0
    regions: list[tuple[int, int]] = []
    iomem = root.read("/proc/iomem") or ""
    for _d, s, e, n in iomem_entries(iomem):
        if n == "Crash kernel" and e > s:
            regions.append((s, e))
    loaded = (root.read_int("/sys/kernel/kexec_crash_loaded") or 0) == 1
    return Reservation(size, tuple(regions), loaded)


# Measured in the lab (docs/arming.md, docs/collector.md): with crashkernel=128M the Debian 6.1
# capture kernel has MemTotal 77 MB and python3 runs with 37 MB free; 96M leaves 8 MB (too tight); 64M
# cannot even load the kernel. kdumpy's collector (python + numpy, bounded cycles) succeeds from 112M;
# 192M for small machines leaves room for the page cache of the dump being written, and page-table
# and ELF-header needs grow with RAM after that.
RECOMMENDED = "1G-4G:192M,4G-64G:256M,64G-1T:512M,1T-:1G"


def recommend(ram: int, model: KernelModel) -> tuple[str, Evaluation]:
    """A crashkernel= value for kdumpy's capture environment, and what it gives for `ram`."""
    ev = evaluate(NAME + RECOMMENDED, ram, model)
    return RECOMMENDED, ev


def crashkernel_args(cmdline: str) -> list[str]:
    """Every crashkernel=... word of a command line, in order."""
    return [w for w in cmdline.split() if w.startswith(NAME)]
