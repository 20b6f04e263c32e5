"""Text sources and IDF: the shipped sample (offline), local files, ir_datasets ids, Vaswani, IDF tables."""

from __future__ import annotations

import json
import math
import socket
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from irmechtest.data.catalogue import query_terms
from irmechtest.data.pairs import build_pairs
from irmechtest.data.sources import (
    DEFAULT_SOURCE,
    MIN_IDF_COVERAGE,
    DataFormatError,
    QueryDocPair,
    bm25_idf,
    corpus_idf,
    embedding_neighbours,
    idf_vector,
    load_idf,
    load_pairs,
    load_vaswani,
    registered_sources,
    resolve_idf_source,
    sample_indices,
    shared_data_dir,
    split_sentences,
    vocabulary_coverage,
    word_idf,
    words,
)

HEADER = "qid\tdocno\tquery\ttext\tperturbed_text\trelevance\n"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
def test_shipped_sample_loads_offline() -> None:
    pairs = load_pairs()
    assert len(pairs) == 400
    assert Counter(p.relevance for p in pairs) == {0: 100, 1: 100, 2: 100, 3: 100}
    assert len({p.qid for p in pairs}) == 77
    first = pairs[0]
    assert isinstance(first, QueryDocPair) and first.qid == "19335" and first.docno == "8412682"
    assert first.query == "anthropological definition of environment"
    assert all(p.perturbed_text and p.perturbed_text.startswith(p.text) for p in pairs)
    assert DEFAULT_SOURCE in registered_sources()


def test_sampling_is_deterministic() -> None:
    a = load_pairs(limit=25, seed=3)
    assert a == load_pairs(limit=25, seed=3)
    assert a != load_pairs(limit=25, seed=4)
    assert len(a) == 25 and len(set(a)) == 25
    everything = load_pairs()
    assert [everything.index(p) for p in a] == sorted(everything.index(p) for p in a)  # original order kept
    assert load_pairs(limit=10_000) == everything
    assert load_pairs(limit=0) == []
    with pytest.raises(ValueError, match="non-negative"):
        sample_indices(10, -1, 0)


