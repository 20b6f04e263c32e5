"""Patching engine: batched equals naive, planted circuits are found, degenerate inputs are refused."""

import numpy as np
import pytest
import torch

from irmechtest.controls.twins import random_cross_encoder
from irmechtest.mechanisms.ablation import ablation_hooks
from irmechtest.mechanisms.components import block_grid, head_grid, neuron_grid
from irmechtest.mechanisms.pair_runs import prepare_pairs
from irmechtest.mechanisms.patching import (
    _frozen_patches,
    _run_rows,
    activation_patching,
    attribution_patching,
    path_patching,
    screen_then_verify,
)
from irmechtest.models.ranker import InputError

# Length-matched TFC1-style pairs: a filler word becomes a query term (one token either way).
ENGLISH_PAIRS = [
    ("where do foxes live", "the red a lives in the forest", "the red fox lives in the forest"),
    ("price of coffee", "a is cheap in the market today", "coffee is cheap in the market today"),
]
PLANTED_PAIRS = [
    ("dog vaccine", "a cat the house is big", "vaccine cat the house is big"),
    ("river bank", "the a music is good", "the river music is good"),
    ("coffee price", "people like a tea", "people like coffee tea"),
    ("doctor salary", "the a work in the city", "the doctor work in the city"),
]
# Pairs of unequal lengths: the batched engine trims each chunk to its longest pair (14 and 15 tokens share a
# chunk, padded inside it; the long pair runs alone), so these check that padding is never needed.
MIXED_PAIRS = [
    *ENGLISH_PAIRS,
    (
        "where do foxes live",
        "the red a lives in the forest near the river and the hills of the north",
        "the red fox lives in the forest near the river and the hills of the north",
    ),
]
EXACT = 1e-5


@pytest.fixture(scope="module")
def planted_runs(planted):
    return prepare_pairs(planted, PLANTED_PAIRS)


def planted_heads(truth) -> set[tuple[int, int]]:
    return {*truth.matching_heads, *truth.contextualisation_heads, *truth.scoring_heads}


def top_heads(result, k: int) -> set[tuple[int, int]]:
    return {(r.label["layer"], r.label["head"]) for r in result.top_k(k)}


def assert_same(batched, naive) -> None:
    """Equal to 1e-5, relative for scores above 1: float32 rounding grows with the score (planted: ~4)."""
    assert batched.shape == naive.shape
    np.testing.assert_allclose(batched.scores, naive.scores, atol=EXACT, rtol=EXACT)


# ------------------------------------------------------------------------------------------- batched == naive
@pytest.mark.parametrize("family", ["bert", "electra", "distilbert", "roberta", "xlm-roberta"])
def test_batched_equals_naive_on_random_cross_encoders(family):
    ranker = random_cross_encoder(family, seed=3)
    runs = prepare_pairs(ranker, MIXED_PAIRS, tolerance=1e-7, min_gap_share=0.0)
    assert len(set(runs.lengths.tolist())) == 3 and runs.right_padded
    for direction in ("denoise", "noise"):
        batched = activation_patching(ranker, runs, head_grid(ranker), direction=direction, batch_budget=5)
        assert_same(batched, activation_patching(ranker, runs, head_grid(ranker), direction=direction, batched=False))


def test_batched_equals_naive_for_blocks_positions_and_neurons():
    ranker = random_cross_encoder("bert", seed=3)
    runs = prepare_pairs(ranker, ENGLISH_PAIRS[:1], tolerance=1e-7, min_gap_share=0.0)
    grids = [
        head_grid(ranker, by_position=True, seq_len=runs.seq_len, layers=[1]),
        block_grid(ranker, runs.seq_len, layers=[1]),
        neuron_grid(ranker, neurons=range(0, ranker.cfg.d_mlp, 16)),
    ]
    for grid in grids:
        assert_same(
            activation_patching(ranker, runs, grid, batch_budget=7),
            activation_patching(ranker, runs, grid, batched=False),
        )


