"""Activation, attribution and path patching over minimal pairs: exact, batched, and cheap to screen.

A minimal pair is a baseline and a perturbed input of equal token length (e.g. TFC1: one filler token
replaced by a query term). Patching copies one component's activation from one run into the other and asks
how much of the score gap moves with it:

* ``denoise``: the baseline run receives perturbed activations; 1 means the component alone carries the
  perturbation's effect into the score;
* ``noise``: the perturbed run receives baseline activations; 1 means removing the component's share of
  the perturbation undoes the whole effect.

Both are reported as ``(patched - target) / (source - target)`` per pair, target being the run patched
into. A pair whose score gap is small next to the model's score scale cannot be normalised (the ratio of two
near-zero numbers is noise): it is excluded and counted (``prepare_pairs``).

Why batched: MechIR runs one full forward pass per patched cell over the padded batch. Here the copies of a
layer's cells are stacked along the batch dimension and start at that layer from the cached ``resid_pre``
(layers below a patch cannot change), bounded by ``batch_budget`` copies per forward; copies of pairs of
similar length share a forward trimmed to their real length (no arithmetic on padding), and a head patch
resumes after the patched layer's attention (its output is the cached one plus the head's change through
W_O). ``batched=False`` is the naive one-forward-per-cell loop, kept as the reference the engine is tested
against. Attribution patching
replaces the exact runs by a first-order estimate, ``(source - target) . d score / d activation``, for every
cell at once. Path patching (Pathway to Relevance, appendix C) is documented in docs/patching.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from irmechtest.models.encoder import HookedAttention
from irmechtest.models.hooks import ActivationCache, HookSpec
from irmechtest.models.ranker import Batch, HookedRanker, InputError, progress_bar

Direction = Literal["denoise", "noise"]
Index = tuple[Any, ...]
PairTexts = tuple[str, str, str]
_CACHED = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_z", "attn.hook_q", "attn.hook_k")
_CACHED += ("attn.hook_v", "mlp.hook_post", "ln1.hook_scale", "ln2.hook_scale")
BLOCK_ACTS = ("resid_pre", "attn_out", "mlp_out")
# A pair's gap must be >= this share of the score spread (standard deviation of the sample's scores) to be
# normalised by. Decided before measuring any zoo model: a tenth of a standard deviation is the usual
# "negligible" effect size (Cohen's d < 0.2 is "small"); an edit that moves the score less than that is one the
# model barely notices, and dividing by it turned patching noise into effects of -1.16 to +1.09 (issue 11).
MIN_GAP_SHARE = 0.1


# ------------------------------------------------------------------------------------------- inputs
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

    def sides(self, direction: Direction) -> tuple[Side, Side]:
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


# ------------------------------------------------------------------------------------------- components
@dataclass(frozen=True)
class Cell:
    """One patchable component: ``act[row][index]`` of hook point ``hook`` (the batch dimension excluded)."""

    hook: str
    layer: int
    index: Index
    position: int | None = None  # for per-position cells: beyond a pair's length the cell is padding


@dataclass(frozen=True)
class Grid:
    """Cells laid out on labelled dimensions (row-major), e.g. ("layer", "head")."""

    dims: tuple[str, ...]
    coords: dict[str, list[Any]]
    cells: tuple[Cell, ...]

    def __post_init__(self) -> None:
        if not self.cells:
            raise ValueError("no components to patch: the component list is empty")
        if math.prod(len(self.coords[d]) for d in self.dims) != len(self.cells):
            raise ValueError("grid shape does not match its number of cells")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.dims)

    def subset(self, flat: Sequence[int]) -> Grid:
        """The cells at flat indices, on one "component" dimension labelled like ``top_k``'s labels."""
        labels = [_label(self, i) for i in flat]
        names = [", ".join(f"{k}={v}" for k, v in label.items()) for label in labels]
        return Grid(("component",), {"component": names}, tuple(self.cells[i] for i in flat))


def _label(grid: Grid, flat: int) -> dict[str, Any]:
    index = np.unravel_index(flat, grid.shape)
    return {d: grid.coords[d][i] for d, i in zip(grid.dims, index, strict=True)}