def test_unknown_sources_name_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match="trec-dl-tfc1-sample") as error:
        load_pairs("no-such-collection/at-all")
    assert "ir_datasets" in str(error.value)
    with pytest.raises(ValueError, match="registered"):
        load_pairs("irmechtest:no-such-sample")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_local_tsv_goes_through_the_same_loader(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pairs.tsv",
        "relevance\tquery\tqid\tdocno\ttext\n2\tcats\tq1\td1\tcats purr\n\tdogs\tq2\td2\tdogs bark\n",
    )
    pairs = load_pairs(str(path))
    assert pairs == [QueryDocPair("q1", "d1", "cats", "cats purr", 2), QueryDocPair("q2", "d2", "dogs", "dogs bark")]
    assert load_pairs(str(path), limit=1, seed=0) == load_pairs(str(path), limit=1, seed=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"bad\.tsv:1: empty file"),
        ("qid\tdocno\ttext\n", r"bad\.tsv:1: header lacks column\(s\) \['query'\]"),
        (HEADER + "q1\td1\tcats\tcats purr\tcats purr cats\n", r"bad\.tsv:2: expected 6 tab-separated fields, got 5"),
        (HEADER + "q1\td1\tcats\tok\tok cats\t1\nq2\td2\tdogs\tok\tok\tthree\n", r"bad\.tsv:3: relevance 'three'"),
        (HEADER + "\td1\tcats\tok\tok\t1\n", r"bad\.tsv:2: empty qid or docno"),
        (HEADER, r"bad\.tsv: no data rows"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataFormatError, match=message):
        load_pairs(str(path))


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    """Issue 14 case 10: a BOM-prefixed TSV (spreadsheet export) made the header lack 'qid'."""
    path = tmp_path / "bom.tsv"
    path.write_bytes(("\ufeff" + HEADER + "q1\td1\tcats\tcats purr\t\t1\n").encode("utf-8"))
    assert load_pairs(str(path)) == [QueryDocPair("q1", "d1", "cats", "cats purr", 1)]


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    """Issue 14 case 10: a Latin-1 TSV raised a raw UnicodeDecodeError."""
    path = tmp_path / "latin1.tsv"
    path.write_bytes((HEADER + "q1\td1\tcafé\tcafé au lait\t\t1\n").encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.tsv:2: not UTF-8 \(byte 0xe9 at offset \d+\); re-save"):
        load_pairs(str(path))


def register_local_ir_dataset(tmp_path: Path, *, with_docs: bool = True) -> str:
    """An ir_datasets dataset backed by local files, so the ir_datasets code path runs offline."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    docs = write(tmp_path / "docs.tsv", "d1\tcats purr softly\nd2\tdogs bark loudly\nd3\tbirds sing\n")
    queries = write(tmp_path / "queries.tsv", "1\tcat sounds\n2\tdog sounds\n")
    qrels = write(tmp_path / "qrels.txt", "1 0 d1 2\n1 0 d3 0\n2 0 d2 1\n2 0 d9 1\n")
    name = f"irmechtest-test/{uuid.uuid4().hex}"
    doc_path = docs if with_docs else tmp_path / "absent.tsv"
    ir_datasets.registry.register(
        name,
        Dataset(
            TsvDocs(LocalDownload(doc_path), namespace=name),
            TsvQueries(LocalDownload(queries), namespace=name),
            TrecQrels(LocalDownload(qrels), {0: "no", 1: "yes", 2: "very"}),
        ),
    )
    return name


def test_ir_datasets_ids_load_judged_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "home"))
    name = register_local_ir_dataset(tmp_path)
    pairs = load_pairs(name)
    # d9 is judged but absent from the collection: it cannot be a pair
    assert pairs == [
        QueryDocPair("1", "d1", "cat sounds", "cats purr softly", 2),
        QueryDocPair("1", "d3", "cat sounds", "birds sing", 0),
        QueryDocPair("2", "d2", "dog sounds", "dogs bark loudly", 1),
    ]
    assert load_pairs(name, limit=2, seed=5) == load_pairs(name, limit=2, seed=5)


def test_ir_datasets_missing_files_give_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "home"))
    name = register_local_ir_dataset(tmp_path, with_docs=False)
    with pytest.raises(RuntimeError, match=r"could not provide the (docs store|documents)"):
        load_pairs(name)


def test_shipped_idf_table() -> None:
    table = load_idf()
    # 30,522 tokens, less the special and unscored ones the file marks with a placeholder 1.0
    assert len(table) == 28992 and "[PAD]" not in table and "[unused0]" not in table
    assert table["the"] < 1.0 < 8.0 < table["anthropological"]


def test_idf_from_json_path_and_errors(tmp_path: Path) -> None:
    assert load_idf(write(tmp_path / "idf.json", json.dumps({"cat": 2.5, "dog": 1}))) == {"cat": 2.5, "dog": 1.0}
    assert load_idf({"x": 1}) == {"x": 1.0}
    with pytest.raises(DataFormatError, match=r"broken\.json:1"):
        load_idf(write(tmp_path / "broken.json", '{"cat": '))
    with pytest.raises(DataFormatError, match="mapping terms to numbers"):
        load_idf(write(tmp_path / "list.json", "[1, 2]"))
    with pytest.raises(FileNotFoundError, match="msmarco-wordpiece"):
        load_idf(tmp_path / "absent.json")


def test_idf_vector_is_indexed_by_token_id(tokenizer) -> None:
    vector = idf_vector(tokenizer)
    assert vector.shape == (len(tokenizer),) and np.isnan(vector).sum() == len(tokenizer) - 28992
    assert np.isnan(vector[tokenizer.pad_token_id])
    cat = tokenizer.convert_tokens_to_ids("cat")
    assert vector[cat] == load_idf()["cat"]
    partial = idf_vector(tokenizer, {"cat": 3.0})
    assert partial[cat] == 3.0 and np.isnan(partial).sum() == len(tokenizer) - 1


def test_corpus_idf_word_and_wordpiece_levels(tokenizer) -> None:
    docs = ["The cat sat.", "the dog sat", "a cat and a cat"]
    idf = corpus_idf(docs)
    assert idf["cat"] == pytest.approx(math.log(1 + (3 - 2 + 0.5) / (2 + 0.5)))
    assert idf["dog"] == pytest.approx(bm25_idf(1, 3)) and idf["dog"] > idf["cat"] > idf["sat"] - 1
    pieces = corpus_idf(["anthropological studies", "studies"], tokenizer, batch_size=1)
    assert set(pieces) == set(tokenizer.tokenize("anthropological studies"))
    assert pieces["studies"] == pytest.approx(bm25_idf(2, 2))
    with pytest.raises(ValueError, match="at least one"):
        corpus_idf([])


def test_word_idf_lookup(tokenizer) -> None:
    table = load_idf()
    lookup = word_idf(table, tokenizer)
    assert lookup("cat") == table["cat"]
    pieces = tokenizer.tokenize("anthropologically")
    assert len(pieces) > 1 and lookup("anthropologically") == max(table[p] for p in pieces)
    assert word_idf({"cat": 2.0})("Cat") == 2.0 and word_idf({"cat": 2.0})("dog") is None
    assert word_idf({"cat": 2.0}, tokenizer)("dog") is None


def test_split_sentences() -> None:
    text = "One two three four. Short one. Five six seven eight nine!  Ten eleven twelve thirteen?"
    assert split_sentences(text) == ["One two three four.", "Five six seven eight nine!", "Ten eleven twelve thirteen?"]


def test_embedding_neighbours_on_a_planted_matrix(tokenizer) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(tokenizer), 16))
    ids = tokenizer.convert_tokens_to_ids
    matrix[ids("kitten")] = matrix[ids("cat")] + 0.01
    matrix[ids("cats")] = matrix[ids("cat")]  # an inflection: never a semantic neighbour
    matrix[ids("##cat")] = matrix[ids("cat")]  # a subword piece: never a candidate
    found = embedding_neighbours(tokenizer, matrix, ["cat", "Cat", "anthropologically"], top_k=1)
    assert found == {"cat": ["kitten"]}
    with pytest.raises(ValueError, match="rows"):
        embedding_neighbours(tokenizer, matrix[:100], ["cat"])


def test_embedding_neighbours_of_the_embedded_model(minilm) -> None:
    matrix = minilm.W_E.detach().cpu().numpy()
    found = embedding_neighbours(minilm.tokenizer, matrix, ["car", "doctor"], top_k=2)
    assert found["car"][0] in {"vehicle", "automobile"} and "cars" not in found["car"]
    assert "physician" in found["doctor"]


def vaswani_or_skip():
    try:
        return load_vaswani()
    except FileNotFoundError as error:
        pytest.skip(f"Vaswani collection not available: {error}")


def test_vaswani_collection() -> None:
    collection = vaswani_or_skip()
    assert (len(collection.documents), len(collection.queries)) == (11429, 93)
    assert sum(len(j) for j in collection.qrels.values()) == 2083
    assert collection.queries["1"].startswith("measurement of dielectric constant")
    pairs = load_pairs("irmechtest:vaswani", limit=50, seed=0)
    assert len(pairs) == 50 and all(p.relevance == 1 for p in pairs)
    idf = corpus_idf(collection.documents.values())
    assert idf["of"] < idf["computer"] < idf["dielectric"]


def test_vaswani_sentences_as_unrelated_text(tokenizer) -> None:
    """LNC1 can append Vaswani's physics abstracts to TREC DL passages: text unrelated to web queries."""
    collection = vaswani_or_skip()
    sentences = [s for doc in list(collection.documents.values())[:300] for s in split_sentences(doc)]
    result = build_pairs(tokenizer, "LNC1", load_pairs(limit=30, seed=2), unrelated=sentences)
    assert len(result.cases) >= 25
    for case in result.cases:
        appended = " ".join(case.steps[0].perturbed_words)
        assert appended in sentences and not set(words(appended)) & {t.lower() for t in query_terms(case.query)}


def test_vaswani_absent_or_malformed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="Vaswani collection not found"):
        load_vaswani(tmp_path)
    write(tmp_path / "doc-text.trec", "<DOC>\n<DOCNO>1</DOCNO>\ntext\n</DOC>\n")
    write(tmp_path / "query-text.trec", "<top>\n<num>1</num><title>\nQ\n</title>\n</top>\n")
    write(tmp_path / "qrels", "1 0 1 1\n1 0 2\n")
    with pytest.raises(DataFormatError, match=r"qrels:2"):
        load_vaswani(tmp_path)
    monkeypatch.setenv("IRMECHTEST_SHARED_DATA", str(tmp_path / "nowhere"))
    assert shared_data_dir() == tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError):
        load_pairs("irmechtest:vaswani")


def test_the_shipped_wordpiece_idf_is_never_applied_to_another_vocabulary(tokenizer) -> None:
    """A BPE vocabulary (trained here on the shipped passages) gets IDF from a corpus in its own tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = [p.text for p in load_pairs()]
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>"]))
    bpe = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert vocabulary_coverage(load_idf(), bpe) < MIN_IDF_COVERAGE < 0.9 < vocabulary_coverage(load_idf(), tokenizer)
    assert resolve_idf_source(bpe) == "corpus:irmechtest:trec-dl-tfc1-sample"
    assert resolve_idf_source(tokenizer) == "msmarco-wordpiece"  # the vocabulary the table was built on
    vector = idf_vector(bpe)
    the = bpe.convert_tokens_to_ids("the")
    documents = set(texts)
    df = sum("the" in bpe.convert_ids_to_tokens(bpe(d, add_special_tokens=False)["input_ids"]) for d in documents)
    assert vector[the] == pytest.approx(bm25_idf(df, len(documents)))
    assert vector[the] < np.nanmedian(vector), "a common token must get a lower IDF than most"