def test_batched_equals_naive_across_lengths_for_positions_paths_and_ablations():
    """Per-position cells, path patching (which also resumes after attention) and ablated runs (which may
    not) on pairs of three lengths."""
    ranker = random_cross_encoder("bert", seed=3)
    runs = prepare_pairs(ranker, MIXED_PAIRS, tolerance=1e-7, min_gap_share=0.0)
    grids = [head_grid(ranker, by_position=True, seq_len=runs.seq_len, layers=[0]), block_grid(ranker, runs.seq_len)]
    for grid in grids:
        assert_same(
            activation_patching(ranker, runs, grid, batch_budget=16),
            activation_patching(ranker, runs, grid, batched=False),
        )
    assert_same(path_patching(ranker, runs, batch_budget=5), path_patching(ranker, runs, batched=False))
    ablated = prepare_pairs(
        ranker,
        MIXED_PAIRS,
        tolerance=1e-7,
        min_gap_share=0.0,
        hooks=ablation_hooks(ranker, head_grid(ranker).subset([1, 6]), "zero"),
    )
    grid = head_grid(ranker)
    assert_same(activation_patching(ranker, ablated, grid), activation_patching(ranker, ablated, grid, batched=False))


def test_left_padded_batches_run_padded_and_still_equal_naive():
    """Trimming cuts padding off the end; with a left-padding tokenizer there is none there, so the engine
    keeps the full length (and still skips the layers below the patch and the patched layer's attention)."""
    ranker = random_cross_encoder("bert", seed=3)
    ranker.tokenizer.padding_side = "left"
    runs = prepare_pairs(ranker, MIXED_PAIRS, tolerance=1e-7, min_gap_share=0.0)
    assert not runs.right_padded and len(set(runs.lengths.tolist())) == 3
    grid = head_grid(ranker)
    assert_same(
        activation_patching(ranker, runs, grid, batch_budget=5), activation_patching(ranker, runs, grid, batched=False)
    )


def test_padding_cells_keep_the_target_score():
    """A cell at a pair's padding patches only padding: its score is the target's (the batched engine does
    not run it; the naive engine runs it and gets the same), and its normalised value is NaN."""
    ranker = random_cross_encoder("roberta", seed=3)
    runs = prepare_pairs(ranker, MIXED_PAIRS, tolerance=1e-7, min_gap_share=0.0)
    grid = head_grid(ranker, by_position=True, seq_len=runs.seq_len, layers=[1])
    batched = activation_patching(ranker, runs, grid)
    naive = activation_patching(ranker, runs, grid, batched=False)
    assert_same(batched, naive)
    target = runs.baseline.scores.double().numpy()
    assert runs.lengths.min() < runs.seq_len
    for pair, length in enumerate(runs.lengths.tolist()):
        assert (batched.scores[pair, 0, :, length:] == target[pair]).all()
        np.testing.assert_allclose(naive.scores[pair, 0, :, length:], target[pair], atol=EXACT, rtol=0)
        assert np.isnan(batched.values[pair, 0, :, length:]).all()
        assert not np.isnan(batched.values[pair, 0, :, :length]).any()


def test_batched_equals_naive_on_minilm_bi_encoder(minilm):
    runs = prepare_pairs(minilm, MIXED_PAIRS)
    assert len(set(runs.lengths.tolist())) > 1  # mean pooling over trimmed chunks
    grid = head_grid(minilm, layers=[0, 5])
    assert_same(activation_patching(minilm, runs, grid), activation_patching(minilm, runs, grid, batched=False))


