"""Behavioural compliance statistics, measured the way the axiomatic-IR literature measures it.

A model rarely obeys an axiom on every pair (BERT rankers satisfy TFC1 on roughly 61 % of pairs), so a
verdict is a rate with a confidence interval, never "fail on one counterexample". Each score change is
classed as positive, negative or a tie within a tie band; the rate counts the pairs whose class is
allowed by the axiom's expected direction.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm


class Direction(StrEnum):
    """How a perturbation is expected to move the score (perturbed minus baseline)."""

    INCREASE = "increase"  # must rise beyond the tie band (TFC1, TDC, STMC1)
    DECREASE = "decrease"  # must fall beyond the tie band (TFC2's second difference)
    NOT_INCREASE = "not increase"  # must not rise beyond the tie band (LNC1)
    NOT_DECREASE = "not decrease"  # must not fall beyond the tie band (LNC2)
    NEUTRAL = "neutral"  # must stay inside the tie band (the filler control)

    @property
    def allowed(self) -> frozenset[str]:
        """The classes (``pos``, ``neg``, ``tie``) that satisfy this direction."""
        return _ALLOWED[self]

    @property
    def favoured(self) -> str | None:
        """The class the sign test counts as a success against its opposite; None for NEUTRAL."""
        return _FAVOURED[self]


_ALLOWED = {
    Direction.INCREASE: frozenset({"pos"}),
    Direction.DECREASE: frozenset({"neg"}),
    Direction.NOT_INCREASE: frozenset({"neg", "tie"}),
    Direction.NOT_DECREASE: frozenset({"pos", "tie"}),
    Direction.NEUTRAL: frozenset({"tie"}),
}
_FAVOURED = {
    Direction.INCREASE: "pos",
    Direction.NOT_DECREASE: "pos",
    Direction.DECREASE: "neg",
    Direction.NOT_INCREASE: "neg",
    Direction.NEUTRAL: None,
}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; (0, 1) when there are no trials."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(successes: int, failures: int, alternative: str = "greater") -> float:
    """Sign-test p-value (ties already excluded): are successes more common than failures?"""
    n = successes + failures
    if n == 0:
        return 1.0
    return float(binomtest(successes, n, 0.5, alternative=alternative).pvalue)


def classify(effects: Sequence[float] | np.ndarray, tie_band: float) -> np.ndarray:
    """``pos``, ``neg`` or ``tie`` for each effect; a change of exactly the band is still a tie."""
    if tie_band < 0 or math.isnan(tie_band):
        raise ValueError(f"tie band must be a non-negative number, got {tie_band}")
    values = np.asarray(effects, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError(f"{int(np.isnan(values).sum())} score change(s) are NaN; the scorer returned NaN")
    return np.where(values > tie_band, "pos", np.where(values < -tie_band, "neg", "tie"))


def pair_set_md5(items: Iterable[Sequence[str]]) -> str:
    """md5 of a pair set (each item a sequence of strings, e.g. query, baseline, perturbed), so two
    reports can tell whether they measured the same pairs."""
    digest = hashlib.md5(usedforsecurity=False)
    for item in items:
        digest.update(json.dumps(list(item), ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class Compliance:
    """How often a scorer moves in an axiom's expected direction, with the evidence to judge it."""

    axiom: str
    direction: Direction
    tie_band: float
    n: int  # applicable pairs that were scored
    pos: int
    neg: int
    ties: int
    satisfied: int
    rate: float | None  # satisfied / n; None when no pair was applicable
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    mean_effect: float | None
    md5: str
    not_applicable: int = 0  # the axiom's precondition does not hold (counted apart from failures)
    rejected: dict[str, int] = field(default_factory=dict)  # pairs that could not be built, by reason
    worst: dict[str, Any] | None = None  # the most violating pair, None when nothing violates
    # Set when the effects are contrasts with a neutral control edit (compliance.measure with controls):
    controlled: bool = False
    contrast_ci_low: float | None = None  # bootstrap interval of the mean contrast (mean_effect)
    contrast_ci_high: float | None = None
    mean_control_effect: float | None = None  # mean score change of the neutral control edit itself
    tie_band_source: str = ""
    twin_contrast: float | None = None  # a random-init twin's mean contrast, subtracted per pair when set

    @property
    def contrast_holds(self) -> bool | None:
        """Whether the mean contrast's interval lies on the direction's side of 0 (None if not controlled)."""
        if not self.controlled or self.contrast_ci_low is None or self.contrast_ci_high is None:
            return None
        return self._beyond(self.contrast_ci_low, self.contrast_ci_high)

    def _beyond(self, low: float, high: float) -> bool:
        """Whether an interval lies on the direction's side of 0 (contains 0, for ``neutral``)."""
        favoured = self.direction.favoured
        if favoured == "pos":
            return low > 0
        if favoured == "neg":
            return high < 0
        return low <= 0 <= high

    shortened: int = 0  # scored pairs whose document lost words from its end to fit the model

    def adaptations(self) -> dict[str, int]:
        """Every change to the data behind the rate, counted, for the verdict (``details["adaptations"]``)."""
        counts = {"documents shortened to fit": self.shortened}
        counts.update({f"pairs rejected ({reason})": n for reason, n in sorted(self.rejected.items())})
        return {what: n for what, n in counts.items() if n}

    @property
    def violations(self) -> int:
        return self.n - self.satisfied

    def summary(self) -> str:
        """One line a test report can show."""
        rejected = sum(self.rejected.values())
        if self.rate is None:
            return f"{self.axiom}: no applicable pair ({self.not_applicable} n/a, {rejected} rejected)"
        if not self.controlled:
            return (
                f"{self.axiom}: {self.rate:.1%} of {self.n} pairs {self.direction.value} "
                f"({self.confidence:.0%} CI {self.ci_low:.1%}-{self.ci_high:.1%}; "
                f"pos/neg/tie {self.pos}/{self.neg}/{self.ties}, tie band {self.tie_band:.3g}; "
                f"sign test p={self.p_value:.3g}; mean effect {self.mean_effect:+.4g}; "
                f"{self.not_applicable} not applicable; {rejected} rejected)"
            )
        return (
            f"{self.axiom} against its neutral control: {self.rate:.1%} of {self.n} pairs "
            f"{self.direction.value} beyond the tie band ({self.confidence:.0%} CI {self.ci_low:.1%}-"
            f"{self.ci_high:.1%}; pos/neg/tie {self.pos}/{self.neg}/{self.ties}, tie band {self.tie_band:.3g} "
            f"{self.tie_band_source}); paired contrast (axiom minus control"
            f"{' minus twin' if self.twin_contrast is not None else ''}) {self.mean_effect:+.4g}, "
            f"{self.confidence:.0%} bootstrap CI [{self.contrast_ci_low:+.4g}, {self.contrast_ci_high:+.4g}]"
            f"{'' if self._beyond(self.contrast_ci_low, self.contrast_ci_high) else ' (not beyond 0)'}; control alone "
            f"{self.mean_control_effect:+.4g}; {self.not_applicable} not applicable; {rejected} rejected)"
            + self._twin_summary()
        )

    def _twin_summary(self) -> str:
        if self.twin_contrast is None:
            return ""
        return f"; net of a random-init twin's contrast ({self.twin_contrast:+.4g}, subtracted per pair)"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["direction"] = self.direction.value
        return data


