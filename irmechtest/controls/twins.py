"""Models built in code: negative controls (random init) and the planted-circuit positive control.

Every mechanistic property must fail where it should and pass where it should. The random-init controls
have real shapes and real tokenizers but no learned mechanism; the planted model (``planted.py``) has a
known mechanism by construction. All are deterministic for a seed and need no files or network.
"""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer, processors
from transformers import (
    AutoTokenizer,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    LlamaConfig,
    ModernBertConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    RobertaConfig,
    T5Config,
    XLMRobertaConfig,
)

from irmechtest.models.decoder import DECODER_FAMILIES
from irmechtest.models.encoder import SUPPORTED_FAMILIES
from irmechtest.models.ranker import HookedRanker, Pooling

_TINY = dict(vocab_size=30522, max_position_embeddings=130, pad_token_id=0)


def tiny_config(family: str, num_labels: int = 1) -> PretrainedConfig:
    """A small config of ``family`` with the bert-base-uncased vocabulary size (so one tokenizer serves all)."""
    common = dict(_TINY, num_labels=num_labels)
    layers = dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=128)
    if family == "bert":
        return BertConfig(**common, **layers)
    if family == "electra":
        # embedding_size != hidden_size exercises ELECTRA's embeddings_project.
        return ElectraConfig(**common, **layers, embedding_size=32)
    if family == "distilbert":
        return DistilBertConfig(**common, n_layers=2, n_heads=4, dim=64, hidden_dim=128)
    if family == "roberta":
        return RobertaConfig(**common, **layers, type_vocab_size=1)
    if family == "xlm-roberta":
        return XLMRobertaConfig(**common, **layers, type_vocab_size=1)
    if family in {"modernbert", "deberta-v2"}:
        # Their positions act inside attention (rotary, relative buckets), not through a table sized by
        # max_position_embeddings; the limit is the real checkpoints' (DeBERTa-v3: 512; ModernBERT: 8192),
        # so long TREC DL documents fit as they do in the real models.
        common["max_position_embeddings"] = 512
    if family == "modernbert":
        # A window of 2 x 4 tokens on every second layer, so the test inputs reach past the local window.
        # The embedded tokenizer's [CLS] / [SEP] ids replace ModernBERT's own (they index the 30522-word vocabulary).
        special = dict(bos_token_id=101, cls_token_id=101, eos_token_id=102, sep_token_id=102)
        return ModernBertConfig(**common, **layers, **special, local_attention=8, global_attn_every_n_layers=2)
    if family == "deberta-v2":
        # DeBERTa-v3's layout (mxbai-rerank v1): relative attention only (no absolute positions, no token
        # types), c2p and p2c with keys shared, log-bucketed distances (16 buckets reach past the test inputs).
        return DebertaV2Config(
            **common,
            **layers,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            position_buckets=16,
            norm_rel_ebd="layer_norm",
            position_biased_input=False,
            type_vocab_size=0,
        )
    if family == "t5":
        # monoT5's layout (t5-base: ReLU MLP, tied, rescaled unembedding), 8 relative-distance buckets
        # saturating at 20 tokens (T5: 32 at 128), so the test inputs reach the logarithmic buckets.
        return T5Config(
            vocab_size=_TINY["vocab_size"],
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            pad_token_id=0,
            eos_token_id=102,
            decoder_start_token_id=0,
            feed_forward_proj="relu",
            architectures=["T5ForConditionalGeneration"],
        )
    raise ValueError(f"no tiny config for {family!r}; families: {', '.join(SUPPORTED_FAMILIES)}")


# Tiny decoders: the scoring head each family's rerankers use (Qwen3-Reranker and Qwen2-based judges are
# causal LMs answering yes / no; RankLLaMA is Llama with a last-token score head), grouped-query attention
# (4 query heads sharing 2 key / value heads), and room for the yes / no prompt around 256-token pairs.
_TINY_DECODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
)
_DECODER_CONFIGS = {
    "qwen3": (Qwen3Config, "Qwen3ForCausalLM"),
    "qwen2": (Qwen2Config, "Qwen2ForCausalLM"),
    "llama": (LlamaConfig, "LlamaForSequenceClassification"),
}
# Each family's special tokens, added to the embedded WordPiece vocabulary: (bos, eos, pad, others).
_DECODER_SPECIALS = {
    "qwen3": (None, "<|endoftext|>", "<|endoftext|>", ("<|im_start|>", "<|im_end|>")),
    "qwen2": (None, "<|endoftext|>", "<|endoftext|>", ("<|im_start|>", "<|im_end|>")),
    "llama": ("<|begin_of_text|>", "<|end_of_text|>", None, ()),  # Llama 3 ships no padding token
}


