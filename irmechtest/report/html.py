"""The self-contained HTML compliance report: a model x property matrix and the evidence behind it.

One file, no external assets and no JavaScript, so it can be attached to a CI run and opened offline.
Heatmaps are coloured HTML tables, scatter plots inline SVG. Every text that came from data or a model
(document texts, model names, messages, labels) goes through :func:`_esc`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from irmechtest.report.fingerprint import Comparison, summary
from irmechtest.report.outputs import write_atomic
from irmechtest.report.verdicts import Evidence, Outcome, Verdict, jsonable

_COLOURS = {
    Outcome.PASSED: "#1a7f37",
    Outcome.FAILED: "#cf222e",
    Outcome.INCONCLUSIVE: "#8250df",
    Outcome.NOT_APPLICABLE: "#6e7781",
    Outcome.ERROR: "#9a6700",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328;max-width:80rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left}
th{background:#f6f8fa}.cell{color:#fff;font-weight:600}.cell a{color:#fff}
.mono{font-family:ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
.mono th,.mono td:first-child{white-space:nowrap}
.heatmap td{min-width:2.2rem;text-align:center;font-size:.7rem;padding:.15rem}.heatmap th{font-size:.7rem}
.drift{color:#cf222e;font-weight:700}section{border-top:1px solid #d0d7de;margin-top:1.5rem}
svg text{font-size:11px;fill:#1f2328}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"  # not measured (None is JSON's stand-in for NaN and infinities, which verdicts pass through)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(jsonable(value), ensure_ascii=False)
    return str(value)


def _anchor(verdict: Verdict) -> str:
    return "v-" + "".join(ch if ch.isalnum() else "-" for ch in f"{verdict.model}-{verdict.property}")


def _value_text(verdict: Verdict) -> str:
    """A matrix cell's second line: the value, what it is and what it needs, or why there is none (shortened)."""
    if verdict.value is None:
        reason = verdict.reason or verdict.outcome.value
        return reason if len(reason) <= 40 else reason[:39] + "\u2026"
    return ", ".join(text for text in (verdict.value_text(), verdict.qualifier()) if text)


def _table(columns: Sequence[Any], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _heatmap(data: Mapping[str, Any]) -> str:
    """A diverging colour per cell (blue negative, red positive, scaled by the largest magnitude)."""
    grid = data.get("data", [])
    rows = data.get("row_labels") or list(range(len(grid)))
    cols = data.get("col_labels") or list(range(len(grid[0]) if grid else 0))
    finite = [abs(v) for row in grid for v in row if isinstance(v, int | float) and math.isfinite(v)]
    scale = max(finite, default=0.0) or 1.0
    out = ['<table class="heatmap"><tr><th></th>', *(f"<th>{_esc(c)}</th>" for c in cols), "</tr>"]
    for label, row in zip(rows, grid, strict=False):
        out.append(f"<tr><th>{_esc(label)}</th>")
        for col, v in zip(cols, row, strict=False):
            if isinstance(v, int | float) and math.isfinite(v):
                rgb = "207,34,46" if v >= 0 else "9,105,218"
                style = f"background:rgba({rgb},{abs(v) / scale:.3f})"
            else:
                style = "background:#eaeef2"
            out.append(f'<td style="{style}" title="{_esc(label)} / {_esc(col)}: {_esc(_fmt(v))}">{_esc(_fmt(v))}</td>')
        out.append("</tr>")
    return "".join(out) + "</table>"


def _scatter(data: Mapping[str, Any], width: int = 440, height: int = 300, pad: int = 60) -> str:
    points = [
        (x, y)
        for x, y in zip(data.get("x", []), data.get("y", []), strict=False)
        if isinstance(x, int | float) and isinstance(y, int | float) and math.isfinite(x) and math.isfinite(y)
    ]
    if not points:
        return "<p>no points</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def scale(v: float, lo: float, hi: float, length: int) -> float:
        return (v - lo) / (hi - lo) * length if hi > lo else length / 2

    dots = "".join(
        f'<circle cx="{pad + scale(x, x0, x1, width - 2 * pad):.1f}" '
        f'cy="{height - pad - scale(y, y0, y1, height - 2 * pad):.1f}" r="2" fill="#0969da" fill-opacity=".5"/>'
        for x, y in points
    )
    x_label, y_label = _esc(data.get("x_label", "x")), _esc(data.get("y_label", "y"))
    return (
        f'<svg class="scatter" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{y_label} against {x_label}">'
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" '
        'fill="none" stroke="#d0d7de"/>'
        f"{dots}"
        f'<text x="{pad}" y="{height - pad + 14}">{_esc(_fmt(x0))}</text>'
        f'<text x="{width - pad}" y="{height - pad + 14}" text-anchor="end">{_esc(_fmt(x1))}</text>'
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">{x_label}</text>'
        f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end">{_esc(_fmt(y0))}</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{_esc(_fmt(y1))}</text>'
        f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle">{y_label}</text>'
        "</svg>"
    )


def _examples(data: Mapping[str, Any]) -> str:
    return "".join(
        _table(["field", "value"], [[k, v] for k, v in example.items()], "mono") for example in data.get("examples", [])
    )


_RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "heatmap": _heatmap,
    "scatter": _scatter,
    "table": lambda data: _table(data.get("columns", []), data.get("rows", [])),
    "examples": _examples,
}


def _evidence(item: Evidence) -> str:
    render = _RENDERERS.get(item.kind)
    body = render(item.data) if render else f'<p class="mono">{_esc(_fmt(item.data))}</p>'
    return f'<figure class="evidence {_esc(item.kind)}"><figcaption>{_esc(item.title)}</figcaption>{body}</figure>'


