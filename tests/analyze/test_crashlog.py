"""Crash classification, top frame, taints and signature on logs shaped as Linux 6.1 prints them."""

from __future__ import annotations

import pytest

from kdumpy.analyze.crashlog import LogLine, normalise_function, parse_crash
from kdumpy.analyze.signature import signature
from kdumpy.analyze.taint import decode_mask, parse_tainted_field

CPU = "CPU: {cpu} PID: {pid} Comm: {comm} Kdump: loaded {taint} 6.1.0-56-amd64 #1  Debian 6.1.192-2"
HW = "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014"
REGS = [
    "RSP: 0018:ffffb5c9c0143e50 EFLAGS: 00010246",
    "RAX: 0000000000000000 RBX: 0000000000000000 RCX: 0000000000000000",
]
MODS = "Modules linked in: kdumpy_lab_crash(O+) 9p netfs 9pnet_virtio 9pnet virtio_pci [last unloaded: foo]"
TAINT_O = "Tainted: G           O      "
BOOT = ["Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)", "Command line: quiet"]


def sysrq(base: int = 0xFFFFFFFFA3000000) -> list[str]:
    # Addresses never appear in the signature: `base` changes only the register lines.
    return [
        "sysrq: Trigger a crash",
        "Kernel panic - not syncing: sysrq triggered crash",
        CPU.format(cpu=0, pid=1, comm="init", taint="Not tainted"),
        HW,
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x44/0x5c",
        " panic+0x118/0x2f4",
        " ? _printk+0x68/0x83",
        " sysrq_handle_crash+0x16/0x20",
        " __handle_sysrq.cold+0x44/0x11c",
        " write_sysrq_trigger+0x24/0x40",
        " proc_reg_write+0x56/0xa0",
        "RIP: 0033:0x47b7a0",
        f"RAX: {base:016x}",
        " </TASK>",
    ]


def null_oops(fn: str = "crash_init+0x15/0x1000", pid: int = 97) -> list[str]:
    return [
        "kdumpy_lab_crash: loading out-of-tree module taints kernel.",
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "#PF: supervisor write access in kernel mode",
        "#PF: error_code(0x0002) - not-present page",
        "PGD 0 P4D 0 ",
        "Oops: 0002 [#1] PREEMPT SMP NOPTI",
        CPU.format(cpu=1, pid=pid, comm="insmod", taint=TAINT_O),
        HW,
        f"RIP: 0010:{fn} [kdumpy_lab_crash]",
        "Code: 00 00 <c7> 04 25 00 00 00 00 01 00 00 00",
        *REGS,
        "Call Trace:",
        " <TASK>",
        " ? __die_body.cold+0x1a/0x1f",
        " ? page_fault_oops+0xd2/0x2b0",
        " ? exc_page_fault+0x70/0x170",
        " ? asm_exc_page_fault+0x22/0x30",
        f" ? {fn} [kdumpy_lab_crash]",
        " do_one_initcall+0x56/0x220",
        " do_init_module+0x4a/0x200",
        " __do_sys_finit_module+0xac/0x120",
        " do_syscall_64+0x5d/0xb0",
        " entry_SYSCALL_64_after_hwframe+0x6e/0xd8",
        " </TASK>",
        MODS,
        "CR2: 0000000000000000",
    ]


def bug() -> list[str]:
    return [
        "------------[ cut here ]------------",
        "kernel BUG at /tmp/lab/kdumpy_lab_crash.c:35!",
        "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
        CPU.format(cpu=0, pid=99, comm="insmod", taint=TAINT_O),
        HW,
        "RIP: 0010:crash_init+0x19/0x1000 [kdumpy_lab_crash]",
        *REGS,
        "Call Trace:",
        " <TASK>",
        " do_one_initcall+0x56/0x220",
        " do_init_module+0x4a/0x200",
        " </TASK>",
        MODS,
    ]


