"""The axiom catalogue at the text level: what each axiom edits, its direction, and the decorator."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from irmechtest.data import catalogue as axioms_module
from irmechtest.data.catalogue import (
    BUILTIN_AXIOMS,
    CONTROLLED_SOURCE,
    FILLER,
    Axiom,
    AxiomContext,
    Edit,
    NotApplicable,
    axiom,
    get_axiom,
    largest_gain_growth,
    query_terms,
    registered_axioms,
    single_step,
)
from irmechtest.data.sources import words
from irmechtest.stats import Direction

DOC = "the cat sat on the mat near the old barn"
IDF = {"cat": 2.0, "barn": 6.0, "mat": 3.0, "dog": 4.0}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """User axioms defined by a test disappear after it."""
    monkeypatch.setattr(axioms_module, "_REGISTRY", dict(axioms_module._REGISTRY))


def ctx(**kwargs) -> AxiomContext:
    return AxiomContext(rng=random.Random(0), idf=IDF.get, **kwargs)


def test_builtin_catalogue_and_directions() -> None:
    assert set(BUILTIN_AXIOMS) == {"TFC1", "TFC2", "TDC", "M-TDC", "LNC1", "LNC2", "STMC1", "control"}
    assert set(BUILTIN_AXIOMS) <= set(registered_axioms())
    expected = {
        "TFC1": Direction.INCREASE,
        "TFC2": Direction.DECREASE,
        "TDC": Direction.INCREASE,
        "M-TDC": Direction.INCREASE,
        "LNC1": Direction.NOT_INCREASE,
        "LNC2": Direction.NOT_DECREASE,
        "STMC1": Direction.INCREASE,
        "control": Direction.NEUTRAL,
    }
    for name, direction in expected.items():
        ax = get_axiom(name)
        assert ax.direction is direction
        assert ax.description and 0 <= ax.threshold <= 1 and ax.threshold_source
    assert get_axiom("TFC1").threshold == 0.5 and get_axiom("TFC1").threshold_source == CONTROLLED_SOURCE
    assert {get_axiom(n).baseline for n in ("LNC1", "LNC2", "control")} == {"original"}
    with pytest.raises(KeyError, match="registered"):
        get_axiom("TFC9")


def test_query_terms_drop_stopwords_and_duplicates() -> None:
    assert query_terms("What is the Cat, the cat and a DOG?") == ["Cat", "DOG"]
    assert query_terms("what is the") == []


def test_tfc1_inserts_one_query_term_at_the_position() -> None:
    for position in ("end", "start", 3):
        (edit,) = get_axiom("TFC1").edits("cat dog", DOC, ctx(position=position))
        assert edit.baseline == () and edit.position == position
        assert len(edit.inserted) == 1 and edit.inserted[0] in ("cat", "dog")


def test_tfc1_choice_is_deterministic_for_a_seed() -> None:
    chosen = {get_axiom("TFC1").edits("a b c d e f", DOC, ctx())[0].inserted for _ in range(3)}
    assert len(chosen) == 1
    spread = {get_axiom("TFC1").edits("a1 b1 c1 d1 e1 f1", DOC, AxiomContext(rng=random.Random(s))) for s in range(20)}
    assert len(spread) > 1


def test_tfc2_is_a_chain_sharing_one_slot() -> None:
    edits = get_axiom("TFC2").edits("barn", DOC, ctx(occurrences=3))
    assert [e.inserted for e in edits] == [("barn",), ("barn",) * 2, ("barn",) * 3]
    assert [e.baseline for e in edits] == [(), ("barn",), ("barn",) * 2]
    assert {e.slot for e in edits} == {("barn",) * 3}
    with pytest.raises(ValueError, match="occurrences"):
        get_axiom("TFC2").edits("barn", DOC, ctx(occurrences=1))


def test_tfc2_effect_is_the_largest_growth_of_gains() -> None:
    assert get_axiom("TFC2").combine is largest_gain_growth
    assert largest_gain_growth([3.0, 2.0, 1.5]) == -0.5
    assert largest_gain_growth([3.0, 2.0, 2.5]) == 0.5
    with pytest.raises(ValueError, match="two"):
        largest_gain_growth([1.0])
    with pytest.raises(ValueError, match="one score change"):
        single_step([1.0, 2.0])


def test_tdc_swaps_lowest_for_highest_idf_term() -> None:
    (edit,) = get_axiom("TDC").edits("dog cat fish", "a plain text", ctx())
    assert edit.inserted == ("dog",) and edit.baseline == ("cat",)
    with pytest.raises(NotApplicable, match="unequally"):
        get_axiom("TDC").edits("dog cat", "the cat sat", ctx())
    with pytest.raises(NotApplicable, match="known IDF"):
        get_axiom("TDC").edits("dog fish", DOC, ctx())
    with pytest.raises(NotApplicable, match="same IDF"):
        get_axiom("TDC").edits("dog cat", DOC, AxiomContext(idf=lambda w: 1.0))
    with pytest.raises(ValueError, match="IDF statistics"):
        get_axiom("TDC").edits("dog cat", DOC, AxiomContext())


@pytest.mark.parametrize("document", ["plain text", "barn barn cat", "cat cat cat barn", "cat barn"])
def test_m_tdc_swaps_the_counts_of_the_two_terms(document: str) -> None:
    (edit,) = get_axiom("M-TDC").edits("barn cat", document, ctx())
    assert len(edit.inserted) == len(edit.baseline)
    perturbed = Counter(words(document) + list(edit.inserted))
    baseline = Counter(words(document) + list(edit.baseline))
    assert perturbed["barn"] == baseline["cat"] > baseline["barn"] == perturbed["cat"] >= 1
    differing = [i for i, (a, b) in enumerate(zip(edit.inserted, edit.baseline, strict=True)) if a != b]
    assert len(differing) == 1


def test_lnc1_appends_an_unrelated_sentence() -> None:
    pool = ["the cat was here", "rain fell on the hills", "a dog barked"]
    (edit,) = get_axiom("LNC1").edits("cat dog", DOC, ctx(unrelated=pool))
    assert edit.inserted == ("rain", "fell", "on", "the", "hills") and edit.baseline == ()
    with pytest.raises(NotApplicable, match="unrelated"):
        get_axiom("LNC1").edits("cat dog", DOC, ctx(unrelated=pool[::2]))


def test_lnc2_appends_copies_of_the_document() -> None:
    (edit,) = get_axiom("LNC2").edits("cat", DOC, ctx(copies=3, position="start"))
    assert edit.inserted == tuple(DOC.split()) * 2 and edit.position == "end"
    with pytest.raises(ValueError, match="copies"):
        get_axiom("LNC2").edits("cat", DOC, ctx(copies=1))


def test_stmc1_inserts_a_neighbour_outside_the_query() -> None:
    neighbours = {"cat": ["dog", "kitten"], "dog": ["puppy"]}
    (edit,) = get_axiom("STMC1").edits("cat dog", DOC, ctx(neighbours=neighbours))
    assert edit.inserted in (("kitten",), ("puppy",))
    with pytest.raises(NotApplicable, match="neighbour"):
        get_axiom("STMC1").edits("cat dog", DOC, ctx(neighbours={"cat": ["dog"]}))
    (edit,) = get_axiom("STMC1").edits("cat", DOC, ctx(neighbours={"cat": ["the", "kitten"]}))
    assert edit.inserted == ("kitten",)  # a stopword is no semantic match
    with pytest.raises(ValueError, match="neighbours"):
        get_axiom("STMC1").edits("cat", DOC, AxiomContext())


def test_control_appends_filler_placeholders() -> None:
    (edit,) = get_axiom("control").edits("cat", DOC, ctx(filler_words=2))
    assert edit.inserted == (FILLER, FILLER)


@pytest.mark.parametrize("name", BUILTIN_AXIOMS)
def test_empty_inputs_are_not_applicable(name: str) -> None:
    context = ctx(neighbours={"cat": ["kitten"]}, unrelated=["rain fell"])
    with pytest.raises(NotApplicable, match="empty query"):
        get_axiom(name).edits("  ", DOC, context)
    with pytest.raises(NotApplicable, match="empty document"):
        get_axiom(name).edits("cat", " \n", context)


@pytest.mark.parametrize("name", ["TFC1", "TFC2", "TDC", "M-TDC", "STMC1"])
def test_stopword_only_query_is_not_applicable(name: str) -> None:
    with pytest.raises(NotApplicable):
        get_axiom(name).edits("what is the", DOC, ctx(neighbours={}))


def test_edit_validation() -> None:
    with pytest.raises(ValueError, match="insert something"):
        Edit(())
    with pytest.raises(ValueError, match="offset"):
        Edit(("x",), position=-1)
    with pytest.raises(ValueError, match="position"):
        Edit(("x",), position="middle")


@pytest.mark.usefixtures("scratch_registry")
def test_user_axiom_with_declared_direction() -> None:
    @axiom("test-prefix-term", direction="increase")
    def prefix_term(query: str, document: str, context: AxiomContext) -> Edit:
        """Put the first query term before the document."""
        return Edit((query_terms(query)[0],), position="start")

    assert isinstance(prefix_term, Axiom)
    assert get_axiom("test-prefix-term") is prefix_term
    assert prefix_term.direction is Direction.INCREASE
    assert prefix_term.description == "Put the first query term before the document."
    assert prefix_term.edits("cat dog", DOC) == (Edit(("cat",), position="start"),)


@pytest.mark.usefixtures("scratch_registry")
def test_decorator_refuses_bad_declarations() -> None:
    def fn(query, document, context):
        return Edit(("x",))

    with pytest.raises(ValueError, match="already registered"):
        axiom("TFC1", direction="increase", description="again")(fn)
    with pytest.raises(ValueError, match="description"):
        axiom("test-undocumented", direction="increase")(fn)
    with pytest.raises(ValueError):
        axiom("test-bad-direction", direction="sideways", description="x")
    with pytest.raises(ValueError, match="baseline"):
        axiom("test-bad-baseline", direction="increase", baseline="padding", description="x")
    with pytest.raises(ValueError, match="threshold"):
        axiom("test-bad-threshold", direction="increase", threshold=61, description="x")


@pytest.mark.usefixtures("scratch_registry")
def test_axiom_returning_garbage_is_a_clear_error() -> None:
    bad = axiom("test-garbage", direction="increase", description="returns text")(lambda q, d, c: "perturbed text")
    with pytest.raises(TypeError, match="must return an Edit"):
        bad.edits("cat", DOC)
