"""Fingerprints and the release gate's tolerances, on hand-made verdicts (no model needed)."""

import json

import pytest

from irmechtest.report import fingerprint
from irmechtest.report.fingerprint import FingerprintError
from irmechtest.report.verdicts import Outcome, Verdict


def rate(value, low, high, model="m", md5="aa"):
    details = {"ci_low": low, "ci_high": high, "md5": md5, "worst": {"query": "q", "positions": [1]}}
    return Verdict("tfc1", model, value, 0.9, details=details)


def heads(value, components, model="m", comparison=">="):
    details = {"components": components, "effects": dict.fromkeys(components, 0.1), "seed": 0}
    details["settings"] = {"baseline_delta": 0.05}
    return Verdict("circuit", model, value, 0.5, comparison=comparison, details=details)


def fp(*verdicts):
    return fingerprint.build(verdicts, {"m": {"weights_sha256": "abc"}}, "quick")


def test_fingerprint_keeps_flat_measurements_and_drops_example_texts():
    entry = fp(rate(0.95, 0.9, 0.98))["models"]["m"]["properties"]["tfc1"]
    assert entry["measured"] == {"ci_high": 0.98, "ci_low": 0.9, "md5": "aa"}
    assert (entry["outcome"], entry["value"], entry["threshold"]) == ("passed", 0.95, 0.9)


def test_identical_run_passes_the_gate():
    comparisons = fingerprint.compare(fp(rate(0.95, 0.9, 0.98)), fp(rate(0.95, 0.9, 0.98)))
    assert not fingerprint.failed(comparisons)
    assert fingerprint.summary(comparisons, "b.json")[0] == "baseline gate passed against b.json"


def test_rate_may_move_within_its_interval_not_below_it():
    base = fp(rate(0.95, 0.92, 0.98))
    assert not fingerprint.failed(fingerprint.compare(base, fp(rate(0.93, 0.88, 0.97))))
    [comparison] = fingerprint.compare(base, fp(rate(0.91, 0.85, 0.95)))
    assert comparison.drifts == ["tfc1: value 0.95 -> 0.91 (-0.04), below the baseline's interval [0.92, 0.98]"]


def test_lost_component_outcome_and_value_drift_are_each_reported():
    base = fp(heads(0.8, ["9.1", "10.7"]))
    [comparison] = fingerprint.compare(base, fp(heads(0.4, ["9.1", "3.3"])))
    assert comparison.drifts == [
        "circuit: outcome passed -> failed",
        "circuit: value 0.8 -> 0.4 (-0.4; tolerance 0.05)",
        "circuit: lost components 10.7 (baseline ['9.1', '10.7'])",
    ]
    assert comparison.notes == ["circuit: new components 3.3"]
    assert comparison.deltas == {"circuit": pytest.approx(-0.4)}


def test_lower_is_better_properties_drift_upwards():
    base = fp(heads(0.1, [], comparison="<="))
    assert not fingerprint.failed(fingerprint.compare(base, fp(heads(0.0, [], comparison="<="))))
    assert fingerprint.failed(fingerprint.compare(base, fp(heads(0.2, [], comparison="<="))))


def test_single_model_baseline_is_the_reference_for_a_new_model():
    [comparison] = fingerprint.compare(fp(rate(0.95, 0.9, 0.98)), fp(rate(0.5, 0.4, 0.6, model="m2", md5="bb")))
    assert comparison.reference == "m"
    assert comparison.drifts[0].startswith("tfc1: outcome passed -> failed")
    assert "tfc1: md5 changed, the values come from different samples" in comparison.notes
    assert "weights_sha256 abc -> None" in comparison.notes
    assert "[m2] (against baseline model m)" in fingerprint.summary([comparison], "b.json")[1]


def test_model_missing_from_a_multi_model_baseline_fails():
    base = fp(rate(0.95, 0.9, 0.98, model="a"), rate(0.95, 0.9, 0.98, model="b"))
    [comparison] = fingerprint.compare(base, fp(rate(0.95, 0.9, 0.98, model="c")))
    assert comparison.drifts == ["not in the baseline, which has a, b"]


