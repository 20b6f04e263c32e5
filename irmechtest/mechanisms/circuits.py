"""Relevance-circuit probes (Pathway to Relevance, seed 002, sections 4.1-4.3, 5 and appendix G).

Each probe is a small function over diagnostic minimal pairs (TFC1: a filler token becomes a query term;
STMC1: it becomes a semantic neighbour of one) and returns a result dataclass; the suite turns results into
verdicts. The heads are found on **exact** term matching (TFC1), the pathway every BM25-like ranker has;
whether semantic matching (STMC1) reuses them is a separate question (``map_correlation``), so a model that
barely reacts to STMC1 edits still has its exact-match heads found. Every selection rule is fixed before any
model is measured and documented in docs/circuits.md:

* matching heads: TFC1 patching effect >= ``min_effect`` with a 95 % interval above 0, and query tokens
  attending to the same token in the document >= ``min_same_token_lift`` times as much as uniform attention
  would; confirmed by mean ablation removing the TFC1 effect, and more of it than of a control edit's;
* relevance-scoring heads: direct (path-patched) TFC1 effect on the score >= ``min_effect``, and their
  [CLS] -> query-token attention correlating with IDF;
* query-contextualisation heads: path-patched TFC1 effect into the scoring heads' values >= ``min_effect``,
  and query -> query attention correlating with the key token's IDF at r >= ``min_idf_r``;
The linear circuit fit (seed 002 sec. 5) that uses the matching heads found here is ``circuit_fit.py``.

Query -> document attention exists only in cross-encoders, so everything here except the TFC1 / STMC1 map
correlation is for cross-encoders (``require_cross_encoder``). The attention readings follow the mask: in a
causal decoder the query cannot see the document, so matching is read from document tokens to the query and
the score position is the last real token instead of [CLS] (docs/circuits.md, "How each probe reads per family").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from irmechtest.data.catalogue import AxiomContext, query_terms
from irmechtest.data.idf import DEFAULT_IDF, idf_vector
from irmechtest.data.neighbours import embedding_neighbours
from irmechtest.data.pairs import MinimalPair, build_pairs
from irmechtest.data.sources import QueryDocPair, load_pairs
from irmechtest.mechanisms.ablation import ablation_hooks
from irmechtest.mechanisms.components import head_grid
from irmechtest.mechanisms.pair_runs import NoEffectError, PairRuns, PairTexts, pair_texts, prepare_pairs
from irmechtest.mechanisms.patch_results import PatchResult, map_pearson
from irmechtest.mechanisms.patching import activation_patching, attribution_patching, path_patching, screened_patching
from irmechtest.models.hooks import act_name
from irmechtest.models.ranker import Batch, HookedRanker, InputError, last_real_position

Head = tuple[int, int]
EXACT, SEMANTIC, CONTROL = "TFC1", "STMC1", "control"
AXIOMS = (EXACT, SEMANTIC)


def head_label(head: Head) -> str:
    return f"{head[0]}.{head[1]}"


def require_cross_encoder(ranker: HookedRanker, what: str) -> None:
    if ranker.kind != "cross-encoder":
        raise InputError(f"{what} needs query -> document attention, which a {ranker.kind} does not have")


# ------------------------------------------------------------------------------------------- inputs
@dataclass
class ProbeText:
    """Query-document pairs to build diagnostic pairs from, STMC1 neighbours, and IDF by token id."""

    pairs: list[QueryDocPair]
    neighbours: dict[str, list[str]]
    idf: np.ndarray


def probe_text(ranker: HookedRanker, n_pairs: int, seed: int, idf_source: str = DEFAULT_IDF) -> ProbeText:
    """Real TREC DL pairs with embedding neighbours and the shipped IDF table; a model that brings its own
    vocabulary (``ranker.probe_corpus``: the planted model and its twin declare theirs) gets text, synonyms and
    IDF in it, since MS MARCO text is mostly unknown words there."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    corpus = ranker.probe_corpus
    if corpus is not None:
        pairs = [QueryDocPair(str(i), str(i), q, d) for i, (q, d) in enumerate(corpus.sample_pairs(n_pairs, seed))]
        return ProbeText(pairs, dict(corpus.synonyms), idf_vector(ranker.tokenizer, dict(corpus.idf), len(ranker.W_E)))
    pairs = load_pairs(limit=n_pairs, seed=seed)
    terms = {t for p in pairs for t in query_terms(p.query)}
    neighbours = embedding_neighbours(ranker.tokenizer, ranker.W_E.detach().float().cpu().numpy(), terms)
    return ProbeText(pairs, neighbours, idf_vector(ranker.tokenizer, idf_source, len(ranker.W_E)))


