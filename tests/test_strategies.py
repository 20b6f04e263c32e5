"""Hypothesis strategies: profiles, applicability of drawn examples, and the worst-violation search."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, find, given, settings

from irmechtest.compliance import LexicalScorer
from irmechtest.data.catalogue import BUILTIN_AXIOMS, AxiomContext, NotApplicable, get_axiom
from irmechtest.data.pairs import PairBuilder
from irmechtest.data.strategies import (
    AxiomExample,
    axiom_examples,
    build_example,
    default_vocabulary,
    register_profiles,
    search_worst_violation,
)
from irmechtest.stats import violation

VOCABULARY = ("barn", "owl", "river", "stone", "field", "cloud", "lamp", "road", "tree", "wind")


def test_profiles() -> None:
    register_profiles()
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.deadline is None and ci.database is None and ci.max_examples <= 25
    dev = settings.get_profile("dev")
    assert dev.deadline is None and dev.max_examples > ci.max_examples


def test_default_vocabulary_is_readable() -> None:
    vocab = default_vocabulary()
    assert len(vocab) == 400 and len(set(vocab)) == 400
    assert all(w.isalpha() and w.islower() for w in vocab)
    assert "the" not in vocab


@pytest.mark.parametrize("name", BUILTIN_AXIOMS)
def test_drawn_examples_are_applicable(name: str) -> None:
    """Every draw gives the axiom what it needs, so property tests never starve."""

    @settings(max_examples=15, deadline=None)
    @given(axiom_examples(name, vocabulary=VOCABULARY))
    def check(example: AxiomExample) -> None:
        assert example.query.split() and example.document.split()
        assert set(example.query.split()) <= set(VOCABULARY)
        get_axiom(name).edits(example.query, example.document, example.context)  # no NotApplicable

    check()


def test_examples_shrink_to_the_simplest_input() -> None:
    """The minimal example is one query word, a one-word document and an edit at the end."""
    simplest = find(axiom_examples("TFC1", vocabulary=VOCABULARY), lambda example: True)
    assert (simplest.query, simplest.document) == ("barn", "barn")
    assert simplest.context.position == "end" and simplest.seed == 0
    two_terms = find(axiom_examples("TDC", vocabulary=VOCABULARY), lambda example: True)
    assert len(two_terms.query.split()) == 2 and not set(two_terms.query.split()) & set(two_terms.document.split())


def test_examples_replay_identically() -> None:
    example = find(axiom_examples("TFC1", vocabulary=VOCABULARY), lambda e: len(e.query.split()) >= 3)
    edits = {get_axiom("TFC1").edits(example.query, example.document, example.context) for _ in range(5)}
    assert len(edits) == 1


def test_search_finds_and_shrinks_a_planted_violation(tokenizer) -> None:
    """A mirrored BM25 violates TFC1 on every input; the search returns a short counterexample and the
    same one every time."""
    idf = {w: 1.0 + i for i, w in enumerate(VOCABULARY)}.get
    builder = PairBuilder(tokenizer, kind="cross-encoder", max_length=128)
    mirror = LexicalScorer(idf).mirrored()
    found = search_worst_violation(mirror, "TFC1", builder, tie_band=0.0, max_examples=25, vocabulary=VOCABULARY)
    assert found.worst is not None and found.shrunk is not None
    assert found.worst["violation"] > 0 and found.shrunk["violation"] >= found.worst["violation"] / 2
    assert len(found.shrunk["query"].split()) <= 2
    assert len(found.shrunk["perturbed"].split()) <= len(found.worst["perturbed"].split())
    again = search_worst_violation(mirror, "TFC1", builder, tie_band=0.0, max_examples=25, vocabulary=VOCABULARY)
    assert again == found


def test_search_finds_nothing_when_the_axiom_holds(tokenizer) -> None:
    idf = {w: 1.0 + i for i, w in enumerate(VOCABULARY)}.get
    builder = PairBuilder(tokenizer, kind="cross-encoder", max_length=128)
    found = search_worst_violation(
        LexicalScorer(idf), "TFC1", builder, tie_band=0.0, max_examples=20, vocabulary=VOCABULARY
    )
    assert found.worst is None and found.shrunk is None


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(axiom_examples("TFC1", vocabulary=VOCABULARY))
def test_target_quantity_is_the_violation(tokenizer, example: AxiomExample) -> None:
    """The quantity the search maximises is positive exactly on violating cases of a mirrored scorer."""
    idf = {w: 1.0 + i for i, w in enumerate(VOCABULARY)}.get
    case = build_example(PairBuilder(tokenizer, max_length=128), "TFC1", example)
    if case is None:
        return
    step = case.steps[0]
    scores = LexicalScorer(idf).mirrored().score([case.query] * 2, [step.baseline_text, step.perturbed_text])
    assert violation(scores[1] - scores[0], get_axiom("TFC1").direction, 0.0) > 0


def test_build_example_swallows_only_counted_outcomes(tokenizer) -> None:
    builder = PairBuilder(tokenizer)
    assert build_example(builder, "TFC1", AxiomExample("what is the", "some text", AxiomContext())) is None
    with pytest.raises(NotApplicable):
        builder.build("TFC1", "what is the", "some text")