def test_resuming_a_block_after_its_attention_reproduces_the_score():
    """``attn_out`` skips the layer's attention: its ``attn.hook_*`` and ``hook_resid_pre`` do not fire, the
    hooks after attention do."""
    ranker = random_cross_encoder("electra", seed=3)
    batch = ranker.tokenize([q for q, _, _ in MIXED_PAIRS], [b for _, b, _ in MIXED_PAIRS])
    clean, cache = ranker.run_with_cache(batch)
    fired: set[str] = set()
    with torch.no_grad():
        for layer in range(ranker.cfg.n_layers):
            fired.clear()
            resumed = ranker.run_with_hooks(
                batch,
                start_at_layer=layer,
                resid=cache["resid_pre", layer],
                attn_out=cache["attn_out", layer],
                fwd_hooks=[(lambda name: True, lambda act, hook: fired.add(hook.name))],
            )
            torch.testing.assert_close(resumed, clean, atol=EXACT, rtol=0)
            mine = {name for name in fired if name.startswith(f"blocks.{layer}.")}
            assert {f"blocks.{layer}.{h}" for h in ("hook_attn_out", "hook_resid_mid", "mlp.hook_post")} <= mine
            assert not any(".attn." in name or name.endswith("resid_pre") for name in mine)
        with pytest.raises(ValueError, match="need resid"):
            ranker(batch, attn_out=cache["attn_out", 0])


def batch_shape_noise(ranker, pairs) -> float:
    """How far the plain forward's own scores move with the batch they are computed in (float32 summation
    order): no engine can agree with the naive loop more closely than this."""
    queries = [q for q, _, _ in pairs] * 2
    documents = [d for _, d, _ in pairs] + [d for _, _, d in pairs]
    whole = np.asarray(ranker.score(queries, documents))
    alone = np.array([np.asarray(ranker.score([q], [d]))[0] for q, d in zip(queries, documents, strict=True)])
    return float(np.abs(whole - alone).max())


def test_batched_equals_naive_on_planted(planted, planted_runs):
    """The planted model's +-30 special-token logits amplify float32 rounding: on one machine its plain
    scores moved by 3.3e-5 between batch shapes, above EXACT. The tolerance is EXACT or twice that measured
    floor, whichever is larger; an engine error moves scores by orders of magnitude more."""
    tolerance = max(EXACT, 2 * batch_shape_noise(planted, PLANTED_PAIRS))
    assert tolerance < 1e-3  # the floor is rounding, not a broken model
    for direction in ("denoise", "noise"):  # four lengths (9 to 11 tokens): trimmed, resumed after attention
        batched = activation_patching(planted, planted_runs, head_grid(planted), direction=direction)
        naive = activation_patching(planted, planted_runs, head_grid(planted), direction=direction, batched=False)
        np.testing.assert_allclose(batched.scores, naive.scores, atol=tolerance, rtol=0)
        # The patching result itself (effects normalised by score gaps of about 3).
        np.testing.assert_allclose(batched.values, naive.values, atol=tolerance, rtol=0)
    runs = prepare_pairs(planted, PLANTED_PAIRS[:1])
    grid = block_grid(planted, runs.seq_len, acts=["attn_out"])
    assert_same(
        activation_patching(planted, runs, grid, batch_budget=5),
        activation_patching(planted, runs, grid, batched=False),
    )
    assert_same(path_patching(planted, runs), path_patching(planted, runs, batched=False))
    receivers = [(2, 3)]
    assert_same(
        path_patching(planted, runs, receivers=receivers, channels=["v"], batch_budget=3),
        path_patching(planted, runs, receivers=receivers, channels=["v"], batched=False),
    )


# ------------------------------------------------------------------------------------------- planted truth
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_activation_patching_ranks_planted_heads_first(planted, planted_runs, direction, planted_truth):
    result = activation_patching(planted, planted_runs, head_grid(planted), direction=direction)
    truth = planted_heads(planted_truth)
    assert top_heads(result, len(truth)) == truth
    assert result.n_pairs == len(PLANTED_PAIRS) and result.excluded == 0
    others = [r for r in result.top_k(12) if (r.label["layer"], r.label["head"]) not in truth]
    assert max(abs(r.mean) for r in others) < 0.01  # distractors write where nothing reads


def test_attribution_patching_ranks_planted_heads_first_and_tracks_exact(planted, planted_runs, planted_truth):
    grid = head_grid(planted)
    attribution = attribution_patching(planted, planted_runs, grid)
    exact = activation_patching(planted, planted_runs, grid)
    truth = planted_heads(planted_truth)
    assert top_heads(attribution, len(truth)) == truth
    assert attribution.correlation(exact) > 0.9


