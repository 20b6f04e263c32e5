"""The hooked decoder reproduces Hugging Face scores (Qwen2, Qwen3, Llama): yes / no causal-LM judges,
last-token score heads and last-token-pooling bi-encoders, with left padding, batches > 1 and the
family's special tokens; hooks are real intervention points; local folders load through the user path."""

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer

from irmechtest.controls.twins import random_hf_model, tiny_decoder_config, tiny_decoder_tokenizer
from irmechtest.loading import load_ranker, ranker_from_hf
from irmechtest.models.decoder import DECODER_FAMILIES, YesNoPrompt

QUERIES = ["what is a fox", "how tall is mount everest", "why"]
DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "mount everest is 8848 metres tall, the highest mountain above sea level on earth",
    "because",
]
FP32 = dict(atol=1e-5, rtol=0)
HEADS = {"causal-lm": "ForCausalLM", "score": "ForSequenceClassification"}


def tiny(family: str, head: str, num_labels: int = 1, seed: int = 3):
    tokenizer = tiny_decoder_tokenizer(family)
    config = tiny_decoder_config(family, tokenizer, num_labels)
    config.architectures = [f"{DECODER_FAMILIES[family]}{HEADS[head]}"]
    return random_hf_model(config, seed), tokenizer


def hf_score(ranker, hf_model, batch) -> torch.Tensor:
    """The plain Hugging Face score of the ranker's own inputs, as each model card computes it."""
    with torch.no_grad():
        logits = hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    if hasattr(hf_model, "lm_head"):  # Qwen3-Reranker: logit(yes) - logit(no) at the last position
        no, yes = ranker.head.rows
        return logits[:, -1, yes] - logits[:, -1, no]
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


@pytest.mark.parametrize("family", list(DECODER_FAMILIES))
@pytest.mark.parametrize(("head", "num_labels"), [("causal-lm", 1), ("score", 1), ("score", 2)])
def test_decoder_scores_match_hugging_face(family, head, num_labels):
    hf_model, tokenizer = tiny(family, head, num_labels)
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=family)
    hf_model.config.pad_token_id = tokenizer.pad_token_id  # HF's score head needs one for batches > 1
    batch = ranker.tokenize(QUERIES, DOCS)
    assert batch.attention_mask[:, 0].eq(0).any() and batch.attention_mask[:, -1].eq(1).all(), "left padding"
    specials = set(tokenizer.all_special_ids) - {tokenizer.pad_token_id}
    if head == "causal-lm" or tokenizer.bos_token_id is not None:  # Qwen's pair encoding adds no special token
        assert torch.isin(batch.input_ids[batch.attention_mask.bool()], torch.tensor(sorted(specials))).any()
    with torch.no_grad():
        ours = ranker(batch)
    torch.testing.assert_close(ours, hf_score(ranker, hf_model, batch), **FP32)
    with torch.no_grad():  # and without padding: one pair alone
        alone = ranker(ranker.tokenize(QUERIES[:1], DOCS[:1]))
    torch.testing.assert_close(alone, ours[:1], **FP32)


@pytest.fixture(scope="module")
def qwen3():
    return load_ranker("irmechtest:random-qwen3")


def test_identity_hooks_leave_scores_bit_identical(qwen3):
    batch = qwen3.tokenize(QUERIES, DOCS)
    with torch.no_grad():
        plain = qwen3(batch)
        every = qwen3.run_with_hooks(batch, fwd_hooks=[(lambda n: not n.endswith("hook_result"), lambda a, hook: a)])
        # hook_result materialises per-head outputs, summed in another order: equal to rounding (as encoders).
        per_head = qwen3.run_with_hooks(batch, fwd_hooks=[(lambda n: n.endswith("hook_result"), lambda a, hook: a)])
    assert torch.equal(plain, every)
    torch.testing.assert_close(per_head, plain, atol=1e-6, rtol=0)


def test_hook_names_and_grouped_query_shapes(qwen3):
    batch = qwen3.tokenize(QUERIES, DOCS)
    cfg = qwen3.cfg
    _, cache = qwen3.run_with_cache(batch)
    n, pos = len(batch), batch.seq_len
    assert cache["blocks.0.attn.hook_q"].shape == (n, pos, cfg.n_heads, cfg.d_head)
    assert cache["blocks.0.attn.hook_k"].shape == (n, pos, cfg.n_key_value_heads, cfg.d_head)
    assert cache["pattern", 1].shape == (n, cfg.n_heads, pos, pos)
    assert cache["z", 1].shape == (n, pos, cfg.n_heads, cfg.d_head)
    for name in ("rot_q", "rot_k", "resid_pre", "resid_mid", "resid_post", "scale1", "scale2", "pre", "post"):
        assert (name, 1) in cache
    assert "blocks.0.attn.q_norm.hook_scale" in cache and "ln_final.hook_scale" in cache
    assert "blocks.0.mlp.hook_pre_linear" in cache
    causal = torch.ones(pos, pos).tril().bool()
    real_rows = batch.attention_mask.bool()[:, None, :, None]  # a padding row attends uniformly: it is never read
    assert (cache["pattern", 0] * real_rows)[..., ~causal].max() == 0, "no token attends to a later one"
    assert qwen3.W_K.shape == (cfg.n_layers, cfg.n_key_value_heads, cfg.d_model, cfg.d_head)