def tiny_decoder_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """An offline tokenizer for tiny decoders: the embedded WordPiece vocabulary without [CLS] / [SEP]
    templates, plus the family's special tokens (Llama's BOS prepended as its tokenizer does)."""
    from irmechtest.loading import embedded_model_dir

    bos, eos, pad, others = _DECODER_SPECIALS[family]
    spec = json.loads((embedded_model_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"], spec["truncation"], spec["padding"] = None, None, None
    backend = Tokenizer.from_str(json.dumps(spec))
    specials = [t for t in (bos, eos, *others) if t is not None]
    backend.add_special_tokens(specials)
    if bos is not None:
        bos_id = backend.token_to_id(bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="[UNK]",
        additional_special_tokens=list(others),
        padding_side="left",
        model_max_length=_TINY_DECODER["max_position_embeddings"],
    )


def tiny_decoder_config(family: str, tokenizer: PreTrainedTokenizerFast, num_labels: int = 1) -> PretrainedConfig:
    """A small decoder config of ``family`` sized to ``tokenizer``, with the family's reranker head."""
    config_class, architecture = _DECODER_CONFIGS[family]
    return config_class(
        **_TINY_DECODER,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        architectures=[architecture],
    )


def random_hf_model(config: PretrainedConfig, seed: int = 0, *, cross_encoder: bool = True) -> torch.nn.Module:
    """A Hugging Face model with the library's own random init under a fixed seed (eager attention)."""
    from irmechtest.loading import auto_model_class

    config._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        auto = auto_model_class(config, "cross-encoder" if cross_encoder else "bi-encoder")
        return auto.from_config(config).eval()


def embedded_tokenizer():
    from irmechtest.loading import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def t5_test_tokenizer() -> PreTrainedTokenizerFast:
    """A monoT5-style tokenizer built offline (T5's SentencePiece model cannot be downloaded here): the
    embedded WordPiece vocabulary, so the shipped IDF table applies to it; no [CLS]; one end-of-sequence
    token appended as T5 appends ``</s>`` (``[SEP]`` plays it); "true" and "false" are single tokens."""
    bert = embedded_tokenizer()
    backend = Tokenizer.from_str(bert.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="$A [SEP]", pair="$A [SEP] $B [SEP]", special_tokens=[("[SEP]", bert.sep_token_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", eos_token="[SEP]", unk_token="[UNK]", model_max_length=512
    )


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """The tokenizer a tiny random model of ``family`` is built with."""
    if family in DECODER_FAMILIES:
        return tiny_decoder_tokenizer(family)
    return t5_test_tokenizer() if family == "t5" else embedded_tokenizer()


def random_minilm(seed: int = 0) -> HookedRanker:
    """The embedded bi-encoder's exact shape, tokenizer and pooling, with random weights."""
    from irmechtest.loading import embedded_model_dir, ranker_from_hf

    config = BertConfig.from_pretrained(embedded_model_dir())
    hf_model = random_hf_model(config, seed, cross_encoder=False)
    return ranker_from_hf(
        hf_model,
        embedded_tokenizer(),
        kind="bi-encoder",
        name="irmechtest:random-minilm",
        pooling=Pooling(mode="mean", normalize=True, similarity="cosine"),
        max_length=256,
        identity={"source": "random init", "seed": seed},
    )


def random_twin(ranker: HookedRanker, seed: int = 1) -> HookedRanker:
    """``ranker``'s shape, tokenizer, pooling and length limit with random weights: what the architecture
    does untrained. Seed 1, so the twin of a seed-0 random control is another draw, not the same model."""
    import copy

    from irmechtest.loading import ranker_from_hf

    hf_model = getattr(ranker, "hf_model", None)
    if hf_model is None:
        raise ValueError(f"{ranker.name} was not built from a Hugging Face model; it has no random twin")
    config = copy.deepcopy(hf_model.config)
    twin = random_hf_model(config, seed, cross_encoder=ranker.kind == "cross-encoder")
    return ranker_from_hf(
        twin,
        ranker.tokenizer,
        kind=ranker.kind,
        name=f"random twin of {ranker.name}",
        pooling=ranker.pooling,
        max_length=ranker.max_length,
        identity={"source": f"random init of {ranker.name}'s config", "seed": seed},
    ).to(next(ranker.parameters()).device)


def random_cross_encoder(family: str, seed: int = 0, num_labels: int = 1) -> HookedRanker:
    from irmechtest.loading import ranker_from_hf

    tokenizer = family_tokenizer(family)
    if family in DECODER_FAMILIES:
        hf_model = random_hf_model(tiny_decoder_config(family, tokenizer, num_labels), seed)
    else:
        hf_model = random_hf_model(tiny_config(family, num_labels), seed)
    return ranker_from_hf(
        hf_model,
        tokenizer,
        kind="cross-encoder",
        name=f"irmechtest:random-{family}",
        identity={"source": "random init", "seed": seed},
    )


def planted_ranker(random: bool = False, seed: int = 0) -> HookedRanker:
    """The planted-circuit BM25-like cross-encoder, or its random-init twin; ``ranker.truth`` holds the truth."""
    from irmechtest.controls.planted import build_planted_model, build_random_twin
    from irmechtest.loading import ranker_from_hf

    planted = build_random_twin(seed) if random else build_planted_model(seed)
    name = "irmechtest:planted-bm25" + ("-random" if random else "")
    ranker = ranker_from_hf(
        planted.model,
        planted.tokenizer,
        kind="cross-encoder",
        name=name,
        identity={"source": "built in code", "seed": seed},
    )
    ranker.truth = planted.truth
    return ranker


def builtin_ranker(name: str) -> HookedRanker:
    """The ``irmechtest:<name>`` models."""
    if name in {"planted-bm25", "planted-bm25-random"}:
        return planted_ranker(random=name.endswith("-random"))
    if name == "random-minilm":
        return random_minilm()
    from irmechtest.loading import FAMILIES

    family = name.removeprefix("random-")
    if name.startswith("random-") and family in FAMILIES:
        return random_cross_encoder(family)
    builtins = ["planted-bm25", "planted-bm25-random", "random-minilm", *(f"random-{f}" for f in FAMILIES)]
    raise ValueError(f"unknown built-in model 'irmechtest:{name}'; built-ins: {', '.join(builtins)}")