def test_screen_then_verify_patches_the_screened_heads_exactly(planted, planted_runs):
    _, verified = screen_then_verify(planted, planted_runs, head_grid(planted), top_n=4)
    assert verified.dims == ("component",) and verified.shape == (4,)
    exact = activation_patching(planted, planted_runs, head_grid(planted))
    for name, value in zip(verified.coords["component"], verified.mean, strict=True):
        layer, head = (int(part.split("=")[1]) for part in name.split(", "))
        assert value == pytest.approx(exact.mean[layer, head], abs=EXACT)


def test_path_patching_to_score_finds_only_the_scoring_head(planted, planted_runs, planted_truth):
    result = path_patching(planted, planted_runs)
    assert top_heads(result, 1) == set(planted_truth.scoring_heads)
    # The matching heads act on the score only through the scoring head: no direct path.
    assert all(abs(result.mean[layer, head]) < 0.01 for layer, head in planted_truth.matching_heads)


def test_path_patching_recovers_planted_edges(planted, planted_runs, planted_truth):
    receivers = [(1, 0), (1, 2), (2, 3)]
    result = path_patching(planted, planted_runs, receivers=receivers)
    edges = {(f"{s[0]}.{s[1]}", f"{r[0]}.{r[1]}", ch) for s, r, ch in planted_truth.edges}
    found = {(r.label["sender"], r.label["receiver"], r.label["channel"]) for r in result.top_k(len(edges))}
    assert found == edges
    assert np.isnan(result.mean[result.coords["sender"].index("2.0")]).all()  # not below any receiver


def test_random_twin_has_no_standout_heads(twin, planted, planted_truth):
    """Noise bound: with no circuit, effects spread over heads; as many heads as the planted model has planted
    (5) hold under 90% of the total |effect| (measured: 0.64 and 0.65).

    On the planted model they hold over 99% (the distractors' effects are exactly zero by construction).
    """
    runs = prepare_pairs(twin, PLANTED_PAIRS, tolerance=1e-6)
    for result in (activation_patching(twin, runs, head_grid(twin)), path_patching(twin, runs)):
        share = sorted(np.abs(result.mean).ravel(), reverse=True)
        assert sum(share[: len(planted_heads(planted_truth))]) / sum(share) < 0.9


def test_planted_effects_are_concentrated(planted, planted_runs, planted_truth):
    share = sorted(np.abs(activation_patching(planted, planted_runs, head_grid(planted)).mean).ravel(), reverse=True)
    assert sum(share[: len(planted_heads(planted_truth))]) / sum(share) > 0.99


# ------------------------------------------------------------------------------------------- LayerNorm policy
def test_frozen_layernorm_makes_direct_paths_additive():
    """With LN scales frozen the path from senders to a later head's q is affine, so two senders' effects add
    up; recomputing the scales breaks that, which is why path patching freezes them by default."""
    ranker = random_cross_encoder("bert", seed=1)
    with torch.no_grad():  # random init writes heads ~100x smaller than the residual: LN would look linear
        ranker.blocks[0].attn.o_proj.weight.mul_(100)
    runs = prepare_pairs(
        ranker, [("where do foxes live", "the red a lives in the forest", "my big dog ate all the food")]
    )
    target, source = runs.sides("denoise")
    pairs = torch.arange(runs.n_pairs).repeat(4)
    senders = torch.zeros(4 * runs.n_pairs, ranker.cfg.n_heads, dtype=torch.bool)
    for i, heads in enumerate([[], [0], [1], [0, 1]]):
        senders[i * runs.n_pairs : (i + 1) * runs.n_pairs, heads] = True
    errors = {}
    for ln in ("frozen", "recompute"):
        patches = _frozen_patches(ranker, target, source, 0, senders, ln)
        _, rec = _run_rows(
            ranker, runs, target, 0, pairs, patches, batch_budget=64, batched=True, record=["blocks.1.attn.hook_q"]
        )
        none, a, b, both = rec["blocks.1.attn.hook_q"].split(runs.n_pairs)
        errors[ln] = (both - none - (a - none) - (b - none)).abs().max().item()
        assert (a - none).abs().max() > 1e-2  # the senders do reach the receiver
    assert errors["frozen"] < EXACT
    assert errors["recompute"] > 10 * EXACT


