"""The lab's cache directory, its locks, and the small process helpers every lab module uses."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from kdumpy.errors import LabError

__all__ = ["cache_dir", "digest", "locked", "package_version", "run"]

# Bumped when the layout of what the lab caches changes, so old entries are not reused.
LAYOUT = "1"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The lab cache: `override`, else $KDUMPY_LAB_CACHE, else ~/.cache/kdumpy/lab (created)."""
    if override:
        path = Path(override)
    elif os.environ.get("KDUMPY_LAB_CACHE"):
        path = Path(os.environ["KDUMPY_LAB_CACHE"])
    else:
        path = Path.home() / ".cache" / "kdumpy" / "lab"
    # Absolute: the guest sees the host's / and is given host paths into the cache.
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created): one builder or one guest at a time, across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def digest(*parts: str | bytes) -> str:
    """A short hash of the inputs of a cached product: it is rebuilt when one of them changes."""
    h = hashlib.sha256(LAYOUT.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    timeout: float = 600,
    what: str | None = None,
) -> str:
    """Run a host command to completion, bounded in time; its stdout, or a LabError with stderr's tail."""
    label = what or str(cmd[0])
    try:
        # A session of its own, so a timeout kills the command and everything it started (make's
        # compilers, dpkg-deb's tar), and nothing else.
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise LabError(f"{label}: {e.filename} is not installed (run tools/setup.sh)") from e
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as e:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise LabError(f"{label}: no result after {timeout:.0f} s") from e
        raise
    if proc.returncode != 0:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise LabError(f"{label} failed (exit {proc.returncode}): {tail}")
    return stdout


def package_version(package: str) -> str:
    """The installed version of a Debian package on the host, or "none"."""
    try:
        return run(["dpkg-query", "-W", "-f=${Version}", package], timeout=30).strip() or "none"
    except LabError:
        return "none"