def compliance(
    effects: Sequence[float] | np.ndarray,
    direction: Direction | str,
    tie_band: float,
    *,
    axiom: str = "",
    keys: Sequence[Sequence[str]] | None = None,
    examples: Sequence[Mapping[str, Any]] | None = None,
    not_applicable: int = 0,
    rejected: Mapping[str, int] | None = None,
    shortened: int = 0,
    confidence: float = 0.95,
) -> Compliance:
    """Summarise score changes (perturbed minus baseline, one per applicable pair) against a direction.

    ``keys`` identify the pairs for the md5 (defaults to the effects themselves); ``examples`` are the
    texts behind each effect, so the worst violation can be shown.
    """
    direction = Direction(direction)
    values = np.asarray(effects, dtype=np.float64)
    classes = classify(values, tie_band)
    if examples is not None and len(examples) != len(values):
        raise ValueError(f"{len(examples)} examples for {len(values)} effects")
    counts = {c: int((classes == c).sum()) for c in ("pos", "neg", "tie")}
    n = len(values)
    satisfied = sum(counts[c] for c in direction.allowed)
    low, high = wilson_interval(satisfied, n, confidence)
    favoured = direction.favoured
    if favoured is None:
        p_value = sign_test(counts["pos"], counts["neg"], alternative="two-sided")
    else:
        p_value = sign_test(counts[favoured], counts["neg" if favoured == "pos" else "pos"])
    if keys is None:
        keys = [[repr(float(v))] for v in values]
    return Compliance(
        axiom=axiom,
        direction=direction,
        tie_band=float(tie_band),
        n=n,
        pos=counts["pos"],
        neg=counts["neg"],
        ties=counts["tie"],
        satisfied=satisfied,
        rate=satisfied / n if n else None,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        p_value=p_value,
        mean_effect=float(values.mean()) if n else None,
        md5=pair_set_md5(keys),
        not_applicable=not_applicable,
        rejected=dict(rejected or {}),
        worst=_worst(values, classes, direction, examples),
        shortened=shortened,
    )