@pytest.mark.parametrize("name", ["pattern", "attn_scores", "rot_k", "v", "scale1", "pre_linear", "resid_mid"])
def test_writing_to_a_hook_changes_the_score(qwen3, name):
    batch = qwen3.tokenize(QUERIES, DOCS)
    with torch.no_grad():
        plain = qwen3(batch)
        if name == "pattern":  # attend uniformly to every earlier real token instead
            fn = lambda act, hook: act.gt(0).float() / act.gt(0).float().sum(-1, keepdim=True)  # noqa: E731
        elif name == "attn_scores":  # a bias growing with the key position (scaling would overflow the mask)
            fn = lambda act, hook: act + torch.linspace(0, 1, act.shape[-1])  # noqa: E731
        else:
            fn = lambda act, hook: act * 1.5  # noqa: E731
        edited = qwen3.run_with_hooks(batch, fwd_hooks=[(f"blocks.0.{_short(name)}", fn)])
    assert (edited - plain).abs().min() > 1e-6


def _short(name: str) -> str:
    from irmechtest.models.hooks import act_name

    return act_name(name, 0).removeprefix("blocks.0.")


def test_a_saved_causal_lm_reranker_loads_through_the_user_path(tmp_path):
    hf_model, tokenizer = tiny("qwen3", "causal-lm")
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ranker = load_ranker(str(tmp_path))
    assert ranker.identity["weights_sha256"] and isinstance(ranker.prompt, YesNoPrompt)
    batch = ranker.tokenize(QUERIES, DOCS)
    with torch.no_grad():
        torch.testing.assert_close(ranker(batch), hf_score(ranker, hf_model, batch), **FP32)


def test_a_saved_last_token_score_head_loads_through_the_user_path(tmp_path):
    hf_model, tokenizer = tiny("llama", "score", num_labels=1)
    tokenizer.pad_token = tokenizer.eos_token
    hf_model.config.pad_token_id = tokenizer.pad_token_id
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ranker = load_ranker(str(tmp_path))
    batch = ranker.tokenize(QUERIES, DOCS)
    assert batch.input_ids[0, 0] == tokenizer.pad_token_id and tokenizer.bos_token_id in batch.input_ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(ranker(batch), hf_score(ranker, hf_model, batch), **FP32)


def test_a_last_token_pooling_bi_encoder_matches_sentence_transformers(tmp_path):
    """A Qwen3-Embedding-style folder: bare Qwen3 backbone, last-token pooling, normalisation, cosine."""
    tokenizer = tiny_decoder_tokenizer("qwen3")
    config = tiny_decoder_config("qwen3", tokenizer)
    config.architectures = ["Qwen3Model"]
    random_hf_model(config, seed=3, cross_encoder=False).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode_lasttoken": True})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "2_Normalize").mkdir()
    ranker = load_ranker(str(tmp_path))
    assert ranker.kind == "bi-encoder" and ranker.pooling.mode == "lasttoken"
    reference = SentenceTransformer(str(tmp_path), device="cpu")
    expected = reference.similarity_pairwise(reference.encode(QUERIES), reference.encode(DOCS))
    with torch.no_grad():
        ours = ranker(ranker.tokenize(QUERIES, DOCS))
    torch.testing.assert_close(ours, expected.to(ours.dtype), **FP32)


def test_unsupported_families_are_refused_with_the_current_list(tmp_path):
    from transformers import GPT2Config

    GPT2Config(architectures=["GPT2ForSequenceClassification"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'gpt2' is not supported.*Qwen3 \(qwen3\).*Llama \(llama\)"):
        load_ranker(str(tmp_path))


def test_prompt_overrides_from_the_configuration_reach_the_inputs(tmp_path):
    from irmechtest.config import ConfigError, parse_configuration

    hf_model, tokenizer = tiny("qwen3", "causal-lm")
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    body = "<Instruct>: find the passage on animals\n<Query>: {query}\n<Document>: {document}"
    config = parse_configuration({"models": {str(tmp_path): {"prompt": {"body": body, "yes": "true"}}}}, "t.toml")
    ranker = load_ranker(str(tmp_path), prompt=config.prompt([str(tmp_path)]))
    assert ranker.prompt.body == body and ranker.prompt.prefix.startswith("<|im_start|>system")
    assert ranker.head.rows[1] == tokenizer.convert_tokens_to_ids("true")
    assert "animals" in tokenizer.decode(ranker.tokenize(QUERIES[:1], DOCS[:1]).input_ids[0])
    with pytest.raises(ConfigError, match="unknown key 'template'"):
        parse_configuration({"models": {"m": {"prompt": {"template": "x"}}}}, "t.toml")
    with pytest.raises(ValueError, match="placeholders"):
        load_ranker(str(tmp_path), prompt={"body": "{query} only"})
    with pytest.raises(ValueError, match="'query' does not apply to a YesNoPrompt"):
        load_ranker(str(tmp_path), prompt={"query": "q: {query}"})
    with pytest.raises(ValueError, match="takes no prompt"):
        load_ranker("irmechtest:random-qwen3", prompt={"yes": "true"})


# Per-dtype score tolerances, set from each format's machine epsilon before measuring (bfloat16 2^-7 = 7.8e-3,
# float16 2^-10 = 9.8e-4, times a few roundings of the last dot products, for scores of order 1).
TOLERANCES = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 2e-3}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_half_precision_scores_within_the_dtype_tolerance(family, dtype):
    reference = load_ranker(f"irmechtest:random-{family}")
    ranker = load_ranker(f"irmechtest:random-{family}", dtype=dtype)
    assert ranker.W_E.dtype == getattr(torch, dtype) and ranker.identity["dtype"] == dtype
    ranker.hf_model.config.pad_token_id = ranker.tokenizer.pad_token_id
    batch = reference.tokenize(QUERIES, DOCS)
    with torch.no_grad():
        ours = ranker(batch).float()
        full = reference(batch)
    atol = TOLERANCES[dtype]
    torch.testing.assert_close(ours, hf_score(ranker, ranker.hf_model, batch).float(), atol=atol, rtol=0)
    torch.testing.assert_close(ours, full, atol=atol, rtol=0)
