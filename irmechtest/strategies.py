"""Hypothesis strategies for every axiom, and a search for a scorer's worst violation.

Strategies draw a query, then a base document, then the edit (its position and random choices), in that
order, so a failing example shrinks to a short query, a short document and the simplest edit. Words come
from a readable vocabulary (by default the most frequent words of the shipped TREC DL sample).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, Phase, assume, find, given, settings, target
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from irmechtest.axioms import STOPWORDS, Axiom, AxiomContext, NotApplicable, get_axiom
from irmechtest.compliance import measure
from irmechtest.datasets import load_pairs, words
from irmechtest.pairs import AxiomCase, PairBuilder, PairRejected, PairSet
from irmechtest.stats import violation


def register_profiles() -> None:
    """``ci``: derandomised, no deadline (model inference is slow and uneven), no example database, few
    examples; ``dev``: more examples, still no deadline. Select with ``--hypothesis-profile``."""
    settings.register_profile(
        "ci", derandomize=True, deadline=None, database=None, max_examples=20, print_blob=True
    )
    settings.register_profile("dev", deadline=None, max_examples=200)


@functools.cache
def default_vocabulary(size: int = 400) -> tuple[str, ...]:
    """The ``size`` most frequent alphabetic non-stopwords of the shipped sample, most frequent first
    (Hypothesis shrinks towards the first)."""
    counts: Counter[str] = Counter()
    for pair in load_pairs():
        counts.update(w for w in words(pair.query + " " + pair.text) if w.isalpha() and w not in STOPWORDS)
    return tuple(w for w, _ in counts.most_common(size))


@dataclass(frozen=True)
class AxiomExample:
    """A drawn input for an axiom: query, base document and the context that fixes the edit."""

    query: str
    document: str
    context: AxiomContext


@st.composite
def axiom_examples(
    draw: st.DrawFn,
    axiom: Axiom | str,
    *,
    vocabulary: Sequence[str] | None = None,
    context: AxiomContext | None = None,
    max_query_words: int = 4,
    max_document_words: int = 30,
    positions: bool = True,
) -> AxiomExample:
    """An input for ``axiom``: query, then document, then edit. Resources the axiom needs and the base
    context lacks are drawn too (IDF values, a neighbour per query term, unrelated sentences), so every
    built-in axiom is applicable; ``positions=False`` keeps the context's insertion position."""
    ax = get_axiom(axiom)
    vocab = list(vocabulary or default_vocabulary())
    query_words = draw(st.lists(st.sampled_from(vocab), min_size=1, max_size=max_query_words, unique=True))
    others = [w for w in vocab if w not in query_words]
    document_words = draw(
        st.lists(
            st.sampled_from(query_words) | st.sampled_from(others), min_size=1, max_size=max_document_words
        )
    )
    base = context or AxiomContext()
    position = base.position
    if positions:
        position = draw(st.sampled_from(["end", "start"]) | st.integers(0, len(document_words)))
    rng = draw(st.randoms(use_true_random=False))
    ctx = replace(base, rng=rng, position=position)
    if ax.name in ("TDC", "M-TDC") and base.idf is None:
        values = draw(st.lists(st.floats(0.5, 12.0), min_size=len(query_words), max_size=len(query_words)))
        table = dict(zip(query_words, values, strict=True))
        ctx = replace(ctx, idf=table.get)
    if ax.name == "STMC1" and base.neighbours is None:
        ctx = replace(ctx, neighbours={w: [draw(st.sampled_from(others))] for w in query_words})
    if ax.name == "LNC1" and not base.unrelated:
        sentence = draw(st.lists(st.sampled_from(others), min_size=1, max_size=8))
        ctx = replace(ctx, unrelated=[" ".join(sentence)])
    return AxiomExample(" ".join(query_words), " ".join(document_words), ctx)


def build_example(builder: PairBuilder, axiom: Axiom | str, example: AxiomExample) -> AxiomCase | None:
    """The case for a drawn example, or None when it is not applicable or rejected."""
    try:
        return builder.build(axiom, example.query, example.document, example.context)
    except (NotApplicable, PairRejected):
        return None


@dataclass(frozen=True)
class ViolationSearch:
    """What the search found: the largest violation seen, and the smallest input violating at least
    half as much (the shrunk counterexample a report shows); both None when nothing violated."""

    worst: dict[str, Any] | None
    shrunk: dict[str, Any] | None


def search_worst_violation(
    scorer: Any,
    axiom: Axiom | str,
    builder: PairBuilder,
    *,
    tie_band: float,
    max_examples: int = 40,
    vocabulary: Sequence[str] | None = None,
    context: AxiomContext | None = None,
) -> ViolationSearch:
    """Search drawn inputs for the scorer's worst violation of ``axiom``, steering with
    ``hypothesis.target``, then let Hypothesis shrink an input that still violates by at least half
    that amount. Derandomised, so the same scorer always yields the same counterexample."""
    ax = get_axiom(axiom)
    strategy = axiom_examples(ax, vocabulary=vocabulary, context=context)
    common = {"derandomize": True, "deadline": None, "database": None, "max_examples": max_examples}
    quiet = [HealthCheck.filter_too_much, HealthCheck.too_slow]

    def assess(example: AxiomExample) -> dict[str, Any] | None:
        case = build_example(builder, ax, example)
        if case is None:
            return None
        result = measure(scorer, PairSet(ax, [case]), tie_band=tie_band)
        amount = violation(result.mean_effect, ax.direction, tie_band)
        return {
            **(result.worst or {}),
            "effect": result.mean_effect,
            "violation": amount,
            "tie_band": tie_band,
        }

    seen: list[dict[str, Any]] = []

    @settings(**common, phases=[Phase.generate, Phase.target], suppress_health_check=quiet)
    @given(strategy)
    def explore(example: AxiomExample) -> None:
        found = assess(example)
        assume(found is not None)
        target(found["violation"], label="violation")
        seen.append(found)

    explore()
    violating = [f for f in seen if f["violation"] > 0]
    if not violating:
        return ViolationSearch(None, None)
    worst = max(violating, key=lambda f: f["violation"])

    def bad_enough(example: AxiomExample) -> bool:
        found = assess(example)
        return found is not None and found["violation"] >= worst["violation"] / 2

    try:
        minimal = find(strategy, bad_enough, settings=settings(**common, suppress_health_check=quiet))
    except NoSuchExample:
        return ViolationSearch(worst, None)
    return ViolationSearch(worst, assess(minimal))
