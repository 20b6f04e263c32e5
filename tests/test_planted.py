"""The planted model does what its truth says, checked through the plain Hugging Face forward pass.

The whole suite trusts this model as ground truth, so every claim in ``PlantedTruth`` and in
``docs/planted.md`` is measured here on the real ``BertForSequenceClassification`` (LayerNorms included),
and the random twin is checked to show none of it.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BatchEncoding,
    BertForSequenceClassification,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from irmechtest.controls.planted import (
    FILLER_WORD,
    HEAD_DIM,
    PlantedModel,
    build_planted_model,
    build_random_twin,
    sample_pairs,
    save_planted,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The model is tiny: one intra-op thread is as fast alone and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted() -> PlantedModel:
    return build_planted_model(0)


@pytest.fixture(scope="module")
def twin() -> PlantedModel:
    return build_random_twin(0)


def scores(
    pm: PlantedModel, queries: list[str], documents: list[str], model: BertForSequenceClassification | None = None
) -> np.ndarray:
    enc = pm.tokenizer(queries, documents, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return (model or pm.model)(**enc).logits[:, 0].numpy()


def unrelated_words(pm: PlantedModel, query: list[str], rng: random.Random, k: int) -> list[str]:
    """Content words sharing no meaning with the query."""
    banned = {w for q in query for w in (q, *pm.truth.synonyms.get(q, []))}
    pool = [w for w in pm.truth.content_words if w not in banned]
    return rng.sample(pool, k)


def tfc1_cases(pm: PlantedModel, n: int, seed: int) -> list[dict[str, str]]:
    """Query, a document without query words, and three words to append: a query term, an unrelated
    word, the filler."""
    rng = random.Random(seed)
    cases = []
    for query, _ in sample_pairs(n, seed):
        words = query.split()
        other = unrelated_words(pm, words, rng, rng.randint(6, 13))
        cases.append(
            {
                "query": query,
                "doc": " ".join(other[:-1]),
                "term": rng.choice(words),
                "random": other[-1],
                "filler": FILLER_WORD,
            }
        )
    return cases


def appended(cases: list[dict[str, str]], key: str) -> list[str]:
    return [f"{c['doc']} {c[key]}" for c in cases]


def tfc1_effect(
    pm: PlantedModel, cases: list[dict[str, str]], model: BertForSequenceClassification | None = None
) -> float:
    queries = [c["query"] for c in cases]
    both = scores(pm, queries * 2, appended(cases, "term") + appended(cases, "filler"), model)
    return float(np.mean(both[: len(cases)] - both[len(cases) :]))


def ablated(pm: PlantedModel, heads: list[tuple[int, int]]) -> BertForSequenceClassification:
    """A copy whose given heads write nothing (their slice of the output projection zeroed)."""
    model = copy.deepcopy(pm.model)
    with torch.no_grad():
        for layer, head in heads:
            dense = model.bert.encoder.layer[layer].attention.output.dense.weight
            dense[:, head * HEAD_DIM : (head + 1) * HEAD_DIM] = 0
    return model


def u0(pm: PlantedModel) -> tuple[np.ndarray, torch.Tensor]:
    """The top left singular vector of W_E (over the vocabulary) and the top right one (in the residual)."""
    weight = pm.model.bert.embeddings.word_embeddings.weight.detach().double()
    left, _, right = torch.linalg.svd(weight, full_matrices=False)
    return left[:, 0].numpy(), right[0]


def word_ids(pm: PlantedModel, words: list[str]) -> list[int]:
    return pm.tokenizer.convert_tokens_to_ids(words)


def test_builds_are_deterministic_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    for build in (build_planted_model, build_random_twin):
        first, second = build(0).model.state_dict(), build(0).model.state_dict()
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)
        name = "bert.embeddings.word_embeddings.weight"
        assert not torch.equal(first[name], build(1).model.state_dict()[name])
    assert torch.equal(state, torch.random.get_rng_state())


def test_a_real_small_bert_cross_encoder(planted: PlantedModel, twin: PlantedModel) -> None:
    config = planted.model.config
    assert type(planted.model).__name__ == "BertForSequenceClassification"
    assert (config.num_labels, config.num_hidden_layers, config.num_attention_heads) == (1, 3, 4)
    assert config.to_dict() == twin.model.config.to_dict()
    assert not planted.model.training
    assert all(p.dtype == torch.float32 for p in planted.model.parameters())
    tok = planted.tokenizer
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id] == [0, 1, 2, 3]
    enc = tok(["Doctor salary?"], ["The physician earns a large salary."])
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    query_part = ["[CLS]", "doctor", "salary", "?", "[SEP]"]
    assert tokens == [*query_part, "the", "physician", "[UNK]", "a", "large", "salary", ".", "[SEP]"]
    assert enc["token_type_ids"][0] == [0] * 5 + [1] * 8
    queries, documents = ["doctor salary", "car"], ["physician wage doctor", "a"]
    batched = scores(planted, queries, documents)
    alone = [scores(planted, [q], [d])[0] for q, d in zip(queries, documents, strict=True)]
    assert np.allclose(batched, alone, atol=1e-5)


def test_truth_is_consistent(planted: PlantedModel, twin: PlantedModel) -> None:
    truth = planted.truth
    assert truth.matching_heads == [(0, 1), (0, 3), (1, 2)]
    assert truth.scoring_heads == [(2, 3)]
    assert truth.contextualisation_heads == [(1, 0)]
    into_scoring = {(m, (2, 3), "v") for m in [*truth.matching_heads, (1, 0)]}
    into_context = {(m, (1, 0), "v") for m in truth.matching_heads if m[0] == 0}
    assert {(s, r, kind) for s, r, kind in truth.edges} == into_scoring | into_context
    assert len(truth.head_roles) == 12
    assert all(w in truth.idf for w in truth.content_words)
    assert all(w in truth.synonyms[s] for w, group in truth.synonyms.items() for s in group)
    assert truth.idf_direction is not None and truth.idf_direction.shape == (128,)
    assert twin.truth.matching_heads == twin.truth.scoring_heads == twin.truth.edges == []
    assert twin.truth.contextualisation_heads == []
    assert twin.truth.idf_direction is None and twin.truth.idf == truth.idf
    json.dumps(truth.to_json())


def test_u0_of_the_embeddings_is_the_idf_direction(planted: PlantedModel, twin: PlantedModel) -> None:
    words = planted.truth.content_words
    idf = [planted.truth.idf[w] for w in words]
    left, right = u0(planted)
    assert abs(np.corrcoef(left[word_ids(planted, words)], idf)[0, 1]) > 0.95
    assert abs(float(right.float() @ planted.truth.idf_direction)) > 0.95
    left, _ = u0(twin)
    assert abs(np.corrcoef(left[word_ids(twin, words)], idf)[0, 1]) < 0.2


def test_tfc1_holds_on_planted_and_is_chance_on_the_twin(planted: PlantedModel, twin: PlantedModel) -> None:
    cases = tfc1_cases(planted, 200, seed=1)
    queries = [c["query"] for c in cases]
    with_term = scores(planted, queries, appended(cases, "term"))
    assert np.mean(with_term > scores(planted, queries, appended(cases, "filler"))) >= 0.95
    assert np.mean(with_term > scores(planted, queries, appended(cases, "random"))) >= 0.95
    # Against a fixed filler a random model prefers whatever its filler embedding happens to favour (3 % to
    # 83 % across twin seeds 0-3), so chance is measured against a random unrelated word per pair.
    rate = np.mean(scores(twin, queries, appended(cases, "term")) > scores(twin, queries, appended(cases, "random")))
    assert 0.35 <= rate <= 0.65


def test_tfc2_each_extra_occurrence_helps_less(planted: PlantedModel) -> None:
    rng = random.Random(2)
    queries, documents = [], []
    for query, _ in sample_pairs(60, seed=2):
        words = query.split()
        term, doc = rng.choice(words), unrelated_words(planted, words, rng, 8)
        queries += [query] * 5
        documents += [" ".join(doc + [term] * k + [FILLER_WORD] * (4 - k)) for k in range(5)]
    gains = np.diff(scores(planted, queries, documents).reshape(-1, 5), axis=1)
    assert (gains > 0).all()
    assert np.mean((np.diff(gains, axis=1) < 0).all(axis=1)) >= 0.95


def test_tdc_a_higher_idf_term_helps_more(planted: PlantedModel) -> None:
    rng = random.Random(3)
    idf, queries, documents = planted.truth.idf, [], []
    while len(queries) < 200:
        a, b = rng.sample(planted.truth.content_words, 2)
        if abs(idf[a] - idf[b]) < 0.5 or b in planted.truth.synonyms.get(a, []):
            continue
        high, low = sorted((a, b), key=idf.__getitem__, reverse=True)
        doc = " ".join(unrelated_words(planted, [a, b], rng, 8))
        queries += [f"{a} {b}"] * 2
        documents += [f"{doc} {high}", f"{doc} {low}"]
    high_low = scores(planted, queries, documents).reshape(-1, 2)
    assert np.mean(high_low[:, 0] > high_low[:, 1]) >= 0.95


def test_stmc1_a_synonym_helps_less_than_the_exact_term(planted: PlantedModel) -> None:
    rng = random.Random(4)
    queries, base, synonym, exact = [], [], [], []
    for query, _ in sample_pairs(400, seed=4):
        terms = [w for w in query.split() if w in planted.truth.synonyms]
        if not terms:
            continue
        term = rng.choice(terms)
        doc = " ".join(unrelated_words(planted, query.split(), rng, 9))
        queries.append(query)
        base.append(f"{doc} {FILLER_WORD}")
        synonym.append(f"{doc} {rng.choice(planted.truth.synonyms[term])}")
        exact.append(f"{doc} {term}")
    assert len(queries) >= 50
    s_base, s_syn, s_exact = (scores(planted, queries, docs) for docs in (base, synonym, exact))
    assert np.mean(s_syn > s_base) >= 0.95
    assert np.mean(s_exact > s_syn) >= 0.95


def test_ablating_matching_heads_removes_tfc1_and_other_heads_do_not(planted: PlantedModel) -> None:
    truth, cases = planted.truth, tfc1_cases(planted, 60, seed=5)
    full = tfc1_effect(planted, cases)
    assert full > 1.0
    assert tfc1_effect(planted, cases, ablated(planted, truth.matching_heads)) < 0.1 * full
    assert abs(tfc1_effect(planted, cases, ablated(planted, truth.scoring_heads))) < 0.05 * full
    for head in truth.matching_heads + truth.contextualisation_heads:
        assert tfc1_effect(planted, cases, ablated(planted, [head])) < 0.9 * full
    for head in truth.head_roles:
        if head not in truth.matching_heads + truth.scoring_heads + truth.contextualisation_heads:
            assert tfc1_effect(planted, cases, ablated(planted, [head])) == pytest.approx(full, rel=0.02)


def attentions(pm: PlantedModel, pairs: list[tuple[str, str]]) -> tuple[BatchEncoding, SequenceClassifierOutput]:
    """The encoded batch and the forward output with every layer's attention pattern."""
    queries, documents = zip(*pairs, strict=True)
    enc = pm.tokenizer(list(queries), list(documents), padding=True, return_tensors="pt")
    with torch.no_grad():
        out = pm.model(**enc, output_attentions=True)
    return enc, out


