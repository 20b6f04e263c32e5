"""benchmarks/zoo's weight surgery: mean ablation folded into W_V and the value bias scores exactly like
hook-level mean ablation (z replaced by its mean), which is what the surgical-regression zoo model relies on."""

import copy
import sys
from pathlib import Path

import numpy as np

from irmechtest.controls.twins import random_hf_model, tiny_config
from irmechtest.loading import ranker_from_hf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "zoo"))
from build_ablated import fold_mean_ablation
from evidence import head_means, mean_ablation_hooks, score

QUERIES = ["what is a mortgage", "symptoms of flu", "how tall is the eiffel tower", "cheap flights"]
DOCS = [
    "a mortgage is a loan secured by property",
    "fever, cough and aches are common flu symptoms",
    "the tower is 330 metres tall",
    "book flights at low prices today",
]


def test_folded_mean_ablation_equals_hook_level_mean_ablation(tokenizer):
    hf_model = random_hf_model(tiny_config("bert"), seed=3)
    original = ranker_from_hf(copy.deepcopy(hf_model), tokenizer, kind="cross-encoder", name="original")
    heads = [(0, 0), (0, 1), (1, 2), (1, 3)]
    means = head_means(original, QUERIES, DOCS)
    plain = score(original, QUERIES, DOCS)
    with original.hooks(mean_ablation_hooks(heads, means)):
        hooked = score(original, QUERIES, DOCS)
    fold_mean_ablation(hf_model, heads, means)
    folded = score(ranker_from_hf(hf_model, tokenizer, kind="cross-encoder", name="folded"), QUERIES, DOCS)
    # a random tiny model's scores differ by ~5e-5 between documents; ablating 4 of its 8 heads moves them by more,
    # 100x the tolerance of the equality below, so the equality cannot hold by the ablation doing nothing
    assert np.abs(hooked - plain).max() > 1e-4
    np.testing.assert_allclose(folded, hooked, rtol=0, atol=1e-6)
