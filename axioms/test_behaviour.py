"""Behavioural axioms: for each built-in axiom, the rate of real pairs on which the ranker moves in the
expected direction, with its interval, against a stated threshold. Axioms that edit query-related words in
(TFC2, TDC, M-TDC, STMC1) are judged by their contrast with a neutral control edit (docs/axioms.md).

TFC1 has its own property (test_tfc1.py). Each verdict carries the worst pair of the sample and, from a
Hypothesis search steered by ``target``, a shrunk counterexample built from short readable texts.
"""

import pytest

from irmechtest.compliance import CachedScorer, measure_axiom, to_verdict, wants_twin
from irmechtest.data.catalogue import BUILTIN_AXIOMS
from irmechtest.data.pairs import PairBuilder
from irmechtest.data.strategies import ranker_context, search_worst_violation
from irmechtest.report.verdicts import Evidence

AXIOMS = [name for name in BUILTIN_AXIOMS if name != "TFC1"]


@pytest.fixture(scope="module")
def scorer(ranker):
    """One score per (query, document) per model: the axioms share calibration and unmodified documents."""
    return CachedScorer(ranker)


@pytest.fixture(scope="module")
def resources(ranker):
    return ranker_context(ranker)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.irmech_property(f"axiom-{n.lower()}", quantity="compliance rate"), id=n)
        for n in AXIOMS
    ],
)
def test_axiom_behaviour(name, ranker, ranker_twin, scorer, resources, irmech_settings, irmech_verdict):
    settings = irmech_settings
    context, coverage = resources
    property_name = f"axiom-{name.lower()}"
    result, _ = measure_axiom(
        scorer,
        name,
        settings["pairs"],
        tie_band=settings["tie_band"],
        limit=settings["n_pairs"],
        seed=settings["seed"],
        context=context,
        twin=ranker_twin() if wants_twin(settings["random_twin"], ranker.kind) else None,
    )
    verdict = to_verdict(result, ranker.name, settings["threshold"], property=property_name)
    verdict.details.update(
        threshold_source=settings["threshold_source"],
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
