"""The relevance circuit of Pathway to Relevance (seed 002): matching heads, relevance-scoring heads,
query-contextualisation heads, shared exact / semantic matching components, and the linear circuit fit.

Everything but the TFC1 / STMC1 map correlation reads query -> document or [CLS] -> query attention, which
only cross-encoders have; on bi-encoders those properties are not applicable. The TFC1, STMC1 and control
pairs and their patching maps are built once per model and sample and shared by the properties.
"""

from typing import Any

import numpy as np
import pytest

from irmechtest import circuits as C
from irmechtest.verdicts import Evidence, Outcome, Verdict

CROSS = ("cross-encoder",)
BLOCKS = ("blocks",)  # patching and attention maps over blocks.{l}: not monoT5's encoder / decoder stacks
NO_QD = "bi-encoders encode query and document apart: no query -> document or [CLS] -> query attention"


@pytest.fixture(scope="module")
def circuit_inputs():
    """(text, runs, maps) per model and sample, computed once and shared by the properties."""
    cache: dict[tuple, dict[str, Any]] = {}

    def get(ranker, settings, method="exact"):
        key = (ranker.name, settings["n_pairs"], settings["seed"], settings["max_length"], settings["idf_source"])
        if key not in cache:
            text = C.probe_text(ranker, settings["n_pairs"], settings["seed"], settings["idf_source"])
            runs = C.diagnostic_runs(ranker, text, seed=settings["seed"], max_length=settings["max_length"])
            cache[key] = {"text": text, "runs": runs, "maps": {}, "heads": {}}
        entry = cache[key]
        if method not in entry["maps"]:
            entry["maps"][method] = C.head_maps(ranker, entry["runs"], method)
        return entry["text"], entry["runs"], entry["maps"][method], entry["heads"]

    return get


@pytest.fixture(scope="module")
def matching_heads(circuit_inputs):
    """``find_matching_heads`` per sample and rule: matching-heads and circuit-fit share one search."""

    def get(ranker, settings, **rule):
        _, runs, maps, found = circuit_inputs(ranker, settings)
        key = ("matching", *sorted(rule.items()))
        if key not in found:
            found[key] = C.find_matching_heads(ranker, runs, maps, **rule)
        return found[key]

    return get


@pytest.fixture(scope="module")
def scoring_heads(circuit_inputs):
    """``find_scoring_heads`` per sample and rule: scoring- and contextualisation-heads share its path patching."""

    def get(ranker, settings, **rule):
        text, runs, _, found = circuit_inputs(ranker, settings)
        key = ("scoring", *sorted(rule.items()))
        if key not in found:
            found[key] = C.find_scoring_heads(ranker, runs, text.idf, **rule)
        return found[key]

    return get


def heatmap(title: str, grid: np.ndarray) -> Evidence:
    data = [[None if np.isnan(v) or np.isinf(v) else round(float(v), 4) for v in row] for row in grid]
    rows = [f"layer {layer}" for layer in range(grid.shape[0])]
    return Evidence("heatmap", title, {"data": data, "row_labels": rows, "col_labels": list(range(grid.shape[1]))})


def components(heads, effects: dict[str, float]) -> dict[str, Any]:
    return {"components": [C.head_label(h) for h in heads], "effects": effects}


def sample(settings, runs) -> dict[str, Any]:
    return {"seed": settings["seed"], "n_pairs": {name: r.n_pairs for name, r in runs.items()}}


