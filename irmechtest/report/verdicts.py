"""Verdicts: the one record every built-in property produces.

A verdict is what the report, the JSON fingerprint and the terminal summary are made of, so every
property in the suite turns its measurement into one ``Verdict`` and hands it to the ``irmech_verdict``
fixture, which records it and then passes, fails or skips the test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    # Measured, but on fewer pairs than the property's test needs to decide at all (``min_pairs``).
    INCONCLUSIVE = "inconclusive"
    NOT_APPLICABLE = "not applicable"
    ERROR = "error"


def min_pairs(threshold: float = 0.5, confidence: float = 0.95) -> int:
    """The fewest pairs on which an exact test at ``confidence`` could decide against ``threshold`` either way.

    With n pairs the most one-sided samples are "all n on the claim's side" and "none". An exact (Clopper-
    Pearson) interval excludes a rate threshold p0 from above only if tail^(1/n) > p0, and from below only if
    tail^(1/n) > 1 - p0 (tail = (1 - confidence) / 2); both need n > ln(tail) / ln(max(p0, 1 - p0)). For a
    mean, contrast, patching effect or correlation over pairs, whatever its interval's formula, no
    distribution-free test can place it on one side of a value on fewer pairs than the sign test needs when
    every pair agrees: that is the p0 = 0.5 case (6 pairs at 95 %). Below this count an interval is not
    evidence, so the verdict is inconclusive (docs/configuration.md, "Inconclusive verdicts"). A threshold of 0
    or 1 can be decided on one side only (a rate can never be shown to be >= 1): that side needs 1 pair.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a rate in [0, 1], got {threshold}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    sides = [q for q in (threshold, 1 - threshold) if 0 < q < 1]
    return max((math.floor(math.log(tail) / math.log(q)) + 1 for q in sides), default=1)


_COMPARATORS = {
    ">=": lambda value, threshold: value >= threshold,
    ">": lambda value, threshold: value > threshold,
    "<=": lambda value, threshold: value <= threshold,
    "<": lambda value, threshold: value < threshold,
}


