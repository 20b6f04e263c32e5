"""What is patched, ablated or attributed: a ``Cell`` (a hook name, the layer it belongs to, the index of the
activation slice) and a ``Grid`` of cells with named axes (heads, block activations by position, MLP neurons).
Patching, ablation and NIG all address activations this way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from irmechtest.models.hooks import act_name
from irmechtest.models.ranker import HookedRanker

Index = tuple[Any, ...]


BLOCK_ACTS = ("resid_pre", "attn_out", "mlp_out")


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
        cells = [Cell(act_name("z", ly), ly, (slice(None), h)) for ly, h in product(layers, heads)]
        return Grid(("layer", "head"), {"layer": layers, "head": heads}, tuple(cells))
    positions = list(range(seq_len))
    cells = [Cell(act_name("z", ly), ly, (p, h), p) for ly, h, p in product(layers, heads, positions)]
    return Grid(("layer", "head", "position"), {"layer": layers, "head": heads, "position": positions}, tuple(cells))


def block_grid(
    ranker: HookedRanker, seq_len: int, *, acts: Sequence[str] = BLOCK_ACTS, layers: Sequence[int] | None = None
) -> Grid:
    """Residual stream, attention output and MLP output of every layer at every position."""
    unknown = set(acts) - set(BLOCK_ACTS)
    if unknown:
        raise ValueError(f"block activations must be among {BLOCK_ACTS}, got {sorted(unknown)}")
    layers, positions = _layers(ranker, layers), list(range(seq_len))
    cells = [Cell(act_name(a, ly), ly, (p,), p) for a, ly, p in product(acts, layers, positions)]
    return Grid(("act", "layer", "position"), {"act": list(acts), "layer": layers, "position": positions}, tuple(cells))


def neuron_grid(
    ranker: HookedRanker, *, layers: Sequence[int] | None = None, neurons: Sequence[int] | None = None
) -> Grid:
    """MLP neurons (``mlp.hook_post``) at all positions; restrict ``neurons`` on big models."""
    layers = _layers(ranker, layers)
    neurons = list(range(ranker.cfg.d_mlp)) if neurons is None else list(neurons)
    cells = [Cell(act_name("post", ly), ly, (slice(None), n)) for ly, n in product(layers, neurons)]
    return Grid(("layer", "neuron"), {"layer": layers, "neuron": neurons}, tuple(cells))
