"""The HTML report as text: matrix, evidence renderers, escaping, baseline deltas (no browser needed)."""

from irmechtest import fingerprint
from irmechtest.report import render_html


def test_matrix_links_sections_and_back(report_verdicts):
    html = render_html(report_verdicts)
    assert html.count('<table id="matrix">') == 1
    assert 'href="#v-org--model--tfc1"' in html and 'id="v-org--model--tfc1"' in html
    assert html.count('href="#matrix"') == len(report_verdicts) + 1  # one per section, one in the navigation
    assert "not applicable" in html and "0.6 &gt;= 0.9" in html
    assert "<br>bi-encoder: needs a classifier</td>" in html  # why a cell is empty, in the cell


def test_a_verdict_within_sampling_error_is_marked_in_the_matrix():
    from irmechtest.verdicts import Verdict

    close = Verdict("tfc1", "m", 0.91, 0.9, details={"ci_low": 0.86, "ci_high": 0.94})
    html = render_html([close])
    assert "0.91 &gt;= 0.9, threshold inside the CI" in html and 'title="the threshold 0.9 lies inside' in html


def test_evidence_is_drawn_offline_and_every_text_escaped(report_verdicts):
    html = render_html(report_verdicts)
    assert '<table class="heatmap">' in html and "rgba(207,34,46,1.000)" in html and "rgba(9,105,218,0.444)" in html
    assert 'title="L1 / 2: n/a">n/a</td>' in html  # a cell that was not measured
    assert html.count("<circle") == 3 and "<svg" in html
    assert "<script" not in html and "&lt;script&gt;window.irmechPwned" in html
    assert "org/&lt;model&gt;" in html and "<b>" not in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_baseline_deltas_and_drifts_appear_in_matrix_and_gate(report_verdicts):
    current = fingerprint.build(report_verdicts, {}, "quick")
    base = fingerprint.build(report_verdicts, {}, "quick")
    base["models"]["org/<model>"]["properties"]["tfc1"]["value"] = 0.95
    base["models"]["org/<model>"]["properties"]["tfc1"]["outcome"] = "passed"
    comparisons = fingerprint.compare(base, current)
    html = render_html(report_verdicts, fingerprint=current, comparisons=comparisons, baseline="b.json")
    assert "baseline &#916; -0.35" in html and '<a href="#gate">drift</a>' in html
    assert "baseline gate FAILED: 1 drift(s) from b.json" in html
    assert 'id="environment"' in html and "fingerprint JSON" in html


def test_error_before_a_measurement_renders(report_verdicts):
    from irmechtest.verdicts import Outcome, Verdict

    error = Verdict("circuit-heads", "m", None, None, reason="RuntimeError: boom", outcome=Outcome.ERROR)
    assert "[m] circuit-heads: error (RuntimeError: boom)" in render_html([error])
