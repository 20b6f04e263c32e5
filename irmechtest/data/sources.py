"""Text sources and IDF statistics for the axiom catalogue.

Query-document pairs come from a small registry of sources, so the offline sample shipped with the
package, a local TSV file and any ``ir_datasets`` id all go through the same sampling and validation
code. IDF comes from the shipped MS MARCO WordPiece table, a JSON file, or document frequencies counted
over a corpus (word or WordPiece level), e.g. the Vaswani collection in ``../shared/data``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

RESOURCES = Path(__file__).resolve().parent / "resources"
SHIPPED_PREFIX = "irmechtest:"
DEFAULT_SOURCE = "irmechtest:trec-dl-tfc1-sample"
DEFAULT_IDF = "msmarco-wordpiece"
SHARED_DATA_ENV = "IRMECHTEST_SHARED_DATA"

WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: the unit in which axioms count query terms."""
    return WORD.findall(text.lower())


def split_sentences(text: str, *, min_words: int = 4, max_words: int = 40) -> list[str]:
    """Sentences of a passage (split after . ! ?) of a readable length, e.g. as LNC1's unrelated text."""
    out = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if min_words <= len(sentence.split()) <= max_words:
            out.append(sentence)
    return out


@dataclass(frozen=True)
class QueryDocPair:
    """One judged query-document pair, optionally with a perturbed document shipped alongside it."""

    qid: str
    docno: str
    query: str
    text: str
    relevance: int | None = None
    perturbed_text: str | None = None


class DataFormatError(ValueError):
    """A data file that cannot be parsed; the message names the file and the line."""


# --------------------------------------------------------------------------------------------- sources


class Source(Protocol):
    """Where pairs come from. ``keys`` is cheap and complete; ``pairs`` resolves only the sampled keys,
    so sampling a few pairs from a large ``ir_datasets`` collection never reads every document."""

    def keys(self) -> Sequence[Any]: ...

    def pairs(self, keys: Sequence[Any]) -> list[QueryDocPair]: ...


_REQUIRED_COLUMNS = ("qid", "docno", "query", "text")


@dataclass
class TsvSource:
    """A tab-separated file with a header naming at least qid, docno, query and text; optional columns
    perturbed_text and relevance (an integer grade). Column order is free, extra columns are ignored."""

    path: Path
    _rows: list[QueryDocPair] | None = field(default=None, repr=False)

    def _load(self) -> list[QueryDocPair]:
        if self._rows is None:
            self._rows = read_pairs_tsv(self.path)
        return self._rows

    def keys(self) -> Sequence[int]:
        return range(len(self._load()))

    def pairs(self, keys: Sequence[int]) -> list[QueryDocPair]:
        rows = self._load()
        return [rows[k] for k in keys]


