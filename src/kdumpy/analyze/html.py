"""The report as one self-contained HTML page: summary, call trace, registers, the log with the crash
highlighted, and a chart of the memory composition (inline SVG). No external resource of any kind:
styles and the one small script are inline, so the page opens offline and from a mail attachment.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from kdumpy.analyze.crashlog import log_lines
from kdumpy.analyze.report import Report, registers_lines, summary

__all__ = ["render_html"]

_COLOURS = ("#3b82f6", "#a3a3a3", "#f59e0b", "#ef4444", "#10b981", "#8b5cf6", "#ec4899", "#14b8a6")

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:14px 24px}
header h1{font-size:18px;margin:0}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:0 0 16px;padding:12px 16px}
h2{font-size:15px;margin:0 0 8px}
table.summary td{padding:2px 12px 2px 0;vertical-align:top}
table.summary td:first-child{color:#57606a;white-space:nowrap}
.panic{color:#cf222e;font-weight:600}
pre{font:12px/1.4 ui-monospace,monospace;margin:0;overflow-x:auto}
#log{max-height:600px;overflow-y:auto;border:1px solid #d0d7de;padding:6px}
#log .crash{background:#ffebe9}
#log .anchor{background:#ffcecb;font-weight:700}
.legend span{display:inline-block;margin-right:16px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.notes li{color:#57606a}
"""

# Records the chart's rendered size on the element (the browser test reads it back from the DOM)
# and filters the log by a text box.
_SCRIPT = """
(function () {
  var chart = document.getElementById('memory-chart');
  if (chart) {
    var box = chart.getBoundingClientRect();
    chart.setAttribute('data-rendered-size', Math.round(box.width) + 'x' + Math.round(box.height));
  }
  var panic = document.getElementById('panic');
  var logbox = document.getElementById('log');
  if (panic && logbox) {
    logbox.scrollTop = Math.max(0, panic.offsetTop - logbox.offsetTop - 120);
  }
  var filter = document.getElementById('log-filter');
  var log = document.getElementById('log');
  if (filter && log) {
    filter.addEventListener('input', function () {
      var q = filter.value.toLowerCase();
      var rows = log.querySelectorAll('div');
      for (var i = 0; i < rows.length; i++) {
        rows[i].style.display = !q || rows[i].textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      }
    });
  }
})();
"""


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _chart(categories: dict[str, int], page_size: int) -> str:
    total = sum(categories.values()) or 1
    width, height = 1000, 36
    x = 0.0
    rects, legend = [], []
    for i, (name, n) in enumerate(categories.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        w = width * n / total
        if w > 0:
            rects.append(
                f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{colour}">'
                f"<title>{_esc(name)}: {n} pages</title></rect>"
            )
        x += w
        mib = n * page_size / (1 << 20)
        legend.append(
            f'<span><i class="swatch" style="background:{colour}"></i>{_esc(name)}: {n} pages '
            f"({mib:.1f} MiB, {100 * n / total:.1f}%)</span>"
        )
    svg = (
        f'<svg id="memory-chart" role="img" aria-label="memory composition" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" width="100%" height="{height}">{"".join(rects)}</svg>'
    )
    return svg + f'<div class="legend">{"".join(legend)}</div>'


def _log_html(report: Report) -> str:
    if report.log is None:
        return "<p>The kernel log could not be read.</p>"
    lines = log_lines(report.log.records)
    span = report.crash.span
    anchor = report.crash.anchor
    out: list[str] = []
    for i, ln in enumerate(lines):
        sec, nsec = divmod(ln.ts_nsec, 1_000_000_000)
        cls = ""
        if i == anchor:
            cls = ' class="anchor" id="panic"'
        elif span is not None and span[0] <= i <= span[1]:
            cls = ' class="crash"'
        out.append(f"<div{cls}>[{sec:5d}.{nsec // 1000:06d}] {_esc(ln.text)}</div>")
    return f'<pre id="log">{"".join(out)}</pre>'


def _list(items: Sequence[str], cls: str = "") -> str:
    return f'<ul class="{cls}">' + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul>"


def render_html(report: Report) -> str:
    """The page, as one string."""
    rows = []
    for label, value in summary(report):
        v = f'<span class="panic" id="panic-line">{_esc(value)}</span>' if label == "Panic" else _esc(value)
        rows.append(f"<tr><td>{_esc(label)}</td><td>{v}</td></tr>")
    trace = [f"RIP {report.crash.rip}"] if report.crash.rip is not None else []
    trace += [str(f) + (f"  ({f.address:#x})" if f.address is not None else "") for f in report.trace]
    regs = ""
    if report.registers is not None:
        r = report.registers
        regs = (
            f"<section><h2>Registers (CPU note {r.note_index}, pid {r.pid})</h2>"
            f"<pre>{_esc(chr(10).join(registers_lines(r)))}</pre></section>"
        )
    title = f"kdumpy report: {report.kernel.release or 'unknown kernel'}: {report.crash.reason}"
    notes = f"<section><h2>Notes</h2>{_list(report.notes, 'notes')}</section>" if report.notes else ""
    mem_note = f"<p>{_esc(report.memory.note)}</p>" if report.memory.note else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_esc(title)}</h1></header>
<main>
<section id="summary"><h2>Summary</h2><table class="summary">{"".join(rows)}</table></section>
<section id="trace"><h2>Call trace ({_esc(report.trace_source)})</h2>
<pre>{_esc(chr(10).join(trace) or "(none found)")}</pre></section>
{regs}
<section id="memory"><h2>Memory composition</h2>{_chart(report.memory.categories, report.memory.page_size)}
{mem_note}</section>
<section><h2>Kernel log</h2>
<p><input id="log-filter" type="search" placeholder="filter the log" aria-label="filter the log">
<a href="#panic">jump to the panic</a></p>
{_log_html(report)}</section>
{notes}
</main>
<script>{_SCRIPT}</script>
</body></html>
"""
