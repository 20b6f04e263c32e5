"""Patching cost on the embedded MiniLM: naive loop vs batched engine vs attribution, in one run.

Run: pytest tests/benchmarks/test_bench_patching.py --benchmark-only --benchmark-columns=min,median,rounds
All three methods patch all 72 heads on the same prepared pairs (the two clean runs they share are left out)
and sit in one benchmark group, so pytest-benchmark's table prints each time with its ratio to the fastest.
``extra_info`` carries what the ratios mean: batched == naive, and attribution's r with exact patching.
"""

import numpy as np
import pytest

from irmechtest.datasets import load_pairs
from irmechtest.pairs import build_pairs
from irmechtest.patching import activation_patching, attribution_patching, head_grid, pair_texts, prepare_pairs

pytestmark = pytest.mark.benchmark(group="patch all 72 heads of MiniLM-L6, 2 TFC1 pairs", warmup=False)


@pytest.fixture(scope="module")
def runs(minilm):
    """Two length-matched TFC1 pairs built from the shipped TREC DL sample (padded length 129)."""
    sample = load_pairs("irmechtest:trec-dl-tfc1-sample", limit=8, seed=0)
    pair_set = build_pairs(minilm.tokenizer, "TFC1", sample, kind="bi-encoder", max_length=minilm.max_length)
    return prepare_pairs(minilm, pair_texts(pair_set)[:2])


@pytest.fixture(scope="module")
def exact(minilm, runs):
    """The batched engine's result, untimed: the reference the other methods are compared with."""
    return activation_patching(minilm, runs, head_grid(minilm))


def test_naive_loop(benchmark, minilm, runs, exact):
    """One full forward pass per head and pair, as MechIR does."""
    naive = benchmark.pedantic(
        activation_patching, args=(minilm, runs, head_grid(minilm)), kwargs={"batched": False}, rounds=2
    )
    benchmark.extra_info["max_abs_diff_vs_batched"] = float(np.abs(naive.scores - exact.scores).max())
    assert np.allclose(naive.scores, exact.scores, atol=1e-5)


def test_batched_engine(benchmark, minilm, runs):
    benchmark.pedantic(activation_patching, args=(minilm, runs, head_grid(minilm)), rounds=3)


def test_attribution(benchmark, minilm, runs, exact):
    estimate = benchmark.pedantic(attribution_patching, args=(minilm, runs, head_grid(minilm)), rounds=5)
    benchmark.extra_info["pearson_r_vs_exact"] = estimate.correlation(exact)
