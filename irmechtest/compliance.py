"""Behavioural compliance of any scorer with an axiom: build the pairs, score them, count.

A scorer is anything with ``score(queries, documents) -> np.ndarray``; a ``HookedRanker`` also supplies
its tokenizer, kind and maximum length, which the pairs need. Synthetic scorers (tests, planted models)
pass those explicitly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from irmechtest.axioms import Axiom, AxiomContext, get_axiom, query_terms
from irmechtest.datasets import DEFAULT_SOURCE, QueryDocPair, load_pairs, words
from irmechtest.pairs import AxiomCase, Kind, MinimalPair, Overflow, PairSet, build_pairs
from irmechtest.stats import Compliance, calibrate_tie_band, compliance
from irmechtest.verdicts import Evidence, Verdict


class Scorer(Protocol):
    def score(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray: ...


class CachedScorer:
    """A scorer that remembers every (query, document) score, so axioms that share texts (calibration,
    the unmodified documents of LNC1, LNC2 and the control) score them once. Other attributes (tokenizer,
    kind, max_length, name) pass through to the wrapped scorer."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.cache: dict[tuple[str, str], float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        pairs = list(zip(queries, documents, strict=True))
        missing = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        if missing:
            fresh = self.scorer.score([q for q, _ in missing], [d for _, d in missing])
            self.cache.update(zip(missing, np.asarray(fresh, dtype=np.float64).tolist(), strict=True))
        return np.array([self.cache[p] for p in pairs], dtype=np.float64)


@dataclass(frozen=True)
class LexicalScorer:
    """BM25 over words, with optional soft matches: a transparent scorer whose direction on every built-in
    axiom is known by construction, so it serves as the positive control of the behavioural suite and,
    ``mirrored()``, as the negative one.

    Query terms are the axioms' content terms; a listed synonym of a term counts as ``soft_weight`` of an
    occurrence (so STMC1 holds). Every word counts toward the length, filler included, so length-matched
    pairs really have equal lengths and the term-frequency axioms hold strictly; such a scorer fails the
    neutral control (filler lengthens the document). Words in ``ignore`` do not count toward the length,
    as in a model that treats filler as padding: ``ignore=frozenset(FILLER_CANDIDATES)`` passes the control
    but can break TFC1, since the padded baseline is then shorter than the perturbed document.
    """

    idf: Callable[[str], float | None]
    synonyms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    k1: float = 1.2
    b: float = 0.75
    average_length: float = 60.0
    soft_weight: float = 0.5
    sign: float = 1.0

    def mirrored(self) -> LexicalScorer:
        """The same scorer with every score negated: every directional axiom flips."""
        return replace(self, sign=-self.sign)

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        return np.array([self._score(q, d) for q, d in zip(queries, documents, strict=True)], dtype=np.float64)

    def _score(self, query: str, document: str) -> float:
        doc = words(document)
        counts = Counter(doc)
        length = sum(1 for w in doc if w not in self.ignore)
        norm = self.k1 * (1 - self.b + self.b * length / self.average_length)
        total = 0.0
        for term in (t.lower() for t in query_terms(query)):
            tf = counts[term] + self.soft_weight * sum(counts[s.lower()] for s in self.synonyms.get(term, ()))
            total += (self.idf(term) or 0.0) * tf * (self.k1 + 1) / (tf + norm)
        return self.sign * total


def reference_text(axiom: Axiom, case: AxiomCase, step: MinimalPair) -> str:
    """What the perturbed document is compared with: the padded baseline, or the unmodified document."""
    return step.baseline_text if axiom.baseline == "padded" else case.document


