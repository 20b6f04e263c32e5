"""Patching cost on the embedded MiniLM: naive loop vs batched engine vs attribution, in one run.

Run: pytest tests/benchmarks/test_bench_patching.py --benchmark-only --benchmark-columns=min,median,max,rounds
-p no:cacheprovider (results and their reading: docs/benchmarks.md).
All three methods patch all 72 heads on the same prepared pairs (the two clean runs they share are left out)
and sit in one benchmark group, so pytest-benchmark's table prints each time with its ratio to the fastest.
``extra_info`` carries what the ratios mean: batched == naive, and attribution's r with exact patching.
"""

import numpy as np
import pytest

from irmechtest.data.pairs import build_pairs
from irmechtest.data.sources import load_pairs
from irmechtest.mechanisms.components import head_grid
from irmechtest.mechanisms.pair_runs import pair_texts, prepare_pairs
from irmechtest.mechanisms.patching import activation_patching, attribution_patching

pytestmark = pytest.mark.benchmark(warmup=False)


def tfc1_pairs(minilm, limit: int) -> list[tuple[str, str, str]]:
    sample = load_pairs("irmechtest:trec-dl-tfc1-sample", limit=limit, seed=0)
    return pair_texts(build_pairs(minilm.tokenizer, "TFC1", sample, kind="bi-encoder", max_length=minilm.max_length))


@pytest.fixture(scope="module", params=["2 pairs, lengths 129 and 75", "2 pairs, equal lengths", "8 pairs"])
def runs(request, minilm):
    """TFC1 pairs from the shipped TREC DL sample: the first two (real lengths 129 and 75, padded to 129), the
    first two of equal length >= 100 tokens (where trimming padding saves nothing), or the first eight (a
    quick-profile-sized sample)."""
    if request.param == "2 pairs, equal lengths":
        by_length: dict[int, list[tuple[str, str, str]]] = {}
        for pair in tfc1_pairs(minilm, 40):
            by_length.setdefault(len(minilm.tokenizer(pair[2])["input_ids"]), []).append(pair)
        pairs = next(found[:2] for length, found in by_length.items() if length >= 100 and len(found) >= 2)
    else:
        pairs = tfc1_pairs(minilm, 8)[: int(request.param[0])]
    return prepare_pairs(minilm, pairs)


@pytest.fixture
def bench(benchmark, request):
    """``benchmark`` in the group of its pair set: each table compares the three methods on the same pairs."""
    benchmark.group = f"patch all 72 heads of MiniLM-L6, TFC1, {request.node.callspec.params['runs']}"
    return benchmark


@pytest.fixture(scope="module")
def exact(minilm, runs):
    """The batched engine's result, untimed: the reference the other methods are compared with."""
    return activation_patching(minilm, runs, head_grid(minilm))


def test_naive_loop(bench, minilm, runs, exact):
    """One full forward pass per head and pair, as MechIR does."""
    naive = bench.pedantic(
        activation_patching, args=(minilm, runs, head_grid(minilm)), kwargs={"batched": False}, rounds=2
    )
    bench.extra_info["max_abs_diff_vs_batched"] = float(np.abs(naive.scores - exact.scores).max())
    assert np.allclose(naive.scores, exact.scores, atol=1e-5)


def test_batched_engine(bench, minilm, runs):
    bench.pedantic(activation_patching, args=(minilm, runs, head_grid(minilm)), rounds=3)


def test_attribution(bench, minilm, runs, exact):
    estimate = bench.pedantic(attribution_patching, args=(minilm, runs, head_grid(minilm)), rounds=5)
    bench.extra_info["pearson_r_vs_exact"] = estimate.correlation(exact)
