"""Loading the capture kernel: kexec_file_load(2) through ctypes, and the command line it gets.

kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags) takes open files and lets the
kernel parse, place and (under lockdown) verify the image, so no purgatory or segment list is built
here. cmdline_len counts the terminating NUL (the kernel rejects a buffer whose last byte is not 0).
The syscall is a parameter of `load` and `unload`: tests pass a fake one, and the real one refuses to
run under a root prefix other than `/`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdumpy.arm.root import Root
from kdumpy.errors import KdumpyError, UsageError

__all__ = [
    "KEXEC_FILE_NO_INITRAMFS",
    "KEXEC_FILE_ON_CRASH",
    "KEXEC_FILE_UNLOAD",
    "SYSCALL_NR",
    "BzImage",
    "KexecError",
    "LoadResult",
    "SyscallFn",
    "capture_cmdline",
    "default_paths",
    "kexec_file_load",
    "load",
    "read_bzimage",
    "read_state",
    "require_live",
    "split_cmdline",
    "unload",
]

KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_ON_CRASH = 0x2
KEXEC_FILE_NO_INITRAMFS = 0x4

# kexec_file_load's number per architecture (uname -m).
SYSCALL_NR = {
    "x86_64": 320,
    "aarch64": 294,
    "riscv64": 294,
    "loongarch64": 294,
    "ppc64le": 382,
    "ppc64": 382,
    "s390x": 381,
}

# x86: the bzImage64 loader needs room to append "elfcorehdr=0x<addr> " (MAX_ELFCOREHDR_STR_LEN).
MAX_ELFCOREHDR_STR_LEN = 30

STATE_FILE = "/run/kdumpy/loaded.json"

# Options that never reach the capture kernel: the reservation itself, and what kdump-utils
# (KDUMP_COMMANDLINE_REMOVE) and Debian's kdump-tools strip because it costs memory or time there.
REMOVE_ALWAYS = ("crashkernel", "elfcorehdr")
REMOVE_DEFAULT = (
    "hugepages",
    "hugepagesz",
    "slub_debug",
    "quiet",
    "log_buf_len",
    "swiotlb",
    "hugetlb_cma",
    "ignition.firstboot",
    "abm",
    "panic_on_taint",
    "kexec_jump_back_entry",
)

# What the kdump guide asks for (irqpoll, reset_devices, one CPU: nr_cpus rather than maxcpus on
# x86) and what kdump-utils appends on each architecture to keep the capture kernel small.
APPEND_DEFAULT: dict[str, tuple[str, ...]] = {
    "x86_64": (
        "irqpoll",
        "reset_devices",
        "novmcoredd",
        "hugetlb_cma=0",
        "kfence.sample_interval=0",
        "cgroup_disable=memory",
        "mce=off",
        "numa=off",
        "udev.children-max=2",
        "panic=10",
        "acpi_no_memhotplug",
        "transparent_hugepage=never",
        "nokaslr",
        "hest_disable",
        "cma=0",
        "pcie_ports=compat",
    ),
    "aarch64": (
        "irqpoll",
        "reset_devices",
        "cgroup_disable=memory",
        "udev.children-max=2",
        "panic=10",
        "swiotlb=noforce",
        "novmcoredd",
        "cma=0",
        "hugetlb_cma=0",
        "kfence.sample_interval=0",
    ),
}
APPEND_FALLBACK = ("irqpoll", "reset_devices", "panic=10")

# (kernel_fd, initrd_fd, cmdline with its NUL or None, flags) -> None; raises OSError(errno).
SyscallFn = Callable[[int, int, "bytes | None", int], None]


class KexecError(KdumpyError):
    """The capture kernel could not be loaded or unloaded."""


# --- the syscall ------------------------------------------------------------------------------


def kexec_file_load(kernel_fd: int, initrd_fd: int, cmdline: bytes | None, flags: int) -> None:
    """The real kexec_file_load(2) of the running kernel. Raises OSError with the kernel's errno."""
    nr = SYSCALL_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"kexec_file_load has no known syscall number on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(cmdline, len(cmdline)) if cmdline is not None else None
    ret = libc.syscall(
        ctypes.c_long(nr),
        ctypes.c_long(kernel_fd),
        ctypes.c_long(initrd_fd),
        ctypes.c_ulong(len(cmdline) if cmdline is not None else 0),
        buf,
        ctypes.c_ulong(flags),
    )
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def require_live(root: Root, syscall: str) -> None:
    """Refuse to make `syscall` for a root prefix: the running kernel is not that root's kernel."""
    if not root.is_live:
        raise UsageError(
            f"refusing to call {syscall} with the root prefix {root.prefix}: the running kernel "
            "is not that root's kernel"
        )


