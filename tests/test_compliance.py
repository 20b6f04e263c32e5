"""Compliance against scorers with known directions: a BM25 passes every axiom, its mirror image fails."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from irmechtest.behaviour.compliance import (
    CachedScorer,
    LexicalScorer,
    NeutralWords,
    build_controls,
    calibrate,
    case_deltas,
    measure,
    measure_axiom,
    to_verdict,
    wants_twin,
)
from irmechtest.behaviour.strategies import default_vocabulary
from irmechtest.data.catalogue import BUILTIN_AXIOMS, AxiomContext, get_axiom, query_terms
from irmechtest.data.idf import load_idf, word_idf
from irmechtest.data.pairs import FILLER_CANDIDATES, build_pairs
from irmechtest.data.sources import QueryDocPair, load_pairs, words
from irmechtest.report.verdicts import Outcome, Verdict, min_pairs
from irmechtest.stats import calibrate_tie_band, compliance

N_PAIRS = 120


@pytest.fixture(scope="module")
def judged() -> list[QueryDocPair]:
    return load_pairs(limit=N_PAIRS, seed=0)


@pytest.fixture(scope="module")
def setting(tokenizer, judged):
    """IDF and a made-up neighbour for every query term, shared by the axioms and the BM25 scorer, so the
    scorer's direction on every axiom is known by construction."""
    idf = word_idf(load_idf(), tokenizer)
    vocabulary = [w for w in default_vocabulary() if len(w) > 3 and idf(w) is not None]
    terms = sorted({t.lower() for p in judged for t in query_terms(p.query)})
    neighbours = {t: [vocabulary[i % len(vocabulary)]] for i, t in enumerate(terms)}
    return idf, neighbours


def run(scorer, name: str, tokenizer, judged, setting):
    idf, neighbours = setting
    context = AxiomContext(idf=idf, neighbours=neighbours)
    result, _ = measure_axiom(
        scorer, name, judged, tie_band=1e-9, tokenizer=tokenizer, kind="cross-encoder", context=context
    )
    return result


DIRECTIONAL = [name for name in BUILTIN_AXIOMS if name != "control"]


@pytest.mark.parametrize("name", DIRECTIONAL)
def test_bm25_passes_and_its_mirror_fails(name: str, tokenizer, judged, setting) -> None:
    idf, neighbours = setting
    bm25 = LexicalScorer(idf, synonyms=neighbours)
    good = run(bm25, name, tokenizer, judged, setting)
    bad = run(bm25.mirrored(), name, tokenizer, judged, setting)
    threshold = get_axiom(name).threshold
    assert good.n >= 20, good.summary()
    assert good.rate >= threshold and good.ci_low > 0.5, good.summary()
    assert bad.rate < threshold and bad.ci_high < 0.5, bad.summary()
    assert to_verdict(good, "bm25", threshold).outcome is Outcome.PASSED
    verdict = to_verdict(bad, "mirror", threshold)
    assert verdict.outcome is Outcome.FAILED
    assert any(e.kind == "examples" for e in verdict.evidence)
    assert good.md5 == bad.md5  # the same pairs, scored by two models


def test_control_fails_for_a_scorer_that_counts_filler(tokenizer, judged, setting) -> None:
    """Negating scores cannot break neutrality, so the control's negative case is a length-sensitive
    scorer (filler words make its documents longer) and its positive case one that treats filler as
    padding."""
    idf, _ = setting
    ignores_filler = run(LexicalScorer(idf, ignore=frozenset(FILLER_CANDIDATES)), "control", tokenizer, judged, setting)
    counts_filler = run(LexicalScorer(idf), "control", tokenizer, judged, setting)
    threshold = get_axiom("control").threshold
    assert ignores_filler.rate == 1.0 and ignores_filler.mean_effect == 0.0
    assert counts_filler.rate < threshold and counts_filler.neg > 0, counts_filler.summary()


def test_tfc2_worst_example_carries_the_gains(tokenizer, judged, setting) -> None:
    idf, _ = setting
    result = run(LexicalScorer(idf).mirrored(), "TFC2", tokenizer, judged, setting)
    worst = result.worst
    assert len(worst["gains"]) == 2 and worst["gains"][1] > worst["gains"][0]
    # the perturbed document ends in two more occurrences of a query term, the baseline in filler instead
    *document, term, again = worst["perturbed"].split()
    assert term == again and term in worst["query"].split()
    assert worst["baseline"].startswith(" ".join(document)) and term not in worst["baseline"].split()[len(document) :]


