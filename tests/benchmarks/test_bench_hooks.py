"""Hooked forward vs plain Hugging Face forward on the same batch, no hook active (target: < 10 % cost).

Run: pytest tests/benchmarks/test_bench_hooks.py --benchmark-only
The two are measured in one run; compare the ratio of their means, not absolute times.
"""

import pytest
import torch

DOCS = ["the quick brown fox jumps over the lazy dog and keeps running through the field " * 6] * 16


@pytest.fixture(scope="module")
def batch(minilm):
    return minilm.tokenize(["what does the fox do"] * len(DOCS), DOCS)


@pytest.mark.benchmark(group="forward: minilm, 16 x 128 tokens")
def test_plain_hugging_face_forward(benchmark, minilm, batch):
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    with torch.no_grad():
        benchmark(lambda: minilm.hf_model(**inputs))


@pytest.mark.benchmark(group="forward: minilm, 16 x 128 tokens")
def test_hooked_forward_no_hooks(benchmark, minilm, batch):
    with torch.no_grad():
        benchmark(lambda: minilm.run_blocks(batch, minilm.embed_inputs(batch)))