@dataclass
class Diagnostics:
    """The TFC1, STMC1 and control pair sets of one sample.

    ``pairs`` and ``batches`` hold every built pair (ablation and attention statistics need no normalisation);
    ``runs`` only the sets with pairs whose score gap can be normalised (``prepare_pairs``), and ``unusable``
    says, for each set left out of ``runs``, why (e.g. a model that does not react to STMC1 edits).
    """

    pairs: dict[str, list[PairTexts]]
    batches: dict[str, tuple[Batch, Batch]]  # (baseline, perturbed) of every built pair
    runs: dict[str, PairRuns]
    unusable: dict[str, str] = field(default_factory=dict)

    def batch_of(self, sets: Sequence[str], side: int = 1) -> list[Batch]:
        """Batches (default: the perturbed side) of the given sets."""
        return [self.batches[name][side] for name in sets]


def diagnostic_runs(ranker: HookedRanker, text: ProbeText, *, seed: int, max_length: int) -> Diagnostics:
    """TFC1, STMC1 and control minimal pairs built from ``text``, tokenised, scored and cached.

    The control puts a word unrelated to the query (another query's term, not a neighbour, same token count)
    where TFC1 puts the query term: an edit that matches nothing, whose map shows how much any one-token
    edit's map resembles TFC1's.
    """
    rng = random.Random(seed)
    pool = sorted({t.lower() for p in text.pairs for t in query_terms(p.query)})
    built: dict[str, list[PairTexts]] = {}
    for axiom in AXIOMS:
        pair_set = build_pairs(
            ranker.tokenizer,
            axiom,
            text.pairs,
            kind=ranker.kind,
            max_length=min(max_length, ranker.max_length),
            seed=seed,
            context=AxiomContext(neighbours=text.neighbours),
        )
        if not pair_set.cases:
            raise InputError(f"no {axiom} pair could be built: {pair_set.summary()}")
        built[axiom] = pair_texts(pair_set)
        if axiom == EXACT:
            steps = [s for case in pair_set.cases for s in case.steps]
            control = [c for s in steps if (c := _control(ranker, s, text.neighbours, pool, rng)) is not None]
            if not control:
                raise InputError("no control pair could be built: no unrelated word of the same token length")
            built[CONTROL] = control
    out = Diagnostics(built, {}, {})
    for name, pairs in built.items():
        queries = [q for q, _, _ in pairs]
        out.batches[name] = (
            ranker.tokenize(queries, [b for _, b, _ in pairs]),
            ranker.tokenize(queries, [p for _, _, p in pairs]),
        )
        try:
            out.runs[name] = prepare_pairs(ranker, pairs)
        except NoEffectError as error:  # no pair moves the score enough to normalise by: say so, do not fail
            out.unusable[name] = f"{name}: {error}"
    return out


def _control(
    ranker: HookedRanker, step: MinimalPair, neighbours: dict[str, list[str]], pool: list[str], rng: random.Random
) -> tuple[str, str, str] | None:
    """The TFC1 pair with its inserted term replaced by an unrelated word of the same token length."""
    inserted = " ".join(step.perturbed_words)
    banned = {w.lower() for t in query_terms(step.query) for w in (t, *neighbours.get(t.lower(), []))}
    size = len(ranker.tokenizer.tokenize(inserted))
    for word in rng.sample(pool, len(pool)):
        if word not in banned and len(ranker.tokenizer.tokenize(word)) == size:
            head, _, tail = step.perturbed_text.rpartition(inserted)
            return step.query, step.baseline_text, head + word + tail
    return None


