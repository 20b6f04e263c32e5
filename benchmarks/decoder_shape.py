"""Build a random-init Qwen3 yes / no reranker of Qwen3-Reranker-0.6B's shape (or a scaled-down one) offline,
and print irmechtest's run-cost estimate for it; docs/benchmarks.md runs the quick profile on what this builds.

Qwen3-Reranker-0.6B's config values are from its published ``config.json`` (no download here): 28 layers,
hidden 1024, 16 query / 8 key-value heads of 128, MLP 3072, vocabulary 151,669, rope theta 1e6, RMSNorm eps
1e-6, tied embeddings. Its tokenizer cannot be fetched offline, so the folder carries irmechtest's offline Qwen3
test tokenizer (the embedded WordPiece vocabulary plus Qwen's chat markers); the embedding keeps the real
151,669 rows, so weights and memory are the real model's.

    python benchmarks/decoder_shape.py DIR                      # the 0.6B shape
    python benchmarks/decoder_shape.py DIR --layers 4 --hidden 256 --heads 4 --kv-heads 2 --head-dim 64 --mlp 768
    python benchmarks/decoder_shape.py DIR --estimate-only      # no folder: the estimate of that shape
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from transformers import Qwen3Config

from irmechtest.config import Configuration
from irmechtest.controls.twins import tiny_decoder_tokenizer
from irmechtest.cost import Estimate, estimate_rows, seconds_per_row
from irmechtest.models.huggingface import random_hf_model, ranker_from_hf
from irmechtest.registry import PROPERTIES

QWEN3_RERANKER_0_6B = dict(
    num_hidden_layers=28,
    hidden_size=1024,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=3072,
    vocab_size=151669,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


def config(args: argparse.Namespace, tokenizer) -> Qwen3Config:
    shape = dict(QWEN3_RERANKER_0_6B)
    for key, value in (
        ("num_hidden_layers", args.layers),
        ("hidden_size", args.hidden),
        ("num_attention_heads", args.heads),
        ("num_key_value_heads", args.kv_heads),
        ("head_dim", args.head_dim),
        ("intermediate_size", args.mlp),
    ):
        if value is not None:
            shape[key] = value
    return Qwen3Config(
        **shape, pad_token_id=tokenizer.pad_token_id, architectures=["Qwen3ForCausalLM"], use_sliding_window=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    for name in ("layers", "hidden", "heads", "kv-heads", "head-dim", "mlp"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--estimate-only", action="store_true")
    args = parser.parse_args()
    tokenizer = tiny_decoder_tokenizer("qwen3")
    start = time.perf_counter()
    hf_model = random_hf_model(config(args, tokenizer), seed=0)
    built = time.perf_counter() - start
    ranker = ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name=str(args.directory))
    configuration = Configuration()
    properties = [(name, configuration.settings(name, [], args.profile)) for name in sorted(PROPERTIES)]
    rows, _ = estimate_rows(properties, ranker.cfg.n_layers, ranker.cfg.n_heads)
    per_row, tokens = seconds_per_row(ranker)
    parameters = sum(p.numel() for p in ranker.parameters())
    estimate = Estimate(str(args.directory), args.profile, parameters, "cpu", rows, [], per_row, tokens)
    print(*estimate.lines(), sep="\n")
    print(f"built in {built:.1f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    if not args.estimate_only:
        hf_model.save_pretrained(args.directory)
        tokenizer.save_pretrained(args.directory)
        print(f"saved to {args.directory}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