def _drifts_of(comparisons: Sequence[Comparison]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for c in comparisons:
        for drift in c.drifts:
            prop, _, _ = drift.partition(":")
            out.setdefault((c.model, prop), []).append(drift)
    return out


def _matrix(verdicts: Sequence[Verdict], comparisons: Sequence[Comparison]) -> str:
    models = list(dict.fromkeys(v.model for v in verdicts))
    properties = sorted({v.property for v in verdicts})
    by_cell = {(v.model, v.property): v for v in verdicts}
    deltas = {(c.model, p): d for c in comparisons for p, d in c.deltas.items()}
    drifts = _drifts_of(comparisons)
    rows = []
    for prop in properties:
        cells = []
        for model in models:
            v = by_cell.get((model, prop))
            if v is None:
                cells.append("<td></td>")
                continue
            extra = ""
            if (model, prop) in deltas:
                extra += f"<br>baseline &#916; {deltas[model, prop]:+.3g}"
            if (model, prop) in drifts:
                extra += '<br><a href="#gate">drift</a>'
            hover = _esc(v.reason or v.sample_note() or v.interval_note())
            cells.append(
                f'<td class="cell" style="background:{_COLOURS[v.outcome]}" title="{hover}">'
                f'<a href="#{_anchor(v)}">{_esc(v.outcome.value)}</a><br>{_esc(_value_text(v))}{extra}</td>'
            )
        rows.append(f"<tr><th>{_esc(prop)}</th>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_esc(m)}</th>" for m in models)
    return f'<table id="matrix"><tr><th>property</th>{header}</tr>{"".join(rows)}</table>'


def _section(verdict: Verdict) -> str:
    flat = [[k, v] for k, v in sorted(verdict.details.items()) if not isinstance(v, dict) or k == "settings"]
    return (
        f'<section id="{_anchor(verdict)}"><h3>{_esc(verdict.property)} on {_esc(verdict.model)}: '
        f'<span style="color:{_COLOURS[verdict.outcome]}">{_esc(verdict.outcome.value)}</span></h3>'
        f'<p><a href="#matrix">back to the matrix</a></p><p class="mono">{_esc(verdict.message())}</p>'
        f"{''.join(_evidence(e) for e in verdict.evidence)}"
        f"<details><summary>details</summary>{_table(['detail', 'value'], flat, 'mono')}</details></section>"
    )


def _gate(comparisons: Sequence[Comparison], source: str) -> str:
    head, *lines = summary(comparisons, source)
    items = "".join(
        f'<li class="{"drift" if line.startswith("  - ") else ""}">{_esc(line.strip())}</li>' for line in lines
    )
    return f'<section id="gate"><h2>{_esc(head)}</h2><ul>{items}</ul></section>'


def _environment(fingerprint: Mapping[str, Any]) -> str:
    env = _table(["library", "version"], sorted(fingerprint.get("environment", {}).items()))
    identities = "".join(
        f"<h3>{_esc(model)}</h3>" + _table(["identity", "value"], sorted(entry.get("identity", {}).items()))
        for model, entry in fingerprint.get("models", {}).items()
    )
    dump = json.dumps(fingerprint, indent=2, sort_keys=True)
    return (
        f'<section id="environment"><h2>Environment and fingerprint</h2>'
        f"<p>profile {_esc(fingerprint.get('profile', ''))}</p>{env}{identities}"
        f'<details><summary>fingerprint JSON</summary><pre class="mono">{_esc(dump)}</pre></details></section>'
    )


def render_html(
    verdicts: Sequence[Verdict],
    *,
    fingerprint: Mapping[str, Any] | None = None,
    comparisons: Sequence[Comparison] = (),
    baseline: str = "",
    title: str = "irmechtest compliance report",
    incomplete: str = "",
) -> str:
    """The report as one HTML string: matrix, baseline gate, one section per verdict, environment.

    ``incomplete`` says why the run did not finish ("" when it did); the report then says so at its top.
    """
    models = list(dict.fromkeys(v.model for v in verdicts))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = '<a href="#matrix">matrix</a> · <a href="#verdicts">verdicts</a>'
    nav += ' · <a href="#gate">baseline gate</a>' if comparisons else ""
    nav += ' · <a href="#environment">environment</a>' if fingerprint else ""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>"
        f"{_incomplete_banner(incomplete, len(verdicts)) if incomplete else ''}"
        f'<p>{len(verdicts)} verdicts on {len(models)} model(s), <span id="generated">{when}</span></p><p>{nav}</p>'
        f"{_matrix(verdicts, comparisons)}"
        f"{_gate(comparisons, baseline) if comparisons else ''}"
        f'<h2 id="verdicts">Verdicts</h2>{"".join(_section(v) for v in verdicts)}'
        f"{_environment(fingerprint) if fingerprint else ''}</body></html>"
    )


def _incomplete_banner(reason: str, n: int) -> str:
    return (
        f'<p id="incomplete" class="drift">PARTIAL REPORT: the run did not complete ({_esc(reason)}); it holds the '
        f"{n} verdicts reached before it stopped, and the properties it lacks were not measured.</p>"
    )


def write_html(path: Path, verdicts: Sequence[Verdict], **kwargs: Any) -> Path:
    """Write the report atomically: an interrupted write leaves the previous report as it was."""
    return write_atomic(path, render_html(verdicts, **kwargs))
