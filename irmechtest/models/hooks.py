"""Hook points with TransformerLens's names and calling conventions.

TransformerLens 4.x cannot load encoder rankers (see docs/architecture.md), so irmechtest carries the
small part of its hooking vocabulary that users rely on: ``HookPoint`` modules placed on every
activation, ``run_with_hooks``, ``run_with_cache`` and ``hooks()``. A hook function has TransformerLens's
signature ``fn(activation, hook) -> activation | None``; returning a tensor replaces the activation for
everything computed downstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

HookFn = Callable[..., torch.Tensor | None]
NamesFilter = None | str | Sequence[str] | Callable[[str], bool]
HookSpec = tuple[str | Callable[[str], bool], HookFn]

_BLOCK_ACTS = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "normalized_resid_post": "hook_normalized_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "z": "attn.hook_z",
    "result": "attn.hook_result",
    "attn_scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern",
    "rot_q": "attn.hook_rot_q",
    "rot_k": "attn.hook_rot_k",
    "pre": "mlp.hook_pre",
    "pre_linear": "mlp.hook_pre_linear",
    "post": "mlp.hook_post",
    "scale1": "ln1.hook_scale",
    "scale2": "ln2.hook_scale",
}


def act_name(name: str, layer: int | None = None) -> str:
    """Full hook name from TransformerLens's short form: ``act_name("pattern", 3)``."""
    if name in _BLOCK_ACTS:
        if layer is None:
            raise ValueError(f"activation {name!r} lives in a block: give its layer")
        return f"blocks.{layer}.{_BLOCK_ACTS[name]}"
    if name in {"embed", "pos_embed", "token_type_embed", "full_embed", "pooled", "logits"}:
        return f"hook_{name}"
    raise ValueError(f"unknown activation {name!r}; known: {sorted([*_BLOCK_ACTS, 'embed', 'pos_embed'])}")


class HookPoint(nn.Module):
    """An identity module marking an activation that hooks may read or replace."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def has_hooks(self) -> bool:
        return bool(self._handles)

    def add_hook(self, fn: HookFn, direction: Literal["fwd", "bwd"] = "fwd") -> torch.utils.hooks.RemovableHandle:
        """Attach ``fn(activation, hook=self)``; ``bwd`` hooks see the gradient of the activation."""
        if direction == "fwd":

            def forward_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
                return fn(output, hook=self)

        elif direction == "bwd":

            def forward_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
                if output.requires_grad:
                    output.register_hook(lambda grad: fn(grad, hook=self))

        else:
            raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
        handle = self.register_forward_hook(forward_hook)
        self._handles.append(handle)
        return handle

    def remove_hook(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        handle.remove()
        self._handles.remove(handle)

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def names_predicate(names: NamesFilter) -> Callable[[str], bool]:
    """Any accepted names filter (None, a name, a list of names, a predicate) as a predicate."""
    if names is None:
        return lambda name: True
    if isinstance(names, str):
        return lambda name: name == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda name: name in wanted


class ActivationCache(dict[str, torch.Tensor]):
    """Activations by hook name; ``cache["pattern", 0]`` means ``cache["blocks.0.attn.hook_pattern"]``."""

    def __getitem__(self, key: str | tuple[str, int]) -> torch.Tensor:
        if isinstance(key, tuple):
            key = act_name(*key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple):
            key = act_name(*key)
        return super().__contains__(key)


class HookedRootModule(nn.Module):
    """Base for models made of ``HookPoint``s: name them, and run with hooks or with a cache."""

    def setup_hooks(self) -> None:
        """Name every hook point after its module path; call once at the end of ``__init__``."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_points(self, names: NamesFilter = None) -> Iterator[HookPoint]:
        match = names_predicate(names)
        return (hp for name, hp in self.hook_dict.items() if match(name))

    def add_hook(
        self, name: str | Callable[[str], bool], fn: HookFn, direction: Literal["fwd", "bwd"] = "fwd"
    ) -> list[tuple[HookPoint, torch.utils.hooks.RemovableHandle]]:
        """Attach ``fn`` to the hook point ``name`` (or every point a filter accepts); returns the handles."""
        if isinstance(name, str) and name not in self.hook_dict:
            close = [n for n in self.hook_dict if n.endswith(name.rsplit(".", 1)[-1])][:5]
            raise KeyError(f"no hook point named {name!r}; similar ones: {close}")
        return [(hp, hp.add_hook(fn, direction)) for hp in self.hook_points(name)]

    def reset_hooks(self) -> None:
        """Remove every hook, including ones added outside a ``hooks()`` block."""
        for hook_point in self.hook_dict.values():
            hook_point.remove_hooks()

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[HookSpec] = (), bwd_hooks: Iterable[HookSpec] = ()) -> Iterator[None]:
        """Hooks that are active inside the ``with`` block only; hooks added elsewhere stay."""
        added: list[tuple[HookPoint, torch.utils.hooks.RemovableHandle]] = []
        try:
            for name, fn in fwd_hooks:
                added += self.add_hook(name, fn, "fwd")
            for name, fn in bwd_hooks:
                added += self.add_hook(name, fn, "bwd")
            yield
        finally:
            for hook_point, handle in added:
                hook_point.remove_hook(handle)

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Iterable[HookSpec] = (),
        bwd_hooks: Iterable[HookSpec] = (),
        **kwargs: Any,
    ) -> Any:
        with self.hooks(fwd_hooks, bwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesFilter = None,
        device: str | torch.device | None = None,
        incl_bwd: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """Run once and return the output and the activations whose names pass ``names_filter``.

        With ``incl_bwd=True`` the activations stay attached to the graph and the caller's backward pass
        on the output fills ``name + "_grad"`` entries, which attribution patching needs.
        """
        cache = ActivationCache()

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device) if device is not None else tensor

        def save(activation: torch.Tensor, hook: HookPoint) -> None:
            if incl_bwd and activation.requires_grad:
                activation.register_hook(lambda grad: cache.__setitem__(hook.name + "_grad", move(grad)))
                cache[hook.name] = move(activation)
            else:
                cache[hook.name] = move(activation.detach())

        with self.hooks([(names_predicate(names_filter), save)]):
            output = self(*args, **kwargs)
        return output, cache


def layer_of(hook_name: str) -> int | None:
    """Block index of a hook name, or None for embedding / head hooks."""
    match = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(match.group(1)) if match else None
