"""Behavioural compliance of any scorer with an axiom: build the pairs, score them, count.

A scorer is anything with ``score(queries, documents) -> np.ndarray``; a ``HookedRanker`` also supplies
its tokenizer, kind and maximum length, which the pairs need. Synthetic scorers (tests, planted models)
pass those explicitly.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from irmechtest.data.catalogue import (
    STOPWORDS,
    Axiom,
    AxiomContext,
    NotApplicable,
    controlled,
    get_axiom,
    neutral_control,
    query_terms,
)
from irmechtest.data.pairs import AxiomCase, Kind, LongPairPolicy, MinimalPair, PairSet, build_pairs
from irmechtest.data.sources import DEFAULT_SOURCE, QueryDocPair, load_pairs, words
from irmechtest.report.verdicts import Evidence, Outcome, Verdict, min_pairs
from irmechtest.stats import Compliance, bootstrap_mean_interval, calibrate_tie_band, compliance

TieBand = float | Literal["calibrate", "control"]

CONTROL_STREAMS = (1, 2)
"""Two neutral controls per case: the first is what the axiom's edit is contrasted with, the second gives
the null contrast (control minus control) that the tie band is calibrated on."""


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


class NeutralWords:
    """Replacement words with no relation to a query, by token length: what a neutral control inserts.

    Candidates are the alphabetic non-stopwords of three letters or more in the judged documents. For a
    query, a candidate is neutral when it is none of the query's words, of the words of any document
    judged for that query (they are on its topic), nor a listed semantic neighbour of a query term. A
    replacement has the same number of tokens as the word it replaces (counted after a space, as it
    stands in a document), so the control changes the input exactly as much as the axiom's edit does.
    """

    def __init__(
        self, tokenizer: Any, pairs: Sequence[QueryDocPair], neighbours: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.related: dict[str, set[str]] = {}
        for p in pairs:
            self.related.setdefault(p.query, set()).update(words(p.text))
        vocabulary = sorted(
            {w for ws in self.related.values() for w in ws if w.isalpha() and len(w) >= 3 and w not in STOPWORDS}
        )
        for query, related in self.related.items():
            related.update(words(query))
            for term in query_terms(query):
                related.update(w.lower() for w in (neighbours or {}).get(term.lower(), ()))
        self._lengths: dict[str, int] = {}
        self.by_length: dict[int, list[str]] = {}
        for word, n in zip(vocabulary, self._count(vocabulary), strict=True):
            if n:
                self.by_length.setdefault(n, []).append(word)

    def _count(self, texts: Sequence[str]) -> list[int]:
        """Token lengths; 0 for a word with a token unknown to the vocabulary (never a replacement)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._lengths]
        if missing:
            unk = self.tokenizer.unk_token_id
            ids = self.tokenizer([" " + t for t in missing], add_special_tokens=False)["input_ids"]
            self._lengths.update((t, 0 if unk in i else len(i)) for t, i in zip(missing, ids, strict=True))
        return [self._lengths[t] for t in texts]

    def __call__(self, query: str, word: str, rng: random.Random, avoid: set[str]) -> str:
        """A neutral word with as many tokens as ``word``, not in ``avoid``; NotApplicable when none is left."""
        n = self._count([word])[0]
        related = self.related.get(query) or set(words(query))
        pool = self.by_length.get(n, [])
        # Random probes first (most candidates are neutral), then a full scan so that none is missed.
        for _ in range(min(len(pool), 32)):
            pick = pool[rng.randrange(len(pool))]
            if pick not in related and pick not in avoid:
                return pick
        left = [w for w in pool if w not in related and w not in avoid]
        if not left:
            raise NotApplicable(f"no neutral word of {n} tokens")
        return rng.choice(left)


RANDOM_TWIN = ("auto", "always", "never")
"""Values of the ``random_twin`` setting: when controlled verdicts are also compared with a random twin."""


def wants_twin(setting: str, kind: str) -> bool:
    """Whether a ranker's controlled verdicts are also compared with its random-init twin.

    ``auto`` means bi-encoders only: appending a query token to a document moves its pooled embedding
    towards the query's, which holds the same token's embedding, so even random weights raise the
    similarity, and a neutral control word (absent from the query) cannot take that away. A cross-encoder
    has no such built-in path (random cross-encoders fail the controlled rule alone), so it is spared the
    twin's cost (scoring every text twice) unless asked for with ``always``.
    """
    if setting not in RANDOM_TWIN:
        raise ValueError(f"random_twin must be one of {', '.join(RANDOM_TWIN)}, got {setting!r}")
    return setting == "always" or (setting == "auto" and kind == "bi-encoder")


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


