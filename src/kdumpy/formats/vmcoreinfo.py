"""VMCOREINFO: the `key=value` text the kernel leaves in its crash dump, as a typed mapping.

The kernel writes it in `kernel/vmcore_info.c` (`VMCOREINFO_SYMBOL`, `_OFFSET`, `_SIZE`, `_LENGTH`,
`_NUMBER`, `_CONFIG`, plus OSRELEASE, BUILD-ID, PAGESIZE, CRASHTIME and arch extras like KERNELOFFSET).
Parsing follows makedumpfile's `read_vmcoreinfo_*()`: the first line with a key wins; numbers are
read in base 10, then base 16; SYMBOL values are hex and 0 or ULONG_MAX is not an address.

Parsing never fails: a malformed value raises `VmcoreinfoError` only when its typed accessor is used,
so a dump with one odd line stays readable.
"""

from __future__ import annotations

import re

from kdumpy.errors import VmcoreinfoError

__all__ = ["VmcoreInfo"]

_DEC = re.compile(r"[+-]?[0-9]+")
# strtol(..., 16) accepts an optional sign and 0x prefix; int(x, 16) alone would also take "1_0".
_HEX = re.compile(r"[+-]?(?:0[xX])?[0-9a-fA-F]+")
_ULONG_MAX = (1 << 64) - 1


def _parse_long(text: str) -> int | None:
    """makedumpfile's rule: base 10 if the whole value is decimal, else base 16; None if neither."""
    s = text.strip()
    if _DEC.fullmatch(s):
        return int(s, 10)
    if _HEX.fullmatch(s):
        return int(s, 16)
    return None