def test_not_applicable_and_rejected_are_counted_apart(tokenizer, setting) -> None:
    idf, _ = setting
    pairs = [
        QueryDocPair("1", "a", "barn owl", "the owl sat in the barn"),
        QueryDocPair("2", "b", "what is the", "no content term in that query"),
        QueryDocPair("3", "c", "", "empty query"),
    ]
    result, pair_set = measure_axiom(
        LexicalScorer(idf), "TFC1", pairs, tie_band=0.0, tokenizer=tokenizer, kind="bi-encoder"
    )
    assert (result.n, result.not_applicable, result.rejected) == (1, 1, {"empty query": 1})
    assert result.rate == 1.0 and pair_set.not_applicable == {"no content term in the query": 1}


def test_nothing_applicable_is_not_a_pass(tokenizer, setting) -> None:
    idf, _ = setting
    pairs = [QueryDocPair("2", "b", "what is the", "no content term")]
    result, _ = measure_axiom(LexicalScorer(idf), "TFC1", pairs, tie_band=0.0, tokenizer=tokenizer, kind="bi-encoder")
    assert result.rate is None
    assert to_verdict(result, "bm25", 0.5).outcome is Outcome.NOT_APPLICABLE


def test_ranker_attributes_are_used(tokenizer, judged, setting) -> None:
    idf, _ = setting
    bm25 = LexicalScorer(idf)
    ranker = SimpleNamespace(score=bm25.score, tokenizer=tokenizer, kind="bi-encoder", max_length=64)
    result, pair_set = measure_axiom(ranker, "TFC1", judged[:20], tie_band=0.0)
    assert pair_set.cases[0].steps[0].kind == "bi-encoder"
    assert all(len(c.steps[0].perturbed_ids) <= 64 for c in pair_set.cases)
    assert pair_set.shortened > 0 and result.n == len(pair_set.cases)
    with pytest.raises(TypeError, match="tokenizer"):
        measure_axiom(bm25, "TFC1", judged[:5], tie_band=0.0)
    with pytest.raises(ValueError, match="tie_band"):
        measure_axiom(ranker, "TFC1", judged[:5], tie_band="wide")


def test_calibrated_tie_band(tokenizer, judged, setting) -> None:
    idf, _ = setting
    bm25 = LexicalScorer(idf)
    scores = bm25.score([p.query for p in judged], [p.text for p in judged])
    rankings: dict[str, list[float]] = {}
    for p, s in zip(judged, scores, strict=True):
        rankings.setdefault(p.qid, []).append(s)
    band = calibrate(bm25, judged)
    assert band == pytest.approx(calibrate_tie_band(rankings)) and band > 0
    ranker = SimpleNamespace(score=bm25.score, tokenizer=tokenizer, kind="bi-encoder", max_length=256)
    result, _ = measure_axiom(ranker, "control", judged, tie_band="calibrate")
    assert result.tie_band == pytest.approx(band)


def test_scores_are_checked(tokenizer, judged) -> None:
    pair_set = build_pairs(tokenizer, "TFC1", judged[:4])
    nan = SimpleNamespace(score=lambda q, d: np.full(len(q), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        case_deltas(nan, pair_set)
    short = SimpleNamespace(score=lambda q, d: np.zeros(1))
    with pytest.raises(ValueError, match="shape"):
        measure(short, pair_set, tie_band=0.0)


def test_cached_scorer_scores_each_text_once(tokenizer, judged, setting) -> None:
    idf, _ = setting
    calls: list[int] = []
    bm25 = LexicalScorer(idf)

    def counting(queries, documents):
        calls.append(len(queries))
        return bm25.score(queries, documents)

    cached = CachedScorer(SimpleNamespace(score=counting, tokenizer=tokenizer, kind="bi-encoder", max_length=256))
    first, _ = measure_axiom(cached, "LNC1", judged, tie_band="calibrate")
    second, _ = measure_axiom(cached, "LNC1", judged, tie_band="calibrate")
    assert first == second
    assert sum(calls) == len(cached.cache) and len(calls) == 2  # calibration, then the new texts only
    assert cached.kind == "bi-encoder"


def test_a_threshold_inside_the_interval_is_flagged_whatever_the_outcome() -> None:
    """TFC1 on MiniLM measured 0.91 on 200 pairs and 0.8875 on 400 against 0.9: the verdict follows the point
    estimate, and says when its interval cannot tell pass from fail."""
    close = Verdict("tfc1", "m", 0.91, 0.9, details={"ci_low": 0.862, "ci_high": 0.942, "confidence": 0.95})
    assert close.passed and close.undecided
    assert "lies inside the value's 95% interval [0.862, 0.942]" in close.message()
    failed_close = Verdict("tfc1", "m", 0.8875, 0.9, details={"ci_low": 0.853, "ci_high": 0.915})
    assert not failed_close.passed and failed_close.undecided
    clear = Verdict("tfc1", "m", 0.99, 0.9, details={"ci_low": 0.96, "ci_high": 1.0})
    assert clear.passed and not clear.undecided and "interval" not in clear.message()
    assert not Verdict("circuit-fit", "m", 0.85, 0.8).undecided  # no interval reported


def test_a_failure_on_a_further_condition_is_told_apart_from_a_low_value() -> None:
    specificity = Verdict("tfc1-stmc1-maps", "m", 0.87, 0.8, outcome=Outcome.FAILED)
    assert specificity.other_condition_failed
    assert not Verdict("tfc1-stmc1-maps", "m", 0.5, 0.8).other_condition_failed


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.8, 0.9, 0.25])
def test_min_pairs_is_the_fewest_on_which_an_exact_interval_can_exclude_the_threshold_both_ways(threshold) -> None:
    """At the minimum, "all comply" has its exact (Clopper-Pearson) 95 % interval above the threshold and "none"
    below it; one pair fewer, one of the two cannot leave the threshold behind whatever the data."""
    from scipy.stats import beta

    def decisive(n: int) -> bool:
        all_low = beta.ppf(0.025, n, 1)  # lower bound of n of n; by symmetry 1 - it is the upper bound of 0 of n
        return all_low > threshold and 1 - all_low < threshold

    n = min_pairs(threshold)
    assert decisive(n) and not decisive(n - 1)
    assert min_pairs() == 6 and min_pairs(1.0) == min_pairs(0.0) == 1


