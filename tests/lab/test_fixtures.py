"""The fixtures' cache bookkeeping, without QEMU: scenario names and the removal of old captures."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kdumpy.lab import fixtures
from kdumpy.lab.scenario import Scenario


def test_every_named_fixture_has_its_own_scenario_name() -> None:
    names = [sc.name() for sc in fixtures.NAMED.values()]
    assert len(set(names)) == len(names)
    assert fixtures.NAMED["vmcore_61_elf32"].name() == "6.1-sysrq-idle-1G-ck128M-elf32"


def test_old_captures_of_a_scenario_go_but_not_those_of_a_longer_name(tmp_path: Path) -> None:
    day_old = time.time() - 2 * 86400
    made = {}
    for name in (
        "6.1-sysrq-idle-1G-ck128M-0123456789abcdef",  # an older vmcore_61
        "6.1-sysrq-idle-1G-ck128M-fedcba9876543210",  # the current one
        "6.1-sysrq-idle-1G-ck128M-elf32-0123456789abcdef",  # vmcore_61_elf32: another scenario
    ):
        d = tmp_path / name
        d.mkdir()
        os.utime(d, (day_old, day_old))
        made[name] = d
    keep = made["6.1-sysrq-idle-1G-ck128M-fedcba9876543210"]
    fixtures._drop_stale(tmp_path, Scenario(kernel="6.1"), keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "6.1-sysrq-idle-1G-ck128M-elf32-0123456789abcdef",
        "6.1-sysrq-idle-1G-ck128M-fedcba9876543210",
    ]
