"""The self-contained HTML compliance report: a model x property matrix and the evidence behind it.

One file, no external assets, so it can be attached to a CI run and opened offline. Every text that
came from data or a model (document texts, model names, messages) is HTML-escaped.
"""

from __future__ import annotations

import html
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from irmechtest.verdicts import Outcome, Verdict

_COLOURS = {
    Outcome.PASSED: "#1a7f37",
    Outcome.FAILED: "#cf222e",
    Outcome.NOT_APPLICABLE: "#6e7781",
    Outcome.ERROR: "#9a6700",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #d0d7de;padding:.35rem .6rem;text-align:left}
th{background:#f6f8fa}.cell{color:#fff;font-weight:600}.mono{font-family:ui-monospace,monospace;white-space:pre-wrap}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _value_text(verdict: Verdict) -> str:
    if verdict.value is None:
        return verdict.outcome.value
    return f"{verdict.value:.3g} {verdict.comparison} {verdict.threshold:.3g}"


def _anchor(verdict: Verdict) -> str:
    return "v-" + "".join(ch if ch.isalnum() else "-" for ch in f"{verdict.model}-{verdict.property}")


def render_html(verdicts: Sequence[Verdict], title: str = "irmechtest compliance report") -> str:
    """The report as one HTML string."""
    models = list(dict.fromkeys(v.model for v in verdicts))
    properties = list(dict.fromkeys(v.property for v in verdicts))
    by_cell = {(v.model, v.property): v for v in verdicts}
    rows = []
    for prop in properties:
        cells = []
        for model in models:
            v = by_cell.get((model, prop))
            if v is None:
                cells.append("<td></td>")
                continue
            cells.append(
                f'<td class="cell" style="background:{_COLOURS[v.outcome]}">'
                f'<a style="color:#fff" href="#{_anchor(v)}">{_esc(v.outcome.value)}</a><br>'
                f"{_esc(_value_text(v))}</td>"
            )
        rows.append(f"<tr><th>{_esc(prop)}</th>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_esc(m)}</th>" for m in models)
    details = "".join(
        f'<section id="{_anchor(v)}"><h3>{_esc(v.property)} on {_esc(v.model)}: {_esc(v.outcome.value)}</h3>'
        f'<p class="mono">{_esc(v.message())}</p></section>'
        for v in verdicts
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>"
        f"<p>{len(verdicts)} verdicts on {len(models)} model(s), {when}, Python {_esc(platform.python_version())}</p>"
        f'<table id="matrix"><tr><th>property</th>{header}</tr>{"".join(rows)}</table>'
        f"<h2>Verdicts</h2>{details}</body></html>"
    )


def write_html(path: Path, verdicts: Sequence[Verdict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(verdicts), encoding="utf-8")
    return path
