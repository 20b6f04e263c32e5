"""Reranking lists and nDCG@10: what a pruning study measures a ranker on.

Seed 001 (section 5.3) reranks, per query, one relevant passage among 20 passages retrieved by BM25 and
reports nDCG@10. irmechtest ships no BM25 run, so lists are built from a pool of passages: for each query,
its relevant passage plus the ``n_negatives`` pool passages that BM25 (computed here over the pool) ranks
highest among those that ``excluded`` does not rule out (passages judged for the query, or passages sharing
a word with it, depending on the source). Scores come from the ranker under test, with or without hooks.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from irmechtest.data.idf import bm25_idf, bm25_tf
from irmechtest.data.sources import DEFAULT_SOURCE, load_pairs, words
from irmechtest.models.ranker import HookedRanker, ProbeCorpus

# Anserini's BM25 defaults for MS MARCO passage: the usual "BM25 negatives" of the literature.
BM25_K1, BM25_B = 0.9, 0.4


@dataclass(frozen=True)
class RerankList:
    """One query's candidates and their gains (1 for the relevant passage, 0 for negatives)."""

    qid: str
    query: str
    docs: tuple[str, ...]
    gains: tuple[int, ...]


@dataclass(frozen=True)
class LabelledPair:
    """A query-passage pair with a binary label, for per-label attribution."""

    query: str
    doc: str
    relevant: bool


def bm25_scores(query: str, pool: Sequence[str], k1: float = BM25_K1, b: float = BM25_B) -> np.ndarray:
    """BM25 of ``query`` against every passage of ``pool``, with IDF and average length from the pool."""
    docs = [Counter(words(text.lower())) for text in pool]
    if not docs:
        raise ValueError("the passage pool is empty")
    lengths = np.array([sum(d.values()) for d in docs], dtype=float)
    avg = max(lengths.mean(), 1.0)
    df = Counter(term for d in docs for term in d)
    scores = np.zeros(len(docs))
    for term in set(words(query.lower())):
        if term not in df:
            continue
        tf = np.array([d[term] for d in docs], dtype=float)
        scores += bm25_idf(df[term], len(docs)) * bm25_tf(tf, lengths, avg, k1, b)
    return scores


def build_lists(
    relevant: Sequence[tuple[str, str, str]],
    pool: Sequence[str],
    n_negatives: int,
    excluded: Callable[[str, str, str], bool],
) -> list[RerankList]:
    """One list per ``(qid, query, relevant passage)``: the passage and its top BM25 negatives from ``pool``.

    ``excluded(qid, query, passage)`` rules a pool passage out as a negative (a judged or likely relevant
    one). Ties in BM25 keep pool order, so lists are deterministic.
    """
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    lists = []
    for qid, query, doc in relevant:
        scores = bm25_scores(query, pool)
        order = np.argsort(-scores, kind="stable")
        negatives = [pool[i] for i in order if pool[i] != doc and not excluded(qid, query, pool[i])][:n_negatives]
        if len(negatives) < n_negatives:
            raise ValueError(f"query {qid!r} has only {len(negatives)} eligible negatives, {n_negatives} asked")
        lists.append(RerankList(qid, query, (doc, *negatives), (1,) + (0,) * len(negatives)))
    return lists


def ndcg_at_k(scores: Sequence[float], gains: Sequence[int], k: int = 10) -> float:
    """nDCG@k with linear gains; tied scores rank the higher gain last (no credit for a ranker that cannot
    tell documents apart, e.g. one whose score a pruning flattened)."""
    scores, gains = np.asarray(scores, dtype=float), np.asarray(gains, dtype=float)
    if scores.shape != gains.shape or scores.ndim != 1:
        raise ValueError("scores and gains must be 1-d and of the same length")
    ideal = np.sort(gains)[::-1][:k]
    idcg = float((ideal / np.log2(np.arange(2, ideal.size + 2))).sum())
    if idcg == 0:
        raise ValueError("nDCG is undefined for a list without any relevant document")
    order = np.lexsort((gains, -scores))[:k]
    return float((gains[order] / np.log2(np.arange(2, order.size + 2))).sum()) / idcg


def flatten(lists: Sequence[RerankList]) -> tuple[list[str], list[str]]:
    """The (query, passage) pairs of every list, in list order, for one batched scoring call."""
    queries = [lst.query for lst in lists for _ in lst.docs]
    docs = [d for lst in lists for d in lst.docs]
    return queries, docs


def per_list_ndcg(lists: Sequence[RerankList], flat_scores: Sequence[float], k: int = 10) -> np.ndarray:
    """nDCG@k of each list from the scores of ``flatten(lists)``."""
    out, start = [], 0
    for lst in lists:
        stop = start + len(lst.docs)
        out.append(ndcg_at_k(flat_scores[start:stop], lst.gains, k))
        start = stop
    if start != len(flat_scores):
        raise ValueError(f"{len(flat_scores)} scores for {start} listed passages")
    return np.array(out)


@dataclass(frozen=True)
class StudyData:
    """Disjoint query sets: labelled pairs to attribute on, and reranking lists to prune against."""

    attribution: list[LabelledPair]
    lists: list[RerankList]
    source: str


