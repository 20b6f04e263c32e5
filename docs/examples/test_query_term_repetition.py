"""A property of your own, in your own test file (docs/api.md): "repeating a query term in a document raises
its score", measured on the model under test and reported beside the built-in verdicts.

    pytest --model=cross-encoder/ms-marco-MiniLM-L-6-v2 docs/examples/test_query_term_repetition.py

The property is registered once, so its settings can be overridden like a built-in's (register it in a
``conftest.py`` instead when ``[tool.irmechtest]`` overrides it: the configuration is read before test files).
"""

import numpy as np
import pytest

import irmechtest
from irmechtest.data.sources import load_pairs

irmechtest.register_property(
    irmechtest.Property(
        "query-term-repetition",
        quantity="share of pairs that rise",
        measure="test_query_term_repetition:repetition_gains",
        settings={
            # More than half of the documents must gain: a model indifferent to the repetition sits near half.
            "threshold": 0.5,
            "n_pairs": 24,
            "seed": 0,
        },
        applies_to=("cross-encoder",),
        reason="the example reads one score per pair; a bi-encoder's query side is fixed",
    )
)


def repetition_gains(ranker: irmechtest.HookedRanker, n_pairs: int, seed: int) -> np.ndarray:
    """Score change when each document gets its query's first word once more at the end."""
    if ranker.probe_corpus is not None:  # a model that declares its own text (the planted model)
        pairs = ranker.probe_corpus.sample_pairs(n_pairs, seed)
    else:
        pairs = [(p.query, p.text) for p in load_pairs(limit=n_pairs, seed=seed)]
    queries = [q for q, _ in pairs]
    base = ranker.score(queries, [d for _, d in pairs], overflow="truncate")
    repeated = ranker.score(queries, [f"{d} {q.split()[0]}" for q, d in pairs], overflow="truncate")
    return repeated - base


@pytest.mark.irmech_property("query-term-repetition")
def test_repeating_a_query_term_raises_the_score(ranker, irmech_settings, irmech_verdict):
    s = irmech_settings
    gains = repetition_gains(ranker, s["n_pairs"], s["seed"])
    irmech_verdict(
        irmechtest.Verdict(
            "query-term-repetition",
            ranker.name,
            value=float(np.mean(gains > 0)),
            threshold=s["threshold"],
            summary=f"{int(np.sum(gains > 0))} of {len(gains)} documents rise, mean change {gains.mean():+.3g}",
            details={"mean_gain": float(gains.mean())},
        )
    )