def warn() -> list[str]:
    return [
        "------------[ cut here ]------------",
        "kdumpy_lab_crash: warning on purpose",
        "WARNING: CPU: 1 PID: 98 at /tmp/lab/kdumpy_lab_crash.c:40 crash_init+0x20/0x1000 [kdumpy_lab_crash]",
        MODS,
        CPU.format(cpu=1, pid=98, comm="insmod", taint=TAINT_O),
        HW,
        "RIP: 0010:crash_init+0x20/0x1000 [kdumpy_lab_crash]",
        *REGS,
        "Call Trace:",
        " <TASK>",
        " ? __warn+0x7d/0xc0",
        " ? crash_init+0x20/0x1000 [kdumpy_lab_crash]",
        " ? report_bug+0xe2/0x150",
        " do_one_initcall+0x56/0x220",
        " do_init_module+0x4a/0x200",
        " </TASK>",
        "Kernel panic - not syncing: kernel: panic_on_warn set ...",
        CPU.format(cpu=1, pid=98, comm="insmod", taint="Tainted: G        W  O      "),
        "Call Trace:",
        " dump_stack_lvl+0x44/0x5c",
        " panic+0x118/0x2f4",
        " check_panic_on_warn.cold+0x10/0x10",
        " __warn+0xa1/0xc0",
    ]


def soft_lockup() -> list[str]:
    return [
        "watchdog: BUG: soft lockup - CPU#0 stuck for 7s! [insmod:97]",
        MODS,
        CPU.format(cpu=0, pid=97, comm="insmod", taint=TAINT_O),
        HW,
        "RIP: 0010:crash_init+0x1b/0x1000 [kdumpy_lab_crash]",
        *REGS,
        "Call Trace:",
        " <TASK>",
        " do_one_initcall+0x56/0x220",
        " </TASK>",
        "Kernel panic - not syncing: softlockup: hung tasks",
        CPU.format(cpu=0, pid=97, comm="insmod", taint="Tainted: G           O L    "),
        "Call Trace:",
        " <IRQ>",
        " dump_stack_lvl+0x44/0x5c",
        " panic+0x118/0x2f4",
        " watchdog_timer_fn.cold+0x1d/0x1d",
    ]


def hung_task() -> list[str]:
    return [
        "INFO: task sh:101 blocked for more than 5 seconds.",
        "      Not tainted 6.1.0-56-amd64 #1 Debian 6.1.192-2",
        '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
        "task:sh              state:D stack:0     pid:101   ppid:1      flags:0x00004002",
        "Call Trace:",
        " <TASK>",
        " __schedule+0x34d/0x9e0",
        " schedule+0x5a/0xd0",
        " percpu_rwsem_wait+0x10b/0x130",
        " ? percpu_free_rwsem+0x30/0x30",
        " __percpu_down_read+0x6a/0xd0",
        " mnt_want_write+0x9a/0xb0",
        " path_openat+0xa5d/0x1030",
        " do_filp_open+0xaf/0x160",
        "RIP: 0033:0x7f0c5a4b1c6b",
        " </TASK>",
        "Kernel panic - not syncing: hung_task: blocked tasks",
        CPU.format(cpu=1, pid=30, comm="khungtaskd", taint="Not tainted"),
        HW,
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x44/0x5c",
        " panic+0x118/0x2f4",
        " watchdog.cold+0x5/0xb4",
        " kthread+0xd7/0x100",
    ]


def oom() -> list[str]:
    return [
        "python3 invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, "
        "oom_score_adj=0",
        CPU.format(cpu=0, pid=120, comm="python3", taint="Not tainted"),
        HW,
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x44/0x5c",
        " dump_header+0x4a/0x211",
        " out_of_memory.cold+0xa/0x7e",
        " __alloc_pages_slowpath.constprop.0+0xc2c/0xe50",
        " __alloc_pages+0x305/0x330",
        " </TASK>",
        "Mem-Info:",
        "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled",
        CPU.format(cpu=0, pid=120, comm="python3", taint="Not tainted"),
        "Call Trace:",
        " dump_stack_lvl+0x44/0x5c",
        " panic+0x118/0x2f4",
        " out_of_memory.cold+0x67/0x7e",
    ]


def nmi() -> list[str]:
    return [
        "Uhhuh. NMI received for unknown reason 00 on CPU 0.",
        "Kernel panic - not syncing: NMI: Not continuing",
        CPU.format(cpu=0, pid=0, comm="swapper/0", taint="Not tainted"),
        HW,
        "Call Trace:",
        " <NMI>",
        " dump_stack_lvl+0x44/0x5c",
        " panic+0x118/0x2f4",
        " nmi_panic.cold+0xc/0xc",
        " unknown_nmi_error.cold+0x1e/0x41",
        " default_do_nmi+0x60/0x120",
        " exc_nmi+0x11c/0x150",
        "RIP: 0010:default_idle+0xb/0x10",
    ]


def lines(texts: list[str], ts: int = 5_000_000_000) -> list[LogLine]:
    return [LogLine(0, t) for t in BOOT] + [LogLine(ts, t) for t in texts]