@pytest.mark.irmech_property("matching-heads", applies_to=CROSS, reason=NO_QD, layouts=BLOCKS)
def test_matching_heads(ranker, irmech_settings, irmech_verdict, circuit_inputs, matching_heads):
    s = irmech_settings
    _, runs, _, _ = circuit_inputs(ranker, s)
    found = matching_heads(ranker, s, min_effect=s["min_effect"], min_attention_r=s["min_attention_r"])
    names = ", ".join(map(C.head_label, found.heads)) or "none"
    ablation = "; ".join(
        f"{a}: {x.removed:.0%} of the effect removed, mean perturbed score {x.perturbed_before:.3g} -> "
        f"{x.perturbed_after:.3g}"
        for a, x in found.ablations.items()
    )
    irmech_verdict(
        Verdict(
            "matching-heads",
            ranker.name,
            value=found.removed,
            threshold=s["threshold"],
            summary=f"matching heads: {names} ({found.rule}). Mean-ablating them: {ablation or 'nothing to ablate'}",
            details={
                **components(found.heads, found.effects()),
                **sample(s, runs),
                "attention_r": {C.head_label(h): float(found.attention_r[h]) for h in found.heads},
                "removed": {a: x.removed for a, x in found.ablations.items()},
                "rule": found.rule,
            },
            evidence=[
                heatmap("TFC1 activation patching (share of the effect restored)", found.maps["TFC1"].mean),
                heatmap("STMC1 activation patching", found.maps["STMC1"].mean),
                heatmap("r(query -> document attention, embedding cosine)", found.attention_r),
            ],
        )
    )


@pytest.mark.irmech_property("scoring-heads", applies_to=CROSS, reason=NO_QD, layouts=BLOCKS)
def test_scoring_heads(ranker, irmech_settings, irmech_verdict, circuit_inputs, scoring_heads):
    s = irmech_settings
    _, runs, _, _ = circuit_inputs(ranker, s)
    found = scoring_heads(ranker, s, min_effect=s["min_effect"])
    names = ", ".join(f"{C.head_label(h)} (IDF r {found.idf_r[h]:+.2f})" for h in found.heads) or "none"
    irmech_verdict(
        Verdict(
            "scoring-heads",
            ranker.name,
            value=found.mean_idf_r,
            threshold=s["threshold"],
            summary=f"relevance-scoring heads: {names} ({found.rule}); value: their mean [CLS] -> query IDF r",
            details={**components(found.heads, found.effects()), **sample(s, runs), "rule": found.rule},
            evidence=[
                heatmap("TFC1 path patching to the score", found.maps["TFC1"].mean),
                heatmap("STMC1 path patching to the score", found.maps["STMC1"].mean),
                heatmap("r([CLS] -> query attention, IDF)", found.idf_r),
            ],
        )
    )


@pytest.mark.irmech_property("contextualisation-heads", applies_to=CROSS, reason=NO_QD, layouts=BLOCKS)
def test_contextualisation_heads(ranker, irmech_settings, irmech_verdict, circuit_inputs, scoring_heads):
    s = irmech_settings
    text, runs, _, _ = circuit_inputs(ranker, s)
    scoring = scoring_heads(ranker, s, min_effect=s["scoring_min_effect"])
    found = C.find_contextualisation_heads(
        ranker, runs, text.idf, scoring.heads, min_effect=s["min_effect"], min_idf_r=s["min_idf_r"]
    )
    names = ", ".join(map(C.head_label, found.heads)) or "none"
    receivers = ", ".join(map(C.head_label, found.receivers)) or "none found"
    irmech_verdict(
        Verdict(
            "contextualisation-heads",
            ranker.name,
            value=len(found.heads),
            threshold=s["threshold"],
            summary=f"query-contextualisation heads: {names} into scoring heads {receivers} ({found.rule})",
            details={
                **components(found.heads, found.effects()),
                **sample(s, runs),
                "receivers": [C.head_label(h) for h in found.receivers],
                "idf_r": {C.head_label(h): float(found.idf_r[h]) for h in found.heads},
                "rule": found.rule,
            },
            evidence=[
                heatmap("largest path-patched effect into a scoring head's v (smaller of TFC1, STMC1)", found.effect),
                heatmap("r(query -> query attention, IDF of the attended token)", found.idf_r),
            ],
        )
    )


