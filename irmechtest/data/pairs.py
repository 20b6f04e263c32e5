"""Token-level, length-matched minimal pairs built from axiom edits.

Head-by-position patching compares a baseline and a perturbed input token by token, so both must have
the same length and differ only where the edit is. For each edit the baseline side is padded with a
filler token until both sides span the same number of tokens; the pair records the indices (into the
model input, specials included) of the tokens that differ. Every pair is verified after tokenization:
a tokenizer that merges the edit with its neighbours, or an input longer than the model accepts,
never yields a silently wrong pair. Such inputs are shortened (the document loses words from its end,
the edit survives) or rejected with a counted reason.

Works with any Hugging Face fast tokenizer (WordPiece, BPE, SentencePiece), for cross-encoders (query
and document in one input) and bi-encoders (the document alone).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tokenizers import Encoding, Tokenizer

from irmechtest.data.catalogue import FILLER, Axiom, AxiomContext, Edit, NotApplicable, get_axiom
from irmechtest.data.sources import QueryDocPair, split_sentences, words
from irmechtest.stats import pair_set_md5

Kind = Literal["cross-encoder", "bi-encoder"]
Overflow = Literal["shorten", "reject"]

FILLER_CANDIDATES = ("a", "the", "of", "and", "to", "in", "x", "z")
"""Filler words in order of preference (MechIR pads with "a"); a pair uses the first one that is a single
token of the vocabulary and not a word of the query or the edit, so padding never adds a match."""


class PairRejected(ValueError):
    """A pair that cannot be built faithfully; ``reason`` is the short label it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class MinimalPair:
    """A baseline and a perturbed input of equal token length that differ only at ``positions``."""

    query: str
    document: str  # the document both sides were built from (whitespace normalised, maybe shortened)
    baseline_text: str  # the document with the edit's baseline side, padded with filler
    perturbed_text: str
    baseline_ids: tuple[int, ...]  # the model input: query segment and specials included (cross-encoder)
    perturbed_ids: tuple[int, ...]
    positions: tuple[int, ...]  # indices into the ids where the two inputs differ
    slot: tuple[int, int]  # [start, end) of the edited span in the ids: changed tokens plus filler
    baseline_words: tuple[str, ...]  # the words in the slot of each side, filler included
    perturbed_words: tuple[str, ...]
    filler: str
    filler_ids: tuple[int, ...]  # the filler's token id(s): BPE spells it differently at a text's start
    kind: Kind

    @property
    def inserted_ids(self) -> tuple[int, ...]:
        return tuple(self.perturbed_ids[i] for i in self.positions)


@dataclass(frozen=True)
class AxiomCase:
    """One application of an axiom to one query-document pair: one minimal pair per edit (TFC2 chains)."""

    axiom: str
    query: str
    document: str
    steps: tuple[MinimalPair, ...]
    qid: str = ""
    docno: str = ""
    relevance: int | None = None
    dropped_words: int = 0  # words cut from the document's end so the edit fits the maximum length

    def key(self) -> list[str]:
        """What identifies the case in a pair-set md5."""
        return [self.axiom, self.query, *(t for s in self.steps for t in (s.baseline_text, s.perturbed_text))]


@dataclass
class PairSet:
    """The cases built for one axiom, with every pair that could not be used counted by reason."""

    axiom: Axiom
    cases: list[AxiomCase]
    not_applicable: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def shortened(self) -> int:
        return sum(1 for c in self.cases if c.dropped_words)

    def md5(self) -> str:
        return pair_set_md5(c.key() for c in self.cases)

    def summary(self) -> str:
        return (
            f"{self.axiom.name}: {len(self.cases)} cases ({self.shortened} shortened to fit), "
            f"not applicable {dict(self.not_applicable)}, rejected {dict(self.rejected)}"
        )


@dataclass(frozen=True)
class _Side:
    """One side of a pair as text: the document with the slot's words and their character span."""

    query: str
    text: str
    span: tuple[int, int]
    words: tuple[str, ...]


@dataclass
class _Draft:
    """A case in the making: where it came from and what the axiom asked for."""

    index: int
    query: str
    chunks: list[str]
    edits: tuple[Edit, ...]
    filler: str = ""
    filler_ids: tuple[int, ...] = ()


