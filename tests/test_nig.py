"""Neuron Integrated Gradients, reranking lists and the pruning study (irmechtest.mechanisms.nig, .reranking)."""

import itertools
import json
import math
import re

import numpy as np
import pytest
import torch

from irmechtest.controls.planted_vocabulary import probe_corpus
from irmechtest.data.sources import load_pairs
from irmechtest.mechanisms.nig import (
    BASELINES,
    NEUTRAL_BAND,
    Attribution,
    BaselineCheck,
    baseline_checks,
    baseline_embeddings,
    choose_baseline,
    conductance,
    neuron_integrated_gradients,
    neuron_layout,
)
from irmechtest.mechanisms.pruning import Reranker, fusion, intersection, pruning_study, random_like, top_fraction
from irmechtest.mechanisms.reranking import (
    LabelledPair,
    bm25_scores,
    build_lists,
    corpus_data,
    flatten,
    ndcg_at_k,
    per_list_ndcg,
    trec_sample_data,
)

# Small sizes: the planted model is 3 layers x 4 heads, so the study runs in seconds.
STEPS, BUDGET, REPEATS = 20, 256, 5


@pytest.fixture(scope="module")
def data():
    return corpus_data(probe_corpus(), n_queries=10, n_negatives=9, n_pairs=16, seed=0)


@pytest.fixture(scope="module")
def attributions(planted, twin, data) -> dict[str, Attribution]:
    return {
        name: neuron_integrated_gradients(model, data.attribution, steps=STEPS, batch_budget=BUDGET)
        for name, model in (("planted", planted), ("twin", twin))
    }