@pytest.mark.irmech_property("tfc1-stmc1-maps", layouts=BLOCKS)
def test_tfc1_and_stmc1_share_components(ranker, irmech_settings, irmech_verdict, circuit_inputs):
    s = irmech_settings
    _, runs, maps, _ = circuit_inputs(ranker, s, s["method"])
    corr = C.map_correlation(maps, n_boot=s["n_boot"], seed=s["seed"])
    low, high = corr.specificity_ci
    irmech_verdict(
        Verdict(
            "tfc1-stmc1-maps",
            ranker.name,
            value=corr.r,
            threshold=s["threshold"],
            summary=(
                f"Pearson r of the TFC1 and STMC1 head maps ({s['method']} patching) = {corr.r:+.3f} "
                f"(seed 002: 0.96); TFC1 vs a control edit (an unrelated word): {corr.control_r:+.3f}; "
                f"r - control r, 95 % bootstrap interval [{low:+.3f}, {high:+.3f}], must be above 0"
            ),
            details={
                "r": corr.r,
                "control_r": corr.control_r,
                "specificity_ci": [low, high],
                "method": s["method"],
                **sample(s, runs),
            },
            evidence=[heatmap(f"{name} head patching ({s['method']})", m.mean) for name, m in maps.items()],
            outcome=Outcome.PASSED if corr.r >= s["threshold"] and corr.specific else Outcome.FAILED,
        )
    )


@pytest.mark.irmech_property("circuit-fit", applies_to=CROSS, reason=NO_QD, layouts=BLOCKS)
def test_linear_circuit_fit(ranker, irmech_settings, irmech_verdict, matching_heads):
    s = irmech_settings
    match_settings = dict(s, n_pairs=s["match_pairs"])
    heads = matching_heads(
        ranker, match_settings, min_effect=s["matching_min_effect"], min_attention_r=s["matching_min_attention_r"]
    ).heads
    details: dict[str, Any] = {"seed": s["seed"], "n_pairs": s["n_pairs"], "components": [], "effects": {}}
    if not heads:
        verdict = Verdict(
            "circuit-fit",
            ranker.name,
            value=0.0,
            threshold=s["threshold"],
            summary="no matching heads found: there is no circuit to fit (value 0)",
            details=details,
        )
        irmech_verdict(verdict)
        return
    text = C.probe_text(ranker, s["n_pairs"], s["seed"], s["idf_source"])
    fit = C.circuit_fit(
        ranker,
        [(p.query, p.text) for p in text.pairs],
        heads,
        text.idf,
        seed=s["seed"],
        train_share=s["train_share"],
        min_rows_per_feature=s["min_rows_per_feature"],
    )
    passed = fit.circuit.pearson >= s["threshold"] and fit.beats_bm25
    details.update(
        components=[C.head_label(h) for h in heads],
        pearson=fit.circuit.pearson,
        spearman=fit.circuit.spearman,
        bm25_pearson=fit.bm25.pearson,
        bm25_spearman=fit.bm25.spearman,
        bm25_k1_b=list(fit.bm25_params),
        random_pearson=fit.random.pearson,
        groups={str(k): v for k, v in fit.groups.items()},
        skipped_pairs=fit.skipped,
    )
    irmech_verdict(
        Verdict(
            "circuit-fit",
            ranker.name,
            value=fit.circuit.pearson,
            threshold=s["threshold"],
            summary=(
                f"held-out Pearson r {fit.circuit.pearson:.3f} (Spearman {fit.circuit.spearman:.3f}) with matching "
                f"heads {', '.join(details['components'])}; BM25 (k1={fit.bm25_params[0]}, b={fit.bm25_params[1]}) "
                f"{fit.bm25.pearson:.3f}, random features {fit.random.pearson:.3f}; must be >= {s['threshold']} "
                f"and above BM25 (seed 002: 0.82 vs 0.42)"
            ),
            details=details,
            evidence=[
                Evidence(
                    "scatter",
                    "held-out scores: the model against the linear circuit",
                    {
                        "x": fit.actual.tolist(),
                        "y": fit.predicted.tolist(),
                        "x_label": "model score",
                        "y_label": "circuit",
                    },
                )
            ],
            outcome=Outcome.PASSED if passed else Outcome.FAILED,
        )
    )