def _layers(ranker: HookedRanker, layers: Sequence[int] | None) -> list[int]:
    return list(range(ranker.cfg.n_layers)) if layers is None else list(layers)


def head_grid(
    ranker: HookedRanker, *, layers: Sequence[int] | None = None, by_position: bool = False, seq_len: int = 0
) -> Grid:
    """Attention heads (via ``hook_z``) at all positions, or per position when ``by_position``."""
    layers, heads = _layers(ranker, layers), list(range(ranker.cfg.n_heads))
    if not by_position:
        cells = [Cell(f"blocks.{ly}.attn.hook_z", ly, (slice(None), h)) for ly, h in product(layers, heads)]
        return Grid(("layer", "head"), {"layer": layers, "head": heads}, tuple(cells))
    positions = list(range(seq_len))
    cells = [Cell(f"blocks.{ly}.attn.hook_z", ly, (p, h), p) for ly, h, p in product(layers, heads, positions)]
    return Grid(("layer", "head", "position"), {"layer": layers, "head": heads, "position": positions}, tuple(cells))


def block_grid(
    ranker: HookedRanker, seq_len: int, *, acts: Sequence[str] = BLOCK_ACTS, layers: Sequence[int] | None = None
) -> Grid:
    """Residual stream, attention output and MLP output of every layer at every position."""
    unknown = set(acts) - set(BLOCK_ACTS)
    if unknown:
        raise ValueError(f"block activations must be among {BLOCK_ACTS}, got {sorted(unknown)}")
    layers, positions = _layers(ranker, layers), list(range(seq_len))
    cells = [Cell(f"blocks.{ly}.hook_{a}", ly, (p,), p) for a, ly, p in product(acts, layers, positions)]
    return Grid(("act", "layer", "position"), {"act": list(acts), "layer": layers, "position": positions}, tuple(cells))


def neuron_grid(
    ranker: HookedRanker, *, layers: Sequence[int] | None = None, neurons: Sequence[int] | None = None
) -> Grid:
    """MLP neurons (``mlp.hook_post``) at all positions; restrict ``neurons`` on big models."""
    layers = _layers(ranker, layers)
    neurons = list(range(ranker.cfg.d_mlp)) if neurons is None else list(neurons)
    cells = [Cell(f"blocks.{ly}.mlp.hook_post", ly, (slice(None), n)) for ly, n in product(layers, neurons)]
    return Grid(("layer", "neuron"), {"layer": layers, "neuron": neurons}, tuple(cells))


# ------------------------------------------------------------------------------------------- results
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

    def top_k(self, k: int) -> list[Ranked]:
        """The k cells with the largest |mean effect|, biggest first."""
        mean, low, high = self.mean.ravel(), self.ci_low.ravel(), self.ci_high.ravel()
        order = np.argsort(-np.nan_to_num(np.abs(mean), nan=-1.0), kind="stable")[:k]
        return [Ranked(self.label(i), float(mean[i]), float(low[i]), float(high[i])) for i in order]

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


def _result(
    runs: PairRuns,
    dims: tuple[str, ...],
    coords: dict[str, list[Any]],
    patched: torch.Tensor,
    direction: Direction,
    method: str,
    positions: Sequence[int | None] = (),
) -> PatchResult:
    """Normalise patched scores [pair, cell] into a result; cells at a pair's padding positions become NaN."""
    target, source = runs.sides(direction)
    gap = (source.scores - target.scores)[:, None]
    values = ((patched - target.scores[:, None]) / gap).double().cpu().numpy()
    if positions:
        values[_padding(runs, positions).cpu().numpy()] = np.nan
    shape = (runs.n_pairs, *(len(coords[d]) for d in dims))
    scores = patched.double().cpu().numpy().reshape(shape)
    return PatchResult(values.reshape(shape), scores, dims, coords, runs.excluded, method, min_gap=runs.min_gap)


def _padding(runs: PairRuns, positions: Sequence[int | None]) -> torch.Tensor:
    """[pair, cell]: whether the cell sits at a padding position of the pair (all-position cells never do)."""
    cell_pos = torch.tensor([-1 if p is None else p for p in positions], device=runs.lengths.device)
    return cell_pos[None, :] >= runs.lengths[:, None]


