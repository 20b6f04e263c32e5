"""IDF lives in U0 (seed 002, section 4.4): the top singular directions of W_E encode term rarity."""

import numpy as np
import pytest

from irmechtest.datasets import idf_vector
from irmechtest.probes import svd_idf_probe
from irmechtest.verdicts import Evidence, Verdict


@pytest.mark.irmech_property("idf-in-u0")
def test_idf_lives_in_u0(ranker, irmech_settings, irmech_verdict):
    settings = irmech_settings
    idf = idf_vector(ranker.tokenizer, settings["idf_source"])
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
                f"U0..U{settings['top_k'] - 1}: " + ", ".join(f"{r:+.3f}" for r in probe.correlations)
            ),
            details={"correlations": probe.correlations, "component": k, "n_tokens": probe.n_tokens},
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
