"""Behavioural axioms: for each built-in axiom, the rate of real pairs on which the ranker moves in the
expected direction, with its interval, against a literature or conventional threshold.

TFC1 has its own property (test_tfc1.py). Each verdict carries the worst pair of the sample and, from a
Hypothesis search steered by ``target``, a shrunk counterexample built from short readable texts.
"""

import pytest

from irmechtest.axioms import BUILTIN_AXIOMS, AxiomContext, query_terms
from irmechtest.compliance import CachedScorer, measure_axiom, to_verdict
from irmechtest.datasets import (
    MIN_IDF_COVERAGE,
    corpus_idf,
    embedding_neighbours,
    load_idf,
    load_pairs,
    vocabulary_coverage,
    word_idf,
)
from irmechtest.pairs import PairBuilder
from irmechtest.strategies import default_vocabulary, search_worst_violation
from irmechtest.verdicts import Evidence

AXIOMS = [name for name in BUILTIN_AXIOMS if name != "TFC1"]


@pytest.fixture(scope="module")
def scorer(ranker):
    """One score per (query, document) per model: the axioms share calibration and unmodified documents."""
    return CachedScorer(ranker)


@pytest.fixture(scope="module")
def resources(ranker):
    """What TDC, M-TDC and STMC1 need from the model: IDF for its vocabulary and neighbours in its own
    input-embedding space, for the sample's query terms and the strategies' vocabulary."""
    pairs = load_pairs()
    table = load_idf()
    coverage = vocabulary_coverage(table, ranker.tokenizer)
    # With another vocabulary than the shipped table's, fall back to word-level IDF of the sample.
    idf = (
        word_idf(table, ranker.tokenizer)
        if coverage >= MIN_IDF_COVERAGE
        else word_idf(corpus_idf(p.text for p in pairs))
    )
    terms = {t for p in pairs for t in query_terms(p.query)} | set(default_vocabulary())
    neighbours = embedding_neighbours(ranker.tokenizer, ranker.W_E.detach().cpu().numpy(), terms)
    return AxiomContext(idf=idf, neighbours=neighbours), coverage


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.irmech_property(f"axiom-{n.lower()}"), id=n) for n in AXIOMS]
)
def test_axiom_behaviour(name, ranker, scorer, resources, irmech_settings, irmech_verdict):
    settings = irmech_settings
    context, coverage = resources
    property_name = f"axiom-{name.lower()}"
    result, pair_set = measure_axiom(
        scorer,
        name,
        settings["pairs"],
        tie_band=settings["tie_band"],
        limit=settings["n_pairs"],
        seed=settings["seed"],
        context=context,
    )
    verdict = to_verdict(result, ranker.name, settings["threshold"], property=property_name)
    verdict.details.update(
        threshold_source=settings["threshold_source"],
        shortened_to_fit=pair_set.shortened,
        idf_vocabulary_coverage=coverage,
    )
    if settings["search_examples"] and result.rate is not None:
        builder = PairBuilder(ranker.tokenizer, kind=ranker.kind, max_length=ranker.max_length)
        found = search_worst_violation(
            scorer, name, builder, tie_band=result.tie_band, max_examples=settings["search_examples"], context=context
        )
        if found.shrunk is not None:
            title = f"shrunk {name} counterexample (Hypothesis, violation {found.shrunk['violation']:.3g})"
            verdict.evidence.append(Evidence("examples", title, {"examples": [found.shrunk]}))
    irmech_verdict(verdict)
