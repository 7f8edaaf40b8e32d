"""The triage report on real vmcores: without a vmlinux, with one (drgn), as JSON, as HTML in headless
Chromium, and `kdumpy shell` on a kdump-compressed file."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from kdumpy.analyze.report import make_report, render_text, report_json
from kdumpy.cli import main

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def filtered_612(vmcore_612_mixed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("makedumpfile") is None:
        pytest.skip("makedumpfile not installed")
    out = tmp_path_factory.mktemp("report") / "612.d31.kdump"
    subprocess.run(
        ["makedumpfile", "-c", "-d", "31", str(vmcore_612_mixed), str(out)], check=True, capture_output=True
    )
    return out


@pytest.mark.parametrize("name", ["vmcore_61", "vmcore_612", "vmcore_61_elf32", "vmcore_612_la57"])
def test_sysrq_report_without_vmlinux(name: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(name)
    r = make_report(path)
    assert r.crash.crash_class == "sysrq"
    assert r.crash.top_frame == "sysrq_handle_crash"
    assert r.crash.reason == "sysrq triggered crash"
    assert r.kernel.release and r.kernel.release.startswith("6.1")
    assert r.kernel.machine == "x86_64"
    assert r.crash_time is not None and r.uptime_ns and r.uptime_ns > 0
    assert r.registers is not None and r.registers.pid == r.crash.pid
    assert r.taints == []
    assert r.trace_source == "log"
    assert any("--vmlinux" in n for n in r.notes)
    assert r.memory.total > 200_000
    json.dumps(report_json(r))
    text = render_text(r)
    assert "sysrq triggered crash" in text and r.signature.id in text


def test_signature_is_the_same_for_two_sysrq_crashes_with_different_kaslr(
    vmcore_61: Path, vmcore_61_mixed: Path, vmcore_612: Path
) -> None:
    a, b = make_report(vmcore_61), make_report(vmcore_61_mixed)
    assert a.signature == b.signature
    assert a.signature.text == "sysrq: sysrq_handle_crash < __handle_sysrq < write_sysrq_trigger"
    assert make_report(vmcore_612).signature.text == a.signature.text


def test_kdump_compressed_report_counts_excluded_and_zero_pages(filtered_612: Path) -> None:
    r = make_report(filtered_612)
    assert r.format == "kdump"
    assert r.crash.crash_class == "sysrq"
    cats = r.memory.categories
    assert cats["excluded"] > 0 and cats["present"] > 0
    assert "zero (shared page)" in cats


def test_report_with_vmlinux_uses_drgn(filtered_612: Path, vmlinux_612: Path) -> None:
    pytest.importorskip("drgn")
    r = make_report(filtered_612, vmlinux=str(vmlinux_612))
    assert r.trace_source == "drgn"
    names = [f.function for f in r.trace]
    assert "sysrq_handle_crash" in names and "panic" in names
    assert r.modules_source == "drgn" and r.modules and "9p" in r.modules
    assert r.taints_source == "tainted_mask (drgn)"
    # The signature does not change with a vmlinux.
    assert r.signature == make_report(filtered_612).signature


def test_cli_report_json(vmcore_612: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--json", str(vmcore_612)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["panic"]["class"] == "sysrq"
    assert doc["signature"]["text"].startswith("sysrq: sysrq_handle_crash")
    assert doc["registers"]["values"]["rip"].startswith("0xffffffff")


def test_shell_runs_drgn_on_a_kdump_file(filtered_612: Path, vmlinux_612: Path) -> None:
    pytest.importorskip("drgn")
    script = 'print("TID", prog.crashed_thread().tid)\n'
    res = subprocess.run(
        [sys.executable, "-m", "kdumpy", "shell", str(filtered_612), "--vmlinux", str(vmlinux_612)],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "TID " in res.stdout, res.stderr


# -- HTML in headless Chromium --


def _png_pixels_vary(png: Path) -> bool:
    """Whether a PNG (8-bit RGB/RGBA, as Chromium writes) has more than one distinct pixel row."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, _, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * (4 if ctype == 6 else 3) + 1
    rows = {raw[i * stride + 1 : (i + 1) * stride] for i in range(0, height, max(1, height // 200))}
    # Filtered rows differ whenever content differs; a blank page gives one or two distinct rows.
    return len(rows) > 10


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (tools/setup.sh installs it)", pytrace=False)
    return exe


def _chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "profile"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_page_in_headless_chromium(vmcore_61: Path, chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(vmcore_61), "--html", str(page)]) == 0
    html = page.read_text()
    # Self-contained: nothing to fetch.
    for ref in ("http://", "https://", "src=", "@import", "url("):
        assert ref not in html.replace("debian-kernel@lists.debian.org", ""), ref

    shot = tmp_path / "shot.png"
    res = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    assert shot.exists(), res.stderr
    assert "Uncaught" not in res.stderr and "CONSOLE" not in res.stderr, res.stderr
    assert _png_pixels_vary(shot)

    res = _chromium(chromium, tmp_path, "--dump-dom", "--window-size=1280,1600", page.as_uri())
    dom = res.stdout
    assert "Uncaught" not in res.stderr, res.stderr
    assert "6.1.0-56-amd64" in dom and "sysrq triggered crash" in dom
    assert 'id="panic-line"' in dom
    size = dom.split('data-rendered-size="', 1)[1].split('"', 1)[0]
    w, h = (int(x) for x in size.split("x"))
    assert w > 0 and h > 0
