"""The pruning study that validates neuron attributions (seed 001 table 4): select the top neurons of a scheme
(``top_fraction``, ``intersection``, ``fusion``), zero them, and compare the reranking lists' nDCG@10 with the
unpruned model and with random same-layer selections (``pruning_study``). The attributions come from
``nig.py``; the lists from ``reranking.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import ttest_rel

from irmechtest.mechanisms.ablation import ablation_hooks
from irmechtest.mechanisms.nig import Layout
from irmechtest.mechanisms.reranking import RerankList, flatten, per_list_ndcg
from irmechtest.models.hooks import HookSpec, act_name
from irmechtest.models.ranker import Batch, HookedRanker, check_finite, progress_bar


# ------------------------------------------------------------------------------------------- selection
def top_fraction(importance: np.ndarray, fraction: float) -> np.ndarray:
    """Flat indices of the top ``fraction`` of neurons by importance (at least one), best first."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, round(fraction * importance.size))
    return np.argsort(-importance, kind="stable")[:k]


def intersection(*selections: np.ndarray) -> np.ndarray:
    """Neurons selected by every scheme (seed 001's ∩ of attribution schemes)."""
    if not selections:
        raise ValueError("intersection of no selections")
    common = set(selections[0].tolist()).intersection(*(s.tolist() for s in selections[1:]))
    return np.array(sorted(common), dtype=int)


def fusion(*schemes: np.ndarray) -> np.ndarray:
    """Mean of attribution schemes neuron by neuron (seed 001's ⊕, e.g. F_A over all datasets and labels)."""
    if not schemes:
        raise ValueError("fusion of no schemes")
    return np.mean(np.stack(schemes), axis=0)


