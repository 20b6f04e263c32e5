"""Compliance statistics: interval, sign test, counts per direction, tie band, md5, worst example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from irmechtest.stats import (
    Direction,
    bootstrap_mean_interval,
    calibrate_tie_band,
    classify,
    compliance,
    pair_set_md5,
    sign_test,
    violation,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(61, 100), (0, 10), (10, 10), (1, 3), (500, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)
    narrow, wide = wilson_interval(61, 100, 0.8), wilson_interval(61, 100, 0.99)
    assert wide[0] < narrow[0] < 0.61 < narrow[1] < wide[1]


def test_sign_test() -> None:
    assert sign_test(61, 39) == pytest.approx(binomtest(61, 100, alternative="greater").pvalue)
    assert sign_test(0, 0) == 1.0
    assert sign_test(10, 0) < 0.001 < 0.999 < sign_test(0, 10)


def test_classify_tie_band_is_inclusive() -> None:
    assert classify([0.2, -0.2, 0.1, -0.1, 0.0], 0.1).tolist() == ["pos", "neg", "tie", "tie", "tie"]
    with pytest.raises(ValueError, match="NaN"):
        classify([0.1, math.nan], 0.0)
    with pytest.raises(ValueError, match="tie band"):
        classify([0.1], -1.0)


EFFECTS = [1.0, 2.0, -1.0, 0.05, -0.05, 3.0]


@pytest.mark.parametrize(
    ("direction", "satisfied"),
    [
        (Direction.INCREASE, 3),
        (Direction.DECREASE, 1),
        (Direction.NOT_INCREASE, 3),
        (Direction.NOT_DECREASE, 5),
        (Direction.NEUTRAL, 2),
    ],
)
def test_compliance_counts_per_direction(direction: Direction, satisfied: int) -> None:
    result = compliance(EFFECTS, direction, 0.1, axiom="X", not_applicable=4, rejected={"too long": 2})
    assert (result.pos, result.neg, result.ties) == (3, 1, 2)
    assert result.satisfied == satisfied
    assert result.rate == pytest.approx(satisfied / 6)
    assert (result.ci_low, result.ci_high) == wilson_interval(satisfied, 6)
    assert result.mean_effect == pytest.approx(np.mean(EFFECTS))
    assert result.not_applicable == 4 and result.rejected == {"too long": 2}
    assert "not applicable" in result.summary()


def test_sign_test_direction_follows_axiom() -> None:
    up = compliance([1.0] * 20, "increase", 0.0)
    assert up.p_value < 1e-5
    assert compliance([1.0] * 20, "not increase", 0.0).p_value == pytest.approx(1.0)
    assert compliance([-1.0] * 20, "decrease", 0.0).p_value == up.p_value
    assert compliance([1.0, -1.0] * 10, "neutral", 0.0).p_value == pytest.approx(1.0)


def test_empty_compliance_has_no_rate() -> None:
    result = compliance([], "increase", 0.1, not_applicable=3)
    assert result.rate is None and result.mean_effect is None and result.worst is None
    assert "no applicable pair" in result.summary()


def test_worst_is_the_largest_violation_with_its_text() -> None:
    examples = [{"text": str(i)} for i in range(len(EFFECTS))]
    worst = compliance(EFFECTS, "increase", 0.1, examples=examples).worst
    assert worst == {"text": "2", "index": 2, "effect": -1.0}
    assert compliance(EFFECTS, "neutral", 0.1, examples=examples).worst["index"] == 5
    assert compliance([1.0, 2.0], "increase", 0.1).worst is None
    with pytest.raises(ValueError, match="examples"):
        compliance(EFFECTS, "increase", 0.1, examples=examples[:2])


def test_md5_identifies_the_pair_set() -> None:
    a = pair_set_md5([["q", "d1", "p1"], ["q", "d2", "p2"]])
    assert a == pair_set_md5([("q", "d1", "p1"), ("q", "d2", "p2")])
    assert a != pair_set_md5([["q", "d2", "p2"], ["q", "d1", "p1"]])
    assert a != pair_set_md5([["q", "d1p1"], ["q", "d2", "p2"]])
    assert compliance([1.0], "increase", 0, keys=[["q", "d1", "p1"], ["q", "d2", "p2"]]).md5 == a


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-10, 10, allow_nan=False),
    st.floats(0, 5, allow_nan=False),
    st.sampled_from(list(Direction)),
)
def test_violation_agrees_with_classification(effect: float, band: float, direction: Direction) -> None:
    allowed = classify([effect], band)[0] in direction.allowed
    amount = violation(effect, direction, band)
    if amount > 0:
        assert not allowed
    if amount < 0:
        assert allowed


def test_calibrate_tie_band() -> None:
    rankings = {"q1": [10.0, 9.0, 8.5, 0.0], "q2": [1.0, 3.0]}
    # top-3 of q1: gaps 1.0, 0.5; q2: gap 2.0 -> median 1.0
    assert calibrate_tie_band(rankings, top_k=3) == pytest.approx(1.0)
    assert calibrate_tie_band(rankings, top_k=3, quantile=0.0) == pytest.approx(0.5)
    assert calibrate_tie_band(rankings, top_k=10, quantile=1.0) == pytest.approx(8.5)
    with pytest.raises(ValueError, match="two or more"):
        calibrate_tie_band({"q": [1.0]})
    with pytest.raises(ValueError, match="quantile"):
        calibrate_tie_band(rankings, quantile=2)


def test_bootstrap_mean_interval() -> None:
    values = np.random.default_rng(0).normal(1.0, 2.0, size=400)
    low, high = bootstrap_mean_interval(values)
    assert low < values.mean() < high and (low, high) == bootstrap_mean_interval(values)
    assert high - low == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.15)
    assert bootstrap_mean_interval([3.0, 3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean_interval([])
