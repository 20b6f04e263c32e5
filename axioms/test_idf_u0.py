"""IDF lives in U0 (seed 002, section 4.4): the top singular directions of W_E encode term rarity."""

import numpy as np
import pytest

from irmechtest.data.idf import idf_vector, resolve_idf_source
from irmechtest.mechanisms.probes import svd_idf_probe
from irmechtest.report.verdicts import Evidence, Verdict


def used_idf_source(ranker, settings) -> str:
    """The IDF source in force for this model's vocabulary (the shipped WordPiece table or a corpus)."""
    return str(resolve_idf_source(ranker.tokenizer, settings["idf_source"]))


@pytest.mark.irmech_property("idf-in-u0")
def test_idf_lives_in_u0(ranker, irmech_settings, irmech_verdict):
    settings = irmech_settings
    idf = idf_vector(ranker.tokenizer, settings["idf_source"], len(ranker.W_E))
    probe = svd_idf_probe(ranker.W_E, idf, top_k=settings["top_k"])
    k = probe.best_component
    known = ~np.isnan(idf)
    step = max(1, int(known.sum()) // 2000)
    irmech_verdict(
        Verdict(
            "idf-in-u0",
            ranker.name,
            value=abs(probe.best_r),
            threshold=settings["threshold"],
            summary=(
                f"Pearson r of U{k} with IDF = {probe.best_r:+.3f} over {probe.n_tokens} tokens; "
                f"U0..U{settings['top_k'] - 1}: "
                + ", ".join(f"{r:+.3f}" for r in probe.correlations)
                + f"; IDF source {used_idf_source(ranker, settings)}"
            ),
            details={
                "correlations": probe.correlations,
                "component": k,
                "n_tokens": probe.n_tokens,
                "idf_source": used_idf_source(ranker, settings),
            },
            evidence=[
                Evidence(
                    "scatter",
                    f"U{k} of W_E against IDF (every {step}th token)",
                    {
                        "x": idf[known][::step].tolist(),
                        "y": probe.u[known, k][::step].tolist(),
                        "x_label": "IDF",
                        "y_label": f"U{k}",
                    },
                )
            ],
        )
    )


@pytest.mark.irmech_property("idf-in-u0-causal")
def test_editing_u0_moves_the_score(ranker, irmech_settings, irmech_verdict):
    """Seed 002 sec. 4.4: raising one query token's IDF coordinate raises a document repeating it, monotonically,
    and more than a document repeating another query token."""
    from irmechtest.mechanisms.circuits import probe_text
    from irmechtest.mechanisms.probes import u0_edit_probe
    from irmechtest.report.verdicts import Outcome, min_pairs

    settings = irmech_settings
    text = probe_text(ranker, settings["n_queries"], settings["seed"], settings["idf_source"])
    probe = u0_edit_probe(
        ranker,
        [p.query for p in text.pairs],
        text.idf,
        scales=settings["scales"],
        repeats=settings["repeats"],
        n_random=settings["n_random"],
        seed=settings["seed"],
    )
    beats_random = probe.random_p <= settings["max_random_p"]
    passed = probe.mean_rho >= settings["threshold"] and probe.specific and beats_random
    irmech_verdict(
        Verdict(
            "idf-in-u0-causal",
            ranker.name,
            value=probe.mean_rho,
            threshold=settings["threshold"],
            summary=(
                f"mean Spearman rho of the edited token's document with the IDF scale {probe.mean_rho:+.3f} over "
                f"{len(probe.queries)} queries (other token's document {probe.mean_rho_other:+.3f}); score change "
                f"over the scales {probe.change:+.4g} vs {probe.change_other:+.4g}: must be larger; largest over "
                f"{len(probe.random_change)} random word directions {np.abs(probe.random_change).max():.4g}, "
                f"p = {probe.random_p:.3g}: must be <= {settings['max_random_p']}"
            ),
            details={
                "rho": probe.mean_rho,
                "rho_other": probe.mean_rho_other,
                "change": probe.change,
                "change_other": probe.change_other,
                "specific": probe.specific,
                "random_p": probe.random_p,
                "random_change": probe.random_change.tolist(),
                "seed": settings["seed"],
                "n_pairs": len(probe.queries),
                "idf_source": used_idf_source(ranker, settings),
            },
            evidence=[
                Evidence(
                    "table",
                    "mean score by IDF scale",
                    {
                        "columns": ["scale", "edited token's document", "other token's document"],
                        "rows": [
                            [s, float(e), float(o)]
                            for s, e, o in zip(probe.scales, probe.edited.mean(0), probe.other.mean(0), strict=True)
                        ],
                    },
                )
            ],
            outcome=Outcome.PASSED if passed else Outcome.FAILED,
            sample={"queries": len(probe.queries)},
            min_sample=min_pairs(),
        )
    )
