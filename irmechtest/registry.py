"""The built-in properties, each defined once: name, the ranker kinds and hook layouts it applies to (and why
not elsewhere), what its value is, its settings with their sources, what the ``full`` profile changes, and the
function that measures it.

Configuration (``config.py``: defaults, validation), the suite's markers (``irmech_property(name)``), the
plugin's applicability check and the report read this table; a property is added with one ``register_property`` call
and one suite test (``tests/test_registry.py`` checks the two match). Reading it imports no torch: ``measure``
names the function (``module:function``) instead of importing it. A user's own property can be registered
the same way from a ``conftest.py`` (docs/api.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from irmechtest.data.catalogue import behaviour_defaults, behaviour_full_profile
from irmechtest.data.idf import DEFAULT_IDF
from irmechtest.data.sources import DEFAULT_SOURCE

ALL_KINDS = ("cross-encoder", "bi-encoder")

# Why a property that reads blocks.{l} does not apply to another hook layout (its ``layouts``).
LAYOUT_REASON = (
    "the property reads one stack of blocks.{l} (patching, attention maps, neurons), which this hook layout "
    "does not have (docs/circuits.md)"
)


class RankerShape(Protocol):
    """What applicability is decided on (``HookedRanker`` has these)."""

    kind: str
    layout: str


@dataclass(frozen=True)
class Property:
    """One property: everything the suite, the configuration and the report need to know about it."""

    name: str
    quantity: str  # what the value is (|r|, compliance rate, p-value, ...)
    measure: str  # "module:function" that measures it
    settings: Mapping[str, Any] = field(default_factory=dict)  # quick-profile settings, sources beside them
    full_profile: Mapping[str, Any] = field(default_factory=dict)  # what the ``full`` profile changes
    applies_to: tuple[str, ...] = ALL_KINDS
    reason: str = ""  # why it does not apply to the other kinds
    layouts: tuple[str, ...] | None = None  # hook layouts it reads (None: any)

    def not_applicable_reason(self, ranker: RankerShape) -> str | None:
        """Why this property does not apply to ``ranker`` (None when it does): the one place it is decided."""
        if ranker.kind not in self.applies_to:
            return f"{ranker.kind}: " + (self.reason or f"applies to {', '.join(self.applies_to)} only")
        if self.layouts is not None and ranker.layout not in self.layouts:
            return f"{ranker.layout} layout: {LAYOUT_REASON}"
        return None

    def measure_function(self) -> Callable[..., Any]:
        """The function ``measure`` names (imported now: it may need torch)."""
        module, _, name = self.measure.partition(":")
        return getattr(importlib.import_module(module), name)


PROPERTIES: dict[str, Property] = {}


def register_property(prop: Property) -> Property:
    """Add a property; a name can be registered once."""
    if prop.name in PROPERTIES:
        raise ValueError(f"property {prop.name!r} is already registered")
    PROPERTIES[prop.name] = prop
    return prop


def get_property(name: str) -> Property:
    try:
        return PROPERTIES[name]
    except KeyError:
        raise KeyError(f"unknown property {name!r}; known: {', '.join(sorted(PROPERTIES))}") from None


# ------------------------------------------------------------------------------ weights and behaviour
_BASE_SETTINGS: dict[str, dict[str, Any]] = {
    "idf-in-u0": {
        # Seed 002 measures r = -0.71 on ms-marco-MiniLM-L-12-v2; we measure -0.76 on all-MiniLM-L6-v2
        # and 0.00 on random init. 0.5 is the conventional "large" correlation (Cohen), between the two.
        "threshold": 0.5,
        "top_k": 3,
        "idf_source": "msmarco-wordpiece",
    },
    "tfc1": {
        # The share of pairs on which inserting a query term beats inserting an unrelated word of the same
        # token length (same document, same slot) by more than the model's neutral spread, with the mean
        # contrast's interval above 0 (docs/axioms.md, "Verdicts against controls"): 0.5 is twice the 0.25
        # a model scores when it treats query terms like any word. It replaces the earlier ">= 90 % of pairs
        # rise at all against filler padding", which a random-init 6 x 384 cross-encoder met at 1.0 (a
        # fixed filler token is a biased reference) while the trained zoo model measured 0.695. Camara &
        # Hauff 2020's ~61 % for BERT is a bare direction rate, a reference only.
        "threshold": 0.5,
        "tie_band": "control",
        "random_twin": "auto",
        "pairs": "irmechtest:trec-dl-tfc1-sample",
        "n_pairs": 200,
        "seed": 0,
    },
}

# What the ``full`` profile changes: paper-scale samples (all 400 pairs of the shipped TREC DL sample).
_BASE_FULL_PROFILE: dict[str, dict[str, Any]] = {"tfc1": {"n_pairs": 400}}

register_property(
    Property(
        "idf-in-u0",
        "|r|",
        "irmechtest.mechanisms.probes:svd_idf_probe",
        _BASE_SETTINGS["idf-in-u0"],
    )
)
register_property(
    Property(
        "tfc1",
        "compliance rate",
        "irmechtest.behaviour.compliance:measure_axiom",
        _BASE_SETTINGS["tfc1"],
        _BASE_FULL_PROFILE["tfc1"],
    )
)
# The axiom catalogue's per-axiom properties (``axiom-<name>``), each with its threshold's literature source,
# defined where the axiom is (``data/catalogue.py``).
_AXIOM_FULL_PROFILE = behaviour_full_profile()
for _name, _settings in behaviour_defaults().items():
    register_property(
        Property(
            _name,
            "compliance rate",
            "irmechtest.behaviour.compliance:measure_axiom",
            _settings,
            _AXIOM_FULL_PROFILE[_name],
        )
    )


# ------------------------------------------------------------------ relevance circuit (seed 002)
CROSS = ("cross-encoder",)
BLOCKS = ("blocks",)  # patching and attention maps over blocks.{l}: not monoT5's encoder / decoder stacks
NO_QD = "bi-encoders encode query and document apart: no query -> document or [CLS] -> query attention"

PROBE_PAIRS = 48  # quick-profile source pairs of the head probes (reason at "matching-heads" below)

_CIRCUIT_SETTINGS: dict[str, dict[str, Any]] = {
    # Shared by the head probes: quick-profile sample (source pairs for TFC1, STMC1 and the control each),
    # documents cut to max_length tokens so that patching every head stays within seconds on 2 CPU cores. Only
    # pairs whose edit moves the score by >= pair_runs.MIN_GAP_SHARE of the score spread are patched, so the
    # sample is drawn 3x larger than the 16 pairs a head's interval needs to be decisive: a model that reacts
    # to one edit in five keeps about 10 (3 of 16 leave a Student-t interval with t = 4.3, which confirms
    # nothing); pairs that are excluded cost one forward pass, not a patching run.
    "matching-heads": {
        # Share of the TFC1 effect removed by mean-ablating the found heads. Seed 002 sec. 4.3: mean-ablation
        # takes perturbed TFC1 logits from 5.1 to -4.4, i.e. all of it; 0.5 ("the heads carry most of the
        # exact-matching signal") is our convention below that. Further condition: the ablation must remove
        # more of the TFC1 effect than it changes a control edit's (an unrelated word): the 95 % bootstrap
        # interval of the difference, over n_boot resamples of the pairs, above 0.
        "threshold": 0.5,
        # A head must restore >= 5 % of the TFC1 effect alone (convention: an effect smaller than one
        # twentieth of the whole is not a circuit component), with its 95 % interval above 0.
        "min_effect": 0.05,
        # Exact-match attention: a query token's attention to the same token in the document, over what
        # uniform attention over the document's tokens would give it. Seed 002 fig. 4: matching heads attend
        # "most strongly to duplicates"; 5x chance means duplicates dominate the head's attention to the
        # document (a head attending by position or at random sits near 1x).
        "min_same_token_lift": 5.0,
        # How heads are patched: "none" = exactly, every head; "attribution" = an attribution-patching screen
        # of every head, then the verify_top_k largest patched exactly (the others cannot be selected), for
        # models too big to patch every head (docs/patching.md, "Screening heads"). 16: more than the 13
        # matching heads seed 002 finds in a 144-head model, at 1 / 28 of exact patching on a 448-head
        # Qwen3-Reranker-0.6B.
        "head_screen": "none",
        "verify_top_k": 16,
        "n_boot": 1000,
        "n_pairs": PROBE_PAIRS,
        "seed": 0,
        "max_length": 128,
        "idf_source": DEFAULT_IDF,
    },
    "scoring-heads": {
        # Mean Pearson r of the found heads' [CLS] -> query attention with IDF. Seed 002 sec. 4.1: r = 0.67
        # on average; 0.5 is Cohen's "large" correlation, below it.
        "threshold": 0.5,
        # Seed 002 fig. 15: the scoring heads are those whose path to the logits carries > 30 % of the (TFC1)
        # effect.
        "min_effect": 0.3,
        "n_pairs": PROBE_PAIRS,
        "seed": 0,
        "max_length": 128,
        "idf_source": DEFAULT_IDF,
    },
    "contextualisation-heads": {
        # At least one head (seed 002 sec. 4.2 finds two, 8.10 and 9.11).
        "threshold": 1,
        # Same convention as for matching heads: >= 5 % of the effect, interval above 0.
        "min_effect": 0.05,
        # Seed 002: 9.11 r = 0.83, 8.10 r = 0.78 between query -> query attention and IDF; 0.5 = Cohen's large.
        "min_idf_r": 0.5,
        "scoring_min_effect": 0.3,
        "n_pairs": PROBE_PAIRS,
        "seed": 0,
        "max_length": 128,
        "idf_source": DEFAULT_IDF,
    },
    "tfc1-stmc1-maps": {
        # Seed 002 measures r = 0.96 (activation) / 0.99 (path to logits); 0.8 leaves room for the sampling
        # noise of a 16-pair quick profile.
        "threshold": 0.8,
        # Exact activation patching, as seed 002 measures the maps (about 20 s for MiniLM's 72 heads on the
        # quick sample on 2 cores); "attribution" is the first-order estimate (one forward and backward per
        # axiom), for large models or samples.
        "method": "exact",
        # The TFC1 map must be closer to STMC1's than to an unrelated edit's: the 95 % percentile bootstrap
        # interval of the difference of the two r, over this many resamples of the pairs, must lie above 0.
        "n_boot": 1000,
        "n_pairs": PROBE_PAIRS,
        "seed": 0,
        "max_length": 128,
        "idf_source": DEFAULT_IDF,
    },
    "circuit-fit": {
        # The issue's pass line, just below seed 002's r = 0.8157 (BEIR median 0.84); it must also beat BM25.
        "threshold": 0.8,
        "n_pairs": 400,
        "seed": 0,
        "max_length": 128,
        "train_share": 0.8,  # seed 002 sec. 5.2: 80/20 split
        "min_rows_per_feature": 5,  # a query-length group is fitted only with >= 5 training rows per feature
        "matching_min_effect": 0.05,
        "matching_min_same_token_lift": 5.0,
        "match_pairs": PROBE_PAIRS,
        "head_screen": "none",  # as matching-heads: how its head search patches
        "verify_top_k": 16,
        "idf_source": DEFAULT_IDF,
    },
    "idf-in-u0-causal": {
        # Mean Spearman rho between the IDF scale of the edited token and the score of a document repeating
        # it. Seed 002 figure 6 shows a monotone mean curve; 0.8 (a "very strong" rank correlation by the usual
        # convention) asks for that in most single queries. It must also move that document more than one
        # repeating another query token (figure 6).
        "threshold": 0.8,
        "n_queries": 12,
        "seed": 0,
        # The planted model's documented monotone window (docs/planted.md); seed 002 notes "optimal editing
        # windows" beyond which the curve bends.
        "scales": [-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
        "repeats": 3,  # seed 002: "computer computer computer"
        # The control a random-init model needs (where any direction can move the document smoothly): U0 must
        # move it more than every one of n_random random directions of word-embedding variation, moved by the
        # same distances; a permutation p <= 0.05 with 19 directions (seed 002 has no such control).
        "n_random": 19,
        "max_random_p": 0.05,
        "idf_source": DEFAULT_IDF,
    },
}

# Paper-scale samples (seed 002 appendix D: 2000 pairs per diagnostic set; sec. 5 / appendix G: thousands).
_CIRCUIT_FULL_PROFILE: dict[str, dict[str, Any]] = {
    "matching-heads": {"n_pairs": 2000, "max_length": 256},
    "scoring-heads": {"n_pairs": 2000, "max_length": 256},
    "contextualisation-heads": {"n_pairs": 2000, "max_length": 256},
    "tfc1-stmc1-maps": {"n_pairs": 2000, "max_length": 256},
    "circuit-fit": {"n_pairs": 5000, "match_pairs": 2000, "max_length": 256},
    "idf-in-u0-causal": {"n_queries": 200, "n_random": 99},
}

_HEAD_PROBE = {"applies_to": CROSS, "reason": NO_QD, "layouts": BLOCKS}
for _name, _quantity, _measure, _extra in (
    ("matching-heads", "share of the effect removed by ablation", "circuits:find_matching_heads", _HEAD_PROBE),
    ("scoring-heads", "mean IDF r", "circuits:find_scoring_heads", _HEAD_PROBE),
    ("contextualisation-heads", "heads found", "circuits:find_contextualisation_heads", _HEAD_PROBE),
    ("tfc1-stmc1-maps", "map r", "circuits:map_correlation", {"layouts": BLOCKS}),
    ("circuit-fit", "held-out Pearson r", "circuit_fit:circuit_fit", _HEAD_PROBE),
):
    register_property(
        Property(
            _name,
            _quantity,
            f"irmechtest.mechanisms.{_measure}",
            _CIRCUIT_SETTINGS[_name],
            _CIRCUIT_FULL_PROFILE[_name],
            **_extra,
        )
    )
register_property(
    Property(
        "idf-in-u0-causal",
        "mean Spearman rho",
        "irmechtest.mechanisms.probes:u0_edit_probe",
        _CIRCUIT_SETTINGS["idf-in-u0-causal"],
        _CIRCUIT_FULL_PROFILE["idf-in-u0-causal"],
    )
)


# ------------------------------------------------------------- Neuron Integrated Gradients (seed 001)
_NIG_SETTINGS: dict[str, dict[str, Any]] = {
    "nig-pruning": {
        # p-value of "NIG pruning hurts nDCG@10 more than random pruning": seed 001 table 4 calls a
        # difference significant at p <= 0.05 (Student's t-test); ours is one-sided paired over queries.
        "threshold": 0.05,
        # Seed 001 uses N = 100 Riemann steps. 20 trapezoid steps: completeness within 3 % of the score
        # difference on all-MiniLM-L6-v2, 23 % on the planted model's steep attention (0.95 % at 100, the
        # ``full`` value); enough to rank neurons, measured in docs/nig.md.
        "steps": 20,
        # Path points x pairs per forward pass (a product choice: memory vs speed on CPU).
        "batch_budget": 64,
        # Seed 001's pruning levels are 0.01 / 0.1 / 1 %; 0.1 % is where its best schemes first hurt.
        "fraction": 0.001,
        # Fusion of the two labels (seed 001's F_ms, among the two most damaging schemes of table 4),
        # chosen because it needs neither label to carry the whole mechanism.
        "scheme": "fusion",
        # "auto": the candidate of ``BASELINES`` whose score lies nearest the model's decision cut on the
        # attribution pairs, which is seed 001's own rule for choosing a baseline (table 1: the one that
        # leaves the prediction most neutral) applied to the model under test instead of monoBERT; a name
        # from ``BASELINES`` fixes it. Decided before any pruning verdict was looked at.
        "baseline": "auto",
        # Seed 001 averages random pruning over 50 repetitions; 5 in the quick profile (time budget).
        "repeats": 5,
        # Seed 001: one relevant passage among 20 BM25 passages per query (the ``full`` value); 9 in the
        # quick profile (a list of 10, all inside the nDCG@10 cut-off): reranking passes dominate the cost.
        "n_negatives": 9,
        # Queries reranked: 10 in the quick profile (time budget; the paper uses dev-set subsets).
        "n_queries": 10,
        # Attribution pairs, half relevant, half not, from queries disjoint from the reranked ones
        # (seed 001 averages over every assessed pair of TREC DL 2019; 8 in the quick profile).
        "n_pairs": 8,
        "seed": 0,
        # Graded judgments the lists and attribution pairs are drawn from (any load_pairs source: a shipped
        # name, a .tsv with a relevance column, an ir_datasets id), and query ids left out of both. Pruning
        # evaluated on queries a model was trained on measures memorisation: its rankings there are saturated
        # and no pruning moves them (docs/nig.md). The shipped sample is TREC DL, which fine-tuned rankers are
        # often trained on: give such a model held-out lists, or exclude its training queries.
        "pairs": DEFAULT_SOURCE,
        "exclude_queries": [],
    },
}

_NIG_FULL_PROFILE: dict[str, dict[str, Any]] = {
    # Paper scale: N = 100 steps, 50 random repetitions, 20 BM25 negatives; as many queries and pairs as
    # the shipped sample allows (30 of its 53 queries with a relevant passage reranked, the others attributed).
    "nig-pruning": {"steps": 100, "repeats": 50, "n_negatives": 20, "n_queries": 30, "n_pairs": 120},
}

register_property(
    Property(
        "nig-pruning",
        "p-value",
        "irmechtest.mechanisms.pruning:pruning_study",
        _NIG_SETTINGS["nig-pruning"],
        _NIG_FULL_PROFILE["nig-pruning"],
        layouts=("blocks",),
    )
)
