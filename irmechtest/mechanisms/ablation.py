"""Zero, mean and resample ablation of heads, blocks and neurons, as hook specs that compose.

Ablations are plain ``(hook name, fn)`` specs: pass them to ``run_with_hooks``, combine lists with ``+``,
or give them to ``pair_runs.prepare_pairs(hooks=...)`` so that every patched run happens in the ablated
model. The cells come from ``patching``'s grids (``head_grid(...).cells``, ``Grid.subset``), so the same
vocabulary names what is patched and what is ablated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from irmechtest.mechanisms.components import Cell, Grid
from irmechtest.models.hooks import HookSpec
from irmechtest.models.ranker import Batch, HookedRanker

AblationMode = Literal["zero", "mean", "resample"]


def ablation_hooks(
    ranker: HookedRanker,
    cells: Grid | Sequence[Cell],
    mode: AblationMode = "zero",
    *,
    reference: Batch | None = None,
    seed: int = 0,
) -> list[HookSpec]:
    """Hooks that overwrite each cell with zero, its mean over ``reference``, or one reference input's value.

    ``mean`` averages over the reference rows and their real (non-padding) positions, so it applies at any
    sequence length. ``resample`` copies the activation of one reference row (drawn with ``seed``, the same
    for every forward pass, so batched and naive patching see the same donor); that row must have the
    same padded length as the ablated inputs.
    """
    cells = list(cells.cells if isinstance(cells, Grid) else cells)
    if not cells:
        raise ValueError("no components to ablate: the component list is empty")
    if mode not in ("zero", "mean", "resample"):
        raise ValueError(f"mode must be 'zero', 'mean' or 'resample', got {mode!r}")
    if mode != "zero" and (reference is None or len(reference) == 0):
        raise ValueError(f"{mode} ablation needs a non-empty reference batch")
    by_hook: dict[str, list[Cell]] = {}
    for cell in cells:
        by_hook.setdefault(cell.hook, []).append(cell)
    donors = _reference_values(ranker, list(by_hook), mode, reference, seed) if mode != "zero" else {}
    return [(name, _overwrite(group, donors.get(name), mode)) for name, group in by_hook.items()]


def _reference_values(
    ranker: HookedRanker, names: list[str], mode: AblationMode, reference: Batch, seed: int
) -> dict[str, torch.Tensor]:
    """Per hook: the mean over rows and real positions [*features], or one donor row [pos, *features]."""
    with torch.no_grad():
        _, cache = ranker.run_with_cache(reference, names_filter=names)
    if mode == "resample":
        row = int(torch.randint(len(reference), (1,), generator=torch.Generator().manual_seed(seed)))
        return {name: cache[name][row] for name in names}
    mask = reference.attention_mask.bool()
    return {name: cache[name][mask].mean(0) for name in names}


def _overwrite(cells: list[Cell], value: torch.Tensor | None, mode: AblationMode) -> Callable[..., torch.Tensor]:
    def hook(act: torch.Tensor, hook: object) -> torch.Tensor:
        if value is None:
            full = torch.zeros_like(act[0])
        elif mode == "mean":
            full = value.expand(act.shape[1:])
        elif value.shape != act.shape[1:]:
            raise ValueError(
                f"resample donor has shape {tuple(value.shape)} but the ablated activation has "
                f"{tuple(act.shape[1:])}: tokenise the reference to the same padded length"
            )
        else:
            full = value
        out = act.clone()
        for cell in cells:
            out[(slice(None), *cell.index)] = full[cell.index]
        return out

    return hook
