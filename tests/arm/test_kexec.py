"""Loading and unloading the capture kernel with an injected syscall (the real one never runs here),
the capture command line, errno messages, status exit codes and `kdumpy test`."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kdumpy.arm import kexec
from kdumpy.arm.root import Root
from kdumpy.arm.status import EXIT_ARMED, EXIT_NO_RESERVATION, EXIT_NOT_LOADED, status
from kdumpy.cli import main
from kdumpy.errors import UsageError

RELEASE_61 = "6.1.0-56-amd64"

Call = tuple[str, str, bytes | None, int]


class FakeSyscall:
    """Records each call (the files behind the fds, the command line, the flags); raises `fail`."""

    def __init__(self, fail: int | None = None, root: Path | None = None) -> None:
        self.calls: list[Call] = []
        self.fail = fail
        self.root = root

    def __call__(self, kfd: int, ifd: int, cmdline: bytes | None, flags: int) -> None:
        def name(fd: int) -> str:
            return os.readlink(f"/proc/self/fd/{fd}") if fd >= 0 else ""

        self.calls.append((name(kfd), name(ifd), cmdline, flags))
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        if self.root is not None:
            loaded = flags & kexec.KEXEC_FILE_UNLOAD == 0
            (self.root / "sys/kernel/kexec_crash_loaded").write_text(f"{int(loaded)}\n")


def test_capture_cmdline_drops_crashkernel_and_appends_capture_options() -> None:
    line = kexec.capture_cmdline(
        "BOOT_IMAGE=/vmlinuz root=UUID=1 ro crashkernel=384M-:128M quiet hugepages=10 panic=1 -- single",
        nr_cpus=2,
    )
    words = line.split()
    assert words[:3] == ["BOOT_IMAGE=/vmlinuz", "root=UUID=1", "ro"]
    assert not any(w.startswith(("crashkernel", "hugepages", "quiet")) for w in words)
    assert {"nr_cpus=2", "irqpoll", "reset_devices", "panic=10"} <= set(words)
    assert "panic=1" not in words
    assert words[-2:] == ["--", "single"]  # init's arguments stay last


def test_capture_cmdline_user_append_replaces_defaults_and_remove_drops() -> None:
    line = kexec.capture_cmdline(
        'console=ttyS0 foo="a b" mce=on', append=["panic=1 nokaslr"], remove=["console", "irqpoll"]
    )
    words = kexec.split_cmdline(line)
    assert 'foo="a b"' in words and "console=ttyS0" not in words and "irqpoll" not in words
    assert words.count("nokaslr") == 1 and "panic=10" not in words and words[-2:] == ["panic=1", "nokaslr"]
    assert "mce=off" in words and "mce=on" not in words


def test_command_line_option_replaces_the_running_one() -> None:
    line = kexec.capture_cmdline("root=/dev/sda", base="root=/dev/vdb", arch="aarch64")
    assert line.startswith("root=/dev/vdb ") and "swiotlb=noforce" in line


def test_load_passes_fds_cmdline_with_nul_and_crash_flag(fake_root: Callable[..., Path]) -> None:
    base = fake_root()
    root = Root(base)
    fake = FakeSyscall(root=base)
    kernel = Path(f"/boot/vmlinuz-{RELEASE_61}")
    initrd = Path(f"/boot/initrd.img-{RELEASE_61}")
    result = kexec.load(root, kernel, initrd, "console=ttyS0 nr_cpus=1", syscall=fake)
    (kpath, ipath, cmdline, flags) = fake.calls[0]
    assert kpath == str(root.path(kernel)) and ipath == str(root.path(initrd))
    assert cmdline == b"console=ttyS0 nr_cpus=1\0"
    assert flags == kexec.KEXEC_FILE_ON_CRASH
    assert result.release == RELEASE_61 and result.reserved == 128 << 20
    state = kexec.read_state(root)
    assert state is not None and state["kernel"] == str(kernel)


def test_load_without_initrd_sets_no_initramfs(fake_root: Callable[..., Path]) -> None:
    root = Root(fake_root())
    fake = FakeSyscall()
    kexec.load(root, Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "x", syscall=fake)
    assert (
        fake.calls[0][1] == ""
        and fake.calls[0][3] == kexec.KEXEC_FILE_ON_CRASH | kexec.KEXEC_FILE_NO_INITRAMFS
    )


def test_unload_passes_minus_one_fds_and_unload_flags(fake_root: Callable[..., Path]) -> None:
    root = Root(fake_root())
    calls: list[tuple[int, int, bytes | None, int]] = []
    kexec.unload(root, syscall=lambda k, i, c, f: calls.append((k, i, c, f)))
    assert calls == [(-1, -1, None, kexec.KEXEC_FILE_UNLOAD | kexec.KEXEC_FILE_ON_CRASH)]


def test_the_real_syscall_is_refused_under_a_root_prefix(fake_root: Callable[..., Path]) -> None:
    root = Root(fake_root())
    with pytest.raises(UsageError, match="root prefix"):
        kexec.load(root, Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "x")
    with pytest.raises(UsageError, match="root prefix"):
        kexec.unload(root)


@pytest.mark.parametrize(
    ("code", "size", "text"),
    [
        (errno.EADDRNOTAVAIL, 64 << 20, r"reservation \(64 MiB\) is too small"),
        (errno.ENOMEM, 64 << 20, "too small"),
        (errno.EADDRNOTAVAIL, 0, "no crashkernel reservation"),
        (errno.EKEYREJECTED, 128 << 20, "refused the signature"),
        (errno.ENOKEY, 128 << 20, "refused the signature"),
        (errno.EBADMSG, 128 << 20, "refused the signature"),
        (errno.EPERM, 128 << 20, "needs root"),
        (errno.EBUSY, 128 << 20, "in progress"),
        (errno.ENOEXEC, 128 << 20, "64-bit bzImage"),
        (errno.EINVAL, 128 << 20, "EINVAL"),
        (errno.ENOSYS, 128 << 20, "CONFIG_KEXEC_FILE"),
    ],
)
def test_errors_become_clear_messages(
    fake_root: Callable[..., Path], code: int, size: int, text: str
) -> None:
    root = Root(fake_root(crash_size=size))
    with pytest.raises(kexec.KexecError, match=text):
        kexec.load(root, Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "x", syscall=FakeSyscall(code))


def test_eperm_under_lockdown_names_it(fake_root: Callable[..., Path]) -> None:
    base = fake_root()
    (base / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    with pytest.raises(kexec.KexecError, match="lockdown 'integrity'"):
        kexec.load(
            Root(base), Path(f"/boot/vmlinuz-{RELEASE_61}"), None, "x", syscall=FakeSyscall(errno.EPERM)
        )


def test_a_command_line_too_long_for_the_image_is_refused_before_the_syscall(
    fake_root: Callable[..., Path], make_bzimage: Callable[..., bytes]
) -> None:
    base = fake_root()
    (base / "boot/small").write_bytes(make_bzimage(cmdline_size=100))
    fake = FakeSyscall()
    with pytest.raises(kexec.KexecError, match="takes 100"):
        kexec.load(Root(base), Path("/boot/small"), None, "x" * 80, syscall=fake)
    assert fake.calls == []


def test_a_file_that_is_not_a_bzimage_is_refused(fake_root: Callable[..., Path]) -> None:
    base = fake_root()
    (base / "boot/vmlinux").write_bytes(b"\x7fELF" + b"\0" * 1000)
    with pytest.raises(kexec.KexecError, match="not a bzImage"):
        kexec.load(Root(base), Path("/boot/vmlinux"), None, "x", syscall=FakeSyscall())


def test_read_bzimage_reads_the_setup_header(make_bzimage: Callable[..., bytes]) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(make_bzimage(cmdline_size=2047))
        f.flush()
        image = kexec.read_bzimage(Path(f.name))
    assert image is not None and image.cmdline_size == 2047 and image.loads_64bit
    assert image.release == RELEASE_61


def test_status_exit_codes(fake_root: Callable[..., Path]) -> None:
    assert status(Root(fake_root(loaded=1))).code == EXIT_ARMED
    assert status(Root(fake_root())).code == EXIT_NOT_LOADED
    assert status(Root(fake_root(crash_size=0, cmdline="console=ttyS0"))).code == EXIT_NO_RESERVATION


def test_cli_load_status_unload_cycle(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = fake_root()
    fake = FakeSyscall(root=base)
    # The CLI uses the module's syscall; the real one refuses a root prefix, so replace both.
    monkeypatch.setattr(kexec, "_syscall_for", lambda root, syscall: fake)
    (base / "etc/kdumpy").mkdir(parents=True)
    (base / "etc/kdumpy/kdumpy.toml").write_text('[capture]\nappend = "panic=1"\nnr_cpus = 2\n')
    r = ["--root", str(base)]
    assert main(["status", *r]) == EXIT_NOT_LOADED
    assert main(["load", *r, "--append", "lab.role=capture"]) == 0
    out = capsys.readouterr().out
    assert f"loaded /boot/vmlinuz-{RELEASE_61} ({RELEASE_61}) into 128M reserved" in out
    cmdline = fake.calls[-1][2]
    assert cmdline is not None
    words = cmdline.rstrip(b"\0").decode().split()
    assert "crashkernel=128M" not in words and "quiet" not in words
    assert {"nr_cpus=2", "panic=1", "lab.role=capture", "console=ttyS0"} <= set(words)
    assert main(["status", *r, "--json"]) == EXIT_ARMED
    st = json.loads(capsys.readouterr().out)
    assert st["armed"] and st["loaded"]["release"] == RELEASE_61 and not st["stale"]
    assert main(["unload", *r]) == 0
    assert fake.calls[-1][3] == kexec.KEXEC_FILE_UNLOAD | kexec.KEXEC_FILE_ON_CRASH
    assert main(["status", *r]) == EXIT_NOT_LOADED


def test_cli_load_without_reservation_is_a_clear_error(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = fake_root(crash_size=0, cmdline="console=ttyS0 quiet")
    fake = FakeSyscall()
    monkeypatch.setattr(kexec, "_syscall_for", lambda root, syscall: fake)
    assert main(["load", "--root", str(base)]) == 1
    err = capsys.readouterr().err
    assert "no crashkernel reservation" in err and "no crashkernel= at all" in err
    assert fake.calls == []


def test_cli_load_dry_run_shows_the_plan(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = fake_root()
    assert main(["load", "--root", str(base), "--dry-run", "--json", "--no-initrd"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["kernel"] == f"/boot/vmlinuz-{RELEASE_61}" and plan["initrd"] is None


def test_cli_test_refuses_when_nothing_is_armed(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = fake_root()
    assert main(["test", "--root", str(base), "--yes"]) == 1
    assert "nothing is armed" in capsys.readouterr().err
    assert (base / "proc/sysrq-trigger").read_text() == ""


def test_cli_test_needs_confirmation_and_writes_c(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = fake_root(loaded=1)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["test", "--root", str(base)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["test", "--root", str(base), "--yes"]) == 0
    assert (base / "proc/sysrq-trigger").read_text() == "c"
