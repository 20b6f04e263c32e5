"""Hook points are real intervention points with TransformerLens's names, shapes and conventions."""

import pytest
import torch

from irmechtest.controls.twins import random_cross_encoder
from irmechtest.models.hooks import act_name

QUERIES = ["what is a fox", "how tall is mount everest"]
DOCS = ["the quick brown fox jumps over the lazy dog", "mount everest is 8848 metres tall"]


@pytest.fixture(scope="module", params=["bert", "electra", "distilbert", "roberta", "modernbert", "deberta-v2"])
def ranker(request):
    return random_cross_encoder(request.param, seed=5)


@pytest.fixture(scope="module")
def batch(ranker):
    return ranker.tokenize(QUERIES, DOCS)


def scores(ranker, batch, hooks=()):
    with torch.no_grad():
        return ranker.run_with_hooks(batch, fwd_hooks=hooks)


FAMILY_HOOKS = {
    # Absolute positions are embedded (hook_pos_embed) except where they act inside attention.
    "bert": {"hook_pos_embed", "blocks.1.hook_normalized_resid_post"},
    "electra": {"hook_pos_embed", "blocks.1.hook_normalized_resid_post"},
    "distilbert": {"hook_pos_embed", "blocks.1.hook_normalized_resid_post"},
    "roberta": {"hook_pos_embed", "blocks.1.hook_normalized_resid_post"},
    "modernbert": {"blocks.1.attn.hook_rot_q", "blocks.1.attn.hook_rot_k", "blocks.1.mlp.hook_pre_linear"}
    | {"ln_final.hook_scale", "blocks.0.ln1.hook_scale", "head.norm.hook_scale"},
    "deberta-v2": {"blocks.1.attn.hook_c2p", "blocks.1.attn.hook_p2c", "blocks.1.hook_normalized_resid_post"},
}


def test_expected_hook_names_exist(ranker):
    expected = {
        "hook_embed",
        "hook_full_embed",
        "hook_pooled",
        "hook_logits",
        *(act_name(n, 1) for n in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v")),
        *(act_name(n, 1) for n in ("z", "result", "attn_scores", "pattern", "pre", "post", "scale1", "scale2")),
        *FAMILY_HOOKS[ranker.cfg.family],
    }
    assert expected <= set(ranker.hook_dict)


def test_identity_hooks_leave_scores_bit_identical(ranker, batch):
    clean = scores(ranker, batch)
    hooked = scores(ranker, batch, [(lambda name: not name.endswith("hook_result"), lambda act, hook: act)])
    assert torch.equal(clean, hooked)


def test_per_head_result_hook_sums_to_the_same_score(ranker, batch):
    """hook_result materialises per-head outputs (summed in another order), so equality is to rounding."""
    clean = scores(ranker, batch)
    hooked = scores(ranker, batch, [(lambda name: name.endswith("hook_result"), lambda act, hook: act)])
    torch.testing.assert_close(hooked, clean, atol=1e-6, rtol=0)


def perturb(act, hook):
    """A non-uniform edit: LayerNorm undoes a uniform shift of the residual stream, softmax a uniform shift of k."""
    noise = torch.randn(act.shape, generator=torch.Generator().manual_seed(0), dtype=act.dtype)
    return act + 0.5 * noise * act.abs().mean()


def test_every_hook_point_changes_the_score_when_written(ranker, batch):
    clean = scores(ranker, batch)
    inert = []
    for name in ranker.hook_dict:
        edited = scores(ranker, batch, [(name, perturb)])
        if torch.equal(edited, clean):  # identity hooks are bit-identical, so any change shows a live hook
            inert.append(name)
    assert not inert, f"writing to these hook points changed nothing downstream: {inert}"


def test_pattern_edit_changes_the_score(ranker, batch):
    def attend_to_first_token(pattern, hook):
        edited = torch.zeros_like(pattern)
        edited[..., 0] = 1.0
        return edited

    clean = scores(ranker, batch)
    edited = scores(ranker, batch, [(act_name("pattern", 0), attend_to_first_token)])
    assert (edited - clean).abs().max() > 1e-5


def test_cache_has_transformer_lens_shapes(ranker, batch):
    cfg = ranker.cfg
    _, cache = ranker.run_with_cache(batch, names_filter=lambda n: n.startswith("blocks.0."))
    b, p = batch.input_ids.shape
    assert cache["q", 0].shape == (b, p, cfg.n_heads, cfg.d_head)
    assert cache["z", 0].shape == (b, p, cfg.n_heads, cfg.d_head)
    assert cache["pattern", 0].shape == (b, cfg.n_heads, p, p)
    assert cache["mlp_out", 0].shape == (b, p, cfg.d_model)
    assert "blocks.1.hook_resid_pre" not in cache
    assert torch.allclose(cache["pattern", 0].sum(-1), torch.ones(b, cfg.n_heads, p))


def test_starting_at_a_layer_from_the_cache_reproduces_the_score(ranker, batch):
    clean, cache = ranker.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_resid_pre"))
    for layer in range(ranker.cfg.n_layers):
        with torch.no_grad():
            resumed = ranker(batch, start_at_layer=layer, resid=cache["resid_pre", layer])
        assert torch.equal(resumed, clean)


def test_backward_cache_holds_gradients(ranker, batch):
    """With incl_bwd, a backward pass fills name + "_grad" (inputs_embeds is the leaf, weights are frozen)."""
    words = ranker.embed(batch.input_ids).detach().requires_grad_(True)
    score, cache = ranker.run_with_cache(batch, inputs_embeds=words, names_filter=act_name("z", 1), incl_bwd=True)
    score.sum().backward()
    grad = cache["blocks.1.attn.hook_z_grad"]
    assert grad.shape == cache["z", 1].shape and grad.abs().sum() > 0


def test_hooks_context_removes_only_its_own_hooks(ranker, batch):
    seen = []
    ranker.add_hook(act_name("z", 0), lambda act, hook: seen.append(hook.name))
    try:
        with ranker.hooks([(act_name("z", 1), lambda act, hook: seen.append(hook.name))]):
            scores(ranker, batch)
        scores(ranker, batch)
    finally:
        ranker.reset_hooks()
    assert seen == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.0.attn.hook_z"]


def test_unknown_hook_name_is_a_clear_error(ranker):
    with pytest.raises(KeyError, match="no hook point named"):
        ranker.add_hook("blocks.0.attn.hook_zz", lambda act, hook: act)


def test_weight_views_have_transformer_lens_layout(ranker):
    cfg = ranker.cfg
    assert ranker.W_Q.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
    assert ranker.W_O.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model)
    assert ranker.W_E.shape == (cfg.d_vocab, cfg.d_embed)