def measure(
    scorer: Scorer,
    pair_set: PairSet,
    *,
    tie_band: TieBand,
    confidence: float = 0.95,
    controls: Sequence[PairSet] = (),
    twin: Scorer | None = None,
    seed: int = 0,
) -> Compliance:
    """Compliance of a scorer with the axiom behind ``pair_set``.

    With ``controls`` (two neutral-control pair sets, see :func:`build_controls`) each case's effect is
    the paired contrast: the axiom's effect minus the first control's effect on the same document. A case
    whose controls could not be built is counted as rejected (``neutral control not built``).
    ``tie_band="control"`` then takes the median |first control - second control|: how far two edits with
    no query relation differ for this model, i.e. the contrast's spread when the axiom's words are
    treated like any others. With a ``twin`` (a random-init model of the same shape, tokenizer and score
    function, see :func:`wants_twin`) the twin's contrast on the same case is subtracted too: what is left
    is the behaviour beyond what the architecture gives untrained. That assumes the two models' scores
    share units, which holds for bi-encoder similarities (cosine or dot of pooled embeddings).
    """
    ax = pair_set.axiom
    cases = pair_set.cases
    rejected = dict(pair_set.rejected)
    paired_controls: list[PairSet] = []
    if controls:
        by_key = [{_case_key(c): c for c in control.cases} for control in controls]
        matched = [c for c in cases if all(_case_key(c) in found for found in by_key)]
        if len(matched) < len(cases):
            rejected["neutral control not built"] = len(cases) - len(matched)
        cases = matched
        paired_controls = [
            replace(control, cases=[found[_case_key(c)] for c in cases])
            for found, control in zip(by_key, controls, strict=True)
        ]
    elif tie_band == "control":
        raise ValueError(f"tie_band='control' needs neutral controls; {ax.name} has none")
    pair_set = replace(pair_set, cases=cases)
    deltas = case_deltas(scorer, pair_set)
    examples = [_example(ax, c, d) for c, d in zip(cases, deltas, strict=True)]
    effects = np.array([ax.combine(d) for d in deltas], dtype=np.float64)
    extra: dict[str, Any] = {}
    if paired_controls and cases:
        contrasts, first, spread = _contrasts(scorer, pair_set, paired_controls, deltas)
        extra.update(controlled=True, mean_control_effect=float(first.mean()))
        if twin is not None:
            twin_contrasts = _contrasts(twin, pair_set, paired_controls)[0]
            contrasts = contrasts - twin_contrasts
            extra["twin_contrast"] = float(twin_contrasts.mean())
        low, high = bootstrap_mean_interval(contrasts, confidence=confidence, seed=seed)
        effects = contrasts
        extra.update(contrast_ci_low=low, contrast_ci_high=high)
        if tie_band == "control":
            tie_band, extra["tie_band_source"] = spread, "(median |control - control|)"
    elif tie_band == "control":
        raise ValueError(f"{ax.name}: no case with a neutral control to calibrate the tie band on")
    result = compliance(
        effects,
        ax.direction,
        float(tie_band),
        axiom=ax.name,
        keys=[c.key() for c in cases],
        examples=examples,
        not_applicable=sum(pair_set.not_applicable.values()),
        rejected=rejected,
        shortened=pair_set.shortened,
        confidence=confidence,
    )
    return replace(result, **extra)