def read_pairs_tsv(path: str | Path) -> list[QueryDocPair]:
    """Parse a pair file, failing with file and line on the first malformed row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair file {path} does not exist")
    raw = path.read_bytes()
    try:
        # utf-8-sig: a byte-order mark (as spreadsheet exports write) is not part of the first column's name.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{line}: not UTF-8 (byte {raw[error.start]:#04x} at offset {error.start}); "
            "re-save the file as UTF-8"
        ) from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(f"{path}:1: empty file, expected a header row") from None
        missing = [c for c in _REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataFormatError(f"{path}:1: header lacks column(s) {missing}; found {header}")
        index = {name: i for i, name in enumerate(header)}
        rows = []
        for row in reader:
            line = reader.line_num
            if row == []:
                continue
            if len(row) != len(header):
                raise DataFormatError(f"{path}:{line}: expected {len(header)} tab-separated fields, got {len(row)}")
            get = {name: row[i] for name, i in index.items()}
            if not get["qid"] or not get["docno"]:
                raise DataFormatError(f"{path}:{line}: empty qid or docno")
            relevance = get.get("relevance")
            if relevance is not None and relevance != "":
                try:
                    relevance = int(relevance)
                except ValueError:
                    raise DataFormatError(f"{path}:{line}: relevance {relevance!r} is not an integer") from None
            else:
                relevance = None
            rows.append(
                QueryDocPair(
                    qid=get["qid"],
                    docno=get["docno"],
                    query=get["query"],
                    text=get["text"],
                    relevance=relevance,
                    perturbed_text=get.get("perturbed_text") or None,
                )
            )
    if not rows:
        raise DataFormatError(f"{path}: no data rows after the header")
    return rows


class IrDatasetsSource:
    """Judged pairs of an ``ir_datasets`` collection: its qrels joined with its queries and docs."""

    def __init__(self, dataset_id: str) -> None:
        import ir_datasets

        try:
            self.dataset = ir_datasets.load(dataset_id)
        except KeyError:
            raise ValueError(
                f"unknown source {dataset_id!r}: not an ir_datasets id and not one of the sources shipped "
                f"with irmechtest {registered_sources()} (nor an existing .tsv file)"
            ) from None
        for part in ("docs", "queries", "qrels"):
            if not getattr(self.dataset, f"has_{part}")():
                raise ValueError(f"ir_datasets id {dataset_id!r} has no {part}; judged pairs need all three")
        self.dataset_id = dataset_id
        self._queries: dict[str, str] | None = None

    def _fetch(self, what: str, thunk: Callable[[], Any]) -> Any:
        try:
            return thunk()
        except Exception as error:  # ir_datasets raises many kinds when files are missing offline
            raise RuntimeError(
                f"ir_datasets could not provide the {what} of {self.dataset_id!r} ({type(error).__name__}: "
                f"{error}); it needs its files downloaded beforehand, this machine may be offline"
            ) from error

    def keys(self) -> Sequence[tuple[str, str, int]]:
        qrels = self._fetch("qrels", lambda: list(self.dataset.qrels_iter()))
        return sorted({(q.query_id, q.doc_id, int(q.relevance)) for q in qrels})

    def pairs(self, keys: Sequence[tuple[str, str, int]]) -> list[QueryDocPair]:
        if self._queries is None:
            self._queries = self._fetch("queries", lambda: {q.query_id: q.text for q in self.dataset.queries_iter()})
        store = self._fetch("docs store", self.dataset.docs_store)
        docs = self._fetch("documents", lambda: store.get_many({docno for _, docno, _ in keys}))
        out = []
        for qid, docno, relevance in keys:
            if qid not in self._queries or docno not in docs:
                continue  # a judgment whose query or document the collection lacks cannot be a pair
            out.append(QueryDocPair(qid, docno, self._queries[qid], docs[docno].text, relevance))
        return out


_SOURCES: dict[str, Callable[[], Source]] = {}


def register_source(name: str, factory: Callable[[], Source], *, replace: bool = False) -> None:
    """Make ``load_pairs(name)`` serve pairs from ``factory()``; names should use a prefix of their own."""
    if name in _SOURCES and not replace:
        raise ValueError(f"source {name!r} is already registered")
    _SOURCES[name] = factory


def registered_sources() -> list[str]:
    return sorted(_SOURCES)


def _resolve(source: str) -> Source:
    if source in _SOURCES:
        return _SOURCES[source]()
    if source.startswith(SHIPPED_PREFIX):
        raise ValueError(f"unknown irmechtest source {source!r}; registered: {registered_sources()}")
    if source.endswith(".tsv") and Path(source).exists():
        return TsvSource(Path(source))
    return IrDatasetsSource(source)


def sample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of a deterministic sample without replacement, in their original order."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    return sorted(random.Random(seed).sample(range(n), limit))


def load_pairs(source: str = DEFAULT_SOURCE, *, limit: int | None = None, seed: int = 0) -> list[QueryDocPair]:
    """Judged query-document pairs from a registered source, a local ``.tsv`` or an ``ir_datasets`` id.

    ``limit`` draws that many pairs without replacement, the same ones for the same seed.
    """
    src = _resolve(source)
    keys = src.keys()
    return src.pairs([keys[i] for i in sample_indices(len(keys), limit, seed)])


register_source(DEFAULT_SOURCE, lambda: TsvSource(RESOURCES / "trec-dl-tfc1-sample.tsv"))


# --------------------------------------------------------------------------------------------- Vaswani


@dataclass(frozen=True)
class Collection:
    """A small test collection held in memory."""

    name: str
    documents: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def shared_data_dir() -> Path:
    """``$IRMECHTEST_SHARED_DATA``, else ``../shared/data`` beside the repository checkout."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


_TREC_DOC = re.compile(r"<DOC>\s*<DOCNO>\s*(.*?)\s*</DOCNO>(.*?)</DOC>", re.S)
_TREC_TOP = re.compile(r"<top>\s*<num>\s*(.*?)\s*</num>\s*<title>(.*?)</title>\s*</top>", re.S)


