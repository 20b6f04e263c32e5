"""The worked example of docs/api.md runs as a user would run it: a property of their own, in their own file."""

import json
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "test_query_term_repetition.py"


def test_a_users_own_property_runs_beside_the_builtins(pytester):
    target = pytester.path / EXAMPLE.name
    target.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    out = pytester.path / "v.json"
    result = pytester.runpytest_subprocess("--model=irmechtest:planted-bm25", target.name, f"--irmech-json={out}")
    result.assert_outcomes(passed=1)
    (verdict,) = json.loads(out.read_text())["verdicts"]
    assert (verdict["property"], verdict["outcome"]) == ("query-term-repetition", "passed")
    assert verdict["quantity"] == "share of pairs that rise" and verdict["value"] > 0.5
    assert verdict["details"]["settings"]["n_pairs"] == 24


def test_its_registered_applicability_holds(pytester):
    """The registered ``applies_to`` skips it on a bi-encoder, with the reason, before it measures anything."""
    target = pytester.path / EXAMPLE.name
    target.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    result = pytester.runpytest_subprocess("--model=irmechtest:random-minilm", "-rs", target.name)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*query-term-repetition: not applicable*one score per pair*"])
