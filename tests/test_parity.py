"""Hooked models reproduce Hugging Face scores: fp32, padding, token_type_ids, batches > 1."""

import pytest
import torch
from sentence_transformers import SentenceTransformer

from irmechtest.controls.twins import random_hf_model, tiny_config
from irmechtest.loading import embedded_model_dir, ranker_from_hf
from irmechtest.models.encoder import SUPPORTED_FAMILIES

QUERIES = ["what is a fox", "how tall is mount everest", "why"]
DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "mount everest is 8848 metres tall, the highest mountain above sea level on earth",
    "because",
]


def hf_reference(hf_model, tokenizer, family: str, num_labels: int) -> torch.Tensor:
    encoded = tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    if family in {"distilbert", "roberta", "xlm-roberta", "modernbert"}:
        encoded.pop("token_type_ids")  # these families take none (RoBERTa's single type is implicit)
    with torch.no_grad():
        logits = hf_model(**encoded).logits
    return logits[:, 0] if num_labels == 1 else logits[:, 1] - logits[:, 0]


@pytest.mark.parametrize("num_labels", [1, 2])
@pytest.mark.parametrize("family", [f for f in SUPPORTED_FAMILIES if f != "t5"])  # T5: its own tests below
def test_cross_encoder_scores_match_hugging_face(family, num_labels, tokenizer):
    hf_model = random_hf_model(tiny_config(family, num_labels), seed=3)
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=family)
    batch = ranker.tokenize(QUERIES, DOCS)
    assert batch.attention_mask.eq(0).any(), "the batch must contain padding for this test to mean anything"
    with torch.no_grad():
        ours = ranker(batch)
    torch.testing.assert_close(ours, hf_reference(hf_model, tokenizer, family, num_labels), atol=1e-5, rtol=0)


def test_token_type_ids_reach_the_model(tokenizer):
    """Dropping token_type_ids changes a BERT cross-encoder's score, so passing them is not a no-op."""
    ranker = ranker_from_hf(random_hf_model(tiny_config("bert"), seed=3), tokenizer, kind="cross-encoder", name="b")
    batch = ranker.tokenize(QUERIES, DOCS)
    with torch.no_grad():
        with_types = ranker(batch)
        batch.token_type_ids = torch.zeros_like(batch.token_type_ids)
        without = ranker(batch)
    assert (with_types - without).abs().max() > 1e-4


def test_scores_do_not_depend_on_batch_composition(tokenizer):
    ranker = ranker_from_hf(random_hf_model(tiny_config("roberta"), seed=3), tokenizer, kind="cross-encoder", name="r")
    together = ranker.score(QUERIES, DOCS, batch_size=3)
    alone = ranker.score(QUERIES, DOCS, batch_size=1)
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone), atol=1e-5, rtol=0)


def test_embedded_bi_encoder_matches_pooling_by_hand(minilm):
    """all-MiniLM-L6-v2: mean pooling over real tokens, then L2 normalisation, computed from the HF model."""
    texts = DOCS
    encoded = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.hf_model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    by_hand = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    with torch.no_grad():
        ours = minilm.encode(texts)
    torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=0)


def test_embedded_bi_encoder_matches_sentence_transformers(minilm):
    reference = SentenceTransformer(str(embedded_model_dir()), device="cpu")
    expected = reference.similarity_pairwise(
        reference.encode(QUERIES, convert_to_tensor=True), reference.encode(DOCS, convert_to_tensor=True)
    )
    torch.testing.assert_close(torch.tensor(minilm.score(QUERIES, DOCS)).float(), expected, atol=1e-5, rtol=0)


# ModernBERT and DeBERTa variants beyond the built-in tiny configs: mean pooling, and DeBERTa-v2's layout
# (absolute positions added to the input, token types, separate c2p / p2c projections, an embedding
# projection before the LayerNorm, unbucketed relative distances clipped at 6).
VARIANTS = {
    "modernbert-mean": ("modernbert", dict(classifier_pooling="mean")),
    "modernbert-window-2": ("modernbert", dict(local_attention=2, global_attn_every_n_layers=3, num_hidden_layers=3)),
    "deberta-v2-layout": (
        "deberta-v2",
        dict(
            share_att_key=False,
            position_biased_input=True,
            type_vocab_size=2,
            embedding_size=48,
            position_buckets=-1,
            max_relative_positions=6,
            norm_rel_ebd="none",
        ),
    ),
    "deberta-c2p-only": ("deberta-v2", dict(pos_att_type=["c2p"], share_att_key=False)),
}


