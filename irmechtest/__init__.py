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
    "HookedRanker": "irmechtest.models.ranker",
    "Batch": "irmechtest.models.ranker",
    "act_name": "irmechtest.models.hooks",
    "ActivationCache": "irmechtest.models.hooks",
    "Axiom": "irmechtest.data.catalogue",
    "AxiomContext": "irmechtest.data.catalogue",
    "get_axiom": "irmechtest.data.catalogue",
    "registered_axioms": "irmechtest.data.catalogue",
    "build_pairs": "irmechtest.data.pairs",
    "PairBuilder": "irmechtest.data.pairs",
    "measure_axiom": "irmechtest.compliance",
    "to_verdict": "irmechtest.compliance",
    "prepare_pairs": "irmechtest.mechanisms.patching",
    "head_grid": "irmechtest.mechanisms.patching",
    "block_grid": "irmechtest.mechanisms.patching",
    "neuron_grid": "irmechtest.mechanisms.patching",
    "activation_patching": "irmechtest.mechanisms.patching",
    "attribution_patching": "irmechtest.mechanisms.patching",
    "path_patching": "irmechtest.mechanisms.patching",
    "Verdict": "irmechtest.report.verdicts",
    "Evidence": "irmechtest.report.verdicts",
    "Outcome": "irmechtest.report.verdicts",
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
    from irmechtest.compliance import measure_axiom, to_verdict
    from irmechtest.data.catalogue import Axiom, AxiomContext, get_axiom, registered_axioms
    from irmechtest.data.pairs import PairBuilder, build_pairs
    from irmechtest.loading import load_ranker
    from irmechtest.mechanisms.patching import (
        activation_patching,
        attribution_patching,
        block_grid,
        head_grid,
        neuron_grid,
        path_patching,
        prepare_pairs,
    )
    from irmechtest.models.hooks import ActivationCache, act_name
    from irmechtest.models.ranker import Batch, HookedRanker
    from irmechtest.report.verdicts import Evidence, Outcome, Verdict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'irmechtest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
