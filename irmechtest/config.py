"""Default thresholds, sample sizes and seeds of the built-in properties, with their sources.

Each entry is the default for one property; ``[tool.irmechtest]`` in pyproject.toml (per property and
per model) overrides them once the configuration layer reads it. Every default says where it comes from,
so a user can tell a literature figure from a product choice.
"""

from __future__ import annotations

from typing import Any

from irmechtest.axioms import behaviour_defaults

DEFAULTS: dict[str, dict[str, Any]] = {
    "idf-in-u0": {
        # Seed 002 measures r = -0.71 on ms-marco-MiniLM-L-12-v2; we measure -0.76 on all-MiniLM-L6-v2
        # and 0.00 on random init. 0.5 is the conventional "large" correlation (Cohen), between the two.
        "threshold": 0.5,
        "top_k": 3,
        "idf_source": "msmarco-wordpiece",
    },
    "tfc1": {
        # "TFC1 holds for >= 90 % of minimal pairs" is the product's release criterion; ties are exact
        # equality on length-matched pairs unless a tie band is configured.
        "threshold": 0.9,
        "tie_band": 0.0,
        "pairs": "irmechtest:trec-dl-tfc1-sample",
        "n_pairs": 200,
        "seed": 0,
    },
}


def property_config(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of one property: its defaults updated with ``overrides`` (unknown keys refused)."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown property {name!r}; known: {sorted(DEFAULTS)}")
    settings = dict(DEFAULTS[name])
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ValueError(f"property {name!r} has no setting {key!r}; settings: {sorted(settings)}")
        settings[key] = value
    return settings


# The axiom catalogue's per-axiom properties, each with its threshold's literature source.
for _name, _settings in behaviour_defaults().items():
    DEFAULTS.setdefault(_name, _settings)