def _syscall_for(root: Root, syscall: SyscallFn | None) -> SyscallFn:
    if syscall is not None:
        return syscall
    require_live(root, "kexec_file_load")
    # Looked up at call time, so a test can replace the module attribute.
    fn: SyscallFn = globals()["kexec_file_load"]
    return fn


# --- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BzImage:
    """What an x86 boot image's setup header says (Documentation/arch/x86/boot.rst)."""

    protocol: tuple[int, int]
    cmdline_size: int
    """Longest command line, without its NUL (boot protocol 2.06+; 255 before)."""
    xloadflags: int
    version: str
    """The kernel version string the header points to, e.g. "6.1.0-56-amd64 (debian-kernel@...) ..."."""

    @property
    def release(self) -> str:
        return self.version.split(" ", 1)[0]

    @property
    def loads_64bit(self) -> bool:
        """XLF_KERNEL_64: the 64-bit entry kexec_file_load's bzImage64 loader needs (protocol 2.12+)."""
        return bool(self.xloadflags & 1) and self.protocol >= (2, 12)


def read_bzimage(path: Path) -> BzImage | None:
    """The setup header of a bzImage, or None when the file is not one."""
    try:
        with path.open("rb") as f:
            # The version string sits in the setup code, past 16 KiB on Debian 6.x images.
            head = f.read(0x10000)
    except OSError:
        return None
    if len(head) < 0x268 or head[0x202:0x206] != b"HdrS":
        return None
    (proto,) = struct.unpack_from("<H", head, 0x206)
    protocol = (proto >> 8, proto & 0xFF)
    cmdline_size = struct.unpack_from("<I", head, 0x238)[0] if proto >= 0x206 else 255
    xloadflags = struct.unpack_from("<H", head, 0x236)[0] if proto >= 0x20C else 0
    (vptr,) = struct.unpack_from("<H", head, 0x20E)
    version = ""
    if vptr:
        start = vptr + 0x200
        end = head.find(b"\0", start)
        if end > start:
            version = head[start:end].decode("ascii", "replace")
    return BzImage(protocol, cmdline_size, xloadflags, version)


def default_paths(root: Root, release: str | None = None) -> tuple[Path, Path | None]:
    """(kernel, initrd) of the running kernel: /boot/vmlinuz-$(uname -r) and its initrd (Debian's
    initrd.img-REL, else Fedora's initramfs-REL.img); the paths are host paths under `root`."""
    rel = release or root.release()
    kernel = Path(f"/boot/vmlinuz-{rel}")
    for cand in (f"/boot/initrd.img-{rel}", f"/boot/initramfs-{rel}.img", f"/boot/initrd-{rel}"):
        if root.exists(cand):
            return kernel, Path(cand)
    return kernel, None


# --- command line -----------------------------------------------------------------------------


def split_cmdline(cmdline: str) -> list[str]:
    """Words of a kernel command line as the kernel's next_arg() cuts them: whitespace separates,
    double quotes protect spaces (and stay in the word)."""
    words: list[str] = []
    cur: list[str] = []
    quoted = False
    for c in cmdline.strip():
        if c == '"':
            quoted = not quoted
            cur.append(c)
        elif c.isspace() and not quoted:
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if cur:
        words.append("".join(cur))
    return words


def _key(word: str) -> str:
    return word.split("=", 1)[0]