def test_scoring_head_cls_attention_follows_idf(planted: PlantedModel) -> None:
    pairs = [p for p in sample_pairs(200, seed=6) if len(p[0].split()) >= 2]
    _, out = attentions(planted, pairs)
    layer, head = planted.truth.scoring_heads[0]
    weights, idf = [], []
    for i, (query, _) in enumerate(pairs):
        n = len(query.split())
        weights.extend(out.attentions[layer][i, head, 0, 1 : n + 1].tolist())
        idf.extend(planted.truth.idf[w] for w in query.split())
    assert np.corrcoef(weights, idf)[0, 1] > 0.9


def test_matching_heads_attend_by_embedding_similarity(planted: PlantedModel) -> None:
    pairs = sample_pairs(120, seed=7)
    enc, out = attentions(planted, pairs)
    embeddings = torch.nn.functional.normalize(planted.model.bert.embeddings.word_embeddings.weight, dim=1)
    ids, segment = enc["input_ids"], enc["token_type_ids"] * enc["attention_mask"]
    by_head = {}
    for layer in range(3):
        for head in range(4):
            attn, cos = [], []
            for i, (query, _) in enumerate(pairs):
                q_pos = torch.arange(1, len(query.split()) + 1)
                d_pos = segment[i].nonzero()[:, 0][:-1]  # document words, without the final [SEP]
                attn.append(out.attentions[layer][i, head][q_pos][:, d_pos].flatten())
                cos.append((embeddings[ids[i, q_pos]] @ embeddings[ids[i, d_pos]].T).flatten().detach())
            by_head[(layer, head)] = np.corrcoef(torch.cat(attn), torch.cat(cos))[0, 1]
    matching = [by_head[h] for h in planted.truth.matching_heads]
    others = [r for h, r in by_head.items() if h not in planted.truth.matching_heads]
    assert min(matching) > 0.5
    assert min(matching) > max(others) + 0.3


