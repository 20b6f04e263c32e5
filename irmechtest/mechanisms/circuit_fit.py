"""The linear "semantic BM25" circuit fit (Pathway to Relevance, seed 002 sec. 5 and appendix G): per
query-length group, per query token -U0, the matching heads' score and their product, least squares on a seeded
80/20 split, against BM25 over the model's own tokens (k1, b tuned on the training rows) and random features on
the same split. The matching heads come from ``circuits.find_matching_heads``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from irmechtest.data.idf import bm25_tf
from irmechtest.mechanisms.circuits import Head, require_cross_encoder, token_spans
from irmechtest.models.hooks import act_name
from irmechtest.models.ranker import HookedRanker, InputError


# ------------------------------------------------------------------------------------------- circuit fit
@dataclass
class Correlations:
    pearson: float
    spearman: float


def _correlations(predicted: np.ndarray, actual: np.ndarray) -> Correlations:
    if len(actual) < 3 or np.std(predicted) == 0 or np.std(actual) == 0:
        return Correlations(float("nan"), float("nan"))
    return Correlations(float(stats.pearsonr(predicted, actual)[0]), float(stats.spearmanr(predicted, actual)[0]))


@dataclass
class CircuitFit:
    """Held-out fit of the linear "semantic BM25" circuit and its baselines, pooled over query-length groups."""

    circuit: Correlations
    bm25: Correlations
    random: Correlations
    bm25_params: tuple[float, float]  # (k1, b) tuned on the training rows
    groups: dict[int, dict[str, float]]  # query length -> n_train, n_test, held-out Pearson r of the circuit
    heads: list[Head]
    head_weights: np.ndarray  # alpha_k of MS_total = sum_k alpha_k MS_k, fitted on the training rows
    actual: np.ndarray  # held-out scores
    predicted: np.ndarray  # the circuit's held-out predictions
    n_pairs: int
    skipped: int  # pairs in query-length groups too small to fit

    @property
    def beats_bm25(self) -> bool:
        return bool(np.nan_to_num(self.circuit.pearson, nan=-1.0) > np.nan_to_num(self.bm25.pearson, nan=1.0))


@dataclass
class _Rows:
    """Per pair: the query tokens' features and the document's term statistics."""

    minus_u0: list[np.ndarray]
    # per pair [query token, head]: MS_k(q_i), q_i's attention mass on the document (causal: the document's on q_i)
    matching: list[np.ndarray]
    query_ids: list[np.ndarray]
    doc_ids: list[np.ndarray]
    scores: np.ndarray


def top_left_singular_vector(W_E: torch.Tensor) -> np.ndarray:
    """U0 of the word-embedding matrix (its sign is arbitrary; a linear fit absorbs it)."""
    u, _, _ = torch.linalg.svd(W_E.detach().double().cpu(), full_matrices=False)
    return u[:, 0].numpy()


def _circuit_rows(
    ranker: HookedRanker, pairs: Sequence[tuple[str, str]], heads: Sequence[Head], batch_size: int = 32
) -> _Rows:
    u0 = top_left_singular_vector(ranker.W_E)
    layers = sorted({layer for layer, _ in heads})
    rows = _Rows([], [], [], [], np.zeros(0))
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = ranker.tokenize([q for q, _ in chunk], [d for _, d in chunk], overflow="truncate")
        names = [act_name("pattern", layer) for layer in layers]
        with torch.no_grad():
            score, cache = ranker.run_with_cache(batch, names_filter=names)
        scores.append(score.double().cpu().numpy())
        for row, (q_pos, d_pos) in enumerate(token_spans(ranker, batch)):
            ids = batch.input_ids[row].cpu()
            patterns = [cache[act_name("pattern", ly)][row, h].cpu() for ly, h in heads]
            if ranker.causal:  # the attention the document gives q_i: the direction a causal mask allows
                mass = [p[d_pos][:, q_pos].sum(0) for p in patterns]
            else:
                mass = [p[q_pos][:, d_pos].sum(-1) for p in patterns]
            rows.matching.append(torch.stack(mass, dim=1).double().cpu().numpy())
            rows.minus_u0.append(-u0[ids[q_pos].numpy()])
            rows.query_ids.append(ids[q_pos].numpy())
            rows.doc_ids.append(ids[d_pos].numpy())
    rows.scores = np.concatenate(scores)
    return rows


def token_bm25_scores(
    query_ids: Sequence[np.ndarray], doc_ids: Sequence[np.ndarray], idf: np.ndarray, k1: float, b: float, avgdl: float
) -> np.ndarray:
    """BM25 over the model's own tokens (IDF 0 for tokens without one)."""
    weights = np.nan_to_num(idf, nan=0.0)
    out = np.zeros(len(query_ids))
    for i, (q, d) in enumerate(zip(query_ids, doc_ids, strict=True)):
        tf = np.array([np.sum(d == t) for t in q], dtype=float)
        out[i] = np.sum(weights[q] * bm25_tf(tf, len(d), avgdl, k1, b))
    return out


BM25_K1_GRID = (0.3, 0.5, 0.9, 1.2, 1.5, 2.0)


BM25_B_GRID = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


def all_heads(ranker: HookedRanker) -> list[Head]:
    return [(layer, head) for layer in range(ranker.cfg.n_layers) for head in range(ranker.cfg.n_heads)]