CASES = {
    "sysrq": (sysrq(), "sysrq_handle_crash", "sysrq triggered crash"),
    "oops": (null_oops(), "crash_init", "BUG: kernel NULL pointer dereference, address: 0000000000000000"),
    "bug": (bug(), "crash_init", "kernel BUG at /tmp/lab/kdumpy_lab_crash.c:35!"),
    "warn": (warn(), "crash_init", "kernel: panic_on_warn set ..."),
    "soft_lockup": (soft_lockup(), "crash_init", "softlockup: hung tasks"),
    "hung_task": (hung_task(), "mnt_want_write", "hung_task: blocked tasks"),
    "oom": (oom(), "out_of_memory", "Out of memory: system-wide panic_on_oom is enabled"),
    "nmi": (nmi(), "unknown_nmi_error", "NMI: Not continuing"),
}


@pytest.mark.parametrize("cls", list(CASES))
def test_class_top_frame_and_reason(cls: str) -> None:
    texts, top, reason = CASES[cls]
    crash = parse_crash(lines(texts))
    assert crash.crash_class == cls
    assert crash.top_frame == top
    assert crash.reason == reason
    assert crash.uptime_ns == 5_000_000_000


def test_oops_details() -> None:
    crash = parse_crash(lines(null_oops()))
    assert crash.null_deref and crash.panic_line is None
    assert (crash.cpu, crash.pid, crash.comm) == (1, 97, "insmod")
    assert crash.modules == ["kdumpy_lab_crash", "9p", "netfs", "9pnet_virtio", "9pnet", "virtio_pci"]
    assert [t.name for t in crash.taints or []] == ["OOT_MODULE"]
    assert crash.rip is not None and crash.rip.module == "kdumpy_lab_crash"
    assert crash.hardware and crash.hardware.startswith("QEMU")


def test_hung_task_names_the_blocked_task_and_the_panicking_one() -> None:
    crash = parse_crash(lines(hung_task()))
    assert crash.blocked_task == "sh:101"
    assert crash.comm == "khungtaskd"


def test_no_panic_in_log_is_class_other() -> None:
    crash = parse_crash(lines(["all quiet"]))
    assert crash.crash_class == "other" and crash.top_frame is None


def test_signature_ignores_addresses_offsets_pids_and_time() -> None:
    a = signature(parse_crash(lines(sysrq(0xFFFFFFFFA3000000), ts=6_000_000_000)))
    b = signature(parse_crash(lines(sysrq(0xFFFFFFFFB7000000), ts=9_000_000_000)))
    assert a == b
    c = signature(parse_crash(lines(null_oops("crash_init+0x15/0x1000", pid=97))))
    d = signature(parse_crash(lines(null_oops("crash_init+0x17/0x1100", pid=1234))))
    assert c == d
    assert c.text == "oops: crash_init [kdumpy_lab_crash] < do_one_initcall < do_init_module"


def test_signatures_differ_between_classes() -> None:
    sigs = {signature(parse_crash(lines(texts))).id for texts, _, _ in CASES.values()}
    assert len(sigs) == len(CASES)


def test_last_crash_wins_over_an_earlier_warning() -> None:
    crash = parse_crash(lines([*warn()[:16], "---[ end trace 0000000000000000 ]---", *sysrq()]))
    assert crash.crash_class == "sysrq"


def test_taint_letters_and_mask() -> None:
    assert parse_tainted_field(CPU.format(cpu=0, pid=1, comm="x", taint="Not tainted")) == []
    flags = parse_tainted_field(CPU.format(cpu=0, pid=1, comm="x", taint="Tainted: P      D W  O      "))
    assert [f.name for f in flags or []] == ["PROPRIETARY_MODULE", "DIE", "WARN", "OOT_MODULE"]
    assert [f.letter for f in decode_mask((1 << 12) | (1 << 9))] == ["W", "O"]
    verbose = parse_tainted_field("Tainted: [W]=WARN, [O]=OOT_MODULE")
    assert [f.name for f in verbose or []] == ["WARN", "OOT_MODULE"]


def test_clone_suffixes_are_dropped() -> None:
    assert normalise_function("__alloc_pages_slowpath.constprop.0") == "__alloc_pages_slowpath"
    assert normalise_function("out_of_memory.cold") == "out_of_memory"
    assert normalise_function("foo.isra.0.cold") == "foo"
