"""IDF statistics: the shipped MS MARCO WordPiece table, a JSON file, or document frequencies counted over a
corpus (word or WordPiece level); BM25's IDF and TF terms; an IDF vector by token id for a model's tokenizer,
with the coverage rule that decides between the shipped table and the model's own corpus IDF.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from irmechtest.data.sources import DEFAULT_SOURCE, RESOURCES, DataFormatError, load_pairs, words

DEFAULT_IDF = "msmarco-wordpiece"


def bm25_idf(df: int, n_docs: int) -> float:
    """log(1 + (N - df + 0.5) / (df + 0.5)): the formula of the shipped MS MARCO table, never negative."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def bm25_tf(tf: np.ndarray, length: np.ndarray | float, avgdl: float, k1: float, b: float) -> np.ndarray:
    """BM25's saturating, length-normalised term-frequency factor: what multiplies a term's IDF."""
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))


def corpus_idf(documents: Iterable[str], tokenizer: Any | None = None, *, batch_size: int = 1024) -> dict[str, float]:
    """IDF from document frequencies over ``documents``: word level, or token level with a tokenizer
    (WordPiece pieces, as in the shipped table, so the two can be compared)."""
    df: Counter[str] = Counter()
    n_docs = 0
    batch: list[str] = []

    def flush() -> None:
        if tokenizer is None:
            units = [words(text) for text in batch]
        else:
            ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
            units = [tokenizer.convert_ids_to_tokens(row) for row in ids]
        for unit in units:
            df.update(set(unit))
        batch.clear()

    for text in documents:
        n_docs += 1
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if n_docs == 0:
        raise ValueError("corpus_idf needs at least one document")
    return {term: bm25_idf(count, n_docs) for term, count in df.items()}


SHIPPED_IDF_PLACEHOLDER = 1.0


def load_idf(source: str | Path | Mapping[str, float] = DEFAULT_IDF) -> dict[str, float]:
    """An IDF table: ``"msmarco-wordpiece"`` (shipped), a path to a JSON ``{term: idf}`` map, or a map."""
    if isinstance(source, Mapping):
        return dict(source)
    path = RESOURCES / "msmarco-passage-wordpiece-idf.json" if source == DEFAULT_IDF else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"IDF source {source!r}: no such file (the shipped table is {DEFAULT_IDF!r})")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(table, dict) or not all(isinstance(v, int | float) for v in table.values()):
        raise DataFormatError(f"{path}: expected a JSON object mapping terms to numbers")
    parsed = {str(k): float(v) for k, v in table.items()}
    if source == DEFAULT_IDF:
        # The shipped table writes 1.0 for special and unscored tokens: a placeholder, not a statistic
        # (a real BM25 IDF of 1.0 needs df = 0.37 N; the table's nearest real values are 0.94 and 1.02).
        parsed = {term: idf for term, idf in parsed.items() if idf != SHIPPED_IDF_PLACEHOLDER}
    return parsed


# The shipped table is bert-base-uncased WordPiece: it covers 95 % of that vocabulary and next to nothing of a
# BPE / SentencePiece one (Qwen, Llama), whose tokens it would match only by accident. Below half (the rule
# the behavioural axioms already use) IDF is computed in the model's own tokenizer from a corpus instead.
MIN_IDF_COVERAGE = 0.5


CORPUS_IDF_PREFIX = "corpus:"


def resolve_idf_source(tokenizer: Any, source: str | Path | Mapping[str, float] = DEFAULT_IDF) -> Any:
    """The IDF source used for ``tokenizer``: ``source``, except that the shipped WordPiece table is replaced by
    ``corpus:`` + the shipped TREC DL passages when it covers less than half of the vocabulary. Verdicts
    record the result, so the switch is reported, never silent."""
    if source == DEFAULT_IDF and vocabulary_coverage(load_idf(source), tokenizer) < MIN_IDF_COVERAGE:
        return CORPUS_IDF_PREFIX + DEFAULT_SOURCE
    return source


def idf_vector(
    tokenizer: Any, source: str | Path | Mapping[str, float] = DEFAULT_IDF, size: int | None = None
) -> np.ndarray:
    """IDF indexed by token id of ``tokenizer``'s vocabulary; NaN where the table lacks the token.

    ``size``: the model's embedding rows, when it has more than the tokenizer has tokens (Qwen2.5 pads 151,665
    tokens to 151,936 rows): rows no text can reach get NaN, so the vector lines up with ``W_E``.

    ``corpus:<pairs source>`` (e.g. ``corpus:irmechtest:vaswani``) computes token IDF in this tokenizer from the
    distinct documents of that source; see ``resolve_idf_source`` for the shipped table's fallback.
    """
    source = resolve_idf_source(tokenizer, source)
    if isinstance(source, str) and source.startswith(CORPUS_IDF_PREFIX):
        documents = dict.fromkeys(p.text for p in load_pairs(source.removeprefix(CORPUS_IDF_PREFIX)))
        table = corpus_idf(documents, tokenizer)
    else:
        table = load_idf(source)
    vocab = tokenizer.get_vocab()
    out = np.full(max(max(vocab.values()) + 1, size or 0), np.nan)
    for token, token_id in vocab.items():
        if token in table:
            out[token_id] = table[token]
    return out


def vocabulary_coverage(table: Mapping[str, float], tokenizer: Any) -> float:
    """Share of the tokenizer's vocabulary that an IDF table covers: near 1 for the vocabulary it was
    built on, near 0 for another (the shipped table is bert-base-uncased WordPiece)."""
    vocab = tokenizer.get_vocab()
    return sum(1 for token in vocab if token in table) / max(len(vocab), 1)


def word_idf(table: Mapping[str, float], tokenizer: Any | None = None) -> Callable[[str], float | None]:
    """IDF of a word. With a tokenizer the table is token level and a word split into several pieces
    takes its rarest piece's IDF (the piece that makes it discriminative); without one it is word level.
    Unknown words give None, which axioms treat as not applicable."""

    def lookup(word: str) -> float | None:
        if tokenizer is None:
            return table.get(word.lower())
        values = [table.get(t) for t in tokenizer.tokenize(word)]
        known = [v for v in values if v is not None]
        return max(known) if known and len(known) == len(values) else None

    return lookup