@pytest.fixture(scope="module")
def monot5():
    return random_cross_encoder("t5", seed=5)


def test_monot5_hooks_have_transformer_lens_encoder_decoder_names(monot5):
    expected = {
        "hook_embed",
        "hook_logits",
        "encoder.1.hook_resid_pre",
        "encoder.1.attn.hook_pattern",
        "encoder.1.ln1.hook_scale",
        "encoder_final_ln.hook_scale",
        "decoder.1.cross_attn.hook_pattern",
        "decoder.1.hook_resid_mid_cross",
        "decoder.1.ln3.hook_scale",
        "decoder_final_ln.hook_scale",
    }
    assert expected <= set(monot5.hook_dict)
    assert not any(name.startswith("blocks.") for name in monot5.hook_dict)


def test_monot5_identity_hooks_are_bit_identical_and_every_hook_is_live(monot5):
    batch = monot5.tokenize(QUERIES, DOCS)
    clean = scores(monot5, batch)
    assert torch.equal(
        clean, scores(monot5, batch, [(lambda name: not name.endswith("hook_result"), lambda a, hook: a)])
    )
    # The decoder runs one step: its self-attention has one key, whose softmax weight is 1 whatever q, k or
    # the score, so only those hooks may be inert (its v, pattern and z are live).
    one_key = {f"decoder.{layer}.attn.hook_{n}" for layer in range(2) for n in ("q", "k", "attn_scores")}
    inert = [name for name in monot5.hook_dict if torch.equal(scores(monot5, batch, [(name, perturb)]), clean)]
    assert set(inert) == one_key, f"writing to these hook points changed nothing downstream: {set(inert) - one_key}"
    _, cache = monot5.run_with_cache(batch, names_filter=lambda n: "cross_attn.hook_pattern" in n)
    pattern = cache["decoder.0.cross_attn.hook_pattern"]
    assert pattern.shape == (2, monot5.cfg.n_heads, 1, batch.seq_len)  # one decoder step over the encoder
    assert pattern[..., batch.attention_mask[:, None, None, :].expand_as(pattern) == 0].abs().max() == 0


def test_bi_encoder_hooks_act_on_the_document_side_only(minilm):
    batch = minilm.tokenize(QUERIES, DOCS)
    fired = []

    def count(act, hook):
        fired.append(act.shape[0])

    with torch.no_grad():
        minilm.run_with_hooks(batch, fwd_hooks=[("hook_embed", count)])
        with minilm.hooks([("hook_embed", count)]):
            minilm.tokenize(["a brand new query"], ["doc"])
    assert fired == [2]