@pytest.mark.parametrize(("n", "outcome"), [(5, Outcome.INCONCLUSIVE), (6, Outcome.PASSED)])
def test_a_rate_on_fewer_pairs_than_its_test_needs_is_inconclusive(n, outcome) -> None:
    """Every pair complying, on 5 pairs, is no pass (its exact interval still reaches below 0.5); on 6 it is.
    The same holds for failing: 5 of 5 against the axiom is inconclusive, and the reason names both counts."""
    rising = to_verdict(compliance([1.0] * n, "increase", 0.0, axiom="TDC"), "m", 0.5)
    assert rising.outcome is outcome and rising.sample == {"applicable pairs": n} and rising.min_sample == 6
    falling = to_verdict(compliance([-1.0] * n, "increase", 0.0, axiom="TDC"), "m", 0.5)
    assert falling.outcome is (Outcome.FAILED if n >= 6 else Outcome.INCONCLUSIVE)
    if outcome is Outcome.INCONCLUSIVE:
        assert f"rests on {n} applicable pairs; a 95 % verdict needs at least 6" in rising.message()
        assert "--irmech-profile=full" in rising.message() and "too few: 5 applicable pairs < 6" in rising.qualifier()
    strict = to_verdict(compliance([1.0] * 30, "increase", 0.0), "m", 0.9)  # 0.9 needs 36 pairs
    assert strict.outcome is Outcome.INCONCLUSIVE and strict.min_sample == 36


def test_the_minimum_overrides_an_outcome_a_property_decided_itself() -> None:
    """A property that sets its own outcome (a further condition) still goes through the one rule; a verdict
    without counts, or not measured, is left as it is."""
    decided = Verdict("tfc1-stmc1-maps", "m", 0.91, 0.8, outcome=Outcome.FAILED, sample={"patched STMC1 pairs": 3})
    assert decided.outcome is Outcome.FAILED  # no minimum given
    decided = replace(decided, outcome=Outcome.FAILED, min_sample=min_pairs())
    assert decided.outcome is Outcome.INCONCLUSIVE and decided.too_few() == {"patched STMC1 pairs": 3}
    assert Verdict.from_dict(decided.to_dict()) == decided
    assert Verdict("x", "m", 0.9, 0.5, sample={"pairs": 20}, min_sample=6).passed
    assert Verdict.not_applicable("x", "m", "bi-encoder").outcome is Outcome.NOT_APPLICABLE


