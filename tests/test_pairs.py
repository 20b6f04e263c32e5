"""Token-level minimal pairs: property tests for every axiom, maximum-length handling, rejections."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from irmechtest.data.catalogue import BUILTIN_AXIOMS, AxiomContext, NotApplicable
from irmechtest.data.pairs import AxiomCase, MinimalPair, PairBuilder, PairRejected, build_pairs, case_rng
from irmechtest.data.sources import QueryDocPair, load_pairs
from irmechtest.data.strategies import AxiomExample, axiom_examples, build_example

PROPERTY_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE vocabulary (RoBERTa-style specials and offsets), trained here on the sample, so
    the pair builder is shown to work beyond WordPiece with no download."""
    sample = load_pairs(limit=120, seed=1)
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=["<s>", "</s>", "<pad>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([p.query for p in sample] + [p.text for p in sample], trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=512,
    )


@pytest.fixture(params=["wordpiece", "bpe"])
def any_tokenizer(request: pytest.FixtureRequest, tokenizer, bpe_tokenizer):
    return tokenizer if request.param == "wordpiece" else bpe_tokenizer


def compact(text: str) -> str:
    return "".join(text.lower().split())


def assert_minimal_pair(tokenizer, step: MinimalPair) -> None:
    """Equal lengths, the recorded positions are exactly where the inputs differ, they lie in the slot,
    and the slot holds the edit's words (with filler) on each side."""
    b, p = step.baseline_ids, step.perturbed_ids
    assert len(b) == len(p)
    assert step.positions == tuple(i for i in range(len(p)) if b[i] != p[i])
    start, end = step.slot
    assert all(start <= i < end for i in step.positions)
    assert compact(tokenizer.decode(p[start:end])) == compact(" ".join(step.perturbed_words))
    assert compact(tokenizer.decode(b[start:end])) == compact(" ".join(step.baseline_words))
    if set(step.baseline_words) <= {step.filler}:  # a pure insertion: the positions are the inserted tokens
        inserted = [w for w in step.perturbed_words if w != step.filler]
        assert compact(tokenizer.decode([p[i] for i in step.positions])) == compact(" ".join(inserted))
    assert {t.strip("Ġ▁") for t in tokenizer.convert_ids_to_tokens(list(step.filler_ids))} == {step.filler}
    for ids, slot_words in ((p, step.perturbed_words), (b, step.baseline_words)):  # filler only where it pads
        assert sum(i in step.filler_ids for i in ids[start:end]) == slot_words.count(step.filler)
    # Text level: the two documents share every word outside one contiguous stretch.
    bw, pw = step.baseline_text.split(), step.perturbed_text.split()
    head = next((i for i, (x, y) in enumerate(zip(bw, pw, strict=False)) if x != y), min(len(bw), len(pw)))
    tail = next((i for i, (x, y) in enumerate(zip(bw[::-1], pw[::-1], strict=False)) if x != y), 0)
    assert len(pw) - head - tail <= len(step.perturbed_words)


def assert_expected_ids(tokenizer, step: MinimalPair, kind: str) -> None:
    """The ids are exactly what the tokenizer gives for the texts, i.e. what the model will see."""
    for text, ids in ((step.baseline_text, step.baseline_ids), (step.perturbed_text, step.perturbed_ids)):
        encoded = tokenizer(step.query, text) if kind == "cross-encoder" else tokenizer(text)
        assert tuple(encoded["input_ids"]) == ids


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
@pytest.mark.parametrize("name", BUILTIN_AXIOMS)
def test_every_axiom_builds_verified_minimal_pairs(name: str, kind: str, any_tokenizer) -> None:
    builder = PairBuilder(any_tokenizer, kind=kind, max_length=512)
    built = []

    @PROPERTY_SETTINGS
    @given(axiom_examples(name))
    def check(example: AxiomExample) -> None:
        case = build_example(builder, name, example)
        assume(case is not None)
        built.append(case)
        assert build_example(builder, name, example) == case, "the same example builds the same pairs"
        assert len(case.steps) == (example.context.occurrences if name == "TFC2" else 1)
        for step in case.steps:
            assert_minimal_pair(any_tokenizer, step)
            assert_expected_ids(any_tokenizer, step, kind)
            if name != "control":
                assert step.positions, "a real edit changes at least one token"

    check()
    assert built, "no applicable example was drawn"