def _grid_result(runs: PairRuns, grid: Grid, patched: torch.Tensor, direction: Direction, method: str) -> PatchResult:
    return _result(runs, grid.dims, grid.coords, patched, direction, method, [c.position for c in grid.cells])


# ------------------------------------------------------------------------------------------- engine
Patches = dict[str, tuple[torch.Tensor, torch.Tensor]]  # hook -> (mask [rows, *act], values [rows, *act])
MakePatches = Callable[[torch.Tensor, torch.Tensor], Patches]  # (job rows, their pairs) -> patches


def _replace(mask: torch.Tensor, values: torch.Tensor) -> Callable[..., torch.Tensor]:
    return lambda act, hook: torch.where(mask, values, act)


def _record_into(store: dict[str, list[torch.Tensor]]) -> Callable[..., None]:
    def record(act: torch.Tensor, hook: Any) -> None:
        store.setdefault(hook.name, []).append(act.detach().clone())

    return record


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises ``torch.OutOfMemoryError``; the CPU allocator raises a plain RuntimeError."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


_SLACK = 0.9  # a batched chunk holds rows at least this share of its longest row's real length


def _pre_attention(name: str, layer: int) -> bool:
    """Hooks of ``layer`` that fire before its attention output (they do not fire when a run resumes after it)."""
    return name == f"blocks.{layer}.hook_resid_pre" or name.startswith(f"blocks.{layer}.attn.")


def _patched_attn_out(
    attn: HookedAttention, attn_out: torch.Tensor, z_target: torch.Tensor, mask: torch.Tensor, z_source: torch.Tensor
) -> torch.Tensor:
    """The attention output of a run whose ``hook_z`` is patched, from the unpatched run's.

    The output projection is linear, so only the patched heads' change in z passes through W_O (one head's
    slice each: 1 / n_heads of the projection); its bias is already in ``attn_out``.
    """
    delta = torch.where(mask, z_source, z_target) - z_target  # [rows, pos, head, d_head]
    rows, heads = torch.nonzero(mask.any(dim=3).any(dim=1), as_tuple=True)
    return attn_out.index_add(0, rows, torch.bmm(delta[rows, :, heads], attn.W_O[heads]))


def _start(
    ranker: HookedRanker,
    runs: PairRuns,
    target: Side,
    layer: int,
    pairs: torch.Tensor,
    length: int,
    patches: Patches,
    record: Sequence[str],
) -> dict[str, Any]:
    """Forward arguments that start copies at ``layer`` from the target's cache, after its attention when
    the only patch before there is on ``attn.hook_z`` (that patch is then taken out of ``patches``)."""
    start: dict[str, Any] = {
        "start_at_layer": layer,
        "resid": target.cache[f"blocks.{layer}.hook_resid_pre"][pairs, :length],
    }
    z_hook = f"blocks.{layer}.attn.hook_z"
    others = [name for name in [*patches, *record] if name != z_hook]
    if z_hook in patches and not runs.hooks and not any(_pre_attention(name, layer) for name in others):
        start["attn_out"] = _patched_attn_out(
            ranker.blocks[layer].attn,
            target.cache[f"blocks.{layer}.hook_attn_out"][pairs, :length],
            target.cache[z_hook][pairs, :length],
            *patches.pop(z_hook),
        )
    return start


