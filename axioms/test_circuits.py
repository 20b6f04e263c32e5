"""The relevance circuit of Pathway to Relevance (seed 002): matching heads, relevance-scoring heads,
query-contextualisation heads, shared exact / semantic matching components, and the linear circuit fit.

The heads are found on exact term matching (TFC1); whether semantic matching (STMC1) reuses them is its own
verdict (tfc1-stmc1-maps), so a model that barely reacts to STMC1 edits is not denied its exact-match heads.

Everything but the TFC1 / STMC1 map correlation reads query -> document or [CLS] -> query attention, which
only cross-encoders have; on bi-encoders those properties are not applicable. On causal decoders they read
the direction the mask allows (document -> query, the last token in place of [CLS]; docs/circuits.md). The
TFC1, STMC1 and control pairs and their patching maps are built once per model and sample and shared by the
properties.
"""

from typing import Any

import numpy as np
import pytest

from irmechtest.mechanisms import circuits as C
from irmechtest.mechanisms.circuit_fit import all_heads, circuit_fit
from irmechtest.report.verdicts import Evidence, Outcome, Verdict, min_pairs


@pytest.fixture(scope="module")
def circuit_inputs():
    """(text, diagnostics, maps, found heads) per model and sample, computed once and shared by the properties;
    head maps only when a ``method`` is asked for (``C.head_maps``), once per method."""
    cache: dict[tuple, dict[str, Any]] = {}

    def get(ranker, settings, method=None, verify_top_k=0):
        key = (ranker.name, settings["n_pairs"], settings["seed"], settings["max_length"], settings["idf_source"])
        if key not in cache:
            text = C.probe_text(ranker, settings["n_pairs"], settings["seed"], settings["idf_source"])
            diagnostics = C.diagnostic_runs(ranker, text, seed=settings["seed"], max_length=settings["max_length"])
            cache[key] = {"text": text, "diagnostics": diagnostics, "maps": {}, "heads": {}}
        entry = cache[key]
        if method is not None and (method, verify_top_k) not in entry["maps"]:
            maps = C.head_maps(ranker, entry["diagnostics"].runs, method, verify_top_k)
            entry["maps"][method, verify_top_k] = maps
        return entry["text"], entry["diagnostics"], entry["maps"].get((method, verify_top_k)), entry["heads"]

    return get


def head_patching(settings: dict[str, Any]) -> tuple[str, int]:
    """How the head search patches: every head exactly, or (``head_screen = "attribution"``) an attribution
    screen with the ``verify_top_k`` largest heads patched exactly."""
    return ("screened", settings["verify_top_k"]) if settings["head_screen"] == "attribution" else ("exact", 0)


@pytest.fixture(scope="module")
def matching_heads(circuit_inputs):
    """``find_matching_heads`` per sample and rule: matching-heads and circuit-fit share one search."""

    def get(ranker, settings, **rule):
        patching = head_patching(settings)
        _, diagnostics, maps, found = circuit_inputs(ranker, settings, *patching)
        key = ("matching", *patching, *sorted(rule.items()))
        if key not in found:
            found[key] = C.find_matching_heads(ranker, diagnostics, maps, **rule)
        return found[key]

    return get


@pytest.fixture(scope="module")
def scoring_heads(circuit_inputs):
    """``find_scoring_heads`` per sample and rule: scoring- and contextualisation-heads share its path patching."""

    def get(ranker, settings, **rule):
        text, diagnostics, _, found = circuit_inputs(ranker, settings)
        key = ("scoring", *sorted(rule.items()))
        if key not in found:
            found[key] = C.find_scoring_heads(ranker, diagnostics, text.idf, **rule)
        return found[key]

    return get