def test_neutral_controls_edit_the_same_slot_with_unrelated_words_of_equal_token_length(tokenizer, judged) -> None:
    """Per case, the control differs from the axiom's pair only in the words put in the slot: same document,
    same term choice replaced, same token span; the words have no relation to the query (nor to its
    documents) and the two controls are two different draws."""
    ax = get_axiom("TDC")
    idf = word_idf(load_idf(), tokenizer)
    build = dict(kind="cross-encoder", context=AxiomContext(idf=idf))
    pair_set = build_pairs(tokenizer, ax, judged, **build)
    neutral = NeutralWords(tokenizer, judged)
    first, second = build_controls(tokenizer, ax, judged, neutral, **build)
    related = {p.query: set() for p in judged}
    for p in judged:
        related[p.query] |= set(words(p.text)) | set(words(p.query))
    controls = {(c.qid, c.docno): (c, d) for c, d in zip(first.cases, second.cases, strict=True)}
    assert len(controls) == len(pair_set.cases) >= 20, (pair_set.summary(), first.summary())
    draws_differ = 0
    for case in pair_set.cases:
        one, two = controls[case.qid, case.docno]
        step, control = case.steps[0], one.steps[0]
        assert control.document == step.document and control.slot == step.slot
        assert len(control.perturbed_ids) == len(step.perturbed_ids)
        assert control.baseline_ids != step.baseline_ids  # the low-IDF term is replaced too
        inserted = {w for w in (*control.perturbed_words, *control.baseline_words) if w != control.filler}
        assert inserted and not inserted & related[case.query]
        draws_differ += one.steps[0].perturbed_words != two.steps[0].perturbed_words
    assert draws_differ >= 0.9 * len(pair_set.cases)


def test_a_scorer_that_rewards_any_word_over_filler_fails_tfc1_against_its_control(tokenizer, judged) -> None:
    """The defect the controls fix: a scorer that rises for any word that is not filler satisfies the bare
    TFC1 rate (query term against filler padding) on every pair, and has a contrast of exactly 0 with a
    neutral word in the same slot."""
    fillers = set(FILLER_CANDIDATES)
    any_word = SimpleNamespace(
        score=lambda qs, ds: np.array([sum(w not in fillers for w in words(d)) for d in ds], dtype=float),
        tokenizer=tokenizer,
        kind="cross-encoder",
        max_length=256,
    )
    bare = measure(any_word, build_pairs(tokenizer, "TFC1", judged, kind="cross-encoder"), tie_band=0.0)
    assert bare.rate == 1.0
    result, _ = measure_axiom(any_word, "TFC1", judged, tie_band="control")
    assert result.controlled and result.n >= 100 and result.rejected == {}
    assert (result.rate, result.mean_effect, result.tie_band) == (0.0, 0.0, 0.0)
    assert result.mean_control_effect == 1.0  # the neutral word alone "raises" the score as much
    verdict = to_verdict(result, "any-word", get_axiom("TFC1").threshold)
    assert verdict.outcome is Outcome.FAILED and "not beyond 0" in verdict.summary


def test_a_rate_with_a_contrast_interval_at_zero_fails(tokenizer, judged) -> None:
    """The further condition on its own: the same compliance counts pass or fail with the contrast's interval."""
    bm25 = SimpleNamespace(score=LexicalScorer(word_idf(load_idf(), tokenizer)).score, tokenizer=tokenizer)
    result, _ = measure_axiom(bm25, "TFC1", judged, tie_band="control", kind="cross-encoder")
    assert result.contrast_holds and to_verdict(result, "bm25", 0.5).passed
    straddling = replace(result, contrast_ci_low=-0.1)
    assert straddling.contrast_holds is False
    assert to_verdict(straddling, "bm25", 0.5).outcome is Outcome.FAILED


def test_wants_twin() -> None:
    assert wants_twin("auto", "bi-encoder") and not wants_twin("auto", "cross-encoder")
    assert wants_twin("always", "cross-encoder") and not wants_twin("never", "bi-encoder")
    with pytest.raises(ValueError, match="random_twin must be one of"):
        wants_twin("sometimes", "bi-encoder")


def test_documents_shortened_to_fit_are_counted_in_the_verdict(minilm, tmp_path) -> None:
    """Issue 14 case 7: 20 documents of 5,000 words passed TFC1 with no mention of their shortening. Real
    queries and passages (repeated to ~5,000 words), so the neutral controls find unrelated words."""
    judged = load_pairs(limit=20, seed=0)
    rows = "".join(
        f"{p.qid}\t{p.docno}\t{p.query}\t{' '.join([p.text] * (5000 // len(p.text.split()) + 1))}\t\t1\n"
        for p in judged
    )
    path = tmp_path / "long.tsv"
    path.write_text("qid\tdocno\tquery\ttext\tperturbed_text\trelevance\n" + rows)
    result, pair_set = measure_axiom(minilm, "TFC1", str(path), tie_band=0.0)
    assert pair_set.shortened == len(pair_set.cases) == 20
    assert result.shortened == 20 and result.n >= 15, result.rejected
    verdict = to_verdict(result, minilm.name, 0.9, property="tfc1")
    assert verdict.adaptations()["documents shortened to fit"] == 20
    assert "data adapted: 20 documents shortened to fit" in verdict.qualifier()