def score_texts(scorer: Scorer, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Scores of distinct (query, document) pairs; each is scored once however often it recurs. They go
    to the scorer sorted by length, so its batches hold texts of similar length and little padding."""
    unique = sorted(dict.fromkeys(pairs), key=lambda pair: len(pair[0]) + len(pair[1]))
    if not unique:
        return {}
    scores = np.asarray(scorer.score([q for q, _ in unique], [d for _, d in unique]), dtype=np.float64)
    if scores.shape != (len(unique),):
        raise ValueError(f"scorer returned shape {scores.shape} for {len(unique)} pairs")
    if not np.isfinite(scores).all():
        raise ValueError("scorer returned non-finite scores; compliance would be meaningless")
    return dict(zip(unique, scores.tolist(), strict=True))


def case_deltas(scorer: Scorer, pair_set: PairSet) -> list[list[float]]:
    """Score change of every step of every case (perturbed minus reference)."""
    ax = pair_set.axiom
    needed = [
        (c.query, text)
        for c in pair_set.cases
        for s in c.steps
        for text in (reference_text(ax, c, s), s.perturbed_text)
    ]
    scores = score_texts(scorer, needed)
    return [
        [scores[(c.query, s.perturbed_text)] - scores[(c.query, reference_text(ax, c, s))] for s in c.steps]
        for c in pair_set.cases
    ]


def measure(scorer: Scorer, pair_set: PairSet, *, tie_band: float, confidence: float = 0.95) -> Compliance:
    """Compliance of a scorer with the axiom behind ``pair_set``."""
    ax = pair_set.axiom
    deltas = case_deltas(scorer, pair_set)
    effects = [ax.combine(d) for d in deltas]
    examples = [_example(ax, c, d) for c, d in zip(pair_set.cases, deltas, strict=True)]
    return compliance(
        effects,
        ax.direction,
        tie_band,
        axiom=ax.name,
        keys=[c.key() for c in pair_set.cases],
        examples=examples,
        not_applicable=sum(pair_set.not_applicable.values()),
        rejected=dict(pair_set.rejected),
        shortened=pair_set.shortened,
        confidence=confidence,
    )


def calibrate(scorer: Scorer, pairs: Sequence[QueryDocPair], *, top_k: int = 10, quantile: float = 0.5) -> float:
    """The scorer's tie band: typical score gap between adjacent top-ranked judged documents per query."""
    usable = [p for p in pairs if p.query.strip() and p.text.strip()]
    scores = score_texts(scorer, [(p.query, p.text) for p in usable])
    rankings: dict[str, list[float]] = {}
    for p in usable:
        rankings.setdefault(p.qid, []).append(scores[(p.query, p.text)])
    return calibrate_tie_band(rankings, top_k=top_k, quantile=quantile)


def measure_axiom(
    scorer: Scorer,
    axiom: Axiom | str,
    pairs: Sequence[QueryDocPair] | str = DEFAULT_SOURCE,
    *,
    tie_band: float | str = "calibrate",
    tokenizer: Any | None = None,
    kind: Kind | None = None,
    max_length: int | None = None,
    overflow: Overflow = "shorten",
    limit: int | None = None,
    seed: int = 0,
    context: AxiomContext | None = None,
) -> tuple[Compliance, PairSet]:
    """Build an axiom's pairs from a source (or given pairs), score them, and summarise.

    Tokenizer, kind and maximum length default to the scorer's own (a ``HookedRanker`` has them);
    ``tie_band="calibrate"`` derives the band from the scorer's scores of the judged documents.
    """
    ax = get_axiom(axiom)
    judged = load_pairs(pairs, limit=limit, seed=seed) if isinstance(pairs, str) else list(pairs)
    tokenizer = tokenizer if tokenizer is not None else _attribute(scorer, "tokenizer")
    kind = kind or _attribute(scorer, "kind")
    max_length = max_length if max_length is not None else getattr(scorer, "max_length", None)
    pair_set = build_pairs(
        tokenizer, ax, judged, kind=kind, max_length=max_length, overflow=overflow, seed=seed, context=context
    )
    if tie_band == "calibrate":
        band = calibrate(scorer, judged)
    elif isinstance(tie_band, int | float) and not isinstance(tie_band, bool):
        band = float(tie_band)
    else:
        raise ValueError(f"tie_band must be a number or 'calibrate', got {tie_band!r}")
    return measure(scorer, pair_set, tie_band=band), pair_set


def to_verdict(result: Compliance, model: str, threshold: float, *, property: str | None = None) -> Verdict:
    """The suite's verdict: the compliance rate against a threshold, with the worst pair as evidence.

    No applicable pair gives a not-applicable verdict, never a pass.
    """
    name = property or f"axiom.{result.axiom}"
    if result.rate is None:
        return Verdict.not_applicable(name, model, result.summary())
    evidence = [
        Evidence(
            "table",
            f"{result.axiom} compliance",
            {
                "columns": [
                    "pos",
                    "neg",
                    "ties",
                    "not applicable",
                    "rejected",
                    "rate",
                    "CI low",
                    "CI high",
                    "p",
                ],
                "rows": [
                    [
                        result.pos,
                        result.neg,
                        result.ties,
                        result.not_applicable,
                        sum(result.rejected.values()),
                        round(result.rate, 4),
                        round(result.ci_low, 4),
                        round(result.ci_high, 4),
                        result.p_value,
                    ]
                ],
            },
        )
    ]
    if result.worst is not None:
        evidence.append(Evidence("examples", f"worst {result.axiom} violation", {"examples": [result.worst]}))
    return Verdict(
        property=name,
        model=model,
        value=result.rate,
        threshold=threshold,
        comparison=">=",
        summary=result.summary(),
        details={**result.to_dict(), "adaptations": result.adaptations()},
        evidence=evidence,
    )


def _attribute(scorer: Scorer, name: str) -> Any:
    value = getattr(scorer, name, None)
    if value is None:
        raise TypeError(f"the scorer has no .{name}; pass {name}=... explicitly")
    return value


def _example(ax: Axiom, case: AxiomCase, deltas: list[float]) -> dict[str, Any]:
    """The texts behind one case, for the report's counterexample."""
    first, last = case.steps[0], case.steps[-1]
    out: dict[str, Any] = {
        "qid": case.qid,
        "docno": case.docno,
        "query": case.query,
        "baseline": reference_text(ax, case, first),
        "perturbed": last.perturbed_text,
        "positions": list(last.positions),
    }
    if len(deltas) > 1:
        out["gains"] = deltas
    return out