def capture_cmdline(
    running: str,
    *,
    arch: str = "x86_64",
    nr_cpus: int = 1,
    remove: Sequence[str] = (),
    append: Sequence[str] = (),
    base: str | None = None,
) -> str:
    """The capture kernel's command line.

    `running` is the first kernel's (/proc/cmdline); `base`, when given, replaces it whole (like
    kexec --command-line). crashkernel= and the options in REMOVE_DEFAULT and `remove` are dropped;
    nr_cpus=N and the architecture's capture options are added; `append` comes last, and a word in
    it replaces a default with the same key (`panic=1` replaces `panic=10`). Arguments for init
    (after "--") stay last.
    """
    words = split_cmdline(base if base is not None else running)
    # Everything after "--" is for init, not the kernel: kernel options go before it.
    init_args: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, init_args = words[:cut], words[cut:]
    user = [w for a in append for w in split_cmdline(a)]
    user_remove = {_key(w) for w in remove}
    drop = set(REMOVE_ALWAYS) | set(REMOVE_DEFAULT) | user_remove
    defaults = [f"nr_cpus={nr_cpus}", *APPEND_DEFAULT.get(arch, APPEND_FALLBACK)]
    user_keys = {_key(w) for w in user}
    ours = {_key(w) for w in defaults} | user_keys
    kept = [w for w in words if _key(w) not in drop and _key(w) not in ours]
    added = [w for w in defaults if _key(w) not in user_keys and _key(w) not in user_remove]
    return " ".join([*kept, *added, *user, *init_args])


# --- load / unload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    kernel: Path
    initrd: Path | None
    cmdline: str
    release: str
    """The capture kernel's release, from its bzImage header ("" when unknown)."""
    reserved: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd) if self.initrd else None,
            "cmdline": self.cmdline,
            "release": self.release,
            "reserved": self.reserved,
        }


def _lockdown(root: Root) -> str | None:
    text = root.read("/sys/kernel/security/lockdown")
    if not text or "[" not in text:
        return None
    return text.split("[", 1)[1].split("]", 1)[0]


def _explain(e: OSError, root: Root, kernel: Path, cmdline_len: int, limit: int | None) -> str:
    """A sentence a person can act on, for each errno kexec_file_load gives."""
    code = e.errno
    reserved = root.read_int("/sys/kernel/kexec_crash_size") or 0
    name = errno.errorcode.get(code or 0, str(code))
    if code in (errno.EADDRNOTAVAIL, errno.ENOMEM):
        if reserved == 0:
            return (
                f"no crashkernel reservation ({name}): this kernel was booted without a usable "
                "crashkernel=; set one with `kdumpy crashkernel --set ...` and reboot"
            )
        return (
            f"the crashkernel reservation ({reserved >> 20} MiB) is too small for {kernel.name} and "
            f"its initrd ({name}); reserve more (`kdumpy crashkernel --recommend`) or use a smaller initrd"
        )
    if code in (errno.EKEYREJECTED, errno.ENOKEY, errno.EBADMSG, errno.EKEYREVOKED, errno.EKEYEXPIRED):
        lock = _lockdown(root)
        why = f"lockdown is {lock!r}" if lock and lock != "none" else "the kernel enforces signatures"
        return (
            f"the kernel refused the signature of {kernel} ({name}): {why}; load a kernel signed with "
            "a key the kernel trusts (the distribution's own vmlinuz)"
        )
    if code == errno.EPERM:
        if (root.read_int("/proc/sys/kernel/kexec_load_disabled") or 0) == 1:
            return "kexec loading is disabled until the next boot (kernel.kexec_load_disabled=1)"
        lock = _lockdown(root)
        if lock and lock != "none":
            return f"not permitted under lockdown {lock!r} (EPERM): only signed images can be loaded"
        return "not permitted (EPERM): loading a kernel needs root (CAP_SYS_BOOT)"
    if code == errno.EINVAL:
        if limit is not None and cmdline_len + MAX_ELFCOREHDR_STR_LEN > limit:
            return (
                f"the command line is too long ({cmdline_len} bytes with its NUL; {kernel.name} takes "
                f"{limit}, less {MAX_ELFCOREHDR_STR_LEN} for elfcorehdr=)"
            )
        return "the kernel rejected the arguments (EINVAL): command line too long, or an unusable image"
    if code == errno.EBUSY:
        return "another kexec load or unload is in progress (EBUSY); try again"
    if code == errno.ENOEXEC:
        return f"{kernel} is not an image this kernel can load (ENOEXEC): x86_64 needs a 64-bit bzImage"
    if code == errno.ENOSYS:
        return "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE is not set)"
    return f"kexec_file_load failed: {e.strerror or name} ({name})"


