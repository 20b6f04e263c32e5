"""The neurons Neuron Integrated Gradients ranks highest matter for ranking (seed 001, section 5.3).

Attribute on labelled pairs, zero the top fraction of neurons of one scheme, rerank one relevant passage
among BM25 negatives, and compare the nDCG@10 drop with random prunings of as many neurons in the same
layers and modules. The value is the one-sided paired t-test's p-value over queries (NIG's drop vs the
mean random drop): the property is a claim of significance, and the effect sizes are in the table.

The NIG path starts at a baseline input that should be neutral (seed 001: p(relevant) = p(non-relevant)).
Before attributing, each candidate baseline's score is placed on the model's own scale, from its median
non-relevant (0) to its median relevant (1) attribution pair; by default the candidate nearest the cut (0.5)
is used, and the verdict says when even that one lies outside the neutral band (docs/nig.md). A non-neutral
baseline does not change what the pruning comparison tests (whether the selected neurons matter more than
random ones), only how well NIG can have selected them, so it is reported, not a further condition.

Applies to bi-encoders too: with the query embedding held fixed the document pass is attributed, and
zeroing document-side neurons is a well-defined pruning of the ranker.
"""

import pytest

from irmechtest.mechanisms.nig import baseline_checks, choose_baseline, neuron_integrated_gradients
from irmechtest.mechanisms.pruning import pruning_study, top_fraction
from irmechtest.mechanisms.reranking import study_data
from irmechtest.report.verdicts import Evidence, Verdict, min_pairs


@pytest.mark.irmech_property("nig-pruning")
def test_pruning_top_nig_neurons_hurts_more_than_random(ranker, irmech_settings, irmech_verdict):
    s = irmech_settings
    # judged pairs without the queries the user excludes (e.g. the model's training queries); a model built in
    # its own vocabulary declares its corpus
    data = study_data(
        ranker, s["n_queries"], s["n_negatives"], s["n_pairs"], s["seed"], s["pairs"], s["exclude_queries"]
    )
    checks = baseline_checks(ranker, data.attribution)
    baseline = choose_baseline(checks, s["baseline"])
    attribution = neuron_integrated_gradients(
        ranker, data.attribution, steps=s["steps"], batch_budget=s["batch_budget"], baseline=baseline.name
    )
    selected = top_fraction(attribution.scheme(s["scheme"]), s["fraction"])
    result = pruning_study(ranker, data.lists, attribution.layout, selected, repeats=s["repeats"], seed=s["seed"])
    mass, layers, modules = attribution.mass(s["scheme"])
    irmech_verdict(
        Verdict(
            "nig-pruning",
            ranker.name,
            value=result.p_vs_random,
            threshold=s["threshold"],
            comparison="<",
            summary=(
                f"zeroing the top {100 * s['fraction']:g} % ({len(selected)}) {s['scheme']} NIG neurons: nDCG@10 "
                f"{result.base.mean():.3f} -> {result.pruned.mean():.3f} ({result.drop_pct(result.pruned):.1f} % "
                f"lost); {s['repeats']} random same-layer sets: {result.drop_pct(result.random):.1f} % lost; "
                f"{len(data.lists)} queries ({result.queries_moved} moved by the NIG pruning), "
                f"{len(data.attribution)} attribution pairs ({data.source}); "
                f"{baseline.describe()}"
            ),
            details={
                "components": result.components,
                "seed": s["seed"],
                "n_pairs": len(data.attribution),
                "n_queries": len(data.lists),
                "n_queries_moved": result.queries_moved,
                "data": data.source,
                "ndcg_base": float(result.base.mean()),
                "ndcg_pruned": float(result.pruned.mean()),
                "ndcg_random": float(result.random.mean()),
                "drop_pct": result.drop_pct(result.pruned),
                "random_drop_pct": result.drop_pct(result.random),
                "p_vs_base": result.p_vs_base,
                "empirical_p": result.empirical_p,
                "baseline": baseline.name,
                "baseline_setting": s["baseline"],
                "baseline_neutral": baseline.neutral,
                "baseline_position": baseline.position,
                "baseline_positions": {c.name: c.position for c in checks},
                "baseline_score_mean": float(attribution.baseline_scores.mean()),
                "score_mean": float(attribution.scores.mean()),
            },
            evidence=[
                Evidence(
                    "heatmap",
                    f"|{s['scheme']} NIG| summed per layer and module",
                    {"data": mass.tolist(), "row_labels": [str(x) for x in layers], "col_labels": modules},
                ),
                Evidence("table", "pruning study (nDCG@10 over the reranked queries)", result.table()),
            ],
            sample={"reranked queries": len(data.lists)},  # the paired t-test's unit
            min_sample=min_pairs(),
        )
    )