class PairBuilder:
    """Builds verified minimal pairs for one tokenizer and one model input layout.

    ``max_length`` is the model's input limit in tokens (specials included); with ``overflow="shorten"``
    a document that would push the edit past it loses words from its end until the pair fits, with
    ``"reject"`` the pair is rejected as ``exceeds max_length``.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        kind: Kind = "cross-encoder",
        max_length: int | None = None,
        overflow: Overflow = "shorten",
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("PairBuilder needs a fast (Rust) tokenizer: it relies on offset mappings")
        if kind not in ("cross-encoder", "bi-encoder"):
            raise ValueError(f"kind must be 'cross-encoder' or 'bi-encoder', got {kind!r}")
        if overflow not in ("shorten", "reject"):
            raise ValueError(f"overflow must be 'shorten' or 'reject', got {overflow!r}")
        if max_length is None:
            limit = getattr(tokenizer, "model_max_length", None)
            max_length = limit if isinstance(limit, int) and limit < 1_000_000 else None
        self.tokenizer = tokenizer
        # A private copy of the Rust tokenizer: never truncates or pads, whatever others set on theirs.
        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.kind: Kind = kind
        self.max_length = max_length
        self.overflow: Overflow = overflow
        self.fillers = self._usable_fillers()

    # ---------------------------------------------------------------------------------------- fillers
    def _usable_fillers(self) -> list[tuple[str, tuple[int, ...]]]:
        """Candidates that are one token wherever they stand, with their ids: at the start of a text and
        after a space (one id in WordPiece, two in byte-level BPE, e.g. ``a`` and ``Ġa``)."""
        tok = self.tokenizer
        encoded = tok([f"{w} {w} {w}" for w in FILLER_CANDIDATES], add_special_tokens=False)["input_ids"]
        usable = []
        for word, ids in zip(FILLER_CANDIDATES, encoded, strict=True):
            if len(ids) == 3 and ids[1] == ids[2] and tok.unk_token_id not in ids:
                usable.append((word, tuple(dict.fromkeys(ids))))
        if not usable:
            raise ValueError(f"none of the filler candidates {FILLER_CANDIDATES} is a single token here")
        return usable

    def _with_fillers(self, drafts: list[_Draft]) -> list[_Draft | PairRejected]:
        """Give each draft its filler: a usable filler word that is neither a word of the query or the edit
        nor one of the edit's tokens (so the filler never matches the query and every inserted token
        differs from the padding it faces). One batched tokenizer call for all drafts."""
        edit_words = [
            list(dict.fromkeys(w for e in d.edits for w in (*e.inserted, *e.baseline) if w != FILLER)) for d in drafts
        ]
        # Each word after a space and at a line start: byte-level BPE spells the two differently.
        texts = [" " + " ".join(ws) for ws in edit_words] + ["\n".join(ws) for ws in edit_words]
        encoded = self._backend.encode_batch(texts, add_special_tokens=False)
        out: list[_Draft | PairRejected] = []
        for n, d in enumerate(drafts):
            avoid_words = set(words(d.query)) | set(words(" ".join(edit_words[n])))
            avoid_ids = set(encoded[n].ids) | set(encoded[len(drafts) + n].ids)
            usable = [(w, ids) for w, ids in self.fillers if w not in avoid_words and avoid_ids.isdisjoint(ids)]
            if not usable:
                out.append(PairRejected("no filler", "every usable filler occurs in the query or the edit"))
                continue
            word, ids = usable[0]
            edits = tuple(_substitute(e, word) for e in d.edits)
            out.append(replace(d, edits=edits, filler=word, filler_ids=ids))
        return out

    def _finish(self, drafts: list[_Draft]) -> list[list[MinimalPair] | Exception]:
        """Drafts to verified minimal pairs (one list per draft), or the reason one cannot be built."""
        ready = self._with_fillers(drafts)
        built = iter(self._tokenize_drafts([d for d in ready if isinstance(d, _Draft)]))
        return [next(built) if isinstance(d, _Draft) else d for d in ready]

    # ---------------------------------------------------------------------------------------- public
    def build(
        self,
        axiom: Axiom | str,
        query: str,
        document: str,
        context: AxiomContext | None = None,
        *,
        qid: str = "",
        docno: str = "",
        relevance: int | None = None,
    ) -> AxiomCase:
        """One case; raises ``NotApplicable`` or ``PairRejected`` instead of counting them."""
        source = QueryDocPair(qid, docno, query, document, relevance)
        result = self._build_all(get_axiom(axiom), [source], lambda _: context or AxiomContext())[0]
        if isinstance(result, Exception):
            raise result
        return result

    def build_many(
        self,
        axiom: Axiom | str,
        pairs: Sequence[QueryDocPair],
        *,
        seed: int = 0,
        context: AxiomContext | None = None,
        unrelated: Sequence[str] | None = None,
    ) -> PairSet:
        """Cases for many pairs, counting the ones that are not applicable or cannot be built.

        Each case draws its random choices from its own generator, seeded from ``seed``, the axiom and
        the pair's text, so a case does not change when the pairs around it do. LNC1's unrelated text
        comes from ``unrelated`` or, by default, from sentences of the other queries' documents.
        """
        ax = get_axiom(axiom)
        base = context or AxiomContext()
        pools = _unrelated_pools(pairs, unrelated) if not base.unrelated else None

        def context_for(pair: QueryDocPair) -> AxiomContext:
            rng = case_rng(seed, ax, pair)
            pool = base.unrelated if pools is None else pools.get(pair.qid, pools[None])
            return replace(base, rng=rng, unrelated=pool)

        out = PairSet(ax, [])
        for result in self._build_all(ax, pairs, context_for):
            if isinstance(result, NotApplicable):
                out.not_applicable[result.reason] += 1
            elif isinstance(result, PairRejected):
                out.rejected[result.reason] += 1
            else:
                out.cases.append(result)
        return out

    # -------------------------------------------------------------------------------------- pipeline
    def _build_all(self, ax: Axiom, pairs: Sequence[QueryDocPair], context_for) -> list[AxiomCase | Exception]:
        results: list[AxiomCase | Exception] = [PairRejected("unbuilt")] * len(pairs)
        drafts = []
        for i, pair in enumerate(pairs):
            try:
                drafts.append(self._draft(ax, i, pair.query, pair.text.split(), context_for(pair)))
            except (NotApplicable, PairRejected) as outcome:
                results[i] = outcome
        for draft, outcome in zip(drafts, self._finish(drafts), strict=True):
            results[draft.index] = outcome
        for i, outcome in enumerate(results):
            overflowed = isinstance(outcome, PairRejected) and outcome.reason == "exceeds max_length"
            if overflowed and self.overflow == "shorten":
                results[i] = self._shorten(ax, i, pairs[i], context_for)
        for i, outcome in enumerate(results):
            if isinstance(outcome, list):
                pair = pairs[i]
                dropped = len(pair.text.split()) - len(outcome[0].document.split())
                results[i] = AxiomCase(
                    ax.name,
                    pair.query,
                    outcome[0].document,
                    tuple(outcome),
                    pair.qid,
                    pair.docno,
                    pair.relevance,
                    dropped,
                )
        return results

    def _draft(self, ax: Axiom, index: int, query: str, chunks: list[str], ctx: AxiomContext) -> _Draft:
        if not query.strip():
            raise PairRejected("empty query")
        if not chunks:
            raise PairRejected("empty document")
        edits = ax.edits(query, " ".join(chunks), ctx)
        for edit in edits:
            if isinstance(edit.position, int) and edit.position > len(chunks):
                raise PairRejected("offset beyond document", f"word {edit.position} of {len(chunks)}")
        return _Draft(index, query, chunks, edits)

    def _shorten(self, ax: Axiom, index: int, pair: QueryDocPair, context_for) -> list[MinimalPair] | Exception:
        """The pair built from the longest prefix of the document (in words) that fits, by bisection."""
        chunks = pair.text.split()
        best: list[MinimalPair] | Exception = PairRejected(
            "exceeds max_length", f"the edit does not fit in {self.max_length} tokens with any document"
        )
        low, high = 1, len(chunks) - 1
        while low <= high:
            keep = (low + high) // 2
            try:
                draft = self._draft(ax, index, pair.query, chunks[:keep], context_for(pair))
                outcome = self._finish([draft])[0]
            except (NotApplicable, PairRejected) as error:
                outcome = error
            reason = outcome.reason if isinstance(outcome, PairRejected) else None
            if reason == "exceeds max_length":
                high = keep - 1
            elif reason == "offset beyond document":
                low = keep + 1
            else:
                best, low = outcome, keep + 1
        return best

    def _tokenize_drafts(self, drafts: list[_Draft]) -> list[list[MinimalPair] | Exception]:
        """Two batched tokenizer calls for all drafts: measure each edit's span, then build and verify."""
        # Pass 1: token length of each non-empty side of each edit, rendered in place without padding.
        sides = [(d, e, side) for d in drafts for e in d.edits for side in (e.baseline, e.inserted, e.slot or ())]
        measured = self._span_lengths([_window(d.chunks, e.position, side) for d, e, side in sides if side])
        lengths = iter(measured)
        widths = [next(lengths) if side else 0 for _, _, side in sides]
        # Pass 2: pad both sides to the same token length and encode the model inputs.
        inputs: list[_Side] = []
        for n, (d, e, _) in enumerate(sides[::3]):
            n_base, n_pert, n_slot = widths[3 * n : 3 * n + 3]
            width = max(n_base, n_pert, n_slot)
            for words_, count in ((e.baseline, n_base), (e.inserted, n_pert)):
                padded = words_ + (d.filler,) * (width - count)
                text, span = _render(d.chunks, e.position, padded)
                inputs.append(_Side(d.query, text, span, padded))
        encoded = self._encode(inputs)
        out: list[list[MinimalPair] | Exception] = []
        k = 0
        for d in drafts:
            rows = range(k, k + 2 * len(d.edits), 2)
            k = rows.stop
            try:
                out.append([self._verify(d, inputs[r], inputs[r + 1], encoded[r], encoded[r + 1]) for r in rows])
            except (PairRejected, NotApplicable) as error:
                out.append(error)
        return out

    def _span_lengths(self, texts: list[tuple[str, tuple[int, int]]]) -> list[int]:
        """Tokens inside each text's character span (texts are short windows, see ``_window``)."""
        encodings = self._backend.encode_batch([t for t, _ in texts], add_special_tokens=False)
        return [
            sum(1 for a, b in enc.offsets if b > a and a >= span[0] and b <= span[1])
            for (_, span), enc in zip(texts, encodings, strict=True)
        ]

    def _slot_indices(self, enc: Encoding, span: tuple[int, int]) -> list[int]:
        """Indices of the document tokens that lie inside a character span of the document."""
        segment = 1 if self.kind == "cross-encoder" else 0
        return [
            i
            for i, ((a, b), seq) in enumerate(zip(enc.offsets, enc.sequence_ids, strict=True))
            if seq == segment and b > a and a >= span[0] and b <= span[1]
        ]

    def _encode(self, inputs: list[_Side]) -> list[Encoding]:
        """Model inputs exactly as the tokenizer builds them: (query, document) or the document alone."""
        if self.kind == "cross-encoder":
            return self._backend.encode_batch([(side.query, side.text) for side in inputs])
        return self._backend.encode_batch([side.text for side in inputs])

    def _verify(self, d: _Draft, base_in: _Side, pert_in: _Side, base_enc: Encoding, pert_enc: Encoding) -> MinimalPair:
        """Check the two encodings are a true minimal pair and record where they differ."""
        b_ids, p_ids = base_enc.ids, pert_enc.ids
        b_slot = self._slot_indices(base_enc, base_in.span)
        p_slot = self._slot_indices(pert_enc, pert_in.span)
        if not p_slot:
            raise PairRejected("edit vanishes in tokenization")
        same_frame = len(b_ids) == len(p_ids) and b_slot == p_slot
        start, end = p_slot[0], p_slot[-1] + 1
        contiguous = p_slot == list(range(start, end))
        if not (same_frame and contiguous and b_ids[:start] == p_ids[:start] and b_ids[end:] == p_ids[end:]):
            raise PairRejected("tokenization depends on context", "the edit changes tokens around it")
        if self.max_length is not None and len(p_ids) > self.max_length:
            raise PairRejected("exceeds max_length", f"{len(p_ids)} > {self.max_length} tokens")
        positions = tuple(i for i in range(start, end) if b_ids[i] != p_ids[i])
        unk = self.tokenizer.unk_token_id
        if unk is not None and any(p_ids[i] == unk for i in positions):
            raise NotApplicable("edit has tokens unknown to the vocabulary")
        return MinimalPair(
            query=d.query,
            document=" ".join(d.chunks),
            baseline_text=base_in.text,
            perturbed_text=pert_in.text,
            baseline_ids=tuple(b_ids),
            perturbed_ids=tuple(p_ids),
            positions=positions,
            slot=(start, end),
            baseline_words=base_in.words,
            perturbed_words=pert_in.words,
            filler=d.filler,
            filler_ids=d.filler_ids,
            kind=self.kind,
        )