def load_vaswani(root: str | Path | None = None) -> Collection:
    """The Vaswani (NPL) collection in TREC format: ``doc-text.trec``, ``query-text.trec``, ``qrels``."""
    root = Path(root) if root is not None else shared_data_dir() / "vaswani"
    paths = {name: root / name for name in ("doc-text.trec", "query-text.trec", "qrels")}
    absent = [str(p) for p in paths.values() if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"Vaswani collection not found, missing {absent} (set ${SHARED_DATA_ENV})")
    documents = {m[1]: " ".join(m[2].split()) for m in _TREC_DOC.finditer(paths["doc-text.trec"].read_text())}
    queries = {m[1]: " ".join(m[2].split()).lower() for m in _TREC_TOP.finditer(paths["query-text.trec"].read_text())}
    if not documents or not queries:
        raise DataFormatError(f"{root}: no <DOC> or <top> records found")
    qrels: dict[str, dict[str, int]] = {}
    for line_no, line in enumerate(paths["qrels"].read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or not parts[3].lstrip("-").isdigit():
            raise DataFormatError(f"{paths['qrels']}:{line_no}: expected 'qid iter docno grade', got {line!r}")
        qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return Collection("vaswani", documents, queries, qrels)


@dataclass
class CollectionSource:
    """Judged pairs of an in-memory collection (qrels joined with queries and documents)."""

    collection: Collection

    def keys(self) -> Sequence[tuple[str, str, int]]:
        c = self.collection
        return sorted(
            (qid, docno, grade)
            for qid, judged in c.qrels.items()
            for docno, grade in judged.items()
            if qid in c.queries and docno in c.documents
        )

    def pairs(self, keys: Sequence[tuple[str, str, int]]) -> list[QueryDocPair]:
        c = self.collection
        return [QueryDocPair(q, d, c.queries[q], c.documents[d], g) for q, d, g in keys]


register_source("irmechtest:vaswani", lambda: CollectionSource(load_vaswani()))


# ------------------------------------------------------------------------------------------------ IDF


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


def idf_vector(tokenizer: Any, source: str | Path | Mapping[str, float] = DEFAULT_IDF) -> np.ndarray:
    """IDF indexed by token id of ``tokenizer``'s vocabulary; NaN where the table lacks the token.

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
    out = np.full(max(vocab.values()) + 1, np.nan)
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


# ----------------------------------------------------------------------------------- STMC1 neighbours


def embedding_neighbours(
    tokenizer: Any, embeddings: np.ndarray, terms: Iterable[str], *, top_k: int = 1
) -> dict[str, list[str]]:
    """Nearest whole-word tokens by cosine in a model's input-embedding matrix, for STMC1.

    Candidates are alphabetic tokens that tokenize back to themselves as one word (no subword pieces,
    no special tokens, in any vocabulary). A neighbour is never the term itself nor a word sharing its
    stem (see ``_same_stem``), since that would be an exact match in disguise, not a semantic one.
    Terms that are not one whole-word token get no entry.
    """
    vocab = tokenizer.get_vocab()
    if embeddings.shape[0] < max(vocab.values()) + 1:
        raise ValueError(f"embedding matrix has {embeddings.shape[0]} rows, vocabulary needs {max(vocab.values()) + 1}")
    whole = _whole_word_tokens(tokenizer)
    ids = np.array(sorted(whole.values()))
    names = {i: w for w, i in whole.items()}
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    candidates = unit[ids]
    out: dict[str, list[str]] = {}
    for term in dict.fromkeys(t.lower() for t in terms):
        if term not in whole:
            continue
        sims = candidates @ unit[whole[term]]
        found: list[str] = []
        for j in np.argsort(-sims, kind="stable"):
            word = names[int(ids[j])]
            if _same_stem(word, term):
                continue
            found.append(word)
            if len(found) == top_k:
                break
        out[term] = found
    return out


def _same_stem(a: str, b: str) -> bool:
    """Crude inflection test: the words agree on all but at most two letters of the shorter one
    (cat/cats, anthropology/anthropological), and on at least three letters."""
    common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return common >= min(len(a), len(b)) - 2 and common >= min(3, len(a), len(b))


def _whole_word_tokens(tokenizer: Any) -> dict[str, int]:
    """Alphabetic words that the tokenizer encodes as exactly one token, mapped to that token's id."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids)
    id_to_token = {i: t for t, i in vocab.items() if i not in special}
    ids = sorted(id_to_token)
    texts = [tokenizer.convert_tokens_to_string([id_to_token[i]]).strip() for i in ids]
    keep = [(i, s.lower()) for i, s in zip(ids, texts, strict=True) if s.isalpha()]
    encoded = tokenizer([" " + s for _, s in keep], add_special_tokens=False)["input_ids"]
    out: dict[str, int] = {}
    for (i, s), enc in zip(keep, encoded, strict=True):
        if enc == [i]:
            out.setdefault(s, i)
    return out
