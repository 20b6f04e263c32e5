"""The HTML report as text: matrix, evidence renderers, escaping, baseline deltas (no browser needed)."""

from irmechtest.report import fingerprint
from irmechtest.report.html import render_html


def test_matrix_links_sections_and_back(report_verdicts):
    html = render_html(report_verdicts)
    assert html.count('<table id="matrix">') == 1
    assert 'href="#v-org--model--tfc1"' in html and 'id="v-org--model--tfc1"' in html
    assert html.count('href="#matrix"') == len(report_verdicts) + 1  # one per section, one in the navigation
    assert "not applicable" in html and "0.6, needs &gt;= 0.9" in html
    assert "<br>bi-encoder: needs a classifier</td>" in html  # why a cell is empty, in the cell


def test_a_verdict_within_sampling_error_is_marked_in_the_matrix():
    from irmechtest.report.verdicts import Verdict

    close = Verdict("tfc1", "m", 0.91, 0.9, details={"ci_low": 0.86, "ci_high": 0.94})
    html = render_html([close])
    assert "0.91, needs &gt;= 0.9, threshold inside the CI" in html and 'title="the threshold 0.9 lies inside' in html


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
    from irmechtest.report.verdicts import Outcome, Verdict

    error = Verdict("circuit-heads", "m", None, None, reason="RuntimeError: boom", outcome=Outcome.ERROR)
    assert "[m] circuit-heads: error (RuntimeError: boom)" in render_html([error])


def test_a_failed_cell_states_the_requirement_not_a_false_comparison():
    """Issue 14 case 11: a failed cell read "failed 0.4316 >= 0.5", as if the comparison held."""
    from irmechtest.report.verdicts import Verdict

    low = Verdict("idf-in-u0", "m", 0.4316, 0.5, quantity="|r|")
    high = Verdict("nig-pruning", "m", 0.9134, 0.05, comparison="<", quantity="p-value")
    html = render_html([low, high])
    assert "|r| 0.4316, needs &gt;= 0.5" in html and "p-value 0.9134, needs &lt; 0.05" in html
    assert "0.4316 &gt;= 0.5" not in html and "0.9134 &lt; 0.05" not in html


def test_adapted_data_is_counted_in_the_cell_line_and_message():
    """Issue 14 case 7: documents shortened to fit were mentioned nowhere."""
    from irmechtest.report.verdicts import Verdict

    adapted = {"documents shortened to fit": 20, "pairs rejected (too long)": 0}
    verdict = Verdict("tfc1", "m", 0.95, 0.9, details={"adaptations": adapted}, quantity="compliance rate")
    assert verdict.qualifier() == "data adapted: 20 documents shortened to fit"
    assert verdict.message().endswith("\ndata adapted: 20 documents shortened to fit")
    assert "compliance rate 0.95, needs &gt;= 0.9, data adapted: 20 documents shortened to fit" in render_html(
        [verdict]
    )


def test_a_partial_report_says_so_at_the_top(report_verdicts):
    html = render_html(report_verdicts, incomplete="interrupted")
    assert html.index('id="incomplete"') < html.index('id="matrix"')
    assert "PARTIAL REPORT: the run did not complete (interrupted)" in html
    assert 'id="incomplete"' not in render_html(report_verdicts)
