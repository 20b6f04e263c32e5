"""Patching cost on the embedded MiniLM: naive loop vs batched engine vs attribution, in one run.

Run: pytest tests/benchmarks/test_bench_patching.py --benchmark-only -s
Each benchmark times one method over all 72 heads on prepared pairs (the two clean runs are shared
by every method and left out). The ratio test prints the numbers docs/benchmarks.md quotes.
"""

import time

import pytest

from irmechtest.datasets import load_pairs
from irmechtest.pairs import build_pairs
from irmechtest.patching import activation_patching, attribution_patching, head_grid, pair_texts, prepare_pairs


@pytest.fixture(scope="module")
def runs(minilm):
    """Two length-matched TFC1 pairs built from the shipped TREC DL sample (127 and 75 tokens)."""
    sample = load_pairs("irmechtest:trec-dl-tfc1-sample", limit=8, seed=0)
    pair_set = build_pairs(minilm.tokenizer, "TFC1", sample, kind="bi-encoder", max_length=minilm.max_length)
    return prepare_pairs(minilm, pair_texts(pair_set)[:2])


def test_bench_naive(benchmark, minilm, runs):
    benchmark.pedantic(activation_patching, args=(minilm, runs, head_grid(minilm)), kwargs={"batched": False}, rounds=1)


def test_bench_batched(benchmark, minilm, runs):
    benchmark.pedantic(activation_patching, args=(minilm, runs, head_grid(minilm)), rounds=3)


def test_bench_attribution(benchmark, minilm, runs):
    benchmark.pedantic(attribution_patching, args=(minilm, runs, head_grid(minilm)), rounds=5)


def test_bench_ratios(benchmark, minilm, runs):
    """Interleaved timings of the three methods, and attribution's correlation with exact patching."""
    grid = head_grid(minilm)

    def timed(fn, **kwargs):
        start = time.perf_counter()
        result = fn(minilm, runs, grid, **kwargs)
        return time.perf_counter() - start, result

    naive_s, naive = timed(activation_patching, batched=False)
    batched_s, exact = benchmark.pedantic(timed, args=(activation_patching,), rounds=1)
    attribution_s, attribution = timed(attribution_patching)
    r = attribution.correlation(exact)
    print(
        f"\npairs={runs.n_pairs} seq_len={runs.seq_len} naive={naive_s:.2f}s batched={batched_s:.2f}s "
        f"attribution={attribution_s:.3f}s batched_speedup={naive_s / batched_s:.2f}x "
        f"attribution_speedup={naive_s / attribution_s:.1f}x r={r:.3f} "
        f"max|batched-naive|={abs(exact.scores - naive.scores).max():.2e}"
    )