@dataclass
class Evidence:
    """One piece of evidence behind a verdict, rendered by the report.

    ``kind`` picks the renderer: ``heatmap`` (``data`` a 2-d list, with ``row_labels`` and ``col_labels``),
    ``scatter`` (``x``, ``y`` lists), ``table`` (``columns`` and ``rows``) or ``examples`` (a list of dicts
    with free text; every text is escaped when rendered).
    """

    kind: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    """The outcome of one property on one model: a measured value against a threshold."""

    property: str
    model: str
    value: float | None
    threshold: float | None
    comparison: str = ">="
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    reason: str = ""
    outcome: Outcome | None = None
    # What the value is ("|r|", "compliance rate", "p-value", "heads found"): the plugin fills it from the
    # ``irmech_property`` marker's ``quantity``, so a reader never has to guess what 0.43 measures.
    quantity: str = ""
    # The pairs (or queries) behind each interval the outcome is decided by, e.g. {"patched STMC1 pairs": 3},
    # and the fewest each must have (``min_pairs``): any count below it makes a pass or fail inconclusive.
    sample: dict[str, int] = field(default_factory=dict)
    min_sample: int = 0

    def __post_init__(self) -> None:
        if self.comparison not in _COMPARATORS:
            raise ValueError(f"comparison must be one of {sorted(_COMPARATORS)}, got {self.comparison!r}")
        if self.outcome is None:
            self.outcome = self._decide()
        if self.outcome in (Outcome.PASSED, Outcome.FAILED) and self.too_few():
            self.outcome = Outcome.INCONCLUSIVE  # the one place the minimum-sample rule is applied

    def too_few(self) -> dict[str, int]:
        """The counts of ``sample`` below ``min_sample`` ({} when the verdict rests on enough pairs)."""
        return {what: n for what, n in self.sample.items() if n < self.min_sample}

    def sample_note(self) -> str:
        """Why an inconclusive verdict is one: which counts fall short of the minimum ("" otherwise)."""
        short = self.too_few()
        if self.outcome is not Outcome.INCONCLUSIVE or not short:
            return ""
        counts = ", ".join(f"{n} {what}" for what, n in short.items())
        return (
            f"rests on {counts}; a 95 % verdict needs at least {self.min_sample} (the fewest on which an exact test "
            "could decide at all): a larger sample (--irmech-profile=full, or a larger n_pairs) may reach one"
        )

    def _decide(self) -> Outcome:
        if self.value is None or self.threshold is None:
            return Outcome.NOT_APPLICABLE
        if isinstance(self.value, float) and math.isnan(self.value):
            return Outcome.ERROR
        return Outcome.PASSED if _COMPARATORS[self.comparison](self.value, self.threshold) else Outcome.FAILED

    @classmethod
    def not_applicable(cls, property: str, model: str, reason: str) -> Verdict:
        return cls(property, model, None, None, reason=reason, outcome=Outcome.NOT_APPLICABLE)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    @property
    def other_condition_failed(self) -> bool:
        """Failed although the value meets its threshold: the property's further condition (its summary says
        which, e.g. a specificity interval or a random-direction control) did not hold."""
        return self.outcome is Outcome.FAILED and self._decide() is Outcome.PASSED

    def interval(self) -> tuple[float, float] | None:
        """The value's confidence interval, for properties that report one (``details["ci_low"/"ci_high"]``)."""
        low, high = self.details.get("ci_low"), self.details.get("ci_high")
        return None if low is None or high is None else (float(low), float(high))

    @property
    def undecided(self) -> bool:
        """Whether the threshold lies inside the value's interval: the outcome follows the point estimate, but
        this sample cannot tell pass from fail, and a larger one may give the other verdict."""
        interval = self.interval()
        if interval is None or self.threshold is None or self.outcome not in (Outcome.PASSED, Outcome.FAILED):
            return False
        return interval[0] <= self.threshold <= interval[1]

    def value_text(self) -> str:
        """The value, what it is, and what the property requires, e.g. "|r| 0.4316, needs >= 0.5" ("" when
        nothing was measured). Worded as a requirement, so a failed value never reads as if the comparison held."""
        if self.value is None or self.threshold is None:
            return ""
        value = "nan" if math.isnan(self.value) else f"{self.value:.4g}"
        name = f"{self.quantity} " if self.quantity else ""
        return f"{name}{value}, needs {self.comparison} {self.threshold:.4g}"

    def adaptations(self) -> dict[str, int]:
        """How the measurement adapted its data, counted (``details["adaptations"]``, e.g. documents shortened to
        fit the model, pairs rejected by reason); only non-zero counts."""
        counts = self.details.get("adaptations") or {}
        return {str(what): int(n) for what, n in counts.items() if n}

    def qualifier(self) -> str:
        """What "value against threshold" leaves out, in a few words for a summary line or matrix cell ("" when
        nothing): a further condition that failed, a threshold within the value's sampling error, and every
        adaptation of the data the value was measured on."""
        interval = self.interval()
        notes = []
        short = self.too_few() if self.outcome is Outcome.INCONCLUSIVE else {}
        if short:
            notes.append("too few: " + ", ".join(f"{n} {what} < {self.min_sample}" for what, n in short.items()))
        if self.other_condition_failed:
            notes.append("a further condition failed (see its summary)")
        elif self.undecided and interval is not None:
            notes.append(f"threshold inside the CI [{interval[0]:.4g}, {interval[1]:.4g}]")
        if adaptations := self.adaptations():
            notes.append("data adapted: " + ", ".join(f"{n} {what}" for what, n in adaptations.items()))
        return "; ".join(notes)

    def interval_note(self) -> str:
        """One line saying that the verdict is within sampling error of its threshold, or ""."""
        interval = self.interval()
        if not self.undecided or interval is None:
            return ""
        low, high = interval
        level = float(self.details.get("confidence", 0.95))
        return (
            f"the threshold {self.threshold:.4g} lies inside the value's {level:.0%} interval [{low:.4g}, "
            f"{high:.4g}]: a larger sample (e.g. --irmech-profile=full) may give the other verdict"
        )

    def message(self) -> str:
        """A one-paragraph account of the verdict, used as the assertion message."""
        head = f"[{self.model}] {self.property}: {self.outcome.value}"
        if self.outcome is Outcome.NOT_APPLICABLE or self.value is None or self.threshold is None:
            return f"{head} ({self.reason})"  # not applicable, or an error before anything was measured
        value = "nan" if math.isnan(self.value) else f"{self.value:.4g}"
        name = f" ({self.quantity})" if self.quantity else ""
        text = f"{head}: value {value}{name}, required {self.comparison} {self.threshold:.4g}"
        if note := self.sample_note():
            text += f"\n{note}"
        if self.summary:
            text += f"\n{self.summary}"
        if self.undecided:
            text += f"\n{self.interval_note()}"
        if adaptations := self.adaptations():
            text += "\ndata adapted: " + ", ".join(f"{n} {what}" for what, n in adaptations.items())
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        data = dict(data)
        data["outcome"] = Outcome(data["outcome"])
        data["evidence"] = [Evidence(**e) for e in data.get("evidence", [])]
        return cls(**data)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists, for JSON and xdist."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return value
