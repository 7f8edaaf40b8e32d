"""The report on the lab's crash catalog: every trigger, on 6.1 and 6.12, gets the right class and top
frame; the signature is the same for two crashes of the same kind and differs between kinds.

Each vmcore is one QEMU run (about a minute, more for the watchdog triggers), cached by the lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumpy.analyze.report import Report, make_report
from kdumpy.errors import KdumpyError
from kdumpy.lab import fixtures

pytestmark = pytest.mark.lab

# trigger -> (class, acceptable top frames)
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "sysrq": ("sysrq", {"sysrq_handle_crash"}),
    "oops": ("oops", {"kdumpy_lab_oops"}),
    "bug": ("bug", {"kdumpy_lab_bug"}),
    "warn": ("warn", {"kdumpy_lab_warn"}),
    "softlockup": ("soft_lockup", {"kdumpy_lab_softlockup"}),
    "oom": ("oom", {"out_of_memory"}),
    # The writer blocked on the frozen filesystem: the first frame above the sleeping and locking ones.
    "hung-task": (
        "hung_task",
        {
            "mnt_want_write",
            "file_start_write",
            "vfs_write",
            "ext4_buffered_write_iter",
            "do_truncate",
            "path_openat",
            "open_last_lookups",
            "do_sys_openat2",
        },
    ),
    "nmi": ("nmi", {"unknown_nmi_error"}),
}

_reports: dict[tuple[str, str, str], Report] = {}


def report_for(kernel: str, trigger: str, ram: str = "512M") -> Report:
    key = (kernel, trigger, ram)
    if key not in _reports:
        try:
            path: Path = fixtures.vmcore(kernel, trigger, ram=ram)
        except KdumpyError as e:
            pytest.fail(f"lab vmcore {kernel} {trigger} could not be produced: {e}", pytrace=False)
        _reports[key] = make_report(path)
    return _reports[key]


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
@pytest.mark.parametrize("trigger", list(EXPECTED))
def test_class_and_top_frame(kernel: str, trigger: str) -> None:
    cls, tops = EXPECTED[trigger]
    r = report_for(kernel, trigger)
    assert r.crash.crash_class == cls, r.crash.reason
    assert r.crash.top_frame in tops, (r.crash.top_frame, [str(f) for f in r.crash.trace])
    assert r.crash.cpu is not None and r.registers is not None
    if trigger == "oops":
        assert r.crash.null_deref
    if trigger in ("oops", "bug", "warn", "softlockup"):
        assert r.modules and "kdumpy_lab_crash" in r.modules
        assert r.taints and "OOT_MODULE" in {t.name for t in r.taints}


@pytest.mark.parametrize("trigger", ["oops", "sysrq"])
def test_same_kind_same_signature(trigger: str) -> None:
    # Two boots (different KASLR offsets, different RAM): the same signature.
    a, b = report_for("6.1", trigger), report_for("6.1", trigger, ram="1G")
    assert a.signature == b.signature


def test_kinds_differ() -> None:
    sigs = {t: report_for("6.1", t).signature.id for t in EXPECTED}
    assert len(set(sigs.values())) == len(sigs), sigs