def test_editing_the_u0_component_moves_the_score_monotonically(planted: PlantedModel) -> None:
    """Scale one word's U0 coordinate (its whole row, in query and document alike), as in the paper."""
    scales = (-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    _, right = u0(planted)
    direction = right.float()
    table = planted.model.bert.embeddings.word_embeddings.weight.detach()
    rng, queries, documents, edits = random.Random(8), [], [], []
    for query, _ in sample_pairs(30, seed=8):
        term = rng.choice(query.split())
        row = word_ids(planted, [term])[0]
        for scale in scales:
            queries.append(query)
            documents.append(f"{term} {term} {term}")
            edits.append((row, (scale - 1) * (table[row] @ direction) * direction))
    enc = planted.tokenizer(queries, documents, padding=True, return_tensors="pt")
    embeds = table[enc["input_ids"]].clone()
    for i, (row, shift) in enumerate(edits):
        embeds[i, enc["input_ids"][i] == row] += shift
    with torch.no_grad():
        logits = planted.model(
            inputs_embeds=embeds, token_type_ids=enc["token_type_ids"], attention_mask=enc["attention_mask"]
        ).logits
    curves = logits[:, 0].numpy().reshape(-1, len(scales))
    assert np.mean((np.diff(curves, axis=1) > 0).all(axis=1)) >= 0.95


def test_the_linear_circuit_fit_explains_the_score(planted: PlantedModel) -> None:
    """Per query token: -U0, the matching score (attention mass on the document), and their product."""
    pairs = [p for p in sample_pairs(1500, seed=9) if len(p[0].split()) == 3][:400]
    enc, out = attentions(planted, pairs)
    document = ((enc["token_type_ids"] == 1) & (enc["attention_mask"] == 1)).float()
    mass = sum(out.attentions[layer][:, head] for layer, head in planted.truth.matching_heads)
    matching_score = (mass @ document[:, :, None])[:, 1:4, 0].numpy()
    left, _ = u0(planted)
    minus_u0 = -left[enc["input_ids"][:, 1:4].numpy()]
    features = np.concatenate([minus_u0, matching_score, minus_u0 * matching_score, np.ones((len(pairs), 1))], axis=1)
    target = out.logits[:, 0].numpy()
    train = len(pairs) * 4 // 5
    coef, *_ = np.linalg.lstsq(features[:train], target[:train], rcond=None)
    assert np.corrcoef(features[train:] @ coef, target[train:])[0, 1] > 0.95


@pytest.mark.parametrize("random_twin", [False, True])
def test_save_planted_loads_back_as_an_ordinary_checkpoint(tmp_path: Path, random_twin: bool) -> None:
    out = save_planted(tmp_path / "model", random=random_twin)
    assert (out / "model.safetensors").exists()
    assert json.loads((out / "planted_truth.json").read_text())["idf"]["doctor"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    built = build_random_twin(0) if random_twin else build_planted_model(0)
    query, document = ["doctor salary"], ["a physician earns a salary"]
    with torch.no_grad():
        reloaded = model(**tokenizer(query, document, return_tensors="pt")).logits
    # 1e-4: the planted score amplifies float32 rounding about 40x (docs/planted.md, "Numerical gain"), and the
    # reloaded model may take Hugging Face's SDPA attention where the built one is eager.
    assert torch.allclose(reloaded[:, 0], torch.from_numpy(scores(built, query, document)), atol=1e-4)