def bootstrap_mean_interval(
    values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (resampling the values with replacement)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    draws = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    means = data[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def violation(effect: float, direction: Direction | str, tie_band: float) -> float:
    """Signed distance of an effect from what ``direction`` allows: positive on the wrong side of the
    tie band, negative inside the allowed region (``classify`` decides the exact boundary).

    Used to rank counterexamples and as the quantity ``hypothesis.target`` maximises.
    """
    direction = Direction(direction)
    if direction is Direction.NEUTRAL:
        return abs(effect) - tie_band
    if direction in (Direction.INCREASE, Direction.NOT_DECREASE):
        return -effect + (tie_band if direction is Direction.INCREASE else -tie_band)
    return effect + (tie_band if direction is Direction.DECREASE else -tie_band)


def _worst(
    values: np.ndarray,
    classes: np.ndarray,
    direction: Direction,
    examples: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any] | None:
    """The violating pair furthest on the wrong side, with its texts when given."""
    bad = [i for i, c in enumerate(classes) if c not in direction.allowed]
    if not bad:
        return None
    worst = max(bad, key=lambda i: violation(values[i], direction, 0.0))
    out = dict(examples[worst]) if examples is not None else {}
    out.update(index=worst, effect=float(values[worst]))
    return out


def calibrate_tie_band(
    rankings: Mapping[Any, Sequence[float]] | Iterable[Sequence[float]],
    *,
    top_k: int = 10,
    quantile: float = 0.5,
) -> float:
    """A model-specific tie band: the ``quantile`` of score gaps between adjacent documents among each
    query's ``top_k`` highest-scored ones. A change smaller than the typical gap between neighbours at
    the top of a ranking would not reorder it, so it is not counted as a move in either direction."""
    groups = rankings.values() if isinstance(rankings, Mapping) else rankings
    gaps: list[float] = []
    for scores in groups:
        top = np.sort(np.asarray(scores, dtype=np.float64))[::-1][:top_k]
        gaps.extend(np.abs(np.diff(top)).tolist())
    if not gaps:
        raise ValueError("tie band calibration needs at least one query with two or more scored documents")
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    return float(np.quantile(gaps, quantile))