def heatmap(title: str, grid: np.ndarray, result: "C.PatchResult | None" = None) -> Evidence:
    """A layer x head grid; a patching map's title says how many pairs it rests on."""
    if result is not None:
        title = f"{title} ({result.basis})"
    data = [[None if np.isnan(v) or np.isinf(v) else round(float(v), 4) for v in row] for row in grid]
    rows = [f"layer {layer}" for layer in range(grid.shape[0])]
    return Evidence("heatmap", title, {"data": data, "row_labels": rows, "col_labels": list(range(grid.shape[1]))})


def components(heads, effects: dict[str, float]) -> dict[str, Any]:
    return {"components": [C.head_label(h) for h in heads], "effects": effects}


def patched(diagnostics: C.Diagnostics, *names: str) -> dict[str, Any]:
    """What a verdict's intervals rest on: the patched pairs of each named set that has any (``Verdict.sample``),
    with the minimum every count needs. A set no pair of which moves the score is no small sample but a
    measured absence, which the property reports as its reason instead."""
    counts = {f"patched {name} pairs": diagnostics.runs[name].n_pairs for name in names if name in diagnostics.runs}
    return {"sample": counts, "min_sample": min_pairs()}


def sample(settings, diagnostics: C.Diagnostics) -> dict[str, Any]:
    """The sample: pairs built per set, and how many each patching map rests on (the rest excluded: their score
    gap is too small to normalise by) or why a set has none."""
    return {
        "seed": settings["seed"],
        "n_pairs": {name: len(pairs) for name, pairs in diagnostics.pairs.items()},
        "patched_pairs": {name: r.n_pairs for name, r in diagnostics.runs.items()},
        "excluded_pairs": {name: r.excluded for name, r in diagnostics.runs.items()},
        "min_gap": {name: r.min_gap for name, r in diagnostics.runs.items()},
        "unusable": dict(diagnostics.unusable),
    }


@pytest.mark.irmech_property("matching-heads")
def test_matching_heads(ranker, irmech_settings, irmech_verdict, circuit_inputs, matching_heads):
    s = irmech_settings
    _, diagnostics, _, _ = circuit_inputs(ranker, s)
    found = matching_heads(ranker, s, min_effect=s["min_effect"], min_same_token_lift=s["min_same_token_lift"])
    low, high = found.specificity(n_boot=s["n_boot"], seed=s["seed"])
    names = ", ".join(map(C.head_label, found.heads)) or "none"
    if found.cannot_run:
        ablation = f"cannot look for heads: {found.cannot_run}"
    elif not found.heads:
        ablation = "nothing to ablate"
    else:
        x = found.ablations[C.EXACT]
        ablation = (
            f"TFC1: {x.removed:.0%} of the effect removed (mean {x.before.mean():.3g} -> {x.after.mean():.3g} on "
            f"the {len(x.before)} pairs it moves; mean perturbed score {x.perturbed_before:.3g} -> "
            f"{x.perturbed_after:.3g}); "
        )
        if found.no_control:
            ablation += f"no control ablation: {found.no_control}"
        else:
            c = found.ablations[C.CONTROL]
            ablation += (
                f"control edit: {c.shares.mean():.0%} of its effect removed per pair on average vs TFC1's "
                f"{x.shares.mean():.0%}; difference, 95 % bootstrap interval [{low:+.3g}, {high:+.3g}], must be above 0"
            )
    confirmed = found.confirmed(s["threshold"], n_boot=s["n_boot"], seed=s["seed"])
    method, top_k = head_patching(s)
    screened = f"; heads screened by attribution patching, the {top_k} largest patched exactly" if top_k else ""
    matching, other = ("document -> query", "query") if ranker.causal else ("query -> document", "document")
    irmech_verdict(
        Verdict(
            "matching-heads",
            ranker.name,
            value=found.removed,
            threshold=s["threshold"],
            summary=f"exact-match heads: {names} ({found.rule}{screened}). Mean-ablating them: {ablation}",
            details={
                **components(found.heads, found.effects()),
                **sample(s, diagnostics),
                "same_token_lift": {C.head_label(h): float(found.same_token[h]) for h in found.heads},
                "attention_r": {C.head_label(h): float(found.attention_r[h]) for h in found.heads},
                "removed": {a: x.removed for a, x in found.ablations.items()},
                "specificity_ci": [low, high],
                "rule": found.rule,
                "head_patching": method,
                "cannot_run": found.cannot_run,
                "no_control": found.no_control,
            },
            evidence=[
                *(
                    heatmap(f"{name} activation patching (share of the effect restored)", m.mean, m)
                    for name, m in found.maps.items()
                ),
                heatmap(f"same-token attention: {matching} the same token in the {other}, x chance", found.same_token),
                heatmap(f"r({matching} attention, embedding cosine)", found.attention_r),
            ],
            outcome=Outcome.PASSED if confirmed else Outcome.FAILED,
            reason=found.cannot_run,
            **patched(diagnostics, C.EXACT, *([C.CONTROL] if C.CONTROL in found.ablations else [])),
        )
    )


