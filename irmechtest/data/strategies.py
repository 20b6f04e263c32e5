"""Hypothesis strategies for every axiom, and a search for a scorer's worst violation.

Strategies draw a query, then a base document, then the edit (its position and random choices), in that
order, so a failing example shrinks to a short query, a short document and the simplest edit. Words come
from a readable vocabulary (by default the most frequent words of the shipped TREC DL sample).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, Phase, assume, find, given, settings, target
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from irmechtest.compliance import measure
from irmechtest.data.catalogue import STOPWORDS, Axiom, AxiomContext, NotApplicable, get_axiom, query_terms
from irmechtest.data.pairs import AxiomCase, PairBuilder, PairRejected, PairSet
from irmechtest.data.sources import (
    MIN_IDF_COVERAGE,
    corpus_idf,
    embedding_neighbours,
    load_idf,
    load_pairs,
    vocabulary_coverage,
    word_idf,
    words,
)
from irmechtest.stats import violation


def register_profiles() -> None:
    """``ci``: derandomised, no deadline (model inference is slow and uneven), no example database, few
    examples; ``dev``: more examples, still no deadline. Select with ``--hypothesis-profile``."""
    settings.register_profile("ci", derandomize=True, deadline=None, database=None, max_examples=20, print_blob=True)
    settings.register_profile("dev", deadline=None, max_examples=200)


@functools.cache
def default_vocabulary(size: int = 400) -> tuple[str, ...]:
    """The ``size`` most frequent alphabetic non-stopwords of three letters or more in the shipped sample,
    most frequent first (Hypothesis shrinks towards the first)."""
    counts: Counter[str] = Counter()
    for pair in load_pairs():
        text = pair.query + " " + pair.text
        counts.update(w for w in words(text) if w.isalpha() and len(w) >= 3 and w not in STOPWORDS)
    return tuple(w for w, _ in counts.most_common(size))


def ranker_context(ranker: Any) -> tuple[AxiomContext, float]:
    """What TDC, M-TDC and STMC1 need from a model, and the IDF table's coverage of its vocabulary: IDF for
    its vocabulary (word-level IDF of the shipped sample when the shipped table covers under half of it) and
    neighbours in its own input-embedding space, for the sample's query terms and :func:`default_vocabulary`."""
    pairs = load_pairs()
    table = load_idf()
    coverage = vocabulary_coverage(table, ranker.tokenizer)
    idf = (
        word_idf(table, ranker.tokenizer)
        if coverage >= MIN_IDF_COVERAGE
        else word_idf(corpus_idf(p.text for p in pairs))
    )
    terms = {t for p in pairs for t in query_terms(p.query)} | set(default_vocabulary())
    neighbours = embedding_neighbours(ranker.tokenizer, ranker.W_E.detach().float().cpu().numpy(), terms)
    return AxiomContext(idf=idf, neighbours=neighbours), coverage


@dataclass(frozen=True)
class AxiomExample:
    """A drawn input for an axiom: query, base document, and what fixes the edit. The edit's random
    choices come from ``seed``, so an example builds the same case however often it is used."""

    query: str
    document: str
    base: AxiomContext
    seed: int = 0

    @property
    def context(self) -> AxiomContext:
        return replace(self.base, rng=random.Random(self.seed))


_IDF_AXIOMS = ("TDC", "M-TDC")


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
    """An input for ``axiom``: query, then document, then edit (position and random choices), so a
    failure shrinks to a short query, a short document and the simplest edit.

    What a built-in axiom needs and the base context lacks is drawn too (distinct IDF values, a
    neighbour per query term, an unrelated sentence), and its precondition is met by construction (TDC
    and M-TDC get two query terms; TDC a document holding neither), so property tests never starve.
    ``positions=False`` keeps the context's insertion position.
    """
    ax = get_axiom(axiom)
    vocab = list(vocabulary or default_vocabulary())
    idf_axiom = ax.name in _IDF_AXIOMS
    n_min = 2 if idf_axiom else 1
    query_words = draw(
        st.lists(st.sampled_from(vocab), min_size=n_min, max_size=max(n_min, max_query_words), unique=True)
    )
    others = [w for w in vocab if w not in query_words]
    word = st.sampled_from(others) if ax.name == "TDC" else st.sampled_from(query_words) | st.sampled_from(others)
    document_words = draw(st.lists(word, min_size=1, max_size=max_document_words))
    base = context or AxiomContext()
    if positions:
        base = replace(base, position=draw(st.sampled_from(["end", "start"]) | st.integers(0, len(document_words))))
    seed = draw(st.integers(0, 2**32 - 1))
    if idf_axiom and base.idf is None:
        n = len(query_words)
        values = draw(st.lists(st.integers(1, 100), min_size=n, max_size=n, unique=True))
        base = replace(base, idf=dict(zip(query_words, (v / 10 for v in values), strict=True)).get)
    if ax.name == "STMC1" and base.neighbours is None:
        base = replace(base, neighbours={w: [draw(st.sampled_from(others))] for w in query_words})
    if ax.name == "LNC1" and not base.unrelated:
        sentence = draw(st.lists(st.sampled_from(others), min_size=1, max_size=8))
        base = replace(base, unrelated=[" ".join(sentence)])
    return AxiomExample(" ".join(query_words), " ".join(document_words), base, seed)


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
