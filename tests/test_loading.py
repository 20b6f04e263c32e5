"""Loading rankers: every spec form, and a clear error for every kind of bad input."""

import io
import json
import sys

import numpy as np
import pytest
import torch

from irmechtest.controls.twins import random_hf_model, tiny_config
from irmechtest.loading import ModelNotFoundError, load_ranker
from irmechtest.models.encoder import UnsupportedArchitectureError
from irmechtest.models.ranker import InputError, ScoreError, progress_bar


def save_cross_encoder(tmp_path, tokenizer, family="bert", num_labels=1, safe=True):
    directory = tmp_path / family
    model = random_hf_model(tiny_config(family, num_labels), seed=1)
    model.save_pretrained(directory)
    if not safe:  # transformers 5 always writes safetensors: make the pickled layout of older checkpoints
        (directory / "model.safetensors").unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    tokenizer.save_pretrained(directory)
    return directory


def test_embedded_alias_loads_the_bi_encoder(minilm):
    assert minilm.kind == "bi-encoder"
    assert minilm.pooling.mode == "mean" and minilm.pooling.normalize
    assert minilm.max_length == 256  # sentence_bert_config.json's max_seq_length
    assert minilm.identity["weights_sha256"]


def test_local_cross_encoder_directory_matches_the_in_memory_model(tmp_path, tokenizer):
    directory = save_cross_encoder(tmp_path, tokenizer, "electra", num_labels=2)
    ranker = load_ranker(str(directory))
    assert ranker.kind == "cross-encoder" and ranker.cfg.family == "electra"
    reference = random_hf_model(tiny_config("electra", 2), seed=1)
    encoded = tokenizer(["a query"], ["a document about things"], return_tensors="pt")
    with torch.no_grad():
        logits = reference(**encoded).logits
    expected = (logits[:, 1] - logits[:, 0]).double().numpy()
    np.testing.assert_allclose(ranker.score(["a query"], ["a document about things"]), expected, atol=1e-5)


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_local_folder_of_a_modern_encoder_loads_through_the_user_path(tmp_path, tokenizer, family):
    """save_pretrained, then the spec a user gives: config, safetensors and AutoTokenizer read from the folder."""
    directory = save_cross_encoder(tmp_path, tokenizer, family)
    assert (directory / "model.safetensors").exists()
    ranker = load_ranker(str(directory))
    assert ranker.kind == "cross-encoder" and ranker.cfg.family == family
    assert ranker.identity["weights_sha256"]
    reference = random_hf_model(tiny_config(family), seed=1)
    encoded = tokenizer(["a query"], ["a document about things"], return_tensors="pt")
    encoded.pop("token_type_ids")
    with torch.no_grad():
        expected = reference(**encoded).logits[:, 0].double().numpy()
    np.testing.assert_allclose(ranker.score(["a query"], ["a document about things"]), expected, atol=1e-5)


def test_local_monot5_folder_loads_through_the_user_path(tmp_path):
    """A T5ForConditionalGeneration folder is a monoT5 ranker; its tokenizer (built offline) comes back
    through AutoTokenizer, and the score is the in-memory model's."""
    from irmechtest.controls.twins import random_cross_encoder, t5_test_tokenizer

    directory = save_cross_encoder(tmp_path, t5_test_tokenizer(), "t5")
    ranker = load_ranker(str(directory))
    assert ranker.kind == "cross-encoder" and ranker.cfg.family == "t5" and ranker.layout == "encoder-decoder"
    assert ranker.identity["weights_sha256"]
    in_memory = random_cross_encoder("t5", seed=1)
    q, d = ["a query"], ["a document about things"]
    np.testing.assert_allclose(ranker.score(q, d), in_memory.score(q, d), atol=1e-5)


def test_pickled_weights_load_with_a_warning(tmp_path, tokenizer):
    directory = save_cross_encoder(tmp_path, tokenizer, safe=False)
    with pytest.warns(UserWarning, match="no safetensors"):
        load_ranker(str(directory))


def test_unknown_model_says_how_to_provide_one(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="local directory"):
        load_ranker("nobody/no-such-cross-encoder")


def test_invalid_spec_is_refused():
    with pytest.raises(ModelNotFoundError):
        load_ranker("not a ::: valid id")
    with pytest.raises(ModelNotFoundError, match="empty"):
        load_ranker("  ")


def test_directory_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model checkpoint"):
        load_ranker(str(tmp_path))