@pytest.mark.irmech_property("scoring-heads")
def test_scoring_heads(ranker, irmech_settings, irmech_verdict, circuit_inputs, scoring_heads):
    s = irmech_settings
    _, diagnostics, _, _ = circuit_inputs(ranker, s)
    found = scoring_heads(ranker, s, min_effect=s["min_effect"])
    names = ", ".join(f"{C.head_label(h)} (IDF r {found.idf_r[h]:+.2f})" for h in found.heads) or "none"
    why = f"; cannot look for heads: {found.cannot_run}" if found.cannot_run else ""
    position = "last token" if ranker.causal else "[CLS]"
    evidence = [heatmap("TFC1 path patching to the score", found.map.mean, found.map)] if found.map else []
    irmech_verdict(
        Verdict(
            "scoring-heads",
            ranker.name,
            value=found.mean_idf_r,
            threshold=s["threshold"],
            summary=(
                f"relevance-scoring heads: {names} ({found.rule}){why}; value: their mean {position} -> query IDF r"
            ),
            details={
                **components(found.heads, found.effects()),
                **sample(s, diagnostics),
                "rule": found.rule,
                "cannot_run": found.cannot_run,
            },
            evidence=[*evidence, heatmap(f"r({position} -> query attention, IDF)", found.idf_r)],
            reason=found.cannot_run,
            **patched(diagnostics, C.EXACT),
        )
    )


@pytest.mark.irmech_property("contextualisation-heads")
def test_contextualisation_heads(ranker, irmech_settings, irmech_verdict, circuit_inputs, scoring_heads):
    s = irmech_settings
    text, diagnostics, _, _ = circuit_inputs(ranker, s)
    scoring = scoring_heads(ranker, s, min_effect=s["scoring_min_effect"])
    found = C.find_contextualisation_heads(
        ranker, diagnostics, text.idf, scoring.heads, min_effect=s["min_effect"], min_idf_r=s["min_idf_r"]
    )
    names = ", ".join(map(C.head_label, found.heads)) or "none"
    receivers = ", ".join(map(C.head_label, found.receivers))
    if found.cannot_run:
        summary = f"query-contextualisation heads: cannot run: {found.cannot_run} ({found.rule})"
    else:
        summary = f"query-contextualisation heads: {names} into scoring heads {receivers} ({found.rule})"
    irmech_verdict(
        Verdict(
            "contextualisation-heads",
            ranker.name,
            value=len(found.heads),
            threshold=s["threshold"],
            summary=summary,
            details={
                **components(found.heads, found.effects()),
                **sample(s, diagnostics),
                "receivers": [C.head_label(h) for h in found.receivers],
                "idf_r": {C.head_label(h): float(found.idf_r[h]) for h in found.heads},
                "rule": found.rule,
                "cannot_run": found.cannot_run,
            },
            evidence=[
                heatmap(f"largest TFC1 path-patched effect into a scoring head's v ({found.basis})", found.effect),
                heatmap("r(query -> query attention, IDF of the attended token)", found.idf_r),
            ],
            reason=found.cannot_run,
            **patched(diagnostics, C.EXACT),  # the scoring heads it sends into were found on the same pairs
        )
    )