def _contrasts(
    scorer: Scorer, pair_set: PairSet, controls: Sequence[PairSet], deltas: list[list[float]] | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per case: the axiom's effect minus the first control's, the first control's effect, and the
    neutral spread (median |first control - second control|). ``deltas``: the axiom's, if already scored."""
    if deltas is None:
        deltas = case_deltas(scorer, pair_set)
    axiom_effects, first, second = (
        np.array([s.axiom.combine(d) for d in step_deltas], dtype=np.float64)
        for s, step_deltas in zip(
            (pair_set, *controls), (deltas, *(case_deltas(scorer, c) for c in controls)), strict=True
        )
    )
    return axiom_effects - first, first, float(np.median(np.abs(first - second)))


def build_controls(
    tokenizer: Any,
    ax: Axiom,
    judged: Sequence[QueryDocPair],
    neutral: NeutralWords,
    **build: Any,
) -> list[PairSet]:
    """The two neutral-control pair sets of an axiom's cases (``build`` as for ``build_pairs``)."""
    return [build_pairs(tokenizer, neutral_control(ax, neutral, stream), judged, **build) for stream in CONTROL_STREAMS]


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
    tie_band: TieBand = "calibrate",
    tokenizer: Any | None = None,
    kind: Kind | None = None,
    max_length: int | None = None,
    overflow: LongPairPolicy = "shorten",
    limit: int | None = None,
    seed: int = 0,
    context: AxiomContext | None = None,
    twin: Scorer | None = None,
) -> tuple[Compliance, PairSet]:
    """Build an axiom's pairs from a source (or given pairs), score them, and summarise.

    Tokenizer, kind and maximum length default to the scorer's own (a ``HookedRanker`` has them);
    ``tie_band="calibrate"`` derives the band from the scorer's scores of the judged documents,
    ``"control"`` from its neutral controls. Axioms that edit query-related words into a length-matched
    slot (``axioms.controlled``) are measured against their neutral controls and, given a ``twin``, against
    a random-init twin's contrasts (see :func:`measure`).
    """
    ax = get_axiom(axiom)
    judged = load_pairs(pairs, limit=limit, seed=seed) if isinstance(pairs, str) else list(pairs)
    tokenizer = tokenizer if tokenizer is not None else _attribute(scorer, "tokenizer")
    kind = kind or _attribute(scorer, "kind")
    max_length = max_length if max_length is not None else getattr(scorer, "max_length", None)
    build = dict(kind=kind, max_length=max_length, overflow=overflow, seed=seed, context=context)
    pair_set = build_pairs(tokenizer, ax, judged, **build)
    controls: list[PairSet] = []
    if controlled(ax):
        neutral = NeutralWords(tokenizer, judged, context.neighbours if context else None)
        controls = build_controls(tokenizer, ax, judged, neutral, **build)
    if tie_band == "calibrate":
        band: TieBand = calibrate(scorer, judged)
    elif tie_band == "control" or (isinstance(tie_band, int | float) and not isinstance(tie_band, bool)):
        band = tie_band
    else:
        raise ValueError(f"tie_band must be a number, 'calibrate' or 'control', got {tie_band!r}")
    return measure(scorer, pair_set, tie_band=band, controls=controls, twin=twin, seed=seed), pair_set


def to_verdict(result: Compliance, model: str, threshold: float, *, property: str | None = None) -> Verdict:
    """The suite's verdict: the compliance rate against a threshold, with the worst pair as evidence.

    A controlled measurement (see :func:`measure`) further needs the paired contrast's interval on the
    direction's side of 0: a rate reached with a mean contrast that could be 0 is not evidence that the
    model treats the axiom's words differently from unrelated ones. No applicable pair gives a
    not-applicable verdict, never a pass; fewer than ``min_pairs`` an inconclusive one.
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
    # The rate's test against the threshold and, when controlled, the contrast's interval against 0 both rest
    # on the applicable pairs; each needs its own minimum (verdicts.min_pairs).
    contrast = min_pairs(0.5, result.confidence) if result.controlled else 0
    minimum = max(min_pairs(threshold, result.confidence), contrast)
    return Verdict(
        property=name,
        model=model,
        value=result.rate,
        threshold=threshold,
        comparison=">=",
        summary=result.summary(),
        details={**result.to_dict(), "adaptations": result.adaptations()},
        evidence=evidence,
        outcome=Outcome.FAILED if result.contrast_holds is False else None,
        sample={"applicable pairs": result.n},
        min_sample=minimum,
    )


def _attribute(scorer: Scorer, name: str) -> Any:
    value = getattr(scorer, name, None)
    if value is None:
        raise TypeError(f"the scorer has no .{name}; pass {name}=... explicitly")
    return value


def _case_key(case: AxiomCase) -> tuple[str, str, str, str]:
    """What pairs an axiom's case with its controls: the source pair and the (maybe shortened) document."""
    return case.qid, case.docno, case.query, case.document


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
