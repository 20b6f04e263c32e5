"""Cost of each circuit probe at its default (quick-profile) sample size: on the embedded MiniLM bi-encoder
(the probes that apply to it) and on the planted cross-encoder (all of them).

Run once: pytest tests/benchmarks/test_bench_circuits.py --benchmark-enable -p no:cacheprovider
Each probe is timed once per round (pedantic, 1 round): the point is seconds per probe, not microseconds.
"""

import pytest

from irmechtest.config import property_config
from irmechtest.controls.twins import planted_ranker
from irmechtest.mechanisms import circuits as C
from irmechtest.mechanisms.probes import u0_edit_probe


@pytest.fixture(scope="module")
def planted():
    return planted_ranker()


def settings(name):
    return property_config(name)


def inputs(ranker, name):
    s = settings(name)
    text = C.probe_text(ranker, s["n_pairs"], s["seed"], s["idf_source"])
    return s, text, C.diagnostic_runs(ranker, text, seed=s["seed"], max_length=s["max_length"])


def run_once(benchmark, fn):
    return benchmark.pedantic(fn, rounds=1, iterations=1)


@pytest.mark.benchmark(group="circuits: tfc1-stmc1-maps")
@pytest.mark.parametrize("model", ["minilm", "planted"])
def test_bench_map_correlation(benchmark, model, minilm, planted):
    ranker = minilm if model == "minilm" else planted
    s = settings("tfc1-stmc1-maps")

    def probe():
        _, _, diagnostics = inputs(ranker, "tfc1-stmc1-maps")
        maps = C.head_maps(ranker, diagnostics.runs, s["method"])
        return C.map_correlation(maps) if C.SEMANTIC in maps else None

    run_once(benchmark, probe)


@pytest.mark.benchmark(group="circuits: idf-in-u0-causal")
@pytest.mark.parametrize("model", ["minilm", "planted"])
def test_bench_u0_editing(benchmark, model, minilm, planted):
    ranker = minilm if model == "minilm" else planted
    s = settings("idf-in-u0-causal")
    text = C.probe_text(ranker, s["n_queries"], s["seed"], s["idf_source"])
    run_once(benchmark, lambda: u0_edit_probe(ranker, [p.query for p in text.pairs], text.idf, scales=s["scales"]))


@pytest.mark.benchmark(group="circuits: planted cross-encoder")
def test_bench_matching_heads(benchmark, planted):
    s = settings("matching-heads")

    def probe():
        _, _, diagnostics = inputs(planted, "matching-heads")
        maps = C.head_maps(planted, diagnostics.runs)
        return C.find_matching_heads(
            planted, diagnostics, maps, min_effect=s["min_effect"], min_same_token_lift=s["min_same_token_lift"]
        )

    run_once(benchmark, probe)


@pytest.mark.benchmark(group="circuits: planted cross-encoder")
def test_bench_scoring_and_contextualisation_heads(benchmark, planted):
    s = settings("contextualisation-heads")
    _, text, diagnostics = inputs(planted, "contextualisation-heads")

    def probe():
        scoring = C.find_scoring_heads(planted, diagnostics, text.idf, min_effect=s["scoring_min_effect"])
        return C.find_contextualisation_heads(
            planted, diagnostics, text.idf, scoring.heads, min_effect=s["min_effect"], min_idf_r=s["min_idf_r"]
        )

    run_once(benchmark, probe)


@pytest.mark.benchmark(group="circuits: planted cross-encoder")
def test_bench_circuit_fit(benchmark, planted):
    s = settings("circuit-fit")
    text = C.probe_text(planted, s["n_pairs"], s["seed"], s["idf_source"])
    pairs = [(p.query, p.text) for p in text.pairs]
    heads = planted.truth.matching_heads
    run_once(benchmark, lambda: C.circuit_fit(planted, pairs, heads, text.idf, seed=s["seed"]))