def variant_model(name: str, num_labels: int = 2):
    family, changes = VARIANTS[name]
    config = tiny_config(family, num_labels)
    for key, value in changes.items():
        setattr(config, key, value)
    if family == "modernbert":  # layer_types is derived from global_attn_every_n_layers when the config is built
        every = changes.get("global_attn_every_n_layers", 2)
        config.layer_types = [
            "sliding_attention" if i % every else "full_attention" for i in range(config.num_hidden_layers)
        ]
    return family, random_hf_model(config, seed=4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_modern_encoder_variants_match_hugging_face(name, tokenizer):
    family, hf_model = variant_model(name)
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=name)
    batch = ranker.tokenize(QUERIES, DOCS)
    with torch.no_grad():
        ours = ranker(batch)
    torch.testing.assert_close(ours, hf_reference(hf_model, tokenizer, family, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_modern_encoder_token_states_match_hugging_face(family, tokenizer):
    """Every real token's final state, not only the score (a random head's score varies little across rows)."""
    hf_model = random_hf_model(tiny_config(family), seed=3)
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=family)
    batch = ranker.tokenize(QUERIES, DOCS)
    encoded = tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    encoded.pop("token_type_ids")
    with torch.no_grad():
        ours = ranker.final_states(ranker.run_blocks(batch, ranker.embed_inputs(batch)))
        theirs = hf_model.base_model(**encoded).last_hidden_state
    real = batch.attention_mask.bool()
    assert theirs[real].std() > 0.1, "token states must vary for this comparison to mean anything"
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_modern_encoder_scores_without_padding_match_batched_ones(family, tokenizer):
    """Each pair alone (no padding) scores as in the padded batch and as Hugging Face scores it alone."""
    hf_model = random_hf_model(tiny_config(family), seed=3)
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=family)
    alone = torch.tensor(ranker.score(QUERIES, DOCS, batch_size=1))
    torch.testing.assert_close(alone, torch.tensor(ranker.score(QUERIES, DOCS, batch_size=3)), atol=1e-5, rtol=0)
    encoded = tokenizer(QUERIES[:1], DOCS[:1], return_tensors="pt")
    encoded.pop("token_type_ids")
    with torch.no_grad():
        theirs = hf_model(**encoded).logits[0, 0].double()
    torch.testing.assert_close(alone[0], theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_modern_encoder_bi_encoder_matches_mean_pooling_by_hand(tokenizer, family):
    """A ModernBERT (gte-modernbert style) or DeBERTa backbone as a sentence-transformers bi-encoder: final
    states (ModernBERT's include its final LayerNorm), then mean pooling."""
    from irmechtest.models.ranker import Pooling

    hf_model = random_hf_model(tiny_config(family), seed=3, cross_encoder=False)
    ranker = ranker_from_hf(
        hf_model, tokenizer, kind="bi-encoder", name="m", pooling=Pooling(mode="mean", normalize=True)
    )
    encoded = tokenizer(DOCS, padding=True, return_tensors="pt")
    encoded.pop("token_type_ids")
    with torch.no_grad():
        hidden = hf_model(**encoded).last_hidden_state
        ours = ranker.encode(DOCS)
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    by_hand = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=0)


# monoT5: the prompt in, logit("true") - logit("false") out at the first decoder step, computed by HF's
# own T5ForConditionalGeneration; t5-base's layout (ReLU, tied and rescaled unembedding) and T5 v1.1's
# (gated GELU, untied), with padding, batch 3 and the end-of-sequence token.
T5_VARIANTS = {"t5-base": {}, "t5-v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)}


def t5_model(variant: str):
    from transformers import T5Config

    derived = {"dense_act_fn", "is_gated_act", "scale_decoder_outputs"}  # recomputed from the arguments
    base = {k: v for k, v in tiny_config("t5").to_dict().items() if k not in derived}
    config = T5Config(**{**base, **T5_VARIANTS[variant]})
    return random_hf_model(config, seed=3)


def t5_reference(hf_model, tokenizer, ranker, queries, docs) -> torch.Tensor:
    encoded = tokenizer(ranker.prompts(queries, docs), padding=True, return_tensors="pt")
    start = torch.zeros(len(queries), 1, dtype=torch.long)  # decoder_start_token_id = <pad> = 0
    with torch.no_grad():
        logits = hf_model(**encoded, decoder_input_ids=start).logits[:, 0]
    true, false = tokenizer.convert_tokens_to_ids(["true", "false"])
    return logits[:, true] - logits[:, false]


@pytest.mark.parametrize("variant", list(T5_VARIANTS))
def test_monot5_scores_match_hugging_face(variant):
    from irmechtest.controls.twins import t5_test_tokenizer

    tokenizer = t5_test_tokenizer()
    hf_model = t5_model(variant)
    gated = variant == "t5-v1.1"
    assert hf_model.config.is_gated_act == gated and hf_model.config.scale_decoder_outputs == (not gated)
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=variant)
    batch = ranker.tokenize(QUERIES, DOCS)
    assert batch.attention_mask.eq(0).any()
    assert batch.input_ids[0, batch.attention_mask[0].sum() - 1] == tokenizer.eos_token_id
    with torch.no_grad():
        ours = ranker(batch)
    expected = t5_reference(hf_model, tokenizer, ranker, QUERIES, DOCS)
    assert expected.std() > 0.01, "scores must differ across rows for the comparison to mean anything"
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    alone = torch.tensor(ranker.score(QUERIES, DOCS, batch_size=1)).float()  # no padding
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=0)
