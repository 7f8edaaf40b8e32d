"""The workload's data disk: a real ext4 filesystem image with real files, so a guest's page cache
holds file pages (and the hung-task trigger has a filesystem to freeze)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from kdumpy.lab.cache import digest, locked, package_version, run

__all__ = ["data_disk"]

# Names and sizes (MiB) of the files, and the seed of their content: part of the cache key.
FILES = {"random-a.bin": 16, "random-b.bin": 16, "text.txt": 16, "pattern.bin": 8}
SEED = 20240601
SIZE = "192M"


def _content(name: str, mib: int, rng: random.Random) -> bytes:
    n = mib << 20
    if name.endswith(".txt"):
        line = b"kdumpy lab page cache line %08d: the quick brown fox jumps over the lazy dog\n"
        out = bytearray()
        i = 0
        while len(out) < n:
            out += line % i
            i += 1
        return bytes(out[:n])
    if name.startswith("pattern"):
        # Each 4 KiB page filled with its own index: easy to recognise in a dump.
        return b"".join(i.to_bytes(4, "little") * 1024 for i in range(n // 4096))
    return rng.randbytes(n)


def data_disk(cache: Path) -> Path:
    """A cached raw ext4 image (guests attach it with snapshot=on, so it never changes)."""
    key = digest(repr(sorted(FILES.items())), str(SEED), SIZE, package_version("e2fsprogs"))
    path = cache / "disk" / f"data-{key}.img"
    with locked(cache / "locks" / "assets"):
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(SEED)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            root = Path(tmp) / "root"
            (root / "data").mkdir(parents=True)
            for name, mib in FILES.items():
                (root / "data" / name).write_bytes(_content(name, mib, rng))
            image = Path(tmp) / "data.img"
            run(["mkfs.ext4", "-q", "-F", "-L", "kdumpy-lab", "-d", root, image, SIZE], what="mkfs.ext4")
            image.rename(path)
    return path