@pytest.mark.parametrize("name", BUILTIN_AXIOMS)
def test_generation_is_deterministic_for_a_seed(name: str, tokenizer) -> None:
    pairs = load_pairs(limit=40, seed=3)
    context = AxiomContext(idf=lambda w: float(len(w)), neighbours={"definition": ["meaning"]})
    first = build_pairs(tokenizer, name, pairs, seed=7, context=context)
    again = build_pairs(tokenizer, name, pairs, seed=7, context=context)
    assert first.cases == again.cases and first.md5() == again.md5()
    assert (first.not_applicable, first.rejected) == (again.not_applicable, again.rejected)
    # a case depends on its own pair only, not on which other pairs are built with it
    alone = build_pairs(tokenizer, name, pairs[5:6], seed=7, context=context, unrelated=["rain fell on the hills"])
    twice = build_pairs(tokenizer, name, pairs[5:6], seed=7, context=context, unrelated=["rain fell on the hills"])
    assert alone.cases == twice.cases


def test_seed_changes_the_random_choices(tokenizer) -> None:
    pairs = load_pairs(limit=60, seed=3)
    a, b = build_pairs(tokenizer, "TFC1", pairs, seed=1), build_pairs(tokenizer, "TFC1", pairs, seed=2)
    assert a.md5() != b.md5()


def position_case(tokenizer, kind: str, position) -> AxiomCase:
    builder = PairBuilder(tokenizer, kind=kind, max_length=512)
    return builder.build("TFC1", "barn", "the cat sat on the mat", AxiomContext(position=position))


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_positions_index_the_model_input(tokenizer, kind: str) -> None:
    offset = 3 if kind == "cross-encoder" else 1  # [CLS] barn [SEP] | [CLS]
    for position, word_index in (("start", 0), (2, 2), ("end", 6)):
        (step,) = position_case(tokenizer, kind, position).steps
        assert step.positions == (offset + word_index,)
        assert tokenizer.convert_ids_to_tokens(step.perturbed_ids[offset + word_index]) == "barn"
        assert tokenizer.convert_ids_to_tokens(step.baseline_ids[offset + word_index]) == step.filler


def test_filler_never_matches_the_query(tokenizer) -> None:
    builder = PairBuilder(tokenizer, max_length=512)
    (step,) = builder.build("TFC1", "a barn of the farm", "the cat sat", AxiomContext()).steps
    assert step.filler not in {"a", "of", "the"}
    assert builder.build("TFC1", "barn", "the cat sat", AxiomContext()).steps[0].filler == "a"


LONG_DOC = " ".join(f"word{i % 50} filler text" for i in range(300))


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
@pytest.mark.parametrize(("name", "position"), [("TFC1", "end"), ("TFC1", "start"), ("LNC2", "end")])
def test_overflow_shortens_the_document_and_keeps_the_edit(tokenizer, kind, name, position) -> None:
    builder = PairBuilder(tokenizer, kind=kind, max_length=64)
    case = builder.build(name, "barn owl", LONG_DOC, AxiomContext(position=position))
    assert case.dropped_words > 0
    assert len(case.document.split()) + case.dropped_words == len(LONG_DOC.split())
    assert LONG_DOC.startswith(case.document)
    for step in case.steps:
        assert len(step.perturbed_ids) <= 64
        assert_minimal_pair(tokenizer, step)
    if name == "TFC1":
        (step,) = case.steps
        assert [tokenizer.convert_ids_to_tokens(step.perturbed_ids[i]) for i in step.positions] in (["barn"], ["owl"])
    # the shortening is as small as it can be: one more word would not fit
    longer = " ".join(LONG_DOC.split()[: len(case.document.split()) + 1])
    with pytest.raises(PairRejected, match="exceeds max_length"):
        PairBuilder(tokenizer, kind=kind, max_length=64, overflow="reject").build(
            name, "barn owl", longer, AxiomContext(position=position)
        )


def test_cross_encoder_budget_shrinks_with_the_query(tokenizer) -> None:
    short = PairBuilder(tokenizer, kind="cross-encoder", max_length=64).build("TFC1", "barn", LONG_DOC)
    long_query = "barn " + " ".join(f"term{i}" for i in range(20))
    long = PairBuilder(tokenizer, kind="cross-encoder", max_length=64).build("TFC1", long_query, LONG_DOC)
    assert long.dropped_words > short.dropped_words
    bi = PairBuilder(tokenizer, kind="bi-encoder", max_length=64).build("TFC1", long_query, LONG_DOC)
    assert bi.dropped_words < long.dropped_words