def load(
    root: Root,
    kernel: Path,
    initrd: Path | None,
    cmdline: str,
    *,
    syscall: SyscallFn | None = None,
) -> LoadResult:
    """Load `kernel` (host path under `root`) as the capture kernel. Raises KexecError."""
    call = _syscall_for(root, syscall)
    kpath = root.path(kernel)
    ipath = root.path(initrd) if initrd is not None else None
    image = read_bzimage(kpath)
    arch = root.machine()
    if arch == "x86_64" and kpath.exists():
        if image is None:
            raise KexecError(f"{kernel} is not a bzImage (no HdrS setup header); x86_64 loads a vmlinuz")
        if not image.loads_64bit:
            raise KexecError(f"{kernel} has no 64-bit entry point (boot protocol {image.protocol})")
    data = cmdline.encode() + b"\0"
    limit = image.cmdline_size if image is not None else None
    if limit is not None and len(data) + MAX_ELFCOREHDR_STR_LEN > limit:
        raise KexecError(
            f"the capture command line is {len(data)} bytes with its NUL; {kernel.name} takes {limit}, "
            f"less {MAX_ELFCOREHDR_STR_LEN} for the elfcorehdr= the kernel appends"
        )
    try:
        kfd = os.open(kpath, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KexecError(f"cannot open the capture kernel {kernel}: {e.strerror}") from e
    ifd = -1
    flags = KEXEC_FILE_ON_CRASH
    try:
        if ipath is not None:
            try:
                ifd = os.open(ipath, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise KexecError(f"cannot open the capture initrd {initrd}: {e.strerror}") from e
        else:
            flags |= KEXEC_FILE_NO_INITRAMFS
        try:
            call(kfd, ifd, data, flags)
        except OSError as e:
            raise KexecError(_explain(e, root, kernel, len(data), limit)) from e
    finally:
        os.close(kfd)
        if ifd >= 0:
            os.close(ifd)
    result = LoadResult(
        kernel,
        initrd,
        cmdline,
        image.release if image else "",
        root.read_int("/sys/kernel/kexec_crash_size") or 0,
    )
    _write_state(root, result)
    return result


def unload(root: Root, *, syscall: SyscallFn | None = None) -> None:
    """Unload the capture kernel (kexec_file_load(-1, -1, 0, NULL, UNLOAD | ON_CRASH))."""
    call = _syscall_for(root, syscall)
    try:
        call(-1, -1, None, KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)
    except OSError as e:
        raise KexecError(_explain(e, root, Path("(unload)"), 0, None)) from e
    state = root.path(STATE_FILE)
    state.unlink(missing_ok=True)


def _write_state(root: Root, result: LoadResult) -> None:
    """What was loaded, for `status` (the kernel does not say which image it holds)."""
    record = result.as_dict()
    record["loaded_at"] = int(time.time())
    record["running_release"] = root.release()
    # A read-only /run costs only the "which kernel" line of status.
    with contextlib.suppress(OSError):
        root.write_file(STATE_FILE, json.dumps(record, indent=2) + "\n", mode=0o644)


def read_state(root: Root) -> dict[str, Any] | None:
    text = root.read(STATE_FILE)
    if not text:
        return None
    try:
        data: dict[str, Any] = json.loads(text)
    except ValueError:
        return None
    return data