def random_like(layout: Layout, selected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many random neurons as ``selected`` has in each layer and module (the pruning study's control)."""
    out = []
    for block in layout.blocks:
        count = int(((selected >= block.start) & (selected < block.start + block.width)).sum())
        if count:
            out.append(block.start + rng.choice(block.width, size=count, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=int)


def prune_hooks(ranker: HookedRanker, layout: Layout, selected: np.ndarray) -> list[HookSpec]:
    """Hooks that zero the selected neurons' outputs at every position (seed 001 follows [24]: set to 0)."""
    return ablation_hooks(ranker, [layout.cell(int(i)) for i in selected], "zero")


# --------------------------------------------------------------------------------------- pruning study
@dataclass
class PruningResult:
    """nDCG@10 per query: unpruned, with the selected neurons zeroed, and with R random same-shape sets."""

    components: list[str]
    base: np.ndarray  # [n_queries]
    pruned: np.ndarray  # [n_queries]
    random: np.ndarray  # [repeats, n_queries]
    seed: int

    @property
    def drop(self) -> np.ndarray:
        return self.base - self.pruned

    @property
    def queries_moved(self) -> int:
        """Queries whose nDCG@10 the NIG pruning changed at all. With one relevant passage per list most
        rankings often do not move; a comparison resting on one or two moved queries has little power."""
        return int((np.abs(self.drop) > 1e-9).sum())

    @property
    def random_drop(self) -> np.ndarray:
        """Per query, the mean nDCG@10 drop over the random selections."""
        return (self.base - self.random).mean(axis=0)

    def drop_pct(self, ndcg: np.ndarray | float) -> float:
        """Relative nDCG@10 loss in % of the unpruned mean (seed 001 table 4's "% of nDCG@10 diff.")."""
        base = float(self.base.mean())
        return 100.0 * (base - float(np.mean(ndcg))) / base if base else math.nan

    @property
    def p_vs_random(self) -> float:
        """One-sided paired t-test over queries: NIG pruning's drop exceeds the random drop (1.0 if no
        difference at all, where the t statistic is undefined)."""
        diff = self.drop - self.random_drop
        if np.allclose(diff, diff[0]):
            return 1.0 if diff[0] <= 0 else 0.0
        return float(ttest_rel(self.drop, self.random_drop, alternative="greater").pvalue)

    @property
    def p_vs_base(self) -> float:
        """Two-sided paired t-test, pruned vs unpruned (seed 001 table 4's test)."""
        if np.allclose(self.drop, 0):
            return 1.0
        return float(ttest_rel(self.pruned, self.base).pvalue)

    @property
    def empirical_p(self) -> float:
        """Share of random selections (plus one) hurting at least as much as NIG's, in mean nDCG@10."""
        random_means = (self.base - self.random).mean(axis=1)
        return float((1 + (random_means >= self.drop.mean()).sum()) / (1 + len(random_means)))

    def table(self) -> dict[str, Any]:
        rows = [
            ["unpruned", f"{self.base.mean():.4f}", "", ""],
            ["NIG top", f"{self.pruned.mean():.4f}", f"{self.drop_pct(self.pruned):.2f}", f"{self.p_vs_base:.3g}"],
            [
                f"random x{len(self.random)}",
                f"{self.random.mean():.4f}",
                f"{self.drop_pct(self.random):.2f}",
                f"{self.p_vs_random:.3g} (NIG > random)",
            ],
        ]
        return {"columns": ["model", "mean nDCG@10", "% nDCG@10 lost", "p"], "rows": rows}


class Reranker:
    """Reranks fixed lists under different prunings, starting each pass at the lowest pruned layer.

    Every pruning of one study touches the same layers (the random control matches them), so the
    residual stream entering the lowest one is computed once, unpruned, and reused: the layers below
    cannot change. Pairs are batched in order of length, so a batch pads to about its own length.
    """

    def __init__(self, ranker: HookedRanker, lists: Sequence[RerankList], layer: int, batch_size: int = 32) -> None:
        if not lists:
            raise ValueError("no reranking lists")
        self.ranker, self.lists, self.layer = ranker, lists, layer
        queries, docs = flatten(lists)
        self.order = np.argsort([len(q) + len(d) for q, d in zip(queries, docs, strict=True)], kind="stable")
        name = act_name("resid_pre", layer)
        self.chunks: list[tuple[Batch, torch.Tensor]] = []
        scores = []
        with torch.no_grad():
            for start in range(0, len(queries), batch_size):
                rows = self.order[start : start + batch_size]
                batch = ranker.tokenize([queries[i] for i in rows], [docs[i] for i in rows], overflow="truncate")
                out, cache = ranker.run_with_cache(batch, names_filter=name)
                self.chunks.append((batch, cache[name]))
                scores.append(out)
        self.base = self._ndcg(scores)

    def ndcg(self, hooks: Sequence[HookSpec]) -> np.ndarray:
        """nDCG@10 of each list with ``hooks`` active."""
        with torch.no_grad(), self.ranker.hooks(hooks):
            scores = [self.ranker(batch, start_at_layer=self.layer, resid=resid) for batch, resid in self.chunks]
        return self._ndcg(scores)

    def _ndcg(self, scores: list[torch.Tensor]) -> np.ndarray:
        flat = np.empty(len(self.order))
        flat[self.order] = torch.cat(scores).double().cpu().numpy()
        check_finite(flat, self.ranker.name)
        return per_list_ndcg(self.lists, flat)


def pruning_study(
    ranker: HookedRanker,
    lists: Sequence[RerankList],
    layout: Layout,
    selected: np.ndarray,
    *,
    repeats: int,
    seed: int,
) -> PruningResult:
    """Zero ``selected`` and ``repeats`` random same-layer, same-module sets; rerank ``lists`` each time."""
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 for a random baseline with a spread, got {repeats}")
    if len(selected) == 0:
        raise ValueError("no neurons selected for pruning")
    rng = np.random.default_rng(seed)
    reranker = Reranker(ranker, lists, min(layout.neuron(int(i)).layer for i in selected))
    passages = len(reranker.order)
    with progress_bar((repeats + 1) * passages, f"pruning study, {repeats} random draws") as bar:
        pruned = reranker.ndcg(prune_hooks(ranker, layout, selected))
        bar.update(passages)
        random = []
        for _ in range(repeats):
            random.append(reranker.ndcg(prune_hooks(ranker, layout, random_like(layout, selected, rng))))
            bar.update(passages)
    components = [str(layout.neuron(int(i))) for i in selected]
    return PruningResult(components, reranker.base, pruned, np.stack(random), seed)