def _head_weights(rows: _Rows, train: np.ndarray) -> np.ndarray:
    """alpha_k of MS_total = sum_k alpha_k MS_k (seed 002 eq. 2): least squares of the score on each head's
    matching score summed over the query, plus an intercept, on the training rows only."""
    design = np.stack([np.append(rows.matching[i].sum(0), 1.0) for i in train])
    coef, *_ = np.linalg.lstsq(design, rows.scores[train], rcond=None)
    return coef[:-1]


def _design(rows: _Rows, index: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per row: -U0(q_i), MS_total(q_i), their product for every query token, and an intercept."""
    out = []
    for i in index:
        ms = rows.matching[i] @ alpha
        out.append(np.concatenate([rows.minus_u0[i], ms, rows.minus_u0[i] * ms, [1.0]]))
    return np.stack(out)


def circuit_fit(
    ranker: HookedRanker,
    pairs: Sequence[tuple[str, str]],
    heads: Sequence[Head],
    idf: np.ndarray,
    *,
    seed: int,
    train_share: float = 0.8,
    min_rows_per_feature: int = 5,
) -> CircuitFit:
    """Fit score ~ sum_i linear(-U0(q_i), MS(q_i), -U0(q_i) MS(q_i)) per query-length group (seed 002 sec. 5,
    appendix G), MS being the total matching score sum_k alpha_k MS_k(q_i), MS_k(q_i) q_i's attention mass on
    the document in head k of ``heads`` (in a causal decoder, the attention mass the document gives q_i; pass
    ``all_heads(ranker)`` for the paper's all-heads version).

    Each group is split 80/20 with ``seed``; a group is fitted only if its training part has at least
    ``min_rows_per_feature`` rows per feature. The alpha_k are fitted on the pooled training rows. BM25 (k1, b
    tuned on the pooled training rows) and random features (the circuit's design shape, Gaussian, seeded) are
    evaluated on the same held-out rows.
    """
    require_cross_encoder(ranker, "the linear circuit fit")
    if not heads:
        raise ValueError("the circuit fit needs heads to read matching scores from: none given")
    if not 0 < train_share < 1:
        raise ValueError(f"train_share must be in (0, 1), got {train_share}")
    rows = _circuit_rows(ranker, pairs, heads)
    lengths = np.array([len(q) for q in rows.query_ids])
    rng = np.random.default_rng(seed)
    splits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for length in sorted(set(lengths.tolist()) - {0}):
        members = np.flatnonzero(lengths == length)
        n_train = round(train_share * len(members))
        if n_train < min_rows_per_feature * (3 * length + 1) or len(members) - n_train < 3:
            continue
        order = rng.permutation(members)
        splits[length] = (order[:n_train], order[n_train:])
    if not splits:
        raise InputError(
            f"no query-length group of the {len(pairs)} pairs has {min_rows_per_feature} training rows per "
            "feature: give more pairs"
        )
    train = np.concatenate([tr for tr, _ in splits.values()])
    test = np.concatenate([te for _, te in splits.values()])
    alpha = _head_weights(rows, train)
    groups, actual, predicted, random_pred = {}, [], [], []
    for length, (group_train, group_test) in splits.items():
        coef, *_ = np.linalg.lstsq(_design(rows, group_train, alpha), rows.scores[group_train], rcond=None)
        n_features = 3 * length + 1
        noise = np.column_stack(
            [
                rng.standard_normal((len(group_train) + len(group_test), n_features - 1)),
                np.ones(len(group_train) + len(group_test)),
            ]
        )
        r_coef, *_ = np.linalg.lstsq(noise[: len(group_train)], rows.scores[group_train], rcond=None)
        prediction = _design(rows, group_test, alpha) @ coef
        actual.append(rows.scores[group_test])
        predicted.append(prediction)
        random_pred.append(noise[len(group_train) :] @ r_coef)
        fit = _correlations(prediction, rows.scores[group_test])
        groups[length] = {"n_train": len(group_train), "n_test": len(group_test), "pearson": fit.pearson}
    actual_all, predicted_all = np.concatenate(actual), np.concatenate(predicted)
    k1, b = max(
        ((k1, b) for k1 in BM25_K1_GRID for b in BM25_B_GRID),
        key=lambda p: np.nan_to_num(_bm25_fit(rows, idf, train, *p).pearson, nan=-1.0),
    )
    return CircuitFit(
        circuit=_correlations(predicted_all, actual_all),
        bm25=_bm25_fit(rows, idf, test, k1, b),
        random=_correlations(np.concatenate(random_pred), actual_all),
        bm25_params=(k1, b),
        groups=groups,
        heads=list(heads),
        head_weights=alpha,
        actual=actual_all,
        predicted=predicted_all,
        n_pairs=len(pairs),
        skipped=len(pairs) - len(train) - len(test),
    )


def _bm25_fit(rows: _Rows, idf: np.ndarray, subset: np.ndarray, k1: float, b: float) -> Correlations:
    q = [rows.query_ids[i] for i in subset]
    d = [rows.doc_ids[i] for i in subset]
    avgdl = float(np.mean([len(x) for x in rows.doc_ids])) or 1.0
    return _correlations(token_bm25_scores(q, d, idf, k1, b, avgdl), rows.scores[subset])