# ------------------------------------------------------------------------------------------- ablation
def test_zero_ablating_the_scoring_head_removes_the_effect(planted):
    hooks = ablation_hooks(planted, head_grid(planted).subset([2 * 4 + 3]).cells, "zero")
    with pytest.raises(InputError, match="score gap"):
        prepare_pairs(planted, PLANTED_PAIRS, hooks=hooks, tolerance=1e-3)


def test_mean_ablating_distractors_keeps_the_effect_and_composes_with_patching(planted, planted_runs, planted_truth):
    heads = [(layer, head) for layer in range(3) for head in range(4)]
    distractors = [i for i, head in enumerate(heads) if head not in planted_heads(planted_truth)]
    reference = planted.tokenize([q for q, _, _ in PLANTED_PAIRS], [b for _, b, _ in PLANTED_PAIRS])
    hooks = ablation_hooks(planted, head_grid(planted).subset(distractors), "mean", reference=reference)
    runs = prepare_pairs(planted, PLANTED_PAIRS, hooks=hooks)
    gap, ablated_gap = (r.perturbed.scores - r.baseline.scores for r in (planted_runs, runs))
    torch.testing.assert_close(ablated_gap, gap, rtol=0.02, atol=0)
    grid = head_grid(planted)
    assert_same(activation_patching(planted, runs, grid), activation_patching(planted, runs, grid, batched=False))
    truth = planted_heads(planted_truth)
    assert top_heads(activation_patching(planted, runs, grid), len(truth)) == truth


def test_resample_ablation_is_deterministic_and_checks_shapes(planted):
    reference = planted.tokenize(["river bank"], ["the a music is good too"])
    cells = neuron_grid(planted, layers=[0], neurons=range(8)).cells
    batch = planted.tokenize(["dog vaccine"], ["a cat the house is big"])
    hooks = ablation_hooks(planted, cells, "resample", reference=reference, seed=1)
    with torch.no_grad():
        assert planted.run_with_hooks(batch, fwd_hooks=hooks) == planted.run_with_hooks(batch, fwd_hooks=hooks)
        with pytest.raises(ValueError, match="same padded length"):
            planted.run_with_hooks(planted.tokenize(["dog"], ["a cat"]), fwd_hooks=hooks)
    with pytest.raises(ValueError, match="reference"):
        ablation_hooks(planted, cells, "mean")


# ------------------------------------------------------------------------------------------- degenerate inputs
def test_identical_pairs_are_excluded_and_counted(planted):
    runs = prepare_pairs(planted, [*PLANTED_PAIRS[:2], ("dog", "a cat", "a cat")])
    assert runs.excluded == 1 and runs.n_pairs == 2
    assert activation_patching(planted, runs, head_grid(planted)).excluded == 1
    with pytest.raises(InputError, match="score gap"):
        prepare_pairs(planted, [("dog", "a cat", "a cat")])


def test_refuses_unequal_lengths_empty_inputs_and_bad_budgets(planted, planted_runs):
    with pytest.raises(InputError, match="different token lengths"):
        prepare_pairs(planted, [("dog", "a cat", "a cat dog")])
    with pytest.raises(InputError, match="no pairs"):
        prepare_pairs(planted, [])
    with pytest.raises(ValueError, match="empty"):
        neuron_grid(planted, neurons=[])
    with pytest.raises(ValueError, match="empty"):
        ablation_hooks(planted, [], "zero")
    with pytest.raises(ValueError, match="empty"):
        path_patching(planted, planted_runs, receivers=[])
    with pytest.raises(ValueError, match="batch_budget"):
        activation_patching(planted, planted_runs, head_grid(planted), batch_budget=0)
    with pytest.raises(ValueError, match="top_n"):
        screen_then_verify(planted, planted_runs, head_grid(planted), top_n=0)
    with pytest.raises(ValueError, match="direction"):
        activation_patching(planted, planted_runs, head_grid(planted), direction="sideways")
    one_at_a_time = activation_patching(planted, planted_runs, head_grid(planted), batch_budget=1)
    assert_same(one_at_a_time, activation_patching(planted, planted_runs, head_grid(planted)))