def case_rng(seed: int, axiom: Axiom | str, pair: QueryDocPair) -> random.Random:
    """The random generator of one case: a function of the seed, the axiom and the pair's texts only."""
    return random.Random(f"{seed}\x1f{get_axiom(axiom).name}\x1f{pair.query}\x1f{pair.text}")


def build_pairs(
    tokenizer: Any,
    axiom: Axiom | str,
    pairs: Sequence[QueryDocPair],
    *,
    kind: Kind = "cross-encoder",
    max_length: int | None = None,
    overflow: Overflow = "shorten",
    seed: int = 0,
    context: AxiomContext | None = None,
    unrelated: Sequence[str] | None = None,
) -> PairSet:
    """Minimal pairs of ``axiom`` for every query-document pair (see ``PairBuilder.build_many``)."""
    builder = PairBuilder(tokenizer, kind=kind, max_length=max_length, overflow=overflow)
    return builder.build_many(axiom, pairs, seed=seed, context=context, unrelated=unrelated)


# --------------------------------------------------------------------------------------------- helpers


def _substitute(edit: Edit, filler: str) -> Edit:
    """Replace the FILLER placeholder (the neutral control inserts filler) with the chosen word."""

    def fill(side: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if side is None else tuple(filler if w == FILLER else w for w in side)

    return Edit(fill(edit.inserted), fill(edit.baseline), edit.position, fill(edit.slot))


def _word_index(chunks: Sequence[str], position: Any) -> int:
    """The index of the word an edit goes before (``len(chunks)`` for the end)."""
    return len(chunks) if position == "end" else 0 if position == "start" else position


def _window(chunks: Sequence[str], position: Any, side: Sequence[str]) -> tuple[str, tuple[int, int]]:
    """``side`` rendered between its two neighbouring words only: enough context to count its tokens
    (pre-tokenizers split on whitespace) at a fraction of the cost; ``_verify`` checks the result."""
    at = _word_index(chunks, position)
    return _render(chunks[max(0, at - 1) : at + 1], min(at, 1), side)


def _render(chunks: Sequence[str], position: Any, side: Sequence[str]) -> tuple[str, tuple[int, int]]:
    """The document with ``side`` inserted at ``position``, and the character span of the insertion."""
    at = _word_index(chunks, position)
    before, middle, after = " ".join(chunks[:at]), " ".join(side), " ".join(chunks[at:])
    start = len(before) + (1 if before and middle else 0)
    text = " ".join(part for part in (before, middle, after) if part)
    return text, (start, start + len(middle))


def _unrelated_pools(pairs: Sequence[QueryDocPair], unrelated: Sequence[str] | None) -> dict[str | None, list[str]]:
    """LNC1's sentence pool per query: the given sentences, or the other queries' documents."""
    if unrelated is not None:
        return {None: list(unrelated)}
    by_query: dict[str, list[str]] = {}
    for pair in pairs:
        by_query.setdefault(pair.qid, []).extend(split_sentences(pair.text))
    pools: dict[str | None, list[str]] = {None: [s for group in by_query.values() for s in group]}
    for qid in by_query:
        pools[qid] = [s for other, group in by_query.items() if other != qid for s in group]
    return pools