# ------------------------------------------------------------------------------------- nDCG and lists
def test_ndcg_matches_hand_computed_values():
    assert ndcg_at_k([0.9, 0.8, 0.1], [0, 1, 0]) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([0.1, 0.8, 0.9], [1, 0, 0]) == pytest.approx(0.5)
    # Graded: order doc1 (2), doc2 (0), doc0 (3): DCG 2 + 3/2; ideal 3 + 2/log2(3).
    assert ndcg_at_k([0.1, 0.9, 0.5], [3, 2, 0]) == pytest.approx(3.5 / (3 + 2 / math.log2(3)))
    # The relevant passage at rank 11 earns nothing at cut-off 10.
    assert ndcg_at_k([0.0, *[1.0] * 10], [1, *[0] * 10]) == 0.0
    # Ties rank the relevant passage last: a flat ranker gets no credit.
    assert ndcg_at_k([1.0, 1.0, 1.0], [1, 0, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="without any relevant"):
        ndcg_at_k([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="same length"):
        ndcg_at_k([1.0], [1, 0])


def test_bm25_matches_a_hand_computed_value():
    # "a" in both passages: idf = ln(1 + 0.5 / 2.5); passage 1 has tf 1, length 2, average length 2.5.
    expected = math.log(1.2) * 1.9 / (1 + 0.9 * (0.6 + 0.4 * 2 / 2.5))
    assert bm25_scores("a", ["a b", "a a c"])[0] == pytest.approx(expected)


def test_bm25_lists_put_term_matches_first_and_respect_exclusions():
    pool = ["cats purr", "dogs bark loudly", "cats and dogs", "fish swim", "cats cats cats"]
    (lst,) = build_lists([("q", "cats", "cats purr")], pool, 2, lambda *_: False)
    assert lst.docs[0] == "cats purr" and lst.gains == (1, 0, 0)
    assert set(lst.docs[1:]) == {"cats and dogs", "cats cats cats"}
    (lst,) = build_lists([("q", "cats", "cats purr")], pool, 2, lambda _, __, doc: "cats" in doc)
    assert lst.docs[1:] == ("dogs bark loudly", "fish swim")  # BM25 ties keep pool order
    with pytest.raises(ValueError, match="eligible negatives"):
        build_lists([("q", "cats", "cats purr")], pool, 9, lambda *_: False)


def test_trec_sample_lists_and_attribution_pairs_use_disjoint_queries():
    data = trec_sample_data(n_queries=10, n_negatives=20, n_pairs=16, seed=0)
    assert len(data.lists) == 10 and all(len(lst.docs) == 21 and lst.gains[0] == 1 for lst in data.lists)
    assert {lst.query for lst in data.lists}.isdisjoint({p.query for p in data.attribution})
    assert sum(p.relevant for p in data.attribution) == 8 and len(data.attribution) == 16


def test_excluded_queries_are_in_no_list_no_attribution_pair_and_no_negative(tmp_path):
    """Held-out lists: a model's training queries are left out of everything the pruning study reads; too few
    queries left, or a source without grades, is a clear error."""
    pairs = load_pairs()
    by_query = {p.query: p.qid for p in pairs}
    texts = {}
    for p in pairs:
        texts.setdefault(p.qid, set()).add(p.text)
    qids = sorted(texts)
    excluded = qids[: len(qids) // 2]
    data = trec_sample_data(n_queries=10, n_negatives=9, n_pairs=16, seed=0, exclude_queries=excluded)
    used = {by_query[lst.query] for lst in data.lists} | {by_query[p.query] for p in data.attribution}
    assert used and used.isdisjoint(excluded) and len(data.lists) == 10
    seen = {d for lst in data.lists for d in lst.docs} | {p.doc for p in data.attribution}
    only_excluded = set().union(*(texts[q] for q in excluded)) - set().union(*(texts[q] for q in qids[len(excluded) :]))
    assert seen.isdisjoint(only_excluded)
    assert data.source == f"irmechtest:trec-dl-tfc1-sample without {len(excluded)} excluded queries"
    with pytest.raises(ValueError, match=r"has \d+ queries with a passage of grade >= 2 after leaving out 70 excluded"):
        trec_sample_data(n_queries=10, n_negatives=9, n_pairs=16, seed=0, exclude_queries=qids[:70])
    ungraded = tmp_path / "ungraded.tsv"
    ungraded.write_text("qid\tdocno\tquery\ttext\nq\td\tcats\tcats purr\n")
    with pytest.raises(ValueError, match="without a relevance grade"):
        trec_sample_data(n_queries=1, n_negatives=1, n_pairs=2, seed=0, source=str(ungraded))


def test_reranker_matches_plain_scoring_in_input_order(planted, data):
    lists = data.lists[:3]
    queries, docs = flatten(lists)
    expected = per_list_ndcg(lists, planted.score(queries, docs))
    for layer in (0, 2):  # starting at a later layer from the cached residual changes nothing unpruned
        reranker = Reranker(planted, lists, layer, batch_size=7)
        np.testing.assert_allclose(reranker.base, expected)
        np.testing.assert_allclose(reranker.ndcg([]), expected)


def test_attribution_rows_follow_input_order(planted, data):
    pairs = data.attribution[:4]
    forward = neuron_integrated_gradients(planted, pairs, steps=4, batch_budget=5)
    backward = neuron_integrated_gradients(planted, pairs[::-1], steps=4, batch_budget=5)
    np.testing.assert_allclose(forward.values, backward.values[::-1], atol=1e-4)
    np.testing.assert_allclose(
        forward.scores, planted.score([p.query for p in pairs], [p.doc for p in pairs]), atol=1e-4
    )


# ----------------------------------------------------------------------------------------- conductance
def _residual_cut(model) -> list[str]:
    """Each layer's resid_pre is a cut between the input and the score: completeness must hold there."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]


@pytest.mark.parametrize("which", ["planted", "twin"])
def test_completeness_error_shrinks_as_one_over_n_squared(which, planted, twin, data):
    model = planted if which == "planted" else twin
    pairs = data.attribution[:2] + data.attribution[-2:]
    batch = model.tokenize([p.query for p in pairs], [p.doc for p in pairs])
    errors = []
    for steps in (20, 40, 80, 160):
        c = conductance(model, batch, _residual_cut(model), steps=steps, batch_budget=BUDGET)
        scale = np.abs(c.scores - c.baseline_scores).max()
        errors.append(max(c.completeness_error(h).max() for h in c.values) / scale)
    # Trapezoid rule: halving the step divides the error by about 4; we require 3 per halving up to N = 80
    # (beyond, the twin reaches float32's floor), and 1 % at N = 160 (the planted model's steep attention
    # logits leave about 1.2 % at N = 80).
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3, errors
    assert errors[3] < 0.01, errors


@pytest.mark.parametrize("baseline", [b for b in BASELINES if b != "pad"])
def test_completeness_holds_from_every_baseline(baseline, planted, data):
    pairs = data.attribution[:2] + data.attribution[-2:]
    batch = planted.tokenize([p.query for p in pairs], [p.doc for p in pairs])
    errors = []
    for steps in (20, 40, 80, 160):
        c = conductance(planted, batch, _residual_cut(planted), steps=steps, batch_budget=BUDGET, baseline=baseline)
        scale = np.abs(c.scores - c.baseline_scores).max()
        errors.append(max(c.completeness_error(h).max() for h in c.values) / scale)
    # The same 1/N^2 convergence as from [PAD] (measured: 0.09-0.33 % at N = 160 from every baseline).
    assert all(finer < coarser / 3 for coarser, finer in itertools.pairwise(errors)) and errors[3] < 0.01, errors


def test_riemann_nig_converges_to_a_finer_step_reference(planted, data):
    pairs = data.attribution[:4]
    layout = neuron_layout(planted)
    reference = neuron_integrated_gradients(planted, pairs, steps=320, batch_budget=4096, layout=layout).values
    scale = np.abs(reference).max()
    gaps = [
        np.abs(
            neuron_integrated_gradients(planted, pairs, steps=n, batch_budget=BUDGET, layout=layout).values - reference
        ).max()
        / scale
        for n in (20, 40, 80, 160)
    ]
    assert all(finer < coarser for coarser, finer in itertools.pairwise(gaps)) and gaps[-1] < 0.01, gaps


def test_batched_steps_equal_one_step_per_forward(planted, data):
    pairs = data.attribution[:3]
    layout = neuron_layout(planted, modules=("value", "intermediate"))
    batched = neuron_integrated_gradients(planted, pairs, steps=10, batch_budget=1000, layout=layout)
    naive = neuron_integrated_gradients(planted, pairs, steps=10, batch_budget=1, layout=layout)
    np.testing.assert_allclose(batched.values, naive.values, atol=1e-4)
    np.testing.assert_allclose(batched.scores, naive.scores, atol=1e-4)


# ----------------------------------------------------------------------------------- baseline neutrality
def test_baselines_keep_the_input_shape_and_only_pad_special_keeps_special_tokens(planted, data):
    pairs = data.attribution[:2]
    batch = planted.tokenize([p.query for p in pairs], [p.doc for p in pairs])
    real = planted.embed(batch.input_ids)
    special = torch.isin(batch.input_ids, torch.tensor(planted.tokenizer.all_special_ids))
    for name in BASELINES:
        base = baseline_embeddings(planted, batch, name)
        assert base.shape == real.shape
        kept = torch.isclose(base, real).all(dim=-1)
        assert kept[special].all() == (name == "pad-special") and not kept[~special].any(), name
    with pytest.raises(ValueError, match="baseline must be one of"):
        baseline_embeddings(planted, batch, "unk")


def test_all_pad_baseline_looks_relevant_to_the_planted_model_and_auto_avoids_it(planted, data):
    # Every query [PAD] matches every document [PAD]: the matching heads fire everywhere and the all-[PAD]
    # input scores above every real pair (13.4), far past the relevant pairs' median (position > 1).
    checks = {c.name: c for c in baseline_checks(planted, data.attribution)}
    assert checks["pad"].position > 1 and not checks["pad"].neutral
    assert "NOT neutral" in checks["pad"].describe()
    chosen = choose_baseline(list(checks.values()), "auto")
    assert chosen.name == "pad-special"  # special tokens kept: no [PAD]-[PAD] match, scores like non-relevant
    assert abs(chosen.position - 0.5) == min(abs(c.position - 0.5) for c in checks.values())
    assert choose_baseline(list(checks.values()), "zero").name == "zero"
    with pytest.raises(ValueError, match="baseline must be 'auto' or one of"):
        choose_baseline(list(checks.values()), "unk")
    with pytest.raises(ValueError, match="needs relevant and non-relevant"):
        baseline_checks(planted, [p for p in data.attribution if p.relevant])


def test_choose_baseline_rule():
    def check(name: str, position: float) -> BaselineCheck:
        return BaselineCheck(name, position, 0.0, -1.0, 1.0)

    assert choose_baseline([check("pad", 0.9), check("zero", 0.4), check("mean", 0.6)], "auto").name == "zero"
    assert choose_baseline([check("pad", 0.4), check("zero", 0.6)], "auto").name == "pad"  # tie: earlier
    # No scale (relevant pairs do not score above non-relevant ones): seed 001's [PAD], reported as undefined.
    undefined = choose_baseline([check("zero", math.nan), check("pad", math.nan)], "auto")
    assert undefined.name == "pad" and not undefined.neutral and "undefined" in undefined.describe()
    assert [check("x", p).neutral for p in (0.2, 0.25, 0.5, 0.75, 0.8)] == [False, True, True, True, False]


def test_zoo_ranker_finds_all_pad_relevant_and_gets_a_neutral_baseline(zoo):
    from irmechtest.loading import load_ranker

    ranker = load_ranker(str(zoo("ce-minilm-trecdl-s1")))
    checks = baseline_checks(ranker, trec_sample_data(n_queries=10, n_negatives=9, n_pairs=8, seed=0).attribution)
    by_name = {c.name: c for c in checks}
    # The observation: all-[PAD] scores like a relevant pair on the trained ranker.
    assert by_name["pad"].position > NEUTRAL_BAND[1], by_name["pad"].describe()
    assert choose_baseline(checks, "auto").neutral, [c.describe() for c in checks]


# ------------------------------------------------------------------------------------------ selection
def test_layout_names_every_linear_output_neuron(planted):
    layout = neuron_layout(planted)
    cfg = planted.cfg
    assert layout.n_neurons == cfg.n_layers * (5 * cfg.d_model + cfg.d_mlp)
    value_96 = next(b for b in layout.blocks if (b.layer, b.module) == (2, "value")).start + 96
    assert str(layout.neuron(value_96)) == "2.value.96"
    assert layout.cell(value_96).index == (slice(None), 3, 0)  # head 3, first value dimension


def test_selection_intersection_fusion_and_random_control():
    importance = np.array([0.1, 5.0, 3.0, -1.0, 4.0, 0.0, 2.0, 1.0, 0.5, 0.2])
    assert top_fraction(importance, 0.3).tolist() == [1, 4, 2]
    assert top_fraction(importance, 0.01).tolist() == [1]  # at least one neuron
    assert intersection(np.array([1, 4, 2]), np.array([2, 1, 7])).tolist() == [1, 2]
    np.testing.assert_allclose(fusion(importance, -importance), 0.0)


def test_random_control_matches_layers_and_modules(planted):
    layout = neuron_layout(planted)
    selected = np.array([5, 900, 901, 2600])
    drawn = random_like(layout, selected, np.random.default_rng(0))
    blocks = [(layout.block_of(int(i)).layer, layout.block_of(int(i)).module) for i in (*drawn, *selected)]
    assert sorted(blocks[: len(drawn)]) == sorted(blocks[len(drawn) :])
    assert len(set(drawn.tolist())) == len(selected)


# ----------------------------------------------------------------------------- planted vs random twin
def _finds_heads(attribution: Attribution, heads: set[tuple[int, int]]) -> tuple[bool, list[str]]:
    """Whether the top 0.1 % fusion neurons are q/k/v neurons of ``heads``, and the q/k/v neurons of the
    top 1 % cover exactly ``heads`` (attention-output and FFN neurons mix heads, so they are not counted)."""
    layout, scheme = attribution.layout, attribution.scheme("fusion")
    top = [layout.neuron(int(i)) for i in top_fraction(scheme, 0.001)]
    wide = [layout.neuron(int(i)) for i in top_fraction(scheme, 0.01)]
    head_of = {n: (n.layer, n.index // layout.d_head) for n in wide if n.module in ("query", "key", "value")}
    ok = all(head_of.get(n) in heads for n in top) and set(head_of.values()) == heads
    return ok, [str(n) for n in top]


def test_top_nig_neurons_are_the_planted_heads_and_not_the_twins(planted_truth, attributions):
    truth = planted_truth
    heads = {*truth.matching_heads, *truth.scoring_heads, *truth.contextualisation_heads}
    ok, top = _finds_heads(attributions["planted"], heads)
    assert ok, top
    assert "2.value.96" in top  # the scoring head's value: everything the matching heads found, read by [CLS]
    # The same claim on the random twin fails.
    assert not _finds_heads(attributions["twin"], heads)[0]


def random_order_ndcg_bound(lists) -> float:
    """One-sided 95 % upper bound on the mean nDCG@10 of lists ranked in uniformly random order, each list
    with one relevant passage: its nDCG is 1 / log2(rank + 1) with the rank uniform over the list."""
    means, variances = [], []
    for lst in lists:
        assert sorted(lst.gains)[-2:] == [0, 1], "one relevant passage per list"
        gains = 1 / np.log2(np.arange(2, min(len(lst.gains), 10) + 2))
        gains = np.concatenate([gains, np.zeros(len(lst.gains) - gains.size)])
        means.append(gains.mean())
        variances.append(gains.var())
    return float(np.mean(means) + 1.645 * np.sqrt(np.sum(variances)) / len(lists))


def test_pruning_top_neurons_hurts_planted_more_than_random_but_not_the_twin(planted, twin, attributions, data):
    results = {}
    for name, model in (("planted", planted), ("twin", twin)):
        attribution = attributions[name]
        selected = top_fraction(attribution.scheme("fusion"), 0.001)
        results[name] = pruning_study(model, data.lists, attribution.layout, selected, repeats=REPEATS, seed=0)
    planted_result, twin_result = results["planted"], results["twin"]
    assert planted_result.p_vs_random < 0.05
    # Pruning the scoring head's value leaves a flat score: the lists come out no better than in random order.
    assert planted_result.pruned.mean() < random_order_ndcg_bound(data.lists)
    assert abs(planted_result.drop_pct(planted_result.random)) < 1
    assert planted_result.queries_moved == int((planted_result.pruned != planted_result.base).sum()) > 0
    assert twin_result.p_vs_random >= 0.05, twin_result.table()


# --------------------------------------------------------------------------------------------- errors
def test_bad_inputs_are_refused(planted, data):
    pairs = data.attribution[:1]
    batch = planted.tokenize([pairs[0].query], [pairs[0].doc])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        conductance(planted, batch, ["blocks.0.hook_resid_pre"], steps=0, batch_budget=8)
    with pytest.raises(ValueError, match="batch_budget"):
        conductance(planted, batch, ["blocks.0.hook_resid_pre"], steps=2, batch_budget=0)
    with pytest.raises(ValueError, match="hook_nothing"):
        conductance(planted, batch, ["blocks.0.hook_nothing"], steps=2, batch_budget=8)
    with pytest.raises(ValueError, match="no pairs"):
        neuron_integrated_gradients(planted, [], steps=2, batch_budget=8)
    with pytest.raises(ValueError, match="modules must be"):
        neuron_layout(planted, modules=("query", "output"))
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            top_fraction(np.ones(10), fraction)
    attribution = neuron_integrated_gradients(
        planted, [LabelledPair(pairs[0].query, pairs[0].doc, True)], steps=2, batch_budget=8
    )
    with pytest.raises(ValueError, match="scheme must be"):
        attribution.scheme("irrelevant")
    with pytest.raises(ValueError, match="no non-relevant pair"):
        attribution.scheme("non-relevant")
    layout = attribution.layout
    with pytest.raises(ValueError, match="repeats"):
        pruning_study(planted, data.lists, layout, np.array([1]), repeats=1, seed=0)
    with pytest.raises(ValueError, match="no neurons"):
        pruning_study(planted, data.lists, layout, np.array([], dtype=int), repeats=2, seed=0)
    with pytest.raises(ValueError, match="no reranking lists"):
        pruning_study(planted, [], layout, np.array([1]), repeats=2, seed=0)


# ---------------------------------------------------------------------------------------- suite property
def test_suite_property_passes_on_planted_with_labelled_components(pytester):
    result = pytester.runpytest_subprocess(
        "--model=irmechtest:planted-bm25",
        "-k",
        "test_pruning_top_nig_neurons",
        f"--irmech-json={pytester.path / 'v.json'}",
    )
    result.assert_outcomes(passed=1)
    (verdict,) = json.loads((pytester.path / "v.json").read_text())["verdicts"]
    assert verdict["property"] == "nig-pruning" and verdict["value"] < 0.05
    details = verdict["details"]
    # The first component is a q/k/v neuron of the planted scoring head 2.3 (d_head 32: index 96 is head 3).
    assert re.fullmatch(r"2\.(query|key|value)\.(9[6-9]|1[01]\d|12[0-7])", details["components"][0])
    # All-[PAD] scores above every planted pair; auto takes pad-special (nearest the cut, still not neutral).
    assert details["baseline"] == "pad-special" and details["baseline_positions"]["pad"] > 1
    assert all(re.fullmatch(r"\d+\.[a-z_]+\.\d+", c) for c in details["components"])
    assert details["seed"] == 0 and details["n_pairs"] == 8 and 0 < details["n_queries_moved"] <= 10
    kinds = {e["kind"]: e["data"] for e in verdict["evidence"]}
    assert len(kinds["heatmap"]["row_labels"]) == 3 and len(kinds["heatmap"]["col_labels"]) == 6
    assert kinds["table"]["rows"][1][0] == "NIG top"
