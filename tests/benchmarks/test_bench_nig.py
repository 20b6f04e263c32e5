"""NIG on the embedded MiniLM at the quick profile's sizes: path points stacked along the batch vs one per pass.

Run: pytest tests/benchmarks/test_bench_nig.py --benchmark-only -p no:cacheprovider
Both methods run the same ``neuron_integrated_gradients`` (the naive one with a row budget of 1, i.e. one
pair at one path point per forward and backward pass) in one run: compare the ratio of their means
(docs/nig.md quotes it). The pruning study's cost is (repeats + 2) reranking passes over the lists.
"""

import numpy as np
import pytest

from irmechtest.mechanisms.nig import NIG_DEFAULTS, neuron_integrated_gradients, neuron_layout
from irmechtest.mechanisms.reranking import trec_sample_data

SETTINGS = NIG_DEFAULTS["nig-pruning"]
GROUP = f"NIG: minilm, {SETTINGS['n_pairs']} pairs x {SETTINGS['steps']} steps, every linear-layer neuron"


@pytest.fixture(scope="module")
def pairs():
    s = SETTINGS
    return trec_sample_data(s["n_queries"], s["n_negatives"], s["n_pairs"], s["seed"]).attribution


def run(minilm, pairs, budget: int) -> np.ndarray:
    layout = neuron_layout(minilm)
    return neuron_integrated_gradients(
        minilm, pairs, steps=SETTINGS["steps"], batch_budget=budget, layout=layout
    ).values


@pytest.mark.benchmark(group=GROUP)
def test_bench_nig_naive_one_point_per_pass(benchmark, minilm, pairs):
    values = benchmark.pedantic(run, args=(minilm, pairs, 1), rounds=1, iterations=1)
    assert values.shape == (len(pairs), neuron_layout(minilm).n_neurons)


@pytest.mark.benchmark(group=GROUP)
def test_bench_nig_batched(benchmark, minilm, pairs):
    values = benchmark.pedantic(run, args=(minilm, pairs, SETTINGS["batch_budget"]), rounds=1, iterations=1)
    assert np.isfinite(values).all()
