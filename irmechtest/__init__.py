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
    "ProbeCorpus": "irmechtest.models.ranker",
    "act_name": "irmechtest.models.hooks",
    "ActivationCache": "irmechtest.models.hooks",
    "Axiom": "irmechtest.data.catalogue",
    "AxiomContext": "irmechtest.data.catalogue",
    "get_axiom": "irmechtest.data.catalogue",
    "registered_axioms": "irmechtest.data.catalogue",
    "build_pairs": "irmechtest.data.pairs",
    "PairBuilder": "irmechtest.data.pairs",
    "measure_axiom": "irmechtest.behaviour.compliance",
    "to_verdict": "irmechtest.behaviour.compliance",
    "prepare_pairs": "irmechtest.mechanisms.pair_runs",
    "head_grid": "irmechtest.mechanisms.components",
    "block_grid": "irmechtest.mechanisms.components",
    "neuron_grid": "irmechtest.mechanisms.components",
    "activation_patching": "irmechtest.mechanisms.patching",
    "attribution_patching": "irmechtest.mechanisms.patching",
    "path_patching": "irmechtest.mechanisms.patching",
    "Property": "irmechtest.registry",
    "register_property": "irmechtest.registry",
    "get_property": "irmechtest.registry",
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
    "ProbeCorpus",
    "Property",
    "Verdict",
    "act_name",
    "activation_patching",
    "attribution_patching",
    "block_grid",
    "build_pairs",
    "get_axiom",
    "get_property",
    "head_grid",
    "load_ranker",
    "measure_axiom",
    "neuron_grid",
    "path_patching",
    "prepare_pairs",
    "register_property",
    "registered_axioms",
    "to_verdict",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from irmechtest.behaviour.compliance import measure_axiom, to_verdict
    from irmechtest.data.catalogue import Axiom, AxiomContext, get_axiom, registered_axioms
    from irmechtest.data.pairs import PairBuilder, build_pairs
    from irmechtest.loading import load_ranker
    from irmechtest.mechanisms.components import block_grid, head_grid, neuron_grid
    from irmechtest.mechanisms.pair_runs import prepare_pairs
    from irmechtest.mechanisms.patching import activation_patching, attribution_patching, path_patching
    from irmechtest.models.hooks import ActivationCache, act_name
    from irmechtest.models.ranker import Batch, HookedRanker, ProbeCorpus
    from irmechtest.registry import Property, get_property, register_property
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
