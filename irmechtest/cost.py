"""The run-cost estimate printed before a long run starts: forward rows per property x a measured time per row.

A billion-parameter reranker can take hours on the full profile, so the user learns what a run will cost
before it starts, per model, once the model is loaded: how many forward rows (one input sequence through the
model) the selected properties need at the chosen profile, and how long one row takes, measured on a few
shipped pairs on the chosen device. It is an estimate, and says so: the row counts are upper bounds (patching
copies start at the patched layer and only the pairs an edit moves are patched; each is counted as a whole
forward pass), a backward pass is counted as two forwards, and the time per row changes with load and length.

Work the properties share (the circuit probes' diagnostic pairs and head maps, cached per model and sample
in ``axioms/test_circuits.py``) is counted once.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from irmechtest.config import Configuration
from irmechtest.models.ranker import HookedRanker

DIAGNOSTIC_SETS = 3  # TFC1, STMC1 and the control edit (circuits.diagnostic_runs)
BACKWARD = 2  # a backward pass costs about two forwards
TIMED_PAIRS = 8  # shipped TREC DL pairs timed for the per-row estimate
# Timed forwards, their median taken: on shared cores one pass varied 6x between shapes of similar cost.
TIMED_REPEATS = 3

Work = dict[tuple[Any, ...], int]  # a shareable piece of work -> its forward rows


def _diagnostics(s: Mapping[str, Any]) -> tuple[tuple[Any, ...], int]:
    n = s["n_pairs"]
    return ("diagnostics", n, s["seed"], s["max_length"], s["idf_source"]), DIAGNOSTIC_SETS * 2 * n


def _maps(s: Mapping[str, Any], heads: int, method: str | None = None) -> Work:
    """The diagnostics and their head maps: every head patched on every pair of each set (exact), one forward
    and backward per set (attribution), or that screen and ``verify_top_k`` heads patched exactly (screened).
    ``method`` None: the head search's (``head_screen``)."""
    if method is None:
        method = "screened" if s["head_screen"] == "attribution" else "exact"
    n = s["n_pairs"]
    key, rows = _diagnostics(s)
    top_k = s["verify_top_k"] if method == "screened" else 0
    per_set = {"exact": heads * n, "attribution": (1 + BACKWARD) * n, "screened": (1 + BACKWARD + top_k) * n}
    return {key: rows, ("maps", *key[1:], method, top_k): DIAGNOSTIC_SETS * per_set[method]}


def property_work(name: str, s: Mapping[str, Any], n_layers: int, n_heads: int) -> Work | None:
    """The forward rows property ``name`` needs with settings ``s`` on a model of that shape, keyed by the work
    it may share with other properties; None for a property this module does not know (a project's own)."""
    heads = n_layers * n_heads
    if name == "tfc1" or name.startswith("axiom-"):
        return {(name,): 4 * s["n_pairs"]}  # baseline, perturbed and two control edits per pair
    if name == "idf-in-u0":
        return {}  # reads the weights only
    if name == "idf-in-u0-causal":
        return {(name,): s["n_queries"] * len(s["scales"]) * 2 * (1 + s["n_random"])}
    if name == "matching-heads":
        key, _ = _diagnostics(s)
        return {**_maps(s, heads), ("ablation", *key[1:]): 2 * 2 * s["n_pairs"]}
    if name == "tfc1-stmc1-maps":
        return _maps(s, heads, s["method"])
    if name in ("scoring-heads", "contextualisation-heads"):
        key, rows = _diagnostics(s)
        work = {key: rows, ("path to the score", *key[1:]): heads * s["n_pairs"]}
        if name == "contextualisation-heads":  # into one receiver's v, in the last layer at most
            work[("path into v", *key[1:])] = heads * s["n_pairs"] * 2
        return work
    if name == "circuit-fit":
        search = dict(s, n_pairs=s["match_pairs"])
        return {**_maps(search, heads), (name, s["n_pairs"], s["seed"]): s["n_pairs"]}
    if name == "nig-pruning":
        attribution = s["n_pairs"] * (s["steps"] + 1) * (1 + BACKWARD)
        reranking = s["n_queries"] * (s["n_negatives"] + 1) * (2 + s["repeats"])  # base, NIG, random prunings
        return {(name, "attribution"): attribution, (name, "reranking"): reranking}
    return None