def head_maps(
    ranker: HookedRanker, runs: dict[str, PairRuns], method: str = "exact", verify_top_k: int = 16
) -> dict[str, PatchResult]:
    """Activation patching (denoise) of every head on each usable pair set: the maps the probes share.

    ``method="attribution"`` estimates them to first order (``attribution_patching``) for big models;
    ``method="screened"`` screens every head with it and patches the ``verify_top_k`` largest exactly, the
    other heads NaN (``screened_patching``), so heads are still selected on exact effects only.
    """
    if method == "screened":
        return {name: screened_patching(ranker, r, head_grid(ranker), verify_top_k) for name, r in runs.items()}
    if method not in ("exact", "attribution"):
        raise ValueError(f"method must be 'exact', 'attribution' or 'screened', got {method!r}")
    patch = activation_patching if method == "exact" else attribution_patching
    return {name: patch(ranker, r, head_grid(ranker)) for name, r in runs.items()}


@dataclass
class MapCorrelation:
    """Pearson r of head maps: TFC1 with STMC1 (seed 002: 0.96 activation, 0.99 path) and TFC1 with a control.

    Any one-token edit's map correlates with TFC1's when every change flows through the same few heads (on a
    random model too), so r alone cannot show shared *matching* components. ``specificity_ci`` is the
    bootstrap interval of r - control_r: above 0 means semantic matching shares more with exact matching than
    an unrelated edit does.
    """

    r: float
    control_r: float  # NaN when no control pair moves the score enough to be normalised
    specificity_ci: tuple[float, float]

    @property
    def specific(self) -> bool:
        """r beats the control's, or the control edit does not move the score at all (then STMC1's effect,
        flowing where TFC1's does, is no generic any-edit effect)."""
        return bool(np.isnan(self.control_r) and np.isnan(self.specificity_ci[0])) or self.specificity_ci[0] > 0


