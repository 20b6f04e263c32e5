"""The run-cost estimate: row counts that follow the settings and count shared work once, a measured time per
row, and the estimate printed at start-up, before the model's tests run."""

import re

import pytest

from irmechtest.config import Configuration
from irmechtest.controls.twins import random_cross_encoder
from irmechtest.cost import Estimate, estimate_rows, property_work, seconds_per_row

SHAPE = (2, 4)  # layers, heads


def settings(name: str, profile: str = "quick") -> dict:
    return Configuration().settings(name, [], profile)


def rows(*names: str, profile: str = "quick") -> dict[str, int]:
    found, unknown = estimate_rows([(n, settings(n, profile)) for n in names], *SHAPE)
    assert unknown == []
    return found


def test_head_maps_grow_with_heads_and_pairs():
    s = settings("matching-heads")
    small = sum(property_work("matching-heads", s, *SHAPE).values())
    assert sum(property_work("matching-heads", s, 4, 4).values()) - small == 3 * 8 * s["n_pairs"]
    assert rows("matching-heads", profile="full")["matching-heads"] > small


def test_shared_diagnostics_and_maps_are_counted_once():
    """matching-heads and tfc1-stmc1-maps share the sample and its exact head maps (axioms/test_circuits.py):
    the second property adds nothing; with attribution maps it adds their forward and backward passes."""
    both = rows("matching-heads", "tfc1-stmc1-maps")
    assert both["tfc1-stmc1-maps"] == 0 and both["matching-heads"] == rows("matching-heads")["matching-heads"]
    attribution = dict(settings("tfc1-stmc1-maps"), method="attribution")
    found, _ = estimate_rows([("matching-heads", settings("matching-heads")), ("tfc1-stmc1-maps", attribution)], *SHAPE)
    assert found["tfc1-stmc1-maps"] == 3 * 3 * attribution["n_pairs"]


def test_weight_probes_cost_no_rows_and_unknown_properties_are_listed():
    assert rows("idf-in-u0") == {"idf-in-u0": 0}
    found, unknown = estimate_rows([("my-own-property", {}), ("tfc1", settings("tfc1"))], *SHAPE)
    assert unknown == ["my-own-property"] and found == {"tfc1": 4 * settings("tfc1")["n_pairs"]}


def test_the_estimate_multiplies_rows_by_the_measured_time_and_says_it_is_an_estimate():
    ranker = random_cross_encoder("qwen3")
    per_row, tokens = seconds_per_row(ranker)
    assert 0 < per_row < 10 and tokens > 50  # the shipped pairs inside Qwen3-Reranker's prompt
    found = Estimate("m", "quick", 4_000_000, "cpu", {"a": 600, "b": 400}, ["c"], 0.03, tokens)
    assert found.seconds == pytest.approx(30.0)
    text = "\n".join(found.lines())
    assert "1,000 forward rows" in text and "about 0.5 min" in text and "An estimate" in text
    assert "a 600, b 400" in text and "not estimated" in text and "c" in text


def test_the_estimate_is_printed_before_the_models_tests_run(pytester):
    """Settings come from the configuration as the properties' own do: 20 TFC1 pairs are 80 rows."""
    pytester.makefile(".toml", pyproject="[tool.irmechtest.properties.tfc1]\nn_pairs = 20\n")
    result = pytester.runpytest_subprocess("--model=irmechtest:random-bert", "-k", "test_idf_lives_in_u0 or tfc1_holds")
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "irmechtest cost estimate for irmechtest:random-bert" in line)
    assert re.search(r"\(quick profile, [\d.]+ M parameters, cpu\): 80 forward rows", lines[start])
    assert lines[start + 1].strip() == "rows per property: tfc1 80, idf-in-u0 0"
    assert start < next(i for i, line in enumerate(lines) if "irmechtest verdicts" in line)