def test_saved_fingerprint_loads_back(tmp_path):
    data = fp(rate(0.95, 0.9, 0.98), heads(0.8, ["1.2"]))
    assert fingerprint.load(fingerprint.save(tmp_path / "b.json", data)) == json.loads(json.dumps(data))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"schema": "other"}', "not an irmechtest fingerprint"),
        ('{"schema": "irmechtest-fingerprint", "schema_version": 99}', "fingerprint schema version 99; this"),
        ('{"schema": "irmechtest-fingerprint", "schema_version": 1}', "missing key 'models'"),
        (
            '{"schema": "irmechtest-fingerprint", "schema_version": 1, "models": {"m": {"identity": {}, '
            '"properties": {"p": {"outcome": "great", "value": 1, "comparison": ">=", "measured": {}}}}}}',
            "models['m'].properties['p'].outcome: unknown outcome 'great'",
        ),
        (
            '{"schema": "irmechtest-fingerprint", "schema_version": 1, "models": {"m": {"identity": {}, '
            '"properties": {"p": {"outcome": "passed", "value": "high"}}}}}',
            "models['m'].properties['p'].value: expected",
        ),
        # Issue 14 case 2: without settings the comparison crashed after the whole run (KeyError: 'settings').
        (
            '{"schema": "irmechtest-fingerprint", "schema_version": 1, "models": {"m": {"identity": {}, '
            '"properties": {"p": {"outcome": "passed", "value": 0.5, "comparison": ">=", "measured": {}}}}}}',
            "models['m'].properties['p']: missing key 'settings'",
        ),
        (
            '{"schema": "irmechtest-fingerprint", "schema_version": 1, "models": {"m": {"identity": {}, '
            '"properties": {"p": {"outcome": "passed", "value": 0.5, "comparison": ">=", "measured": {}, '
            '"settings": {"baseline_delta": "big"}}}}}}',
            "models['m'].properties['p'].settings.baseline_delta: expected a number, got 'big'",
        ),
        ('{"schema": "irmechtest-fingerprint", "schema_version": 1, "models": {}}', "holds no models"),
        (
            '{"schema": "irmechtest-fingerprint", "schema_version": 1, "environment": [], "models": {}}',
            ".environment: expected dict",
        ),
        # Issue 14 case 10: a newer baseline cannot be fixed by saving it again with this version.
        ('{"schema": "irmechtest-fingerprint", "schema_version": 2}', "newer irmechtest: upgrade irmechtest"),
        ('{"schema": "irmechtest-fingerprint", "schema_version": 0}', "save the baseline again"),
    ],
)
def test_malformed_baselines_are_refused_clearly(tmp_path, text, message):
    path = tmp_path / "baseline.json"
    path.write_text(text)
    with pytest.raises(FingerprintError) as error:
        fingerprint.load(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_every_saved_fingerprint_passes_its_own_start_up_check(tmp_path):
    """What the comparison reads, the check requires, and a saved fingerprint has it: the check refuses no real
    baseline and the comparison meets no baseline it was not checked against."""
    data = fp(rate(0.95, 0.9, 0.98), heads(0.8, ["1.2"]))
    baseline = fingerprint.load(fingerprint.save(tmp_path / "b.json", data))
    assert not fingerprint.failed(fingerprint.compare(baseline, data))


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = fingerprint.save(tmp_path / "b.json", fp(rate(0.95, 0.9, 0.98)))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("irmechtest.report.outputs.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        fingerprint.save(path, fp(rate(0.5, 0.4, 0.6)))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_pass_to_inconclusive_is_reported_as_unsettled_not_as_a_drift_or_a_value_change():
    """A value resting on too few pairs is neither held against the baseline nor a reference for a later run."""
    few = Verdict("tfc1", "m", 0.4, 0.9, details={"ci_low": 0.1, "ci_high": 0.8}, sample={"pairs": 3}, min_sample=36)
    assert few.outcome is Outcome.INCONCLUSIVE
    [comparison] = fingerprint.compare(fp(rate(0.95, 0.9, 0.98)), fp(few))
    assert comparison.drifts == [] and comparison.deltas == {}
    assert comparison.unsettled == ["tfc1: outcome passed -> inconclusive (3 pairs, needs 36): no longer established"]
    assert fingerprint.unsettled([comparison]) and not fingerprint.failed([comparison])
    head, _, line = fingerprint.summary([comparison], "b.json")[:3]
    assert head.endswith("1 property passed in the baseline now inconclusive (too few pairs)")
    assert line == "  ? tfc1: outcome passed -> inconclusive (3 pairs, needs 36): no longer established"
    [back] = fingerprint.compare(fp(few), fp(rate(0.5, 0.4, 0.6)))
    assert back.notes == ["tfc1: outcome inconclusive -> failed"] and not back.drifts and not back.unsettled
