"""irmechtest: mechanistic-interpretability findings about neural rankers as pytest verdicts per model.

The names below are what a user needs to load a hooked ranker, build axiom pairs, patch and write a
property of their own; they are imported on first use, so ``import irmechtest`` does not import torch.

    >>> import irmechtest
    >>> ranker = irmechtest.load_ranker("minilm")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it (one place per concept; nothing is re-implemented here)
_EXPORTS: dict[str, str] = {
    "load_ranker": "irmechtest.loading",
    "HookedRanker": "irmechtest.models",
    "Batch": "irmechtest.models",
    "act_name": "irmechtest.hooks",
    "ActivationCache": "irmechtest.hooks",
    "Axiom": "irmechtest.axioms",
    "AxiomContext": "irmechtest.axioms",
    "get_axiom": "irmechtest.axioms",
    "registered_axioms": "irmechtest.axioms",
    "build_pairs": "irmechtest.pairs",
    "PairBuilder": "irmechtest.pairs",
    "measure_axiom": "irmechtest.compliance",
    "to_verdict": "irmechtest.compliance",
    "prepare_pairs": "irmechtest.patching",
    "head_grid": "irmechtest.patching",
    "block_grid": "irmechtest.patching",
    "neuron_grid": "irmechtest.patching",
    "activation_patching": "irmechtest.patching",
    "attribution_patching": "irmechtest.patching",
    "path_patching": "irmechtest.patching",
    "Verdict": "irmechtest.verdicts",
    "Evidence": "irmechtest.verdicts",
    "Outcome": "irmechtest.verdicts",
}

__all__ = [
    "ActivationCache",
    "Axiom",
    "AxiomContext",
    "Batch",
    "Evidence",
    "HookedRanker",
    "Outcome",
    "PairBuilder",
    "Verdict",
    "act_name",
    "activation_patching",
    "attribution_patching",
    "block_grid",
    "build_pairs",
    "get_axiom",
    "head_grid",
    "load_ranker",
    "measure_axiom",
    "neuron_grid",
    "path_patching",
    "prepare_pairs",
    "registered_axioms",
    "to_verdict",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from irmechtest.axioms import Axiom, AxiomContext, get_axiom, registered_axioms
    from irmechtest.compliance import measure_axiom, to_verdict
    from irmechtest.hooks import ActivationCache, act_name
    from irmechtest.loading import load_ranker
    from irmechtest.models import Batch, HookedRanker
    from irmechtest.pairs import PairBuilder, build_pairs
    from irmechtest.patching import (
        activation_patching,
        attribution_patching,
        block_grid,
        head_grid,
        neuron_grid,
        path_patching,
        prepare_pairs,
    )
    from irmechtest.verdicts import Evidence, Outcome, Verdict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'irmechtest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