@pytest.mark.irmech_property("tfc1-stmc1-maps")
def test_tfc1_and_stmc1_share_components(ranker, irmech_settings, irmech_verdict, circuit_inputs):
    """Semantic matching reuses the exact-matching components: the STMC1 verdict, apart from the head search."""
    s = irmech_settings
    _, diagnostics, maps, _ = circuit_inputs(ranker, s, s["method"])
    details: dict[str, Any] = {"method": s["method"], **sample(s, diagnostics)}
    evidence = [heatmap(f"{name} head patching ({s['method']})", m.mean, m) for name, m in maps.items()]
    missing = [diagnostics.unusable[a] for a in C.AXIOMS if a not in maps]
    if missing:
        verdict = Verdict(
            "tfc1-stmc1-maps",
            ranker.name,
            value=0.0,
            threshold=s["threshold"],
            summary=f"no map to compare: {'; '.join(missing)} (value 0: no shared matching components shown)",
            details=details,
            evidence=evidence,
            reason="; ".join(missing),
        )
        irmech_verdict(verdict)
        return
    corr = C.map_correlation(maps, n_boot=s["n_boot"], seed=s["seed"])
    low, high = corr.specificity_ci
    if C.CONTROL in maps:
        control = (
            f"TFC1 vs a control edit (an unrelated word): {corr.control_r:+.3f}; r - control r, 95 % bootstrap "
            f"interval [{low:+.3f}, {high:+.3f}], must be above 0"
        )
    else:
        control = f"no control map: {diagnostics.unusable[C.CONTROL]}, so STMC1's effect is no generic edit effect"
    irmech_verdict(
        Verdict(
            "tfc1-stmc1-maps",
            ranker.name,
            value=corr.r,
            threshold=s["threshold"],
            summary=(
                f"Pearson r of the TFC1 and STMC1 head maps ({s['method']} patching) = {corr.r:+.3f} "
                f"(seed 002: 0.96); {control}"
            ),
            details={**details, "r": corr.r, "control_r": corr.control_r, "specificity_ci": [low, high]},
            evidence=evidence,
            outcome=Outcome.PASSED if corr.r >= s["threshold"] and corr.specific else Outcome.FAILED,
            **patched(diagnostics, *maps),
        )
    )


@pytest.mark.irmech_property("circuit-fit")
def test_linear_circuit_fit(ranker, irmech_settings, irmech_verdict, matching_heads):
    s = irmech_settings
    match_settings = dict(s, n_pairs=s["match_pairs"])
    found = matching_heads(
        ranker,
        match_settings,
        min_effect=s["matching_min_effect"],
        min_same_token_lift=s["matching_min_same_token_lift"],
    ).heads
    # No matching head found: seed 002 sec. 5's total matching score over every head (alpha_k fitted), said so.
    heads = found or all_heads(ranker)
    source = (
        "matching heads " + ", ".join(map(C.head_label, found))
        if found
        else (
            f"no matching heads found, so MS is the all-heads weighted matching score (seed 002 sec. 5) over all "
            f"{len(heads)} heads"
        )
    )
    details: dict[str, Any] = {"seed": s["seed"], "n_pairs": s["n_pairs"], "all_heads_fallback": not found}
    text = C.probe_text(ranker, s["n_pairs"], s["seed"], s["idf_source"])
    fit = circuit_fit(
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
        components=[C.head_label(h) for h in found],
        effects={},
        head_weights={C.head_label(h): float(w) for h, w in zip(heads, fit.head_weights, strict=True)},
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
                f"held-out Pearson r {fit.circuit.pearson:.3f} (Spearman {fit.circuit.spearman:.3f}) with {source}; "
                f"BM25 (k1={fit.bm25_params[0]}, b={fit.bm25_params[1]}) "
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
            sample={"held-out pairs": len(fit.actual)},
            min_sample=min_pairs(),
        )
    )