def test_unsupported_architecture_lists_the_supported_families(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    directory = tmp_path / "gpt2"
    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_head=2, n_embd=16, num_labels=1)).save_pretrained(directory)
    with pytest.raises(
        UnsupportedArchitectureError,
        match=r"BERT \(incl. MiniLM\).*ELECTRA.*DistilBERT.*RoBERTa.*ModernBERT.*DeBERTa-v2 / v3",
    ):
        load_ranker(str(directory))


def test_bare_encoder_without_pooling_or_head_is_not_a_ranker(tmp_path, tokenizer):
    directory = tmp_path / "bare"
    random_hf_model(tiny_config("bert"), cross_encoder=False).save_pretrained(directory)
    with pytest.raises(ValueError, match="not a ranker"):
        load_ranker(str(directory))


def test_too_many_labels_are_refused(tmp_path, tokenizer):
    directory = save_cross_encoder(tmp_path, tokenizer, num_labels=3)
    with pytest.raises(ValueError, match="3 output labels"):
        load_ranker(str(directory))


def test_malformed_sentence_transformers_config_is_a_clear_error(tmp_path):
    (tmp_path / "modules.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"modules\.json"):
        load_ranker(str(tmp_path))


def test_unsupported_sentence_transformers_module_is_named(tmp_path, minilm):
    from irmechtest.loading import embedded_model_dir

    for item in embedded_model_dir().rglob("*"):
        if item.is_file():
            target = tmp_path / item.relative_to(embedded_model_dir())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes())
    modules = json.loads((tmp_path / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense"):
        load_ranker(str(tmp_path))


def test_trust_remote_code_is_never_enabled(tmp_path, tokenizer):
    directory = save_cross_encoder(tmp_path, tokenizer)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.Model"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    ranker = load_ranker(str(directory))  # the built-in BERT class is used; evil.py is never imported
    assert ranker.cfg.family == "bert"


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(ValueError, match="planted-bm25"):
        load_ranker("irmechtest:nonsense")


@pytest.mark.parametrize("queries,documents", [([""], ["doc"]), (["query"], ["   "])])
def test_empty_texts_are_refused(minilm, queries, documents):
    with pytest.raises(InputError, match="empty"):
        minilm.score(queries, documents)


def test_over_long_document_is_an_error_not_a_silent_truncation(minilm):
    long_document = "word " * 600
    with pytest.raises(InputError, match="does not truncate silently"):
        minilm.score(["query"], [long_document])
    assert minilm.score(["query"], [long_document], overflow="truncate").shape == (1,)


def test_mismatched_lengths_are_refused(minilm):
    with pytest.raises(InputError, match="2 queries but 1 documents"):
        minilm.score(["a", "b"], ["c"])


def test_nan_scores_are_refused(tokenizer):
    from irmechtest.loading import ranker_from_hf

    hf_model = random_hf_model(tiny_config("bert"), seed=1)
    with torch.no_grad():
        hf_model.classifier.weight.fill_(float("nan"))
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name="broken")
    with pytest.raises(ScoreError, match="non-finite"):
        ranker.score(["q"], ["d"])


def test_bad_batch_size_is_refused(minilm):
    with pytest.raises(ValueError, match="batch_size"):
        minilm.score(["q"], ["d"], batch_size=0)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_on_a_terminal_for_long_work_only(monkeypatch):
    """Patching, NIG, the pruning study and scoring share one rule: a bar on a terminal when the work is long,
    nothing in CI logs or under pytest's capture (no TTY)."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(10, "short work", long=20) as bar:
        bar.update(10)
    assert terminal.getvalue() == ""
    with progress_bar(30, "long work", long=20) as bar:
        bar.update(30)
    assert "long work" in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(30, "long work in CI", long=20) as bar:
        assert bar.disable


def test_random_like_has_the_checkpoints_shape_and_tokenizer_but_new_weights(zoo):
    real = load_ranker(str(zoo("ce-minilm-trecdl-s1")))
    twin = load_ranker(f"irmechtest:random-like:{zoo('ce-minilm-trecdl-s1')}")
    assert twin.kind == real.kind == "cross-encoder"
    assert twin.cfg == real.cfg
    assert twin.tokenizer.vocab == real.tokenizer.vocab
    assert not torch.equal(twin.W_E, real.W_E)
    assert twin.identity["source"].startswith("random init")


def test_random_like_of_a_sentence_transformers_folder_keeps_its_pooling():
    twin = load_ranker("irmechtest:random-like:minilm")
    assert twin.kind == "bi-encoder" and twin.pooling == load_ranker("minilm").pooling