class VmcoreInfo:
    """The VMCOREINFO text, keys in order, with typed accessors."""

    raw: bytes
    """The text as given, trailing NULs stripped."""

    def __init__(self, text: bytes | str) -> None:
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogateescape")
        self.raw = bytes(text).rstrip(b"\0")
        # makedumpfile reads the note with fgets()/strlen(): nothing after a NUL is seen.
        body = self.raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        self._items: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}
        for line in body.split("\n"):
            line = line.rstrip("\r")
            key, sep, value = line.partition("=")
            if not sep:
                continue  # blank lines and lines without '=' carry no key (they stay in raw)
            self._items.append((key, value))
            self._first.setdefault(key, value)

    def __repr__(self) -> str:
        return f"VmcoreInfo(osrelease={self.get('OSRELEASE')!r}, {len(self._items)} keys)"

    def __contains__(self, key: object) -> bool:
        return key in self._first

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """Every `key=value` line, in order, duplicates included."""
        return list(self._items)

    def get(self, key: str) -> str | None:
        """The value of the first line with this full key (e.g. "SYMBOL(init_uts_ns)"), or None."""
        return self._first.get(key)

    # --- typed accessors ---------------------------------------------------------------------

    def _bad(self, key: str, value: str, kind: str) -> VmcoreinfoError:
        return VmcoreinfoError(f"VMCOREINFO has an invalid {key}: {value!r} is not {kind}")

    def _long(self, key: str, *, unsigned: bool = False) -> int | None:
        value = self._first.get(key)
        if value is None:
            return None
        n = _parse_long(value)
        if n is None:
            raise self._bad(key, value, "a decimal or hex number")
        if unsigned and n < 0:
            raise self._bad(key, value, "a non-negative number")
        return n

    def symbol(self, name: str) -> int | None:
        """SYMBOL(name): a kernel virtual address (hex)."""
        key = f"SYMBOL({name})"
        value = self._first.get(key)
        if value is None:
            return None
        s = value.strip()
        if not _HEX.fullmatch(s) or s[0] in "+-":
            raise self._bad(key, value, "a hex address")
        n = int(s, 16)
        # makedumpfile rejects both: 0 is never a symbol, ULONG_MAX is strtoul's overflow value.
        if n == 0 or n >= _ULONG_MAX:
            raise self._bad(key, value, "a usable address")
        return n

    def offset(self, struct: str, member: str) -> int | None:
        """OFFSET(struct.member): a member's byte offset."""
        return self._long(f"OFFSET({struct}.{member})", unsigned=True)

    def size(self, name: str) -> int | None:
        """SIZE(name): sizeof a struct or type."""
        return self._long(f"SIZE({name})", unsigned=True)

    def length(self, name: str) -> int | None:
        """LENGTH(name): an array's element count; name may hold a dot (LENGTH(zone.free_area))."""
        return self._long(f"LENGTH({name})", unsigned=True)

    def number(self, name: str) -> int | None:
        """NUMBER(name): signed decimal (e.g. -129) or hex (NUMBER(VMALLOC_START)=0x...)."""
        return self._long(f"NUMBER({name})")

    def config(self, name: str) -> bool:
        """CONFIG_name=y (the kernel writes only enabled options)."""
        value = self._first.get(f"CONFIG_{name}")
        return value is not None and value.strip() == "y"

    @property
    def osrelease(self) -> str | None:
        """OSRELEASE: the crashed kernel's `uname -r`."""
        return self._first.get("OSRELEASE")

    @property
    def pagesize(self) -> int | None:
        """PAGESIZE in bytes (decimal, a power of two)."""
        value = self._first.get("PAGESIZE")
        if value is None:
            return None
        s = value.strip()
        n = int(s) if _DEC.fullmatch(s) else 0
        if n <= 0 or n & (n - 1):
            raise self._bad("PAGESIZE", value, "a power of two")
        return n

    @property
    def crashtime(self) -> int | None:
        """CRASHTIME: seconds since the epoch when the kernel crashed (appended at crash time)."""
        value = self._first.get("CRASHTIME")
        if value is None:
            return None
        s = value.strip()
        if not _DEC.fullmatch(s):
            raise self._bad("CRASHTIME", value, "a decimal number of seconds")
        return int(s)

    @property
    def kerneloffset(self) -> int | None:
        """KERNELOFFSET (hex): the KASLR displacement of the kernel image (x86_64)."""
        value = self._first.get("KERNELOFFSET")
        if value is None:
            return None
        s = value.strip()
        if not _HEX.fullmatch(s) or s[0] in "+-":
            raise self._bad("KERNELOFFSET", value, "a hex number")
        return int(s, 16)

    @property
    def build_id(self) -> str | None:
        """BUILD-ID: the vmlinux GNU build ID as hex (kernel 5.9+)."""
        value = self._first.get("BUILD-ID")
        return None if value is None else value.strip()

    # --- required keys -------------------------------------------------------------------------

    def _missing(self, key: str) -> VmcoreinfoError:
        return VmcoreinfoError(f"VMCOREINFO has no {key}")

    def require_symbol(self, name: str) -> int:
        """symbol(name), or VmcoreinfoError when absent."""
        n = self.symbol(name)
        if n is None:
            raise self._missing(f"SYMBOL({name})")
        return n

    def require_offset(self, struct: str, member: str) -> int:
        """offset(struct, member), or VmcoreinfoError when absent."""
        n = self.offset(struct, member)
        if n is None:
            raise self._missing(f"OFFSET({struct}.{member})")
        return n

    def require_size(self, name: str) -> int:
        """size(name), or VmcoreinfoError when absent."""
        n = self.size(name)
        if n is None:
            raise self._missing(f"SIZE({name})")
        return n

    def require_length(self, name: str) -> int:
        """length(name), or VmcoreinfoError when absent."""
        n = self.length(name)
        if n is None:
            raise self._missing(f"LENGTH({name})")
        return n

    def require_number(self, name: str) -> int:
        """number(name), or VmcoreinfoError when absent."""
        n = self.number(name)
        if n is None:
            raise self._missing(f"NUMBER({name})")
        return n
