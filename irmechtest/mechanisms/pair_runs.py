"""The minimal pairs that patching runs on: both sides' scores and cached activations, and the gap rule.

A pair whose score gap is small next to the model's score scale cannot be normalised (the ratio of two
near-zero numbers is noise): ``prepare_pairs`` excludes it and counts it. The patching engine
(``patching.py``), ablation and the circuit probes all start from the ``PairRuns`` built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from irmechtest.models.hooks import ActivationCache, HookSpec
from irmechtest.models.ranker import Batch, HookedRanker, InputError

PatchDirection = Literal["denoise", "noise"]
PairTexts = tuple[str, str, str]
_CACHED = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_z", "attn.hook_q", "attn.hook_k")
_CACHED += ("attn.hook_v", "mlp.hook_post", "ln1.hook_scale", "ln2.hook_scale")
# A pair's gap must be >= this share of the score spread (standard deviation of the sample's scores) to be
# normalised by. Decided before measuring any zoo model: a tenth of a standard deviation is the usual
# "negligible" effect size (Cohen's d < 0.2 is "small"); an edit that moves the score less than that is one the
# model barely notices, and dividing by it turned patching noise into effects of -1.16 to +1.09 (issue 11).
MIN_GAP_SHARE = 0.1


@dataclass
class Side:
    """One side of the pairs (baseline or perturbed): its batch, scores and cached activations."""

    batch: Batch
    scores: torch.Tensor
    cache: ActivationCache


@dataclass
class PairRuns:
    """Both sides of the usable pairs, tokenised, scored and cached once; every method starts from here.

    ``hooks`` (e.g. ablations from ``irmechtest.mechanisms.ablation``) were active in these runs and are applied to
    every patched run too, so patching composes with ablation.
    """

    baseline: Side
    perturbed: Side
    lengths: torch.Tensor  # real tokens per pair (positions at or beyond it are padding)
    excluded: int
    pairs: list[PairTexts]
    hooks: list[HookSpec] = field(default_factory=list)
    min_gap: float = 0.0  # |perturbed - baseline| below which a pair was excluded

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def seq_len(self) -> int:
        return self.baseline.batch.seq_len

    @property
    def right_padded(self) -> bool:
        """Whether every row's real tokens come first, so that cutting the padding off is a prefix."""
        mask = self.baseline.batch.attention_mask.bool()
        return bool((mask == (torch.arange(self.seq_len, device=mask.device) < self.lengths[:, None])).all())

    def sides(self, direction: PatchDirection) -> tuple[Side, Side]:
        """(target, source): the run patched into and the run activations come from."""
        if direction == "denoise":
            return self.baseline, self.perturbed
        if direction == "noise":
            return self.perturbed, self.baseline
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")


def pair_texts(pairs: Any) -> list[PairTexts]:
    """(query, baseline document, perturbed document) triples from a ``PairSet`` or any such sequence."""
    if hasattr(pairs, "cases"):
        return [(s.query, s.baseline_text, s.perturbed_text) for case in pairs.cases for s in case.steps]
    return [tuple(p) for p in pairs]  # type: ignore[misc]


class NoEffectError(InputError):
    """No pair's edit moves the model's score enough: there is no effect for a mechanism to carry, which a
    probe reports as its reason for finding nothing (``circuits.Diagnostics.unusable``), not as an error."""


def prepare_pairs(
    ranker: HookedRanker,
    pairs: Any,
    *,
    tolerance: float = 1e-4,
    min_gap_share: float = MIN_GAP_SHARE,
    hooks: Sequence[HookSpec] = (),
) -> PairRuns:
    """Tokenise, score and cache both sides; exclude (and count) the pairs whose gap cannot be normalised.

    A pair is kept when ``|perturbed - baseline| >= max(tolerance, min_gap_share * spread)``, ``spread`` being
    the standard deviation of all the pairs' scores (both sides): the model's own score scale on this sample,
    so the rule means the same on a model scoring in [-0.01, 0.01] as on one scoring in [-10, 10].
    Raises ``InputError`` for unequal token lengths (positions would not correspond), ``NoEffectError`` when no
    pair is left.
    """
    if min_gap_share < 0:
        raise ValueError(f"min_gap_share must be >= 0, got {min_gap_share}")
    texts = pair_texts(pairs)
    if not texts:
        raise InputError("no pairs given")
    queries = [q for q, _, _ in texts]
    base = ranker.tokenize(queries, [b for _, b, _ in texts])
    pert = ranker.tokenize(queries, [p for _, _, p in texts])
    lengths = base.attention_mask.sum(1)
    unequal = torch.nonzero(lengths != pert.attention_mask.sum(1)).flatten().tolist()
    if unequal:
        raise InputError(
            f"{len(unequal)} pair(s) have baseline and perturbed inputs of different token lengths (first: "
            f"#{unequal[0]}); patching needs position-aligned inputs: build length-matched pairs "
            "(irmechtest.data.pairs)"
        )
    hooks = list(hooks)
    base_side, pert_side = _side(ranker, base, hooks), _side(ranker, pert, hooks)
    spread = float(torch.cat([base_side.scores, pert_side.scores]).double().std(unbiased=False))
    min_gap = max(tolerance, min_gap_share * spread)
    keep = torch.nonzero((pert_side.scores - base_side.scores).abs() >= min_gap).flatten()
    if len(keep) == 0:
        raise NoEffectError(
            f"all {len(texts)} pairs have |perturbed - baseline| score gap < {min_gap:.3g} (max of {tolerance:g} "
            f"and {min_gap_share:g} x the score spread {spread:.3g}): the edit does not move this model's score "
            "enough to normalise by"
        )
    return PairRuns(
        baseline=_keep(base_side, keep),
        perturbed=_keep(pert_side, keep),
        lengths=lengths[keep],
        excluded=len(texts) - len(keep),
        pairs=[texts[i] for i in keep.tolist()],
        hooks=hooks,
        min_gap=min_gap,
    )


def _side(ranker: HookedRanker, batch: Batch, hooks: Sequence[HookSpec]) -> Side:
    with torch.no_grad(), ranker.hooks(hooks):
        scores, cache = ranker.run_with_cache(batch, names_filter=lambda name: name.endswith(_CACHED))
    return Side(batch, scores, cache)


def _keep(side: Side, rows: torch.Tensor) -> Side:
    cache = ActivationCache({name: act[rows] for name, act in side.cache.items()})
    return Side(side.batch.index(rows), side.scores[rows], cache)
