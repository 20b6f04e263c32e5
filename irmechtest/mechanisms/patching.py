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
from itertools import product
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from irmechtest.mechanisms.components import (
    Grid,
)
from irmechtest.mechanisms.pair_runs import PairRuns, PatchDirection, Side
from irmechtest.mechanisms.patch_results import PatchResult, grid_result, padding_mask, patch_result
from irmechtest.models.encoder import HookedAttention
from irmechtest.models.hooks import act_name
from irmechtest.models.ranker import HookedRanker, progress_bar

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
    return name == act_name("resid_pre", layer) or name.startswith(f"blocks.{layer}.attn.")


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
        "resid": target.cache[act_name("resid_pre", layer)][pairs, :length],
    }
    z_hook = act_name("z", layer)
    others = [name for name in [*patches, *record] if name != z_hook]
    if z_hook in patches and not runs.hooks and not any(_pre_attention(name, layer) for name in others):
        start["attn_out"] = _patched_attn_out(
            ranker.blocks[layer].attn,
            target.cache[act_name("attn_out", layer)][pairs, :length],
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
    direction: PatchDirection = "denoise",
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
    padding = padding_mask(runs, [c.position for c in grid.cells])
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
    return grid_result(runs, grid, patched, direction, "exact" if batched else "exact (naive)")


# ------------------------------------------------------------------------------------------- attribution
def attribution_patching(
    ranker: HookedRanker, runs: PairRuns, grid: Grid, *, direction: PatchDirection = "denoise"
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
    return grid_result(runs, grid, target.scores[:, None] + estimate, direction, "attribution")


def screen_then_verify(
    ranker: HookedRanker,
    runs: PairRuns,
    grid: Grid,
    top_n: int,
    *,
    direction: PatchDirection = "denoise",
    batch_budget: int = 64,
) -> tuple[PatchResult, PatchResult]:
    """Screen every cell with attribution patching, then patch the ``top_n`` by |estimate| exactly.

    Returns (screen, verified); the verified result has one "component" dimension in screening order.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    screen = attribution_patching(ranker, runs, grid, direction=direction)
    verified = activation_patching(
        ranker, runs, grid.subset(screen.top_flat(top_n).tolist()), direction=direction, batch_budget=batch_budget
    )
    return screen, verified


def screened_patching(
    ranker: HookedRanker,
    runs: PairRuns,
    grid: Grid,
    top_n: int,
    *,
    direction: PatchDirection = "denoise",
    batch_budget: int = 64,
) -> PatchResult:
    """``screen_then_verify`` laid back on ``grid``: the ``top_n`` screened cells hold their exact per-pair
    effects, every other cell NaN (not verified, so no selection rule can pick a cell on an estimate).

    For models whose every head is too many to patch exactly (docs/patching.md, "Screening heads").
    """
    screen, verified = screen_then_verify(ranker, runs, grid, top_n, direction=direction, batch_budget=batch_budget)
    values = np.full((runs.n_pairs, len(grid.cells)), np.nan)
    scores = np.full((runs.n_pairs, len(grid.cells)), np.nan)
    order = screen.top_flat(top_n)
    values[:, order], scores[:, order] = verified.values, verified.scores
    shape = (runs.n_pairs, *grid.shape)
    method = f"attribution screen, top {len(order)} exact"
    return PatchResult(
        values.reshape(shape),
        scores.reshape(shape),
        grid.dims,
        grid.coords,
        runs.excluded,
        method,
        min_gap=runs.min_gap,
    )


# ------------------------------------------------------------------------------------------- path patching
LnPolicy = Literal["frozen", "recompute"]


def _frozen_patches(
    ranker: HookedRanker, target: Side, source: Side, layer: int, senders: torch.Tensor, ln: LnPolicy
) -> MakePatches:
    """Sender heads (a [rows, n_heads] mask) at ``layer`` take source values; every head's z and every MLP
    output from ``layer`` on is frozen to the target run, and so are LayerNorm scales when ``ln="frozen"``."""
    frozen = [act_name("mlp_out", m) for m in range(layer, ranker.cfg.n_layers)]
    frozen += [act_name("z", m) for m in range(layer + 1, ranker.cfg.n_layers)]
    if ln == "frozen":
        frozen += [act_name(f"scale{i}", m) for m in range(layer, ranker.cfg.n_layers) for i in (1, 2)]
    elif ln != "recompute":
        raise ValueError(f"ln must be 'frozen' or 'recompute', got {ln!r}")

    def make(chunk: torch.Tensor, pairs: torch.Tensor) -> Patches:
        patches: Patches = {}
        for name in frozen:
            values = target.cache[name][pairs]
            patches[name] = (torch.ones_like(values, dtype=torch.bool), values)
        z = act_name("z", layer)
        patches[z] = (senders[chunk][:, None, :, None], source.cache[z][pairs])
        return patches

    return make


def path_patching(
    ranker: HookedRanker,
    runs: PairRuns,
    *,
    receivers: Literal["score"] | Sequence[tuple[int, int]] = "score",
    channels: Sequence[str] = ("q", "k", "v"),
    direction: PatchDirection = "denoise",
    ln: LnPolicy = "frozen",
    batch_budget: int = 64,
    batched: bool = True,
) -> PatchResult:
    """Direct effect of every sender head on the score, or on receiver heads' q / k / v inputs.

    To the score: dims ("layer", "head"). To receivers: dims ("sender", "receiver", "channel") labelled
    "layer.head", NaN where the sender is not below the receiver. Under grouped-query attention (decoders) a
    receiver's k / v input is its key / value head's, which the other query heads of its group read too.
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
            record = [act_name(c, r[0]) for _, r in later for c in channels]
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
                name = act_name(channel, r_layer)
                values = recorded[name]

                def make(
                    chunk: torch.Tensor,
                    pairs: torch.Tensor,
                    values: torch.Tensor = values,
                    name: str = name,
                    head: int = r_head * values.shape[2] // cfg.n_heads,  # its key / value head under GQA
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
    return patch_result(runs, grid_dims, coords, patched, direction, f"path (LayerNorm {ln})")
