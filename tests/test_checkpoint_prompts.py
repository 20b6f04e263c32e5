"""Prompts read from the checkpoint where it names them, else the family default, overridable in
``[tool.irmechtest]``: a sentence-transformers folder's ``prompts`` / ``default_prompt_name`` (Qwen3-Embedding
keeps its query instruction there), scored as sentence-transformers scores them, and monoT5's template and label
words. Every folder is built offline with ``save_pretrained``."""

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer

from irmechtest.config import parse_configuration
from irmechtest.controls.twins import (
    random_hf_model,
    t5_test_tokenizer,
    tiny_config,
    tiny_decoder_config,
    tiny_decoder_tokenizer,
)
from irmechtest.loading import load_ranker

QUERIES = ["what is rna", "apple pie recipe"]
DOCS = ["rna is a molecule that carries genetic information", "bake the apples with sugar and a crisp crust"]
QWEN3_EMBEDDING_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
FP32 = dict(atol=1e-5, rtol=0)


def embedding_folder(path, st_config: dict):
    """A Qwen3-Embedding-style folder: bare Qwen3, last-token pooling, normalisation, and ``st_config``."""
    tokenizer = tiny_decoder_tokenizer("qwen3")
    config = tiny_decoder_config("qwen3", tokenizer)
    config.architectures = ["Qwen3Model"]
    random_hf_model(config, seed=3, cross_encoder=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode_lasttoken": True})
    )
    (path / "2_Normalize").mkdir()
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return path


def ours(ranker) -> torch.Tensor:
    with torch.no_grad():
        return ranker(ranker.tokenize(QUERIES, DOCS))


def test_the_checkpoints_query_prompt_is_used_as_sentence_transformers_uses_it(tmp_path):
    folder = embedding_folder(tmp_path, {"prompts": {"query": QWEN3_EMBEDDING_QUERY, "document": ""}})
    ranker = load_ranker(str(folder))
    reference = SentenceTransformer(str(folder), device="cpu")
    prompted = reference.similarity_pairwise(reference.encode(QUERIES, prompt_name="query"), reference.encode(DOCS))
    plain = reference.similarity_pairwise(reference.encode(QUERIES), reference.encode(DOCS))
    torch.testing.assert_close(ours(ranker), prompted.to(torch.float32), **FP32)
    assert not torch.allclose(prompted, plain, atol=1e-3), "the prompt must change the score for this to test it"
    assert ranker.identity["prompt"]["query"] == QWEN3_EMBEDDING_QUERY + "{query}"


def test_the_default_prompt_serves_both_sides(tmp_path):
    folder = embedding_folder(tmp_path, {"prompts": {"retrieval": "passage: {x}"}, "default_prompt_name": "retrieval"})
    reference = SentenceTransformer(str(folder), device="cpu")
    expected = reference.similarity_pairwise(reference.encode(QUERIES), reference.encode(DOCS))  # default prompt
    ranker = load_ranker(str(folder))
    torch.testing.assert_close(ours(ranker), expected.to(torch.float32), **FP32)
    assert ranker.prompt.query == "passage: {{x}}{query}"  # the checkpoint's braces are text, not placeholders


def test_the_configuration_overrides_the_checkpoints_prompt(tmp_path):
    folder = embedding_folder(tmp_path, {"prompts": {"query": QWEN3_EMBEDDING_QUERY, "document": "doc: "}})
    config = parse_configuration({"models": {str(folder): {"prompt": {"query": "find: {query}"}}}}, "t.toml")
    ranker = load_ranker(str(folder), prompt=config.prompt([str(folder)]))
    assert (ranker.prompt.query, ranker.prompt.document) == ("find: {query}", "doc: {document}")
    reference = SentenceTransformer(str(folder), device="cpu")
    query = reference.encode([f"find: {q}" for q in QUERIES])
    expected = reference.similarity_pairwise(query, reference.encode(DOCS, prompt_name="document"))
    torch.testing.assert_close(ours(ranker), expected.to(torch.float32), **FP32)


def test_a_folder_without_prompts_encodes_texts_as_given(tmp_path):
    folder = embedding_folder(tmp_path, {"prompts": {}})
    ranker = load_ranker(str(folder))
    assert ranker.prompt.query == "{query}" and "prompt" not in ranker.identity


def test_monot5_template_and_label_words_are_overridable(tmp_path):
    tokenizer = t5_test_tokenizer()
    random_hf_model(tiny_config("t5"), seed=1).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    default = load_ranker(str(tmp_path))
    assert default.template == "Query: {query} Document: {document} Relevant:" and default.labels == ("true", "false")
    body = "Question: {query} Passage: {document} Relevant:"
    config = parse_configuration({"models": {str(tmp_path): {"prompt": {"body": body, "yes": "yes", "no": "no"}}}}, "t")
    ranker = load_ranker(str(tmp_path), prompt=config.prompt([str(tmp_path)]))
    assert ranker.template == body and ranker.label_ids == tokenizer.convert_tokens_to_ids(["yes", "no"])
    assert tokenizer.decode(ranker.tokenize(QUERIES[:1], DOCS[:1]).input_ids[0]).startswith("question : what is rna")
    assert not torch.equal(ours(ranker), ours(default))
    with pytest.raises(ValueError, match="placeholders"):
        load_ranker(str(tmp_path), prompt={"body": "{query} only"})


def test_an_encoder_cross_encoder_folder_refuses_a_prompt(tmp_path):
    from irmechtest.controls.twins import embedded_tokenizer

    random_hf_model(tiny_config("bert"), seed=1).save_pretrained(tmp_path)
    embedded_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="reads \\[CLS\\] query \\[SEP\\] document \\[SEP\\] and takes no prompt"):
        load_ranker(str(tmp_path), prompt={"query": "q: {query}"})
