"""Hooked models reproduce Hugging Face scores: fp32, padding, token_type_ids, batches > 1."""

import pytest
import torch
from sentence_transformers import SentenceTransformer

from irmechtest.controls import random_hf_model, tiny_config
from irmechtest.encoder import SUPPORTED_FAMILIES
from irmechtest.loading import embedded_model_dir, ranker_from_hf

QUERIES = ["what is a fox", "how tall is mount everest", "why"]
DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "mount everest is 8848 metres tall, the highest mountain above sea level on earth",
    "because",
]


def hf_reference(hf_model, tokenizer, family: str, num_labels: int) -> torch.Tensor:
    encoded = tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    if family in {"distilbert", "roberta", "xlm-roberta"}:
        encoded.pop("token_type_ids")  # these families take none (RoBERTa's single type is implicit)
    with torch.no_grad():
        logits = hf_model(**encoded).logits
    return logits[:, 0] if num_labels == 1 else logits[:, 1] - logits[:, 0]


@pytest.mark.parametrize("num_labels", [1, 2])
@pytest.mark.parametrize("family", list(SUPPORTED_FAMILIES))
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