def test_overflow_rejections_are_counted(tokenizer) -> None:
    pairs = [QueryDocPair("1", "d1", "barn owl", LONG_DOC), QueryDocPair("2", "d2", "barn", "a short text")]
    rejected = build_pairs(tokenizer, "TFC1", pairs, max_length=64, overflow="reject")
    assert len(rejected.cases) == 1 and rejected.rejected == {"exceeds max_length": 1}
    shortened = build_pairs(tokenizer, "TFC1", pairs, max_length=64)
    assert len(shortened.cases) == 2 and shortened.shortened == 1 and not shortened.rejected
    assert "1 shortened" in shortened.summary()


def test_edit_that_cannot_fit_is_rejected(tokenizer) -> None:
    sentence = " ".join(f"unrelated{i}" for i in range(80))
    builder = PairBuilder(tokenizer, kind="bi-encoder", max_length=32)
    with pytest.raises(PairRejected, match="exceeds max_length"):
        builder.build("LNC1", "barn", "the cat sat", AxiomContext(unrelated=[sentence]))
    giant_query = " ".join(f"q{i}" for i in range(40))
    with pytest.raises(PairRejected, match="exceeds max_length"):
        PairBuilder(tokenizer, kind="cross-encoder", max_length=32).build("TFC1", giant_query, "the cat sat")


def test_bad_inputs_give_counted_rejections(tokenizer) -> None:
    pairs = [
        QueryDocPair("1", "a", "", "some text"),
        QueryDocPair("2", "b", "barn", "   "),
        QueryDocPair("3", "c", "what is the", "some text"),  # no content term
        QueryDocPair("4", "d", "ᏣᎳᎩ", "some text"),  # the only term is [UNK] in this vocabulary
        QueryDocPair("5", "e", "barn", "the cat sat"),
    ]
    result = build_pairs(tokenizer, "TFC1", pairs)
    assert len(result.cases) == 1
    assert result.rejected == {"empty query": 1, "empty document": 1}
    assert result.not_applicable == {
        "no content term in the query": 1,
        "edit has tokens unknown to the vocabulary": 1,
    }
    builder = PairBuilder(tokenizer)
    with pytest.raises(PairRejected, match="empty query"):
        builder.build("TFC1", " ", "text")
    with pytest.raises(NotApplicable, match="unknown to the vocabulary"):
        builder.build("TFC1", "ᏣᎳᎩ", "text")


def test_offset_beyond_the_document_is_rejected(tokenizer) -> None:
    with pytest.raises(PairRejected, match="offset beyond document"):
        PairBuilder(tokenizer).build("TFC1", "barn", "two words", AxiomContext(position=5))


def test_builder_argument_checks(tokenizer) -> None:
    with pytest.raises(ValueError, match="kind"):
        PairBuilder(tokenizer, kind="poly-encoder")
    with pytest.raises(ValueError, match="overflow"):
        PairBuilder(tokenizer, overflow="truncate")

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(TypeError, match="fast"):
        PairBuilder(SlowTokenizer())


def test_builder_never_truncates_even_if_the_callers_tokenizer_does(tokenizer) -> None:
    tokenizer("x " * 600, truncation=True, max_length=16)  # leaves truncation set on the shared backend
    builder = PairBuilder(tokenizer, kind="bi-encoder", max_length=4096)
    case = builder.build("TFC1", "barn", LONG_DOC)
    assert case.dropped_words == 0 and len(case.steps[0].perturbed_ids) > 600


def test_default_max_length_comes_from_the_tokenizer(tokenizer) -> None:
    assert PairBuilder(tokenizer).max_length == tokenizer.model_max_length == 512


def test_lnc1_draws_unrelated_text_from_other_queries(tokenizer) -> None:
    pairs = load_pairs(limit=60, seed=0)
    result = build_pairs(tokenizer, "LNC1", pairs)
    by_qid = {}
    for p in pairs:
        by_qid.setdefault(p.qid, []).append(p.text)
    for case in result.cases:
        step = case.steps[0]
        appended = " ".join(step.perturbed_words)
        assert not any(appended in text for text in by_qid[case.qid])
        assert any(appended in " ".join(text.split()) for q, texts in by_qid.items() if q != case.qid for text in texts)


def test_build_many_matches_single_builds(tokenizer) -> None:
    """The batched path and the one-pair path produce the same pairs."""
    pairs = load_pairs(limit=15, seed=4)
    batched = build_pairs(tokenizer, "TFC2", pairs, seed=0)
    builder = PairBuilder(tokenizer)
    for case in batched.cases:
        pair = next(p for p in pairs if p.qid == case.qid and p.docno == case.docno)
        context = AxiomContext(rng=case_rng(0, "TFC2", pair))
        single = builder.build("TFC2", pair.query, pair.text, context, qid=pair.qid, docno=pair.docno)
        assert single.steps == case.steps