@dataclass
class Estimate:
    """Forward rows per property (shared work counted at its first property) and the measured time per row."""

    model: str
    profile: str
    parameters: int
    device: str
    rows: dict[str, int] = field(default_factory=dict)
    not_estimated: list[str] = field(default_factory=list)
    seconds_per_row: float = 0.0
    tokens_per_row: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def seconds(self) -> float:
        return self.total_rows * self.seconds_per_row

    def lines(self) -> list[str]:
        minutes = self.seconds / 60
        spent = f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
        head = (
            f"irmechtest cost estimate for {self.model} ({self.profile} profile, {self.parameters / 1e6:,.1f} M "
            f"parameters, {self.device}): {self.total_rows:,} forward rows x {1e3 * self.seconds_per_row:.2f} ms "
            f"per row (measured on {TIMED_PAIRS} shipped pairs, {self.tokens_per_row:.0f} tokens) = about {spent}. "
            "An estimate: rows are upper bounds, backward passes count as two forwards, and load changes the time."
        )
        parts = ", ".join(f"{name} {rows:,}" for name, rows in sorted(self.rows.items(), key=lambda kv: -kv[1]))
        lines = [head, f"  rows per property: {parts or 'none'}"]
        if self.not_estimated:
            lines.append(f"  not estimated (unknown to irmechtest.cost): {', '.join(self.not_estimated)}")
        return lines


def estimate_rows(
    properties: Iterable[tuple[str, Mapping[str, Any]]], n_layers: int, n_heads: int
) -> tuple[dict[str, int], list[str]]:
    """Rows per property, each shared piece of work counted once (at the first property that needs it), and
    the properties not estimated."""
    seen: set[tuple[Any, ...]] = set()
    rows: dict[str, int] = {}
    unknown: list[str] = []
    for name, settings in properties:
        work = property_work(name, settings, n_layers, n_heads)
        if work is None:
            unknown.append(name)
            continue
        rows[name] = sum(n for key, n in work.items() if key not in seen)
        seen.update(work)
    return rows, unknown


def seconds_per_row(ranker: HookedRanker) -> tuple[float, float]:
    """(seconds, mean real tokens) per row of a forward over ``TIMED_PAIRS`` shipped TREC DL pairs, the median
    of ``TIMED_REPEATS`` after a warm-up forward; on a GPU the device is synchronised around each timed pass."""
    from irmechtest.data.sources import load_pairs

    pairs = load_pairs(limit=TIMED_PAIRS, seed=0)
    # A bi-encoder caches query embeddings as it tokenises; embedded here, in this batch's padded shape, they
    # would differ in the last bits from those the properties compute, and a run's values would depend on
    # whether the estimate ran (it does not under xdist workers). The cache is left as it was.
    cached = dict(ranker._query_cache)
    batch = ranker.tokenize([p.query for p in pairs], [p.text for p in pairs], overflow="truncate")
    ranker._query_cache = cached
    sync = torch.cuda.synchronize if ranker.device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        ranker(batch.index(slice(0, 2)))
        for _ in range(TIMED_REPEATS):
            sync()
            start = time.perf_counter()
            ranker(batch)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(batch), float(batch.attention_mask.sum()) / len(batch)


def selected_properties(items: Iterable[pytest.Item], spec: str) -> list[pytest.Mark]:
    """The property markers of the collected tests that run on model ``spec``, in collection order."""
    out, names = [], set()
    for item in items:
        marker = item.get_closest_marker("irmech_property")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("ranker") != spec:
            continue
        if marker.args[0] not in names:
            names.add(marker.args[0])
            out.append(marker)
    return out


def announce(
    request: pytest.FixtureRequest,
    spec: str,
    ranker: HookedRanker,
    configuration: Configuration,
    profile: str,
    not_applicable: Callable[[pytest.Mark, HookedRanker], str | None],
) -> Estimate | None:
    """Estimate the run on ``ranker`` (loaded for ``--model=spec``) and print it on the terminal; nothing when no
    property that applies to it is selected. Settings resolve as the properties' own (``irmech_settings``)."""
    markers = [m for m in selected_properties(request.session.items, spec) if not_applicable(m, ranker) is None]
    if not markers:
        return None
    keys = [spec, ranker.name]
    properties = [(m.args[0], configuration.settings(m.args[0], keys, profile)) for m in markers]
    rows, unknown = estimate_rows(properties, ranker.cfg.n_layers, ranker.cfg.n_heads)
    per_row, tokens = seconds_per_row(ranker)
    parameters = sum(p.numel() for p in ranker.parameters())
    found = Estimate(ranker.name, profile, parameters, str(ranker.device), rows, unknown, per_row, tokens)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if reporter._tw.width_of_current_line:  # after a progress character ("F"), start a new line
                reporter.write("\n")
            for line in found.lines():
                reporter.write_line(line)
    return found