def map_correlation(
    maps: dict[str, PatchResult], *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> MapCorrelation:
    """r(TFC1, STMC1), r(TFC1, control) and a percentile bootstrap interval of their difference.

    Each pair set is resampled with replacement on its own, ``n_boot`` times, and the three mean maps are
    rebuilt from the draw, so the interval reflects which pairs happened to be sampled. Without a control map
    (no control pair moved the score enough, see ``Diagnostics.unusable``) control r and the interval are NaN.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    tfc1, stmc1 = maps[EXACT], maps[SEMANTIC]
    control = maps.get(CONTROL)
    if control is None:
        return MapCorrelation(tfc1.correlation(stmc1), float("nan"), (float("nan"), float("nan")))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(n_boot):
        t, s, c = (m.mean_over(rng.integers(0, m.n_pairs, m.n_pairs)) for m in (tfc1, stmc1, control))
        differences.append(map_pearson(t, s) - map_pearson(t, c))
    low, high = _percentile_interval(differences, confidence)
    return MapCorrelation(tfc1.correlation(stmc1), tfc1.correlation(control), (low, high))


def _percentile_interval(draws: Sequence[float], confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _strong(result: PatchResult, min_effect: float) -> np.ndarray:
    """Cells whose mean effect is >= ``min_effect`` with the 95 % interval above 0 (NaN never passes)."""
    mean, low = np.nan_to_num(result.mean, nan=-np.inf), np.nan_to_num(result.ci_low, nan=-np.inf)
    return (mean >= min_effect) & (low > 0)


def _heads(mask: np.ndarray) -> list[Head]:
    return [(int(layer), int(head)) for layer, head in zip(*np.nonzero(mask), strict=True)]


# ------------------------------------------------------------------------------------------- attention
def token_spans(ranker: HookedRanker, batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per row: positions of query tokens and of document tokens (special tokens, prompt text and padding
    excluded): from the batch's ``segments`` where the ranker marks them (decoder prompts), else the tokens
    before and after the first [SEP]."""
    if batch.segments is not None:
        segments = (batch.segments * batch.attention_mask).cpu()
        return [(torch.nonzero(row == 1).flatten(), torch.nonzero(row == 2).flatten()) for row in segments]
    if ranker.causal:
        raise InputError(
            f"{ranker.name}: the query and document positions of a prompt are read from a fast tokenizer's "
            "character offsets, and this tokenizer is not a fast one"
        )
    ids, mask = batch.input_ids.cpu(), batch.attention_mask.cpu().bool()
    special = torch.isin(ids, torch.tensor(ranker.tokenizer.all_special_ids)) | ~mask
    sep = ids == ranker.tokenizer.sep_token_id
    out = []
    for row in range(len(ids)):
        first_sep = int(torch.nonzero(sep[row])[0]) if sep[row].any() else ids.shape[1]
        positions = torch.nonzero(~special[row]).flatten()
        out.append((positions[positions < first_sep], positions[positions > first_sep]))
    return out


def attention_patterns(ranker: HookedRanker, batch: Batch, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Attention patterns [batch, layer, head, query_pos, key_pos] of the given (default: all) layers."""
    layers = list(range(ranker.cfg.n_layers)) if layers is None else list(layers)
    names = [act_name("pattern", layer) for layer in layers]
    with torch.no_grad():
        _, cache = ranker.run_with_cache(batch, names_filter=names)
    return torch.stack([cache[n] for n in names], dim=1).double().cpu()


def _score_positions(ranker: HookedRanker, batch: Batch) -> torch.Tensor:
    """Per row, where the score is read: [CLS] (position 0) in an encoder, the last real token in a causal
    decoder (left padding puts it last)."""
    if ranker.causal:
        return last_real_position(batch.attention_mask.cpu())
    return torch.zeros(len(batch), dtype=torch.long)


# Per row: (query positions, document positions, token ids, score position) -> (from positions, to positions,
# values [from, to]); NaN values are left out.
Selector = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, np.ndarray]]


def _attention_correlation(ranker: HookedRanker, batches: Sequence[Batch], select: Selector) -> np.ndarray:
    """Per head, Pearson r between attention weights and a value per (from, to) token pair, pooled over rows;
    NaN values are left out, and so is a head whose attention or values do not vary."""
    n_layers, n_heads = ranker.cfg.n_layers, ranker.cfg.n_heads
    attn_parts, value_parts = [], []
    for batch in batches:
        patterns = attention_patterns(ranker, batch)
        score_at = _score_positions(ranker, batch)
        for row, (q_pos, d_pos) in enumerate(token_spans(ranker, batch)):
            src, dst, values = select(q_pos, d_pos, batch.input_ids[row].cpu(), int(score_at[row]))
            if len(src) == 0 or len(dst) == 0:
                continue
            attn = patterns[row][:, :, src][:, :, :, dst].reshape(n_layers * n_heads, -1).numpy()
            keep = ~np.isnan(values.ravel())
            attn_parts.append(attn[:, keep])
            value_parts.append(values.ravel()[keep])
    if not value_parts:
        raise InputError("no input has tokens on both sides of the attention being correlated")
    attn, values = np.concatenate(attn_parts, axis=1), np.concatenate(value_parts)
    out = np.full(n_layers * n_heads, np.nan)
    if values.std() > 0:
        for i, row in enumerate(attn):
            if row.std() > 0:
                out[i] = stats.pearsonr(row, values)[0]
    return out.reshape(n_layers, n_heads)


def attention_similarity(ranker: HookedRanker, batches: Sequence[Batch]) -> np.ndarray:
    """Per head: r(attention q_i -> d_j, cos(W_E[q_i], W_E[d_j])) over query x document token pairs (sec. 4.3);
    in a causal decoder r(attention d_j -> q_i, cosine), the direction its mask allows."""
    require_cross_encoder(ranker, "the matching-head attention test")
    unit = torch.nn.functional.normalize(ranker.W_E.detach().double().cpu(), dim=1)

    def select(q_pos: torch.Tensor, d_pos: torch.Tensor, ids: torch.Tensor, _: int):
        src, dst = (d_pos, q_pos) if ranker.causal else (q_pos, d_pos)
        return src, dst, (unit[ids[src]] @ unit[ids[dst]].T).numpy()

    return _attention_correlation(ranker, batches, select)


def same_token_attention(ranker: HookedRanker, batches: Sequence[Batch]) -> np.ndarray:
    """Per head: how many times more attention query tokens give to the same token in the document than
    uniform attention over the document would (1: chance; NaN if no query token occurs in a document).

    Pooled as a ratio of sums over every (row, query token with a duplicate in the document):
    sum attention(q_i -> its duplicates) / sum attention(q_i -> document) x n_duplicates / n_document, so
    rows with little attention to the document weigh little. Exact term matching, seed 002 fig. 4. A causal
    decoder is read the other way (``_causal_same_token_attention``).
    """
    require_cross_encoder(ranker, "the matching-head attention test")
    if ranker.causal:
        return _causal_same_token_attention(ranker, batches)
    n_layers, n_heads = ranker.cfg.n_layers, ranker.cfg.n_heads
    observed, expected = np.zeros(n_layers * n_heads), np.zeros(n_layers * n_heads)
    for batch in batches:
        patterns = attention_patterns(ranker, batch)
        ids = batch.input_ids.cpu()
        for row, (q_pos, d_pos) in enumerate(token_spans(ranker, batch)):
            if len(q_pos) == 0 or len(d_pos) == 0:
                continue
            same = (ids[row, q_pos][:, None] == ids[row, d_pos][None, :]).double()  # [q, d]
            has = same.sum(1) > 0
            if not has.any():
                continue
            attn = patterns[row][:, :, q_pos[has]][:, :, :, d_pos].reshape(n_layers * n_heads, int(has.sum()), -1)
            observed += (attn * same[has]).sum((1, 2)).numpy()
            expected += (attn.sum(2) * same[has].sum(1) / len(d_pos)).sum(1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, observed / np.where(expected > 0, expected, 1.0), np.nan).reshape(
            n_layers, n_heads
        )


def _causal_same_token_attention(ranker: HookedRanker, batches: Sequence[Batch]) -> np.ndarray:
    """``same_token_attention`` under a causal mask: document tokens attend to their duplicates in the query.

    Chance is uniform attention over the content a document token can see (the query and the document
    before it; prompt text, special tokens and the token itself excluded), given its attention to that
    content: sum attention(d_j -> its duplicates in the query) / sum attention(d_j -> visible content) x
    n_visible / n_duplicates pooled as a ratio of sums. Why not uniform over the query alone, the mirror of
    the encoder's document: a query has a handful of tokens, so that lift could not exceed n_query /
    n_duplicates (about 6 for a TREC DL query) and a perfect matching head would sit near the 5x rule.
    """
    n_layers, n_heads = ranker.cfg.n_layers, ranker.cfg.n_heads
    observed, expected = np.zeros(n_layers * n_heads), np.zeros(n_layers * n_heads)
    for batch in batches:
        patterns = attention_patterns(ranker, batch)
        ids = batch.input_ids.cpu()
        for row, (q_pos, d_pos) in enumerate(token_spans(ranker, batch)):
            same = (ids[row, d_pos][:, None] == ids[row, q_pos][None, :]).double()  # [d, q]
            has = same.sum(1) > 0
            if not has.any():
                continue
            content = torch.cat([q_pos, d_pos])
            visible = (content[None, :] < d_pos[has][:, None]).double()  # [d with a duplicate, content]
            attn = patterns[row][:, :, d_pos[has]].reshape(n_layers * n_heads, int(has.sum()), -1)
            on_query = attn[:, :, q_pos]
            observed += (on_query * same[has]).sum((1, 2)).numpy()
            on_content = (attn[:, :, content] * visible).sum(2)
            expected += (on_content * same[has].sum(1) / visible.sum(1)).sum(1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, observed / np.where(expected > 0, expected, 1.0), np.nan).reshape(
            n_layers, n_heads
        )


def cls_idf_attention(ranker: HookedRanker, batches: Sequence[Batch], idf: np.ndarray) -> np.ndarray:
    """Per head: r([CLS] -> query-token attention, the query token's IDF) (sec. 4.1); in a causal decoder the
    score position is the last real token, which sees the whole query."""
    require_cross_encoder(ranker, "the scoring-head attention test")

    def select(q_pos: torch.Tensor, d_pos: torch.Tensor, ids: torch.Tensor, score_at: int):
        return torch.tensor([score_at]), q_pos, idf[ids[q_pos].numpy()][None, :]

    return _attention_correlation(ranker, batches, select)


def query_idf_attention(ranker: HookedRanker, batches: Sequence[Batch], idf: np.ndarray) -> np.ndarray:
    """Per head: r(query -> query-token attention, the attended token's IDF) (sec. 4.2); in a causal decoder
    only over the (from, to) pairs its mask allows (a query token sees itself and the query tokens before it)."""
    require_cross_encoder(ranker, "the contextualisation-head attention test")

    def select(q_pos: torch.Tensor, d_pos: torch.Tensor, ids: torch.Tensor, _: int):
        values = np.tile(idf[ids[q_pos].numpy()], (len(q_pos), 1))
        if ranker.causal:
            values[(q_pos[None, :] > q_pos[:, None]).numpy()] = np.nan
        return q_pos, q_pos, values

    return _attention_correlation(ranker, batches, select)


def _no_runs(diagnostics: Diagnostics, name: str) -> str:
    """Why a probe cannot run on ``name``'s pairs ("" when it can)."""
    return "" if name in diagnostics.runs else diagnostics.unusable[name]


# ------------------------------------------------------------------------------------------- matching heads
@dataclass
class Ablation:
    """Mean-ablating a set of heads on one pair set: per pair, perturbed - baseline score before and after."""

    before: np.ndarray
    after: np.ndarray
    perturbed_before: float  # mean perturbed score (what seed 002 reports)
    perturbed_after: float

    @property
    def removed(self) -> float:
        """Share of the perturbation's mean effect that the ablation removes (1: all of it)."""
        return 1.0 - float(self.after.mean()) / float(self.before.mean())

    @property
    def shares(self) -> np.ndarray:
        """Per pair: the share of its effect the ablation takes away (pairs are normalisable: ``PairRuns``)."""
        return 1.0 - self.after / self.before


def mean_ablation(
    ranker: HookedRanker, sides: tuple[Batch, Batch], heads: Sequence[Head], reference: Batch
) -> Ablation:
    """Score (baseline, perturbed) with the heads' ``z`` replaced by its mean over ``reference``'s real positions."""
    if not heads:
        raise ValueError("no heads to ablate")
    cells = [c for c in head_grid(ranker).cells if (c.layer, c.index[1]) in set(heads)]
    hooks = ablation_hooks(ranker, cells, "mean", reference=reference)
    base, pert = sides
    with torch.no_grad():
        clean = [ranker(b).double().cpu().numpy() for b in sides]
        with ranker.hooks(hooks):
            ablated = [ranker(b).double().cpu().numpy() for b in (base, pert)]
    return Ablation(clean[1] - clean[0], ablated[1] - ablated[0], float(clean[1].mean()), float(ablated[1].mean()))


@dataclass
class MatchingHeads:
    heads: list[Head]
    maps: dict[str, PatchResult]  # activation patching per usable pair set
    same_token: np.ndarray  # [layer, head]: same-token attention over chance
    attention_r: np.ndarray  # [layer, head]: r(q -> d attention, embedding cosine), reported, not a rule
    ablations: dict[str, Ablation] = field(default_factory=dict)  # TFC1 (and control if usable); {} without heads
    rule: str = ""
    cannot_run: str = ""  # why no head could be looked for (no TFC1 pair moved the score)
    no_control: str = ""  # why there is no control ablation (no control pair moved the score)

    @property
    def removed(self) -> float:
        """The share of the TFC1 effect removed by ablating the heads (0 with no heads)."""
        return self.ablations[EXACT].removed if self.heads else 0.0

    def specificity(self, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
        """Bootstrap interval of the mean per-pair share of the TFC1 effect removed minus the control edit's:
        above 0 when ablating the heads takes away more of the exact-match effect than of an unrelated edit's.
        NaN without heads, or without a control ablation (``no_control``: no control edit moves the score, so
        there is no unrelated effect the heads could be carrying)."""
        if not self.heads or CONTROL not in self.ablations:
            return float("nan"), float("nan")
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        exact, control = self.ablations[EXACT].shares, self.ablations[CONTROL].shares
        rng = np.random.default_rng(seed)
        draws = [
            exact[rng.integers(0, len(exact), len(exact))].mean()
            - control[rng.integers(0, len(control), len(control))].mean()
            for _ in range(n_boot)
        ]
        return _percentile_interval(draws, confidence)

    def confirmed(self, min_removed: float, n_boot: int = 1000, seed: int = 0) -> bool:
        """Ablation removes >= ``min_removed`` of the TFC1 effect, and more of it than of a control edit's."""
        low, _ = self.specificity(n_boot, seed=seed)
        return bool(self.heads) and self.removed >= min_removed and (low > 0 or CONTROL not in self.ablations)

    def effects(self) -> dict[str, float]:
        """Per head found: its mean TFC1 effect."""
        return {head_label(h): float(self.maps[EXACT].mean[h]) for h in self.heads}


def find_matching_heads(
    ranker: HookedRanker,
    diagnostics: Diagnostics,
    maps: dict[str, PatchResult],
    *,
    min_effect: float,
    min_same_token_lift: float,
) -> MatchingHeads:
    """Heads strong in the TFC1 patching map whose query tokens attend to the same token in the document."""
    words = diagnostics.batch_of([EXACT])
    same_token = same_token_attention(ranker, words)
    attention_r = attention_similarity(ranker, diagnostics.batch_of(AXIOMS))
    rule = (
        f"TFC1 patching effect >= {min_effect} with 95% CI > 0, and same-token attention >= "
        f"{min_same_token_lift:g}x chance"
    )
    cannot_run = _no_runs(diagnostics, EXACT)
    if cannot_run:
        return MatchingHeads([], maps, same_token, attention_r, {}, rule, cannot_run)
    mask = _strong(maps[EXACT], min_effect) & (np.nan_to_num(same_token, nan=0.0) >= min_same_token_lift)
    heads = _heads(mask)
    # Ablated on the normalisable pairs only, as the maps are: a pair whose edit does not move the score has no
    # effect for the heads to carry, and its per-pair share would divide by ~0.
    reference = diagnostics.batches[EXACT][0]
    usable = [name for name in (EXACT, CONTROL) if name in diagnostics.runs] if heads else []
    ablations = {
        name: mean_ablation(
            ranker, (diagnostics.runs[name].baseline.batch, diagnostics.runs[name].perturbed.batch), heads, reference
        )
        for name in usable
    }
    no_control = _no_runs(diagnostics, CONTROL)
    return MatchingHeads(heads, maps, same_token, attention_r, ablations, rule, no_control=no_control)


# ------------------------------------------------------------------------------------------- scoring heads
@dataclass
class ScoringHeads:
    heads: list[Head]
    map: PatchResult | None  # TFC1 path patching to the score, dims (layer, head); None when it cannot run
    idf_r: np.ndarray  # [layer, head]: r([CLS] -> query attention, IDF)
    rule: str = ""
    cannot_run: str = ""

    @property
    def mean_idf_r(self) -> float:
        """The found heads' mean IDF correlation (0 with no heads: nothing carries IDF-weighted matching)."""
        return float(np.nanmean([self.idf_r[h] for h in self.heads])) if self.heads else 0.0

    def effects(self) -> dict[str, float]:
        return {head_label(h): float(self.map.mean[h]) for h in self.heads} if self.map else {}


def find_scoring_heads(
    ranker: HookedRanker, diagnostics: Diagnostics, idf: np.ndarray, *, min_effect: float
) -> ScoringHeads:
    """Heads whose direct path to the score carries >= ``min_effect`` of the TFC1 effect."""
    require_cross_encoder(ranker, "the relevance-scoring heads probe")
    idf_r = cls_idf_attention(ranker, diagnostics.batch_of(AXIOMS), idf)
    rule = f"path-patched TFC1 effect on the score >= {min_effect} with 95% CI > 0"
    cannot_run = _no_runs(diagnostics, EXACT)
    if cannot_run:
        return ScoringHeads([], None, idf_r, rule, cannot_run)
    result = path_patching(ranker, diagnostics.runs[EXACT], receivers="score")
    return ScoringHeads(_heads(_strong(result, min_effect)), result, idf_r, rule)


# ------------------------------------------------------------------------------------------- contextualisation
@dataclass
class ContextualisationHeads:
    heads: list[Head]
    receivers: list[Head]
    effect: np.ndarray  # [layer, head]: the largest TFC1 effect into a receiver's v
    idf_r: np.ndarray  # [layer, head]: r(query -> query attention, the attended token's IDF)
    rule: str = ""
    cannot_run: str = ""  # why no sender could be looked for (no receivers, or no TFC1 pair)
    basis: str = ""  # the pairs the path patching rests on

    def effects(self) -> dict[str, float]:
        return {head_label(h): float(self.effect[h]) for h in self.heads}


def find_contextualisation_heads(
    ranker: HookedRanker,
    diagnostics: Diagnostics,
    idf: np.ndarray,
    receivers: Sequence[Head],
    *,
    min_effect: float,
    min_idf_r: float,
) -> ContextualisationHeads:
    """Senders into the scoring heads' values whose query -> query attention follows IDF (sec. 4.2).

    Matching heads also send into those values; they are told apart by their attention: a matching head's
    query tokens attend to similar tokens, not to the query's high-IDF ones. With no receivers (no scoring
    head found) the probe cannot run and says so in ``cannot_run``.
    """
    require_cross_encoder(ranker, "the query-contextualisation heads probe")
    shape = (ranker.cfg.n_layers, ranker.cfg.n_heads)
    idf_r = query_idf_attention(ranker, diagnostics.batch_of(AXIOMS), idf)
    rule = f"path-patched TFC1 effect into a scoring head's v >= {min_effect} with 95% CI > 0, "
    rule += f"and r(q->q attention, IDF) >= {min_idf_r}"
    cannot_run = _no_runs(diagnostics, EXACT)
    if not cannot_run and not receivers:
        cannot_run = (
            "no relevance-scoring head was found, so there is no receiver whose values a query-contextualisation "
            "head could feed (path patching into receivers needs at least one)"
        )
    if cannot_run:
        return ContextualisationHeads([], [], np.full(shape, np.nan), idf_r, rule, cannot_run)
    result = path_patching(ranker, diagnostics.runs[EXACT], receivers=list(receivers), channels=("v",))
    strong = _strong(result, min_effect).any(axis=(1, 2)).reshape(shape)
    effect = np.nan_to_num(result.mean, nan=-np.inf).max(axis=(1, 2)).reshape(shape)
    mask = strong & (np.nan_to_num(idf_r, nan=-1.0) >= min_idf_r)
    return ContextualisationHeads(_heads(mask), list(receivers), effect, idf_r, rule, basis=result.basis)
