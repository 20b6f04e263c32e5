"""The axiom catalogue: retrieval axioms as pure-Python edits of a document, each with the direction
in which it says the score must move.

An axiom is a function ``(query, document, context) -> Edit | Sequence[Edit]`` that says which words go
where; it never sees a tokenizer. ``pairs.py`` turns the edit into token-level, length-matched minimal
pairs (padding with a filler token, recording positions, handling the model's maximum length), and
``compliance.py`` scores them. Users add their own axiom with the ``@axiom`` decorator, declaring the
expected direction up front so the verdict cannot be chosen after seeing the scores.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as replace_field
from typing import Literal

from irmechtest.data.sources import WORD, words
from irmechtest.stats import Direction

Position = Literal["end", "start"] | int
"""Where an edit goes: after the last word, before the first, or before word ``i`` (0-based) of the
whitespace-split document."""

Baseline = Literal["padded", "original"]

FILLER = "\x00filler\x00"
"""Stands for the tokenizer's filler word inside an edit (the neutral control inserts filler itself)."""

_STOPWORD_TEXT = """a an and are as at be but by can did do does for from has have how i in is it its of on
or that the this to was what when where which who why will with you your"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""Function words that are not counted as query terms: an axiom about query terms means content terms."""


class NotApplicable(Exception):
    """The axiom's precondition does not hold for this query and document (e.g. no query term)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Edit:
    """One length-matched edit at a word position.

    The perturbed document gets ``inserted`` at ``position``; the baseline gets ``baseline`` there
    (nothing, for a pure insertion). Both are padded with filler tokens to the token length of the
    longer one, or of ``slot`` when a chain of edits must share one slot (TFC2).
    """

    inserted: tuple[str, ...]
    baseline: tuple[str, ...] = ()
    position: Position = "end"
    slot: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.inserted and not self.baseline:
            raise ValueError("an edit must insert something on at least one side")
        if isinstance(self.position, int) and self.position < 0:
            raise ValueError(f"word offset must be >= 0, got {self.position}")
        if not isinstance(self.position, int) and self.position not in ("end", "start"):
            raise ValueError(f"position must be 'end', 'start' or a word offset, got {self.position!r}")


@dataclass(frozen=True)
class AxiomContext:
    """What an axiom may draw on besides the query and document."""

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    position: Position = "end"
    idf: Callable[[str], float | None] | None = None  # word -> IDF (TDC, M-TDC)
    neighbours: Mapping[str, Sequence[str]] | None = None  # lower-cased term -> similar words (STMC1)
    unrelated: Sequence[str] = ()  # sentences to append (LNC1)
    occurrences: int = 2  # TFC2: documents with 0..occurrences extra copies of the term
    copies: int = 2  # LNC2: the document concatenated with itself this many times
    filler_words: int = 3  # neutral control: filler words appended


EditFn = Callable[[str, str, AxiomContext], "Edit | Sequence[Edit]"]
Combine = Callable[[Sequence[float]], float]


def single_step(deltas: Sequence[float]) -> float:
    """The effect of a one-edit axiom: the score change itself."""
    if len(deltas) != 1:
        raise ValueError(f"expected one score change, got {len(deltas)}; multi-edit axioms need a combine")
    return deltas[0]


def largest_gain_growth(deltas: Sequence[float]) -> float:
    """TFC2's effect: the largest growth between successive gains. Negative only when every extra
    occurrence gained less than the one before it."""
    if len(deltas) < 2:
        raise ValueError("TFC2 needs at least two successive gains")
    return max(b - a for a, b in itertools.pairwise(deltas))


@dataclass(frozen=True)
class Axiom:
    """A named edit with its expected direction and its default threshold (with where it comes from).

    ``baseline`` says what the perturbed document is compared with behaviourally: the length-matched,
    filler-padded baseline (term-frequency axioms hold length fixed by definition) or the original
    document (length axioms are about the added length). Token-level pairs are length-matched either way.
    """

    name: str
    direction: Direction
    fn: EditFn
    description: str
    baseline: Baseline = "padded"
    combine: Combine = single_step
    threshold: float = 0.5
    threshold_source: str = "convention: better than a coin flip (no published rate)"

    def edits(self, query: str, document: str, context: AxiomContext | None = None) -> tuple[Edit, ...]:
        """The edit(s) for this query and document; raises NotApplicable when the precondition fails."""
        if not query.strip():
            raise NotApplicable("empty query")
        if not document.strip():
            raise NotApplicable("empty document")
        out = self.fn(query, document, context or AxiomContext())
        edits = (out,) if isinstance(out, Edit) else tuple(out)
        if not edits or not all(isinstance(e, Edit) for e in edits):
            raise TypeError(f"axiom {self.name} must return an Edit or a non-empty sequence of Edits, got {out!r}")
        return edits


def controlled(ax: Axiom) -> bool:
    """Whether a verdict on ``ax`` is its contrast with a neutral control edit: the axioms whose edits put
    query-related words into a length-matched slot (``padded``). Length axioms (LNC1, LNC2) and the filler
    control add text that has no query relation to begin with, so they keep their bare direction rate."""
    return ax.baseline == "padded"


CONTROLLED_SOURCE = (
    "rule: the edit beats a neutral control edit by more than the model's own neutral spread on most pairs; "
    "with the band at the median |control - control| a model that treats the axiom's words like unrelated "
    "ones scores 0.25, so 0.5 is twice that"
)
"""Where the default threshold of a controlled axiom comes from (docs/axioms.md, "Verdicts against controls")."""

_REGISTRY: dict[str, Axiom] = {}


def axiom(
    name: str,
    *,
    direction: Direction | str,
    description: str | None = None,
    baseline: Baseline = "padded",
    combine: Combine = single_step,
    threshold: float = 0.5,
    threshold_source: str | None = None,
    replace: bool = False,
) -> Callable[[EditFn], Axiom]:
    """Register an axiom. The decorated function receives ``(query, document, context)`` and returns an
    ``Edit`` (or a chain of them with a ``combine``), or raises ``NotApplicable``; ``direction`` is how
    the score must move for the model to comply."""
    direction = Direction(direction)
    if baseline not in ("padded", "original"):
        raise ValueError(f"baseline must be 'padded' or 'original', got {baseline!r}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a compliance rate in [0, 1], got {threshold}")

    def register(fn: EditFn) -> Axiom:
        if name in _REGISTRY and not replace:
            raise ValueError(f"axiom {name!r} is already registered (pass replace=True to redefine it)")
        doc = description or (fn.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"axiom {name!r} needs a description (argument or docstring) for the docs")
        made = Axiom(name, direction, fn, doc, baseline, combine, threshold)
        if threshold_source or controlled(made):
            made = replace_field(made, threshold_source=threshold_source or CONTROLLED_SOURCE)
        _REGISTRY[name] = made
        return made

    return register


def get_axiom(name: str | Axiom) -> Axiom:
    if isinstance(name, Axiom):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown axiom {name!r}; registered: {sorted(_REGISTRY)}") from None


def registered_axioms() -> list[str]:
    return list(_REGISTRY)


# ----------------------------------------------------------------------------------------- helpers


def query_terms(query: str) -> list[str]:
    """Distinct content words of the query in their first spelling (stopwords left out)."""
    seen: dict[str, str] = {}
    for word in WORD.findall(query):
        if word.lower() not in STOPWORDS:
            seen.setdefault(word.lower(), word)
    return list(seen.values())


def _pick_term(query: str, ctx: AxiomContext) -> str:
    terms = query_terms(query)
    if not terms:
        raise NotApplicable("no content term in the query")
    return ctx.rng.choice(terms)


def _idf_extremes(query: str, ctx: AxiomContext) -> tuple[str, str]:
    """The highest- and lowest-IDF query terms; not applicable unless their IDFs differ."""
    if ctx.idf is None:
        raise ValueError("this axiom needs IDF statistics: pass AxiomContext(idf=...) (see datasets.word_idf)")
    known = [(v, t) for t in query_terms(query) if (v := ctx.idf(t)) is not None]
    if len(known) < 2:
        raise NotApplicable("fewer than two query terms with a known IDF")
    high, low = max(known), min(known)
    if high[0] == low[0]:
        raise NotApplicable("all query terms have the same IDF")
    return high[1], low[1]


# -------------------------------------------------------------------------------------- the catalogue


@axiom(
    "TFC1",
    direction="increase",
    description="Term frequency (Fang et al. 2004): adding one occurrence of a query term to a document, "
    "length held fixed, must raise its score.",
)
def tfc1(query: str, document: str, ctx: AxiomContext) -> Edit:
    return Edit((_pick_term(query, ctx),), position=ctx.position)


@axiom(
    "TFC2",
    direction="decrease",
    combine=largest_gain_growth,
    description="Term saturation (Fang et al. 2004): documents with 0..k extra occurrences of a query term, "
    "length held fixed; each further occurrence must gain less than the one before (the effect is the "
    "largest growth between successive gains, which must be negative).",
)
def tfc2(query: str, document: str, ctx: AxiomContext) -> list[Edit]:
    if ctx.occurrences < 2:
        raise ValueError(f"TFC2 needs occurrences >= 2 to compare successive gains, got {ctx.occurrences}")
    term = _pick_term(query, ctx)
    slot = (term,) * ctx.occurrences
    return [Edit((term,) * (i + 1), (term,) * i, ctx.position, slot) for i in range(ctx.occurrences)]


@axiom(
    "TDC",
    direction="increase",
    description="Term discrimination (Fang et al. 2004): the query's highest- and lowest-IDF terms occur "
    "equally often in the document (usually not at all); with length fixed, the document gaining one "
    "occurrence of the higher-IDF term must outscore the one gaining the lower-IDF term. Documents where "
    "the two counts differ are not applicable (saturation would confound IDF; M-TDC covers them).",
)
def tdc(query: str, document: str, ctx: AxiomContext) -> Edit:
    high, low = _idf_extremes(query, ctx)
    counts = words(document)
    if counts.count(high.lower()) != counts.count(low.lower()):
        raise NotApplicable("the two query terms occur unequally often in the document")
    return Edit((high,), (low,), ctx.position)


@axiom(
    "M-TDC",
    direction="increase",
    description="Modified term discrimination (Shi et al. 2005): two documents of equal length hold the "
    "highest- and lowest-IDF query terms with swapped counts (n+1, n) versus (n, n+1); the one with more "
    "of the discriminative term must score higher.",
)
def m_tdc(query: str, document: str, ctx: AxiomContext) -> Edit:
    high, low = _idf_extremes(query, ctx)
    counts = words(document)
    c_high, c_low = counts.count(high.lower()), counts.count(low.lower())
    n = max(c_high, c_low, 1)
    perturbed = (high,) * (n + 1 - c_high) + (low,) * (n - c_low)
    baseline = (high,) * (n - c_high) + (low,) * (n + 1 - c_low)
    return Edit(perturbed, baseline, ctx.position)


@axiom(
    "LNC1",
    direction="not increase",
    baseline="original",
    description="Length normalisation (Fang et al. 2004): appending text that shares no term with the query "
    "must not raise the score (compared with the unmodified document).",
)
def lnc1(query: str, document: str, ctx: AxiomContext) -> Edit:
    terms = {t.lower() for t in query_terms(query)}

    def unrelated(sentence: str) -> bool:
        return bool(sentence.split()) and not terms.intersection(words(sentence))

    pool = ctx.unrelated
    # Random probes first: a large pool is mostly unrelated, and scanning it all per pair is slow.
    for _ in range(min(len(pool), 32)):
        sentence = pool[ctx.rng.randrange(len(pool))]
        if unrelated(sentence):
            return Edit(tuple(sentence.split()), position=ctx.position)
    candidates = [s for s in pool if unrelated(s)]
    if not candidates:
        raise NotApplicable("no unrelated sentence free of query terms")
    return Edit(tuple(ctx.rng.choice(candidates).split()), position=ctx.position)


@axiom(
    "LNC2",
    direction="not decrease",
    baseline="original",
    description="Length normalisation (Fang et al. 2004): a document concatenated with itself k times must "
    "not score lower than the document (always appended at the end).",
    threshold_source="convention: better than a coin flip; Camara & Hauff 2020 found BERT rankers almost "
    "never satisfy LNC2, so BERT-style cross-encoders are expected to fail it",
)
def lnc2(query: str, document: str, ctx: AxiomContext) -> Edit:
    if ctx.copies < 2:
        raise ValueError(f"LNC2 needs copies >= 2, got {ctx.copies}")
    return Edit(tuple(document.split()) * (ctx.copies - 1), position="end")


@axiom(
    "STMC1",
    direction="increase",
    description="Semantic term matching (Fang & Zhai 2006): adding a word semantically close to a query "
    "term, but not in the query (nor a stopword), length held fixed, must raise the score.",
)
def stmc1(query: str, document: str, ctx: AxiomContext) -> Edit:
    if ctx.neighbours is None:
        raise ValueError("STMC1 needs neighbours: pass AxiomContext(neighbours=...) (see embedding_neighbours)")
    in_query = set(words(query))
    options = []
    for term in query_terms(query):
        close = [
            w
            for w in ctx.neighbours.get(term.lower(), ())
            if words(w) and not in_query.intersection(words(w)) and w.lower() not in STOPWORDS
        ]
        if close:
            options.append(close[0])
    if not options:
        raise NotApplicable("no query term has a semantic neighbour outside the query")
    return Edit((ctx.rng.choice(options),), position=ctx.position)


@axiom(
    "control",
    direction="neutral",
    baseline="original",
    description="Neutral control: appending filler tokens (the same filler that pads baselines) should "
    "leave the score inside the tie band; if it does not, length-matched baselines are biased.",
    threshold_source="convention: the filler moves at most half of the scores beyond the tie band",
)
def control(query: str, document: str, ctx: AxiomContext) -> Edit:
    return Edit((FILLER,) * ctx.filler_words, position=ctx.position)


BUILTIN_AXIOMS = tuple(registered_axioms())


NeutralDraw = Callable[[str, str, random.Random, set[str]], str]
"""``(query, word, rng, avoid) -> replacement``: a word with no relation to the query and the same token
length as ``word``, not in ``avoid`` (see ``compliance.NeutralWords``); raises NotApplicable if none."""


def neutral_control(ax: Axiom, draw: NeutralDraw, stream: int) -> Axiom:
    """``ax``'s neutral control: the same edits (same term choices, positions and slots) with every word
    they put on either side replaced by a word with no query relation of the same token length (one
    replacement per distinct word, so TFC2's repeated term stays repeated and TDC's two terms stay two).

    The control keeps ``ax``'s name, so ``pairs.case_rng`` gives it the generator the axiom's case had and
    the axiom makes the same choices; ``stream`` picks an independent sequence of neutral words after
    that, so two streams give two controls of one case.
    """

    def edits(query: str, document: str, ctx: AxiomContext) -> list[Edit]:
        original = ax.edits(query, document, ctx)
        rng = random.Random(f"{ctx.rng.getrandbits(64)}\x1f{stream}")
        avoid = {w.lower() for e in original for w in (*e.inserted, *e.baseline) if w != FILLER}
        swapped: dict[str, str] = {}

        def swap(side: tuple[str, ...] | None) -> tuple[str, ...] | None:
            if side is None:
                return None
            for w in side:
                if w != FILLER and w not in swapped:
                    swapped[w] = draw(query, w, rng, avoid)
                    avoid.add(swapped[w].lower())
            return tuple(w if w == FILLER else swapped[w] for w in side)

        return [Edit(swap(e.inserted), swap(e.baseline), e.position, swap(e.slot)) for e in original]

    return replace_field(ax, fn=edits, description=f"neutral control of {ax.name}: {ax.description}")


def default_tie_band(ax: Axiom) -> float | str:
    """The tie band an axiom is judged with by default.

    A controlled axiom's contrast uses the model's neutral spread (``"control"``: median |control -
    control|), so a contrast counts only when it exceeds what two unrelated edits differ by. Uncontrolled
    "must rise" (or fall) counts any move in the right direction (band 0, as Camara & Hauff count);
    "must not fall", "must not rise" and "must not move" forgive changes smaller than the model's own
    calibrated gap between adjacent top-ranked documents, which could not reorder a ranking; with a band
    of 0 they would be decided by numerical noise.
    """
    if controlled(ax):
        return "control"
    return 0.0 if ax.direction in (Direction.INCREASE, Direction.DECREASE) else "calibrate"


def behaviour_defaults(n_pairs: int = 100, seed: int = 0) -> dict[str, dict[str, object]]:
    """Suite settings for each built-in axiom but TFC1 (which has its own property), keyed by property
    name (``axiom-<name>``), in the shape of ``irmechtest.config.DEFAULTS``."""
    from irmechtest.data.sources import DEFAULT_IDF, DEFAULT_SOURCE

    out: dict[str, dict[str, object]] = {}
    for name in BUILTIN_AXIOMS:
        if name == "TFC1":
            continue
        ax = _REGISTRY[name]
        out[f"axiom-{name.lower()}"] = {
            "threshold": ax.threshold,
            "threshold_source": ax.threshold_source,
            "tie_band": default_tie_band(ax),
            "random_twin": "auto",
            "pairs": DEFAULT_SOURCE,
            "n_pairs": n_pairs,
            "seed": seed,
            "idf_source": DEFAULT_IDF,
            "search_examples": 20,
        }
    return out


def behaviour_full_profile(n_pairs: int = 400, search_examples: int = 200) -> dict[str, dict[str, object]]:
    """The ``full`` profile's overrides of :func:`behaviour_defaults`: every pair of the shipped TREC DL
    sample (400) instead of a quick subsample, and a longer Hypothesis search for counterexamples."""
    return {
        f"axiom-{name.lower()}": {"n_pairs": n_pairs, "search_examples": search_examples}
        for name in BUILTIN_AXIOMS
        if name != "TFC1"
    }