def test_padding_positions_are_nan_and_ci_needs_two_pairs(planted):
    runs = prepare_pairs(planted, [PLANTED_PAIRS[0], ("dog", "a cat", "dog cat")])
    result = activation_patching(planted, runs, block_grid(planted, runs.seq_len, acts=["resid_pre"]))
    short = int(runs.lengths.min())
    assert np.isnan(result.values[int(runs.lengths.argmin()), 0, :, short:]).all()
    assert not np.isnan(result.mean).any()  # every position has at least one real pair
    assert np.isnan(result.ci_low[0, :, short:]).all()  # one pair only there


def test_out_of_memory_halves_the_batch_and_then_says_what_does_not_fit(planted, planted_runs, monkeypatch):
    real = planted.run_with_hooks

    def small_device(batch, **kwargs):
        if batch.input_ids.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch, **kwargs)

    monkeypatch.setattr(planted, "run_with_hooks", small_device)
    with pytest.warns(UserWarning, match="retrying with") as backing_off:
        backed_off = activation_patching(planted, planted_runs, head_grid(planted), batch_budget=8)
    monkeypatch.undo()
    assert {str(w.message).split()[5] for w in backing_off} == {"4", "2"}  # 8 -> 4 -> 2 copies
    assert_same(backed_off, activation_patching(planted, planted_runs, head_grid(planted)))

    def no_memory(batch, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    def bug(batch, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(planted, "run_with_hooks", no_memory)
    with pytest.raises(MemoryError, match="does not fit in memory"), pytest.warns(UserWarning, match="retrying"):
        activation_patching(planted, planted_runs, head_grid(planted))
    monkeypatch.setattr(planted, "run_with_hooks", bug)  # other errors are not mistaken for memory
    with pytest.raises(RuntimeError, match="shape mismatch"):
        activation_patching(planted, planted_runs, head_grid(planted))


def test_pairs_with_a_gap_small_next_to_the_score_spread_are_excluded_and_counted(planted):
    """A normalised effect divides by the pair's gap: a gap under MIN_GAP_SHARE of the score spread (standard
    deviation of both sides' scores) is excluded and counted, so that no ratio of two near-zero numbers enters
    a map; the threshold scales with the model's scores."""
    everything = prepare_pairs(planted, PLANTED_PAIRS, min_gap_share=0.0)
    scores = torch.cat([everything.baseline.scores, everything.perturbed.scores]).double()
    gaps = (everything.perturbed.scores - everything.baseline.scores).abs().double()
    share = float(gaps.min() + gaps.sort().values[1]) / 2 / float(scores.std(unbiased=False))  # cuts the smallest
    runs = prepare_pairs(planted, PLANTED_PAIRS, min_gap_share=share)
    assert runs.excluded == 1 and runs.n_pairs == len(PLANTED_PAIRS) - 1
    assert runs.min_gap == pytest.approx(share * float(scores.std(unbiased=False)))
    result = activation_patching(planted, runs, head_grid(planted))
    assert result.basis == f"3 pairs; 1 excluded with score gap < {runs.min_gap:.3g}"
    with pytest.raises(InputError, match="score spread"):
        prepare_pairs(planted, PLANTED_PAIRS, min_gap_share=100.0)
    with pytest.raises(ValueError, match="min_gap_share"):
        prepare_pairs(planted, PLANTED_PAIRS, min_gap_share=-1.0)
