"""What patching returns: per-pair normalised effects on labelled cells, their means with intervals, and the
comparison of two maps."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from irmechtest.mechanisms.components import Grid
from irmechtest.mechanisms.pair_runs import PairRuns, PatchDirection


@dataclass(frozen=True)
class Ranked:
    label: dict[str, Any]
    mean: float
    ci_low: float
    ci_high: float


@dataclass
class PatchResult:
    """Per-pair normalised effects on labelled dimensions; NaN where a cell is padding for that pair."""

    values: np.ndarray  # [pair, *shape]
    scores: np.ndarray  # [pair, *shape] patched (or, for attribution, estimated) scores
    dims: tuple[str, ...]
    coords: dict[str, list[Any]]
    excluded: int
    method: str
    confidence: float = 0.95
    min_gap: float = 0.0  # the exclusion rule's gap (``PairRuns.min_gap``)

    @property
    def n_pairs(self) -> int:
        return self.values.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape[1:]

    @property
    def basis(self) -> str:
        """How many pairs the result rests on, for titles and summaries."""
        return f"{self.n_pairs} pairs; {self.excluded} excluded with score gap < {self.min_gap:.3g}"

    @property
    def mean(self) -> np.ndarray:
        return _nanmean(self.values)

    def _half_width(self) -> np.ndarray:
        n = np.sum(~np.isnan(self.values), axis=0)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # cells with fewer than two pairs: NaN, said below
            sd = np.nanstd(self.values, axis=0, ddof=1)
        t = stats.t.ppf(0.5 + self.confidence / 2, np.maximum(n - 1, 1))
        return np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), np.nan)

    @property
    def ci_low(self) -> np.ndarray:
        """Student-t interval over pairs (NaN with fewer than two pairs)."""
        return self.mean - self._half_width()

    @property
    def ci_high(self) -> np.ndarray:
        return self.mean + self._half_width()

    def label(self, flat: int) -> dict[str, Any]:
        index = np.unravel_index(flat, self.shape)
        return {d: self.coords[d][i] for d, i in zip(self.dims, index, strict=True)}

    def top_flat(self, k: int) -> np.ndarray:
        """Flat indices of the k cells with the largest |mean effect|, biggest first (NaN last)."""
        return np.argsort(-np.nan_to_num(np.abs(self.mean.ravel()), nan=-1.0), kind="stable")[:k]

    def top_k(self, k: int) -> list[Ranked]:
        """The k cells with the largest |mean effect|, biggest first."""
        mean, low, high = self.mean.ravel(), self.ci_low.ravel(), self.ci_high.ravel()
        return [Ranked(self.label(i), float(mean[i]), float(low[i]), float(high[i])) for i in self.top_flat(k)]

    def mean_over(self, pairs: np.ndarray) -> np.ndarray:
        """The mean map over a selection of pairs (with repeats, e.g. a bootstrap draw)."""
        return _nanmean(self.values[pairs])

    def correlation(self, other: PatchResult) -> float:
        """Pearson r of the mean effects of two results over the same cells (e.g. attribution vs exact)."""
        if self.shape != other.shape:
            raise ValueError(f"shapes differ: {self.shape} vs {other.shape}")
        return map_pearson(self.mean, other.mean)


def map_pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two effect maps over the cells finite in both (NaN if fewer than 3 or one is constant)."""
    a, b = np.ravel(a), np.ravel(b)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _nanmean(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        n = np.sum(~np.isnan(values), axis=0)
        return np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), np.nan)


def patch_result(
    runs: PairRuns,
    dims: tuple[str, ...],
    coords: dict[str, list[Any]],
    patched: torch.Tensor,
    direction: PatchDirection,
    method: str,
    positions: Sequence[int | None] = (),
) -> PatchResult:
    """Normalise patched scores [pair, cell] into a result; cells at a pair's padding positions become NaN."""
    target, source = runs.sides(direction)
    gap = (source.scores - target.scores)[:, None]
    values = ((patched - target.scores[:, None]) / gap).double().cpu().numpy()
    if positions:
        values[padding_mask(runs, positions).cpu().numpy()] = np.nan
    shape = (runs.n_pairs, *(len(coords[d]) for d in dims))
    scores = patched.double().cpu().numpy().reshape(shape)
    return PatchResult(values.reshape(shape), scores, dims, coords, runs.excluded, method, min_gap=runs.min_gap)


def padding_mask(runs: PairRuns, positions: Sequence[int | None]) -> torch.Tensor:
    """[pair, cell]: whether the cell sits at a padding position of the pair (all-position cells never do)."""
    cell_pos = torch.tensor([-1 if p is None else p for p in positions], device=runs.lengths.device)
    return cell_pos[None, :] >= runs.lengths[:, None]


def grid_result(
    runs: PairRuns, grid: Grid, patched: torch.Tensor, direction: PatchDirection, method: str
) -> PatchResult:
    return patch_result(runs, grid.dims, grid.coords, patched, direction, method, [c.position for c in grid.cells])
