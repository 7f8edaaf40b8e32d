"""Arming on real Debian kernels in QEMU (lab): the crashkernel table against the kernel's own
reservation, `kdumpy load` arming and a sysrq crash booting the capture kernel, `kdumpy unload`,
and a guest booted without crashkernel=."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from kdumpy.arm import crashkernel as ck
from kdumpy.lab import guestcmd

pytestmark = pytest.mark.lab

M = 1 << 20

# What /sys/kernel/kexec_crash_size must read, per kernel: the cases where 6.1 and 6.12 differ run
# on both.
TABLE = [
    ("6.1", "1G", "0-1G:64M,1G-:96M", "", 96 * M),  # 1023.5 MiB of RAM rounds up to 1G
    ("6.1", "2G", "512M-2G:64M,2G-:128M", "", 128 * M),  # just below 2G rounds up to it
    ("6.1", "1G", "4G-:256M crashkernel=96M,high", "", 96 * M),  # 6.1 falls back to ,high
    ("6.12", "1G", "4G-:256M crashkernel=96M,high", "", 0),  # 6.12 does not
    ("6.1", "1G", "64M@0x20800000", "nokaslr", 64 * M),  # 1M-aligned base is enough on 6.1
    ("6.12", "1G", "64M@0x20800000", "nokaslr", 0),  # CRASH_ALIGN (16M) on 6.12
    ("6.12", "1G", "2G", "", 0),  # size >= RAM
]

TABLE_SCRIPT = (
    "cat /sys/kernel/kexec_crash_size > {out}/crash_size; "
    "grep -i 'crash kernel' /proc/iomem > {out}/iomem_crash; cat /proc/iomem > {out}/iomem; "
    "dmesg | grep -i crash > {out}/dmesg; "
    "{python} -m kdumpy crashkernel --json > {out}/eval.json; true"
)


@pytest.mark.parametrize(("series", "ram", "value", "extra", "expected"), TABLE)
def test_crashkernel_table_matches_the_kernel(
    tmp_path: Path, series: str, ram: str, value: str, extra: str, expected: int
) -> None:
    run = guestcmd.run(series, tmp_path, TABLE_SCRIPT, crashkernel=value, ram=ram, extra_cmdline=extra)
    assert run.script_rc == 0
    size = int(run.read("crash_size"))
    (tmp_path.parent / f"table-{series}-{ram}-{value.replace('/', '_')}.txt").write_text(
        f"{series} -m {ram} crashkernel={value} {extra}: kexec_crash_size={size}\n{run.read('dmesg')}"
    )
    assert size == expected, run.read("dmesg")
    # kdumpy inside the guest (its /proc/cmdline and /proc/iomem) agrees with the kernel
    ev = json.loads(run.read("eval.json"))
    assert ev["size"] == size and ev["current"]["size"] == size, ev
    if ev["offset"]:
        assert run.read("iomem_crash").strip().startswith(f"{ev['offset']:08x}-")
    # and so does the model offline, with the RAM read from the guest's /proc/iomem
    ram_bytes = sum(
        (e + 1) // 4096 * 4096 - -(-s // 4096) * 4096
        for s, e, name in ck._iomem_top(run.read("iomem"))
        if name == "System RAM"
    )
    cmdline = f"crashkernel={value} {extra}"
    assert ck.evaluate(cmdline, ram_bytes, ck.model_for(series)).size == size


def _load_cmd(series: str) -> str:
    kernel, initrd, _ = guestcmd.kernel_paths(series)
    args = ["-m", "kdumpy", "load", "--kernel", str(kernel), "--initrd", str(initrd)]
    return "{python} " + shlex.join([*args, "--append", "console=ttyS0 panic=1 lab.role=capture"])


@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_load_arms_sysrq_boots_the_capture_kernel_and_unload_disarms(tmp_path: Path, series: str) -> None:
    kernel, initrd, release = guestcmd.kernel_paths(series)
    config = guestcmd.kernel_config(series)
    load = _load_cmd(series)
    script = (
        "{python} -m kdumpy status --json > {out}/status.json; "
        f"{{python}} -m kdumpy check --json --config {config} --kernel {kernel} --initrd {initrd} "
        "--target /tmp > {out}/check.json; "
        "{python} -m kdumpy unload > {out}/unload.log 2>&1; "
        "cat /sys/kernel/kexec_crash_loaded > {out}/loaded_after_unload; "
        "{python} -m kdumpy status > {out}/status_after_unload.txt; "
        "echo rc=$? >> {out}/status_after_unload.txt; "
        f"{load} > {{out}}/load2.log 2>&1 && cat /sys/kernel/kexec_crash_loaded > {{out}}/loaded_again && "
        "{python} -m kdumpy test --yes"
    )
    capture = "cat /proc/cmdline > {out}/capture_cmdline; head -c 4 /proc/vmcore > {out}/vmcore_magic"
    run = guestcmd.run(
        series,
        tmp_path,
        script,
        arm=load + " > {out}/load.log 2>&1",
        crash=True,
        capture_script=capture,
    )
    assert run.capture_rc == 0
    assert "loaded " in run.read("load.log")
    status = json.loads(run.read("status.json"))
    assert status["armed"] and status["exit_code"] == 0 and status["loaded"]["release"] == release
    assert run.read("loaded_after_unload").strip() == "0"
    assert run.read("status_after_unload.txt").strip().endswith("rc=3")
    assert run.read("loaded_again").strip() == "1"
    assert (tmp_path / "vmcore_magic").read_bytes() == b"\x7fELF"
    words = run.read("capture_cmdline").split()
    assert "nr_cpus=1" in words and "irqpoll" in words and "reset_devices" in words
    assert not any(w.startswith("crashkernel=") for w in words) and "quiet" not in words
    assert any(w.startswith("elfcorehdr=") for w in words)  # the kernel added it
    checks = {c["name"]: c for c in json.loads(run.read("check.json"))["checks"]}
    for opt in ("KEXEC_FILE", "CRASH_DUMP", "PROC_VMCORE", "RELOCATABLE", "SYSFS"):
        assert checks[f"CONFIG_{opt}"]["status"] == "pass"
    assert checks["kernel config"]["detail"].endswith(f"config-{release}")
    assert checks["reservation"]["status"] == "pass" and checks["capture kernel loaded"]["status"] == "pass"


def test_without_crashkernel_check_fails_and_load_is_a_clear_error(tmp_path: Path) -> None:
    kernel, initrd, _ = guestcmd.kernel_paths("6.1")
    config = guestcmd.kernel_config("6.1")
    direct = (
        "from pathlib import Path; from kdumpy.arm import kexec; from kdumpy.arm.root import Root\n"
        "try:\n"
        f"    kexec.load(Root(), Path('{kernel}'), Path('{initrd}'), 'console=ttyS0')\n"
        "except kexec.KexecError as e:\n"
        "    print(e, '|', repr(e.__cause__))\n"
    )
    script = (
        f"{{python}} -m kdumpy check --json --config {config} --kernel {kernel} --initrd {initrd} "
        "--target /tmp > {out}/check.json; echo $? > {out}/check.rc; "
        f"{_load_cmd('6.1')} > {{out}}/load.log 2>&1; echo $? > {{out}}/load.rc; "
        "{python} -m kdumpy status > /dev/null; echo $? > {out}/status.rc; "
        f"{{python}} -c {shlex.quote(direct)} > {{out}}/direct.log 2>&1; true"
    )
    run = guestcmd.run("6.1", tmp_path, script, crashkernel=None)
    assert run.read("check.rc").strip() == "1"
    checks = {c["name"]: c for c in json.loads(run.read("check.json"))["checks"]}
    assert checks["reservation"]["status"] == "fail"
    assert "booted without crashkernel=" in checks["reservation"]["detail"]
    assert run.read("load.rc").strip() == "1"
    load = run.read("load.log")
    assert "no crashkernel reservation" in load and load.count("\n") == 1
    assert run.read("status.rc").strip() == "4"
    # What the kernel itself answers when asked to load with nothing reserved.
    direct_log = run.read("direct.log")
    (tmp_path.parent / "no-reservation-errno.txt").write_text(direct_log)
    assert "no crashkernel reservation" in direct_log