def _run_rows(
    ranker: HookedRanker,
    runs: PairRuns,
    target: Side,
    start_layer: int,
    pair_of_row: torch.Tensor,
    make_patches: MakePatches,
    *,
    batch_budget: int,
    batched: bool,
    record: Sequence[str] = (),
    bar: tqdm | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Score patched copies of the target run, one row per copy, ``batch_budget`` copies per forward.

    Batched copies start at ``start_layer`` from the target's cached ``resid_pre``, ordered by their pair's
    real length and trimmed to the longest in each chunk, so no arithmetic is spent on padding beyond it
    (exact: padding keys are masked and pooling ignores padding). A chunk whose only patch in that layer is
    on ``attn.hook_z`` resumes after the layer's attention from the target's cached ``attn_out`` (see
    ``_patched_attn_out``), unless ``runs.hooks`` are active. The naive path (``batched=False``) runs each
    copy alone from the embeddings, padded. Recorded activations come back padded to ``runs.seq_len`` with
    zeros. A forward pass that runs out of memory is retried with half as many copies (with a warning) down
    to one copy.
    """
    if batch_budget < 1:
        raise ValueError(f"batch_budget must be >= 1 (copies per forward pass), got {batch_budget}")
    step = batch_budget if batched else 1
    row_lengths = runs.lengths[pair_of_row]
    order = torch.argsort(row_lengths, descending=True, stable=True)
    trim = batched and runs.right_padded
    scores = torch.empty(len(pair_of_row), device=target.scores.device, dtype=target.scores.dtype)
    recorded: dict[str, torch.Tensor] = {}
    lo = 0
    with torch.no_grad():
        while lo < len(order):
            if trim:
                longest = int(row_lengths[order[lo]])
                size = int((row_lengths[order[lo : lo + step]] >= _SLACK * longest).sum())
            else:
                longest, size = runs.seq_len, step
            chunk = order[lo : lo + size]
            pairs = pair_of_row[chunk]
            chunk_recorded: dict[str, list[torch.Tensor]] = {}
            try:
                patches = {
                    name: (m[:, :longest], v[:, :longest]) for name, (m, v) in make_patches(chunk, pairs).items()
                }
                kwargs = _start(ranker, runs, target, start_layer, pairs, longest, patches, record) if batched else {}
                hooks = [*runs.hooks, *((name, _replace(m, v)) for name, (m, v) in patches.items())]
                hooks += [(name, _record_into(chunk_recorded)) for name in record]
                score = ranker.run_with_hooks(target.batch.index(pairs).prefix(longest), fwd_hooks=hooks, **kwargs)
            except RuntimeError as error:  # torch.OutOfMemoryError is one
                if not _is_out_of_memory(error):
                    raise
                if step == 1:
                    raise MemoryError(
                        f"one patched copy ({longest} tokens) does not fit in memory on {target.scores.device}; "
                        "use shorter pairs or another device"
                    ) from error
                step //= 2
                warnings.warn(f"out of memory: retrying with {step} patched copies per forward pass", stacklevel=3)
                continue
            scores[chunk] = score
            for name, (act,) in chunk_recorded.items():
                if name not in recorded:
                    recorded[name] = act.new_zeros(len(pair_of_row), runs.seq_len, *act.shape[2:])
                recorded[name][chunk, :longest] = act
            lo += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return scores, recorded


def _cell_patches(grid: Grid, cell_ids: torch.Tensor, source: Side) -> MakePatches:
    """Patches putting each row's cell of the source run into the target run."""

    def make(chunk: torch.Tensor, pairs: torch.Tensor) -> Patches:
        patches: Patches = {}
        for row, cell_id in enumerate(cell_ids[chunk].tolist()):
            cell = grid.cells[cell_id]
            if cell.hook not in patches:
                values = source.cache[cell.hook][pairs]
                patches[cell.hook] = (torch.zeros_like(values, dtype=torch.bool), values)
            patches[cell.hook][0][row][cell.index] = True
        return patches

    return make


def activation_patching(
    ranker: HookedRanker,
    runs: PairRuns,
    grid: Grid,
    *,
    direction: Direction = "denoise",
    batch_budget: int = 64,
    batched: bool = True,
) -> PatchResult:
    """Exact patching of every cell of ``grid``; ``batched=False`` is the one-forward-per-cell reference.

    A cell at a padding position of a pair patches only padding, which no real token attends to and pooling
    ignores: the batched engine gives it the target's score without running it (the naive path runs it).
    """
    target, source = runs.sides(direction)
    device = target.scores.device
    patched = target.scores[:, None].repeat(1, len(grid.cells))
    padding = _padding(runs, [c.position for c in grid.cells])
    copies = len(grid.cells) * runs.n_pairs - (int(padding.sum()) if batched else 0)
    desc = f"activation patching, {len(grid.cells)} cells x {runs.n_pairs} pairs"
    with progress_bar(copies, desc) as bar:
        for layer in sorted({c.layer for c in grid.cells}):
            cells = torch.tensor([i for i, c in enumerate(grid.cells) if c.layer == layer], device=device)
            cell_of_row = cells.repeat_interleave(runs.n_pairs)
            pair_of_row = torch.arange(runs.n_pairs, device=device).repeat(len(cells))
            if batched:
                real = ~padding[pair_of_row, cell_of_row]
                cell_of_row, pair_of_row = cell_of_row[real], pair_of_row[real]
                if not len(pair_of_row):
                    continue
            scores, _ = _run_rows(
                ranker,
                runs,
                target,
                layer,
                pair_of_row,
                _cell_patches(grid, cell_of_row, source),
                batch_budget=batch_budget,
                batched=batched,
                bar=bar,
            )
            patched[pair_of_row, cell_of_row] = scores
    return _grid_result(runs, grid, patched, direction, "exact" if batched else "exact (naive)")


# ------------------------------------------------------------------------------------------- attribution
def attribution_patching(
    ranker: HookedRanker, runs: PairRuns, grid: Grid, *, direction: Direction = "denoise"
) -> PatchResult:
    """First-order estimate of every cell's patching effect from one forward and one backward on the target.

    estimate = sum over the cell of (source - target activation) * d score / d activation (at the target).
    """
    target, source = runs.sides(direction)
    hooks = sorted({c.hook for c in grid.cells})
    with torch.enable_grad(), ranker.hooks(runs.hooks):
        embeds = ranker.embed(target.batch.input_ids).detach().requires_grad_(True)
        scores, cache = ranker.run_with_cache(target.batch, names_filter=hooks, incl_bwd=True, inputs_embeds=embeds)
        scores.sum().backward()
    with torch.no_grad():
        terms = {h: (source.cache[h] - cache[h].detach()) * cache[h + "_grad"] for h in hooks}
        estimate = torch.stack([terms[c.hook][(slice(None), *c.index)].flatten(1).sum(1) for c in grid.cells], dim=1)
    return _grid_result(runs, grid, target.scores[:, None] + estimate, direction, "attribution")


def screen_then_verify(
    ranker: HookedRanker,
    runs: PairRuns,
    grid: Grid,
    top_n: int,
    *,
    direction: Direction = "denoise",
    batch_budget: int = 64,
) -> tuple[PatchResult, PatchResult]:
    """Screen every cell with attribution patching, then patch the ``top_n`` by |estimate| exactly.

    Returns (screen, verified); the verified result has one "component" dimension in screening order.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    screen = attribution_patching(ranker, runs, grid, direction=direction)
    order = np.argsort(-np.nan_to_num(np.abs(screen.mean.ravel()), nan=-1.0), kind="stable")[:top_n]
    verified = activation_patching(
        ranker, runs, grid.subset(order.tolist()), direction=direction, batch_budget=batch_budget
    )
    return screen, verified


# ------------------------------------------------------------------------------------------- path patching
LnPolicy = Literal["frozen", "recompute"]


def _frozen_patches(
    ranker: HookedRanker, target: Side, source: Side, layer: int, senders: torch.Tensor, ln: LnPolicy
) -> MakePatches:
    """Sender heads (a [rows, n_heads] mask) at ``layer`` take source values; every head's z and every MLP
    output from ``layer`` on is frozen to the target run, and so are LayerNorm scales when ``ln="frozen"``."""
    frozen = [f"blocks.{m}.hook_mlp_out" for m in range(layer, ranker.cfg.n_layers)]
    frozen += [f"blocks.{m}.attn.hook_z" for m in range(layer + 1, ranker.cfg.n_layers)]
    if ln == "frozen":
        frozen += [f"blocks.{m}.ln{i}.hook_scale" for m in range(layer, ranker.cfg.n_layers) for i in (1, 2)]
    elif ln != "recompute":
        raise ValueError(f"ln must be 'frozen' or 'recompute', got {ln!r}")

    def make(chunk: torch.Tensor, pairs: torch.Tensor) -> Patches:
        patches: Patches = {}
        for name in frozen:
            values = target.cache[name][pairs]
            patches[name] = (torch.ones_like(values, dtype=torch.bool), values)
        z = f"blocks.{layer}.attn.hook_z"
        patches[z] = (senders[chunk][:, None, :, None], source.cache[z][pairs])
        return patches

    return make


def path_patching(
    ranker: HookedRanker,
    runs: PairRuns,
    *,
    receivers: Literal["score"] | Sequence[tuple[int, int]] = "score",
    channels: Sequence[str] = ("q", "k", "v"),
    direction: Direction = "denoise",
    ln: LnPolicy = "frozen",
    batch_budget: int = 64,
    batched: bool = True,
) -> PatchResult:
    """Direct effect of every sender head on the score, or on receiver heads' q / k / v inputs.

    To the score: dims ("layer", "head"). To receivers: dims ("sender", "receiver", "channel") labelled
    "layer.head", NaN where the sender is not below the receiver.
    """
    cfg = ranker.cfg
    target, source = runs.sides(direction)
    device = target.scores.device
    heads = list(product(range(cfg.n_layers), range(cfg.n_heads)))
    to_score = isinstance(receivers, str)
    if to_score and receivers != "score":
        raise ValueError(f"receivers must be 'score' or a list of (layer, head), got {receivers!r}")
    recv = [] if to_score else [tuple(r) for r in receivers]  # type: ignore[union-attr]
    if not to_score and not recv:
        raise ValueError("no receivers given: the receiver list is empty")
    if not set(channels) <= {"q", "k", "v"} or not channels:
        raise ValueError(f"channels must be a non-empty subset of q, k, v, got {channels!r}")
    n, shape = runs.n_pairs, (len(heads),) if to_score else (len(heads), len(recv), len(channels))
    patched = torch.full((n, math.prod(shape)), float("nan"), device=device, dtype=target.scores.dtype)
    pair_ids = torch.arange(n, device=device)
    runs_per_layer = [1 + len(channels) * sum(r[0] > layer for r in recv) for layer in range(cfg.n_layers)]
    with progress_bar(cfg.n_heads * n * sum(runs_per_layer), f"path patching, {n} pairs") as bar:
        for layer in range(cfg.n_layers):
            sender_heads = torch.arange(cfg.n_heads, device=device).repeat_interleave(n)
            pair_of_row = pair_ids.repeat(cfg.n_heads)
            senders = torch.nn.functional.one_hot(sender_heads, cfg.n_heads).bool()
            later = [(i, r) for i, r in enumerate(recv) if r[0] > layer]
            record = [f"blocks.{r[0]}.attn.hook_{c}" for _, r in later for c in channels]
            scores, recorded = _run_rows(
                ranker,
                runs,
                target,
                layer,
                pair_of_row,
                _frozen_patches(ranker, target, source, layer, senders, ln),
                batch_budget=batch_budget,
                batched=batched,
                record=sorted(set(record)),
                bar=bar,
            )
            sender_ids = layer * cfg.n_heads + sender_heads
            if to_score:
                patched[pair_of_row, sender_ids] = scores
                continue
            for (r_i, (r_layer, r_head)), (c_i, channel) in product(later, enumerate(channels)):
                name = f"blocks.{r_layer}.attn.hook_{channel}"
                values = recorded[name]

                def make(
                    chunk: torch.Tensor,
                    pairs: torch.Tensor,
                    values: torch.Tensor = values,
                    name: str = name,
                    head: int = r_head,
                ) -> Patches:
                    mask = torch.zeros_like(values[chunk], dtype=torch.bool)
                    mask[:, :, head] = True
                    return {name: (mask, values[chunk])}

                rscores, _ = _run_rows(
                    ranker,
                    runs,
                    target,
                    r_layer,
                    pair_of_row,
                    make,
                    batch_budget=batch_budget,
                    batched=batched,
                    bar=bar,
                )
                cols = (sender_ids * len(recv) + r_i) * len(channels) + c_i
                patched[pair_of_row, cols] = rscores
    if to_score:
        grid_dims, coords = ("layer", "head"), {"layer": list(range(cfg.n_layers)), "head": list(range(cfg.n_heads))}
    else:
        names = [f"{ly}.{h}" for ly, h in heads]
        grid_dims = ("sender", "receiver", "channel")
        coords = {"sender": names, "receiver": [f"{ly}.{h}" for ly, h in recv], "channel": list(channels)}
    return _result(runs, grid_dims, coords, patched, direction, f"path (LayerNorm {ln})")
