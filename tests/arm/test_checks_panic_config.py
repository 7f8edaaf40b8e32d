"""`kdumpy check` on the real configs of Debian's 6.1 and 6.12 kernels (tests/arm/data, taken from
the lab's linux-image .debs), the panic policy, and the settings file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kdumpy.arm import checks, panic
from kdumpy.arm.root import Root
from kdumpy.cli import main
from kdumpy.service import config

R61, R612 = "6.1.0-56-amd64", "6.12.117+deb12-amd64"


def _by_name(results: list[checks.Check]) -> dict[str, checks.Check]:
    return {c.name: c for c in results}


@pytest.mark.parametrize("release", [R61, R612])
def test_real_debian_configs_pass_the_kernel_option_checks(
    fake_root: Callable[..., Path], release: str
) -> None:
    root = Root(fake_root(release=release))
    res = _by_name(
        checks.run(
            root,
            release=release,
            kernel=Path(f"/boot/vmlinuz-{release}"),
            initrd=Path(f"/boot/initrd.img-{release}"),
        )
    )
    for opt in (
        "KEXEC_FILE",
        "SYSFS",
        "CRASH_DUMP",
        "PROC_VMCORE",
        "RELOCATABLE",
        "DEBUG_INFO",
        "MAGIC_SYSRQ",
    ):
        assert res[f"CONFIG_{opt}"].status == "pass", res[f"CONFIG_{opt}"]
    assert res["CONFIG_PHYSICAL_START"].detail.startswith("0x1000000")
    assert ("CONFIG_CRASH_RESERVE" in res) == (release == R612)  # split out in 6.9
    assert res["reservation"].status == "pass" and "0x2f000000-0x36ffffff" in res["reservation"].detail
    assert res["capture kernel"].detail.endswith(f"({release})")
    assert res["capture kernel loaded"].status == "warn"
    assert res["lockdown"].status == "pass"


def test_config_from_proc_config_gz(fake_root: Callable[..., Path]) -> None:
    base = fake_root(config=False)
    data = Path(__file__).resolve().parent / "data" / f"config-{R61}.gz"
    (base / "proc/config.gz").write_bytes(data.read_bytes())
    cfg, source = checks.kernel_config(Root(base), R61)
    assert source == "/proc/config.gz" and cfg is not None and cfg["KEXEC_FILE"] == "y"


def test_a_missing_option_fails_with_its_fix(fake_root: Callable[..., Path]) -> None:
    base = fake_root()
    path = base / f"boot/config-{R61}"
    path.write_text(path.read_text().replace("CONFIG_PROC_VMCORE=y", "# CONFIG_PROC_VMCORE is not set"))
    res = _by_name(checks.run(Root(base), release=R61, kernel=None, initrd=None))
    assert res["CONFIG_PROC_VMCORE"].status == "fail"
    assert "CONFIG_PROC_VMCORE=y" in res["CONFIG_PROC_VMCORE"].fix


def test_no_reservation_fails_with_the_kernels_reason(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = fake_root(crash_size=0, cmdline="console=ttyS0 crashkernel=4G-:256M")
    assert main(["check", "--root", str(base), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    res = {c["name"]: c for c in out["checks"]}
    assert res["reservation"]["status"] == "fail"
    assert "crashkernel=4G-:256M reserved nothing" in res["reservation"]["detail"]
    assert "4G-:256M does not match" in res["reservation"]["detail"]
    assert "kdumpy crashkernel --set" in res["reservation"]["fix"]


def test_secure_boot_with_an_unsigned_kernel_fails(
    fake_root: Callable[..., Path], make_bzimage: Callable[..., bytes]
) -> None:
    base = fake_root()
    (base / f"boot/vmlinuz-{R61}").write_bytes(make_bzimage(signed=False))
    var = base / checks.SECURE_BOOT_VAR.lstrip("/")
    var.parent.mkdir(parents=True)
    var.write_bytes(b"\x06\x00\x00\x00\x01")
    res = _by_name(checks.run(Root(base), release=R61, kernel=Path(f"/boot/vmlinuz-{R61}"), initrd=None))
    assert res["signature"].status == "fail" and "secure boot on" in res["signature"].detail


def test_a_small_reservation_warns_and_kexec_load_disabled_fails(fake_root: Callable[..., Path]) -> None:
    base = fake_root(crash_size=96 << 20, cmdline="crashkernel=96M")
    (base / "proc/sys/kernel/kexec_load_disabled").write_text("1\n")
    res = _by_name(checks.run(Root(base), release=R61, kernel=Path(f"/boot/vmlinuz-{R61}"), initrd=None))
    assert res["reservation size"].status == "warn"
    assert res["kexec_load_disabled"].status == "fail"


# --- panic policy -----------------------------------------------------------------------------


def test_taint_masks_by_letter_name_and_hex() -> None:
    assert panic.taint_mask("D,W") == (1 << 7) | (1 << 9)
    assert panic.taint_mask("die, warn") == panic.taint_mask("0x280")
    assert panic.taint_param(0x280, True) == "0x280,nousertaint"
    with pytest.raises(panic.PanicError, match="unknown taint"):
        panic.taint_mask("Q")
    with pytest.raises(panic.PanicError, match="beyond"):
        panic.taint_mask("0x80000")
    with pytest.raises(panic.PanicError, match="at least one"):
        panic.taint_mask("0x0")


def test_panic_policy_set_applies_persists_and_saves(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = fake_root()
    r = ["--root", str(base)]
    rc = main(
        ["panic-policy", *r, "--set", "panic_on_oops=1", "kernel.panic=10", "panic_on_taint=D,W,nousertaint"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "next boot" in out and "update-grub" in out
    assert (base / "proc/sys/kernel/panic_on_oops").read_text() == "1\n"
    assert (base / "proc/sys/kernel/panic").read_text() == "10\n"
    conf = (base / "etc/sysctl.d/90-kdumpy-panic.conf").read_text()
    assert "kernel.panic_on_oops = 1" in conf and "kernel.panic = 10" in conf
    dropin = (base / "etc/default/grub.d/kdumpy.cfg").read_text()
    assert "panic_on_taint=0x280,nousertaint" in dropin
    cfg = config.load(base / "etc/kdumpy/kdumpy.toml")
    assert cfg.panic.sysctls == {"panic_on_oops": 1, "panic": 10}
    assert cfg.panic.panic_on_taint == "D,W" and cfg.panic.panic_on_taint_nousertaint
    # crashkernel --set keeps panic_on_taint in the same drop-in
    assert main(["crashkernel", *r, "--set", "128M"]) == 0
    dropin = (base / "etc/default/grub.d/kdumpy.cfg").read_text()
    assert "panic_on_taint=0x280,nousertaint crashkernel=128M" in dropin
    capsys.readouterr()
    assert main(["panic-policy", *r, "--unset", "panic_on_taint", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["panic_on_taint"]["configured"] is None
    assert "panic_on_taint" not in (base / "etc/default/grub.d/kdumpy.cfg").read_text()
    by_key = {s["key"]: s for s in shown["sysctls"]}
    assert by_key["panic_on_oops"] == {
        "key": "panic_on_oops",
        "sysctl": "kernel.panic_on_oops",
        "current": 1,
        "configured": 1,
    }
    assert by_key["hardlockup_panic"]["current"] is None  # not in this (fake) kernel


def test_panic_policy_rejects_bad_values(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = fake_root()
    assert main(["panic-policy", "--root", str(base), "--set", "panic_on_oom=3"]) == 2
    assert "from 0 to 2" in capsys.readouterr().err
    assert main(["panic-policy", "--root", str(base), "--set", "reboot=1"]) == 2
    assert not (base / "etc/kdumpy/kdumpy.toml").exists()


# --- settings file ----------------------------------------------------------------------------


def test_config_round_trip_keeps_unknown_sections(tmp_path: Path) -> None:
    path = tmp_path / "kdumpy.toml"
    path.write_text(
        'top = 1\n[capture]\nkernel = "/boot/vmlinuz-x"\ninitrd = ""\nappend = ["a=1", "b"]\n'
        'remove = "quiet x"\n'
        'nr_cpus = 2\n[panic]\npanic_on_warn = true\n[target]\npath = "/var/crash"\nkeep = 3\n'
    )
    cfg = config.load(path)
    assert cfg.capture.kernel == "/boot/vmlinuz-x" and cfg.capture.initrd == ""
    assert cfg.capture.append == ["a=1", "b"] and cfg.capture.remove == ["quiet", "x"]
    assert cfg.panic.sysctls == {"panic_on_warn": 1}
    config.save(cfg)
    again = config.load(path)
    assert again.capture == cfg.capture and again.panic == cfg.panic
    assert again.other == {"top": 1, "target": {"path": "/var/crash", "keep": 3}}


def test_config_writer_quotes_strings(tmp_path: Path) -> None:
    cfg = config.Config(tmp_path / "k.toml")
    cfg.capture.append = ['foo="a b"', "back\\slash"]
    config.save(cfg)
    assert config.load(cfg.path).capture.append == ['foo="a', 'b"', "back\\slash"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[capture]\nnr_cpus = 0\n", r"\[capture\] nr_cpus must be an integer >= 1, not 0"),
        ('[capture]\nnr_cpus = "1"\n', r"\[capture\] nr_cpus must be an integer"),
        ('[capture]\nkernel = "vmlinuz"\n', r"\[capture\] kernel must be an absolute path"),
        ("[capture]\nappend = 3\n", r"\[capture\] append must be a string or a list"),
        ("[capture]\nkernal = 1\n", r"\[capture\] kernal is not a setting"),
        ("[panic]\npanic_on_oops = 2\n", r"\[panic\] panic_on_oops must be an integer 0 or 1, not 2"),
        ("[panic]\npanic_on_taint = 5\n", r"\[panic\] panic_on_taint must be a string"),
        ("[panic]\nnousertaint = true\n", r"\[panic\] nousertaint is not a setting"),
        ("[capture\n", "not valid TOML"),
        ("capture = 1\n[capture]\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "kdumpy.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message) as info:
        config.load(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_a_bad_config_is_one_line_and_exit_2(
    fake_root: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = fake_root()
    (base / "etc/kdumpy").mkdir(parents=True)
    (base / "etc/kdumpy/kdumpy.toml").write_text("[capture]\nnr_cpus = -1\n")
    assert main(["load", "--root", str(base), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kdumpy.toml: [capture] nr_cpus" in err
