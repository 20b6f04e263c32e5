"""Behavioural verdicts against controls on real and random models (docs/axioms.md, "Verdicts against
controls"): a random-init model of any family fails TFC1, TDC and STMC1, so does the zoo's query-shuffled
control, and the planted model and the zoo's trained re-ranker keep TFC1."""

from __future__ import annotations

import functools

import pytest

from irmechtest.behaviour.compliance import CachedScorer, measure_axiom, to_verdict, wants_twin
from irmechtest.behaviour.strategies import ranker_context
from irmechtest.config import property_config
from irmechtest.controls.twins import random_twin
from irmechtest.loading import load_ranker
from irmechtest.report.verdicts import Outcome, Verdict

MUST_FAIL_AT_RANDOM = ("TFC1", "TDC", "STMC1")


@functools.cache
def _verdict(spec: str, axiom: str, n_pairs: int) -> Verdict:
    """The suite's verdict on one axiom (its default settings, ``n_pairs`` pairs), cached per session."""
    ranker = _ranker(spec)
    settings = property_config("tfc1" if axiom == "TFC1" else f"axiom-{axiom.lower()}")
    result, _ = measure_axiom(
        CachedScorer(ranker),
        axiom,
        settings["pairs"],
        tie_band=settings["tie_band"],
        limit=n_pairs,
        seed=settings["seed"],
        context=ranker_context(ranker)[0],
        twin=CachedScorer(random_twin(ranker)) if wants_twin(settings["random_twin"], ranker.kind) else None,
    )
    return to_verdict(result, spec, settings["threshold"], property=axiom)


@functools.cache
def _ranker(spec: str):
    return load_ranker(spec)


# The planted vocabulary leaves 3 applicable TDC pairs of the sample's first 100, under the 6 a verdict needs
# (test below); its first 400 (the full profile) leave 13.
PAIRS_FOR_A_VERDICT = {("irmechtest:planted-bm25-random", "TDC"): 400}


@pytest.mark.parametrize("axiom", MUST_FAIL_AT_RANDOM)
@pytest.mark.parametrize("spec", ["irmechtest:random-bert", "irmechtest:planted-bm25-random"])
def test_random_cross_encoders_fail(spec: str, axiom: str) -> None:
    verdict = _verdict(spec, axiom, PAIRS_FOR_A_VERDICT.get((spec, axiom), 100))
    assert verdict.outcome is Outcome.FAILED, verdict.summary
    assert verdict.details["controlled"] and verdict.sample["applicable pairs"] >= verdict.min_sample


@pytest.mark.parametrize("spec", ["irmechtest:planted-bm25", "irmechtest:planted-bm25-random"])
def test_too_few_applicable_pairs_give_an_inconclusive_verdict_that_the_full_sample_decides(spec: str) -> None:
    """On 100 pairs the planted vocabulary leaves 3 applicable TDC pairs: no pass or fail (issue 11: the planted
    model failed TDC on them against an effect of +1.06 on its own corpus). The full profile's 400 leave 13, on
    which the verdict is decided (which way is docs/validation.md's business: the planted model's is a stated
    disagreement)."""
    quick = _verdict(spec, "TDC", 100)
    assert quick.outcome is Outcome.INCONCLUSIVE and quick.sample == {"applicable pairs": 3}, quick.summary
    assert "rests on 3 applicable pairs; a 95 % verdict needs at least 6" in quick.message()
    full = _verdict(spec, "TDC", 400)
    assert full.outcome in (Outcome.PASSED, Outcome.FAILED) and full.sample == {"applicable pairs": 13}


@pytest.mark.parametrize("axiom", MUST_FAIL_AT_RANDOM)
def test_a_random_mean_pooling_bi_encoder_fails_against_its_twin(axiom: str) -> None:
    """Against the neutral control alone it would pass (appending a query token pulls its pooled embedding
    towards the query's by construction); net of a random twin's contrast it does not."""
    verdict = _verdict("irmechtest:random-minilm", axiom, 60)
    assert verdict.outcome is Outcome.FAILED, verdict.summary
    assert verdict.details["twin_contrast"] is not None


def test_the_planted_model_keeps_tfc1() -> None:
    verdict = _verdict("irmechtest:planted-bm25", "TFC1", 400)
    assert verdict.outcome is Outcome.PASSED, verdict.summary


@pytest.mark.parametrize("axiom", MUST_FAIL_AT_RANDOM)
@pytest.mark.parametrize("model", ["random-like", "ce-minilm-shuffled-s1"])
def test_zoo_controls_fail(zoo, model: str, axiom: str) -> None:
    """The trained model's random-init twin and the model trained on swapped queries (no query-passage
    relation to learn) fail the query-relation axioms."""
    trained = str(zoo("ce-minilm-trecdl-s1"))
    spec = f"irmechtest:random-like:{trained}" if model == "random-like" else str(zoo(model))
    verdict = _verdict(spec, axiom, 100)
    assert verdict.outcome is Outcome.FAILED, verdict.summary


def test_trained_zoo_model_passes_tfc1(zoo) -> None:
    """The trained re-ranker gains nDCG@10 0.827 vs 0.681 untrained, and its exact-match heads carry a TFC1
    contrast of +2.42 logits (docs/validation.md): TFC1 holds, on the suite's own 200-pair sample."""
    verdict = _verdict(str(zoo("ce-minilm-trecdl-s1")), "TFC1", property_config("tfc1")["n_pairs"])
    assert verdict.outcome is Outcome.PASSED, verdict.summary