def trec_sample_data(
    n_queries: int,
    n_negatives: int,
    n_pairs: int,
    seed: int,
    source: str = DEFAULT_SOURCE,
    exclude_queries: Collection[str] = (),
) -> StudyData:
    """Lists and pairs from graded judgments: the shipped TREC DL sample (grades 0-3, 77 queries) by default,
    or any ``source`` that ``load_pairs`` reads (a ``.tsv`` with a relevance column, an ``ir_datasets`` id).

    Queries in ``exclude_queries`` (e.g. a model's training queries) are left out of both the lists and the
    attribution pairs, and their passages out of the negatives' pool: pruning evaluated on queries the model
    was trained on measures memorisation (docs/nig.md). Relevant means grade >= 2 (the TREC DL passage
    convention), non-relevant grade 0; grade 1 ("related") is left out of attribution as ambiguous, as seed 001
    leaves out ambiguous pairs. ``n_queries`` queries with a relevant passage are drawn for the lists (their
    best-graded passage among BM25 negatives from the other queries' passages); attribution pairs come from the
    remaining queries only, so neurons are never selected on the queries they are evaluated on.
    """
    excluded = set(exclude_queries)
    loaded = load_pairs(source)
    if any(p.relevance is None for p in loaded):
        raise ValueError(f"pairs source {source!r} has pairs without a relevance grade; the pruning study needs them")
    pairs = [p for p in loaded if p.qid not in excluded]
    judged: dict[str, dict[str, int]] = {}
    for p in pairs:
        judged.setdefault(p.qid, {})[p.text] = p.relevance
    queries = {p.qid: p.query for p in pairs}
    with_relevant = sorted(q for q, docs in judged.items() if max(docs.values()) >= 2)
    if not 1 <= n_queries < len(with_relevant):
        left = f" after leaving out {len(excluded & {p.qid for p in loaded})} excluded queries" if excluded else ""
        raise ValueError(
            f"n_queries must be in [1, {len(with_relevant) - 1}], got {n_queries}: {source!r} has "
            f"{len(with_relevant)} queries with a passage of grade >= 2{left}, and the queries not reranked give "
            "the attribution pairs"
        )
    rng = random.Random(seed)
    eval_qids = sorted(rng.sample(with_relevant, n_queries))
    best = [(q, queries[q], max(judged[q], key=judged[q].get)) for q in eval_qids]
    pool = list(dict.fromkeys(p.text for p in pairs))
    lists = build_lists(best, pool, n_negatives, lambda qid, _, doc: doc in judged[qid])
    rest = [p for p in pairs if p.qid not in set(eval_qids)]
    attribution = _balanced(
        [LabelledPair(p.query, p.text, True) for p in rest if p.relevance >= 2],
        [LabelledPair(p.query, p.text, False) for p in rest if p.relevance == 0],
        n_pairs,
        rng,
    )
    held_out = f" without {len(excluded & {p.qid for p in loaded})} excluded queries" if excluded else ""
    return StudyData(attribution, lists, f"{source}{held_out}")


def study_data(
    ranker: HookedRanker,
    n_queries: int,
    n_negatives: int,
    n_pairs: int,
    seed: int,
    source: str = DEFAULT_SOURCE,
    exclude_queries: Collection[str] = (),
) -> StudyData:
    """The study's data for ``ranker``: from the corpus it declares (a model built in its own vocabulary, where
    MS MARCO text is mostly [UNK]), else from graded judgments (``trec_sample_data``: the shipped TREC DL sample
    or ``source``, without ``exclude_queries``, e.g. the model's training queries)."""
    if ranker.probe_corpus is not None:
        return corpus_data(ranker.probe_corpus, n_queries, n_negatives, n_pairs, seed)
    return trec_sample_data(n_queries, n_negatives, n_pairs, seed, source, exclude_queries)


def corpus_data(corpus: ProbeCorpus, n_queries: int, n_negatives: int, n_pairs: int, seed: int) -> StudyData:
    """Lists and pairs from a model's declared corpus (the planted model's ``planted.sample_pairs``), labelled by
    construction.

    Relevant: the passage contains a query word; non-relevant: it contains no query word and no synonym of
    one (pairs with synonyms only are ambiguous and left out). Negatives are pool passages with no query
    word or synonym. Attribution pairs and lists come from differently seeded samples.
    """
    sample_pairs, synonyms = corpus.sample_pairs, corpus.synonyms

    def related(query: str) -> set[str]:
        return {w for q in query.split() for w in (q, *synonyms.get(q, []))}

    def label(query: str, doc: str) -> bool | None:
        hits = set(doc.split())
        if hits & set(query.split()):
            return True
        return None if hits & related(query) else False

    rng = random.Random(seed)
    labelled = [LabelledPair(q, d, rel) for q, d in sample_pairs(8 * n_pairs, seed) if (rel := label(q, d)) is not None]
    attribution = _balanced([p for p in labelled if p.relevant], [p for p in labelled if not p.relevant], n_pairs, rng)
    candidates = sample_pairs(8 * (n_queries + n_negatives), seed + 1)
    pool = list(dict.fromkeys(d for _, d in candidates))
    relevant = list(dict.fromkeys((q, d) for q, d in candidates if label(q, d)))[:n_queries]
    if len(relevant) < n_queries:
        raise ValueError(f"only {len(relevant)} {corpus.name} queries with a relevant passage, {n_queries} asked")
    lists = build_lists(
        [(f"p{i}", q, d) for i, (q, d) in enumerate(relevant)],
        pool,
        n_negatives,
        lambda _, query, doc: bool(set(doc.split()) & related(query)),
    )
    return StudyData(attribution, lists, corpus.name)


def _balanced(pos: list[LabelledPair], neg: list[LabelledPair], n_pairs: int, rng: random.Random) -> list[LabelledPair]:
    """``n_pairs`` pairs, half of each label (as many as there are when one label runs short)."""
    if n_pairs < 2:
        raise ValueError(f"n_pairs must be >= 2 (one per label), got {n_pairs}")
    half = n_pairs // 2
    return rng.sample(pos, min(half, len(pos))) + rng.sample(neg, min(n_pairs - half, len(neg)))
