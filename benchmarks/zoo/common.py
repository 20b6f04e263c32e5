"""What the zoo's scripts share: where things live, the TREC DL judged pairs, the zoo's train/test split,
query-term masking and nDCG@10. Nothing here goes through irmechtest's detectors or verdicts."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ZOO_DIR = Path(os.environ.get("IRMECHTEST_ZOO", REPO.parent / "shared" / "models"))
EXTRA_DIR = Path(os.environ.get("IRMECHTEST_ZOO_EXTRA", REPO.parent / "zoo-extra"))
DATA_DIR = Path(os.environ.get("IRMECHTEST_SHARED_DATA", REPO.parent / "shared" / "data"))
TREC_FILE = "trec-dl-perturbed/crystina-z-monoELECTRA_LCE_nneg31_cross_TFC1_topk_4000.tsv"
NORMAL = "ce-minilm-trecdl-s1"
MASKED = "ce-minilm-qmasked-s1"
ABLATED = "ce-minilm-trecdl-s1-nomatch"
WORD = re.compile(r"\w+")
if EXTRA_DIR.resolve().is_relative_to(REPO.resolve()):
    raise SystemExit(f"$IRMECHTEST_ZOO_EXTRA ({EXTRA_DIR}) is inside the repository: keep model weights out of git")


def load_trec() -> dict[str, dict]:
    """qid -> {"query": text, "passages": [(docno, text, relevance)]} from the judged TREC DL pairs."""
    queries: dict[str, dict] = {}
    with open(DATA_DIR / TREC_FILE, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            q = queries.setdefault(row["qid"], {"query": row["query"], "passages": []})
            q["passages"].append((row["docno"], row["text"], int(row["relevance"])))
    return queries


def zoo_split() -> dict[str, list[str]]:
    """The normal zoo model's train / test qids (its metrics.json), so every model is judged on the same queries."""
    return json.loads((ZOO_DIR / NORMAL / "metrics.json").read_text())["split"]


def mask_query_terms(query: str, passage: str, tokenizer) -> tuple[str, int]:
    """The passage without every word that shares a WordPiece token with the query (so no query token is left in
    it, sub-words included), and how many words were removed. Words are deleted rather than replaced by [MASK],
    so that a count of placeholders cannot stand in for the count of matches."""
    query_tokens = set(tokenizer.tokenize(query))
    removed = 0

    def drop(match: re.Match) -> str:
        nonlocal removed
        if query_tokens.intersection(tokenizer.tokenize(match.group())):
            removed += 1
            return ""
        return match.group()

    return " ".join(WORD.sub(drop, passage).split()), removed


def ndcg_at_10(scores, rels, tiebreak) -> float | None:
    """trec_eval-style nDCG@10 (gain = relevance, log2 discount, ideal over the judged list); ties broken by
    ``tiebreak`` (docno); None when the list has no relevant passage. Same definition as the zoo's training script."""
    ideal = sorted(rels, reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg == 0:
        return None
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], tiebreak[i]))[:10]
    return sum(rels[i] / math.log2(r + 2) for r, i in enumerate(ranked)) / idcg


@torch.no_grad()
def score_pairs(model, tokenizer, pairs: list[tuple[str, str]], max_length: int = 192, batch: int = 32) -> np.ndarray:
    """Logit of a Hugging Face sequence classifier for each (query, passage), passages cut to ``max_length``."""
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][1]))
    out = np.zeros(len(pairs))
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        enc = tokenizer(
            [pairs[i][0] for i in idx],
            [pairs[i][1] for i in idx],
            truncation="only_second",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        out[idx] = model(**enc).logits[:, 0].float().numpy()
    return out


def test_ndcg(score_fn, trec: dict[str, dict], qids: list[str]) -> dict:
    """Mean nDCG@10 over ``qids``, re-ranking each query's judged passages with ``score_fn(pairs) -> scores``."""
    pairs = [(trec[q]["query"], text) for q in qids for _, text, _ in trec[q]["passages"]]
    scores = score_fn(pairs)
    per_query, pos = {}, 0
    for q in qids:
        passages = trec[q]["passages"]
        s = scores[pos : pos + len(passages)]
        pos += len(passages)
        v = ndcg_at_10(list(s), [r for _, _, r in passages], [int(d) for d, _, _ in passages])
        if v is not None:
            per_query[q] = v
    return {"ndcg@10": float(np.mean(list(per_query.values()))), "n_queries": len(per_query), "per_query": per_query}


@dataclass(frozen=True)
class ZooModel:
    """A model of the validation study: a short name, its irmechtest spec, the vocabulary its sample is drawn in
    (``bert``: TREC DL text; ``planted``: the planted model's word list) and what it is."""

    name: str
    spec: str
    vocabulary: str
    about: str

    @property
    def folder(self) -> Path | None:
        """The checkpoint folder behind the spec (a random-like twin's: the checkpoint it copies the shape of)."""
        path = self.spec.removeprefix("irmechtest:random-like:")
        return Path(path) if path.startswith("/") else None

    def available(self) -> bool:
        return self.folder is None or (self.folder / "config.json").exists()


RANDOM_LIKE = "irmechtest:random-like:"
MODELS = [
    ZooModel("zoo-normal", str(ZOO_DIR / NORMAL), "bert", "real re-ranker fine-tuned on TREC DL (shared zoo)"),
    ZooModel("zoo-shuffled", str(ZOO_DIR / "ce-minilm-shuffled-s1"), "bert", "negative control: queries swapped"),
    ZooModel("zoo-qmasked", str(EXTRA_DIR / MASKED), "bert", "trained with query terms removed from passages"),
    ZooModel("zoo-nomatch", str(EXTRA_DIR / ABLATED), "bert", "zoo-normal with its exact-match heads mean-ablated"),
    ZooModel("random-like", RANDOM_LIKE + str(ZOO_DIR / NORMAL), "bert", "zoo-normal's shape, random weights"),
    ZooModel("planted", "irmechtest:planted-bm25", "planted", "planted BM25-like circuit (known answer)"),
    ZooModel("planted-random", "irmechtest:planted-bm25-random", "planted", "the planted model's random twin"),
    ZooModel("minilm", "minilm", "bert", "all-MiniLM-L6-v2 bi-encoder (embedded)"),
]


def recorded_ndcg(folder: Path) -> float | None:
    """nDCG@10 on the test queries as the folder's metrics.json records it (the shared zoo's or ours)."""
    path = folder / "metrics.json"
    if not path.exists():
        return None
    evaluation = json.loads(path.read_text()).get("evaluation", {})
    if "metrics" in evaluation:
        return evaluation["metrics"]["trained_cross_encoder"]["ndcg@10"]
    return evaluation.get("original_passages", {}).get("ndcg@10")


def model_ndcg(model: ZooModel, ranker) -> dict:
    """nDCG@10 on the zoo's test queries: recorded by the model's own metrics.json, else computed here (passages
    up to the model's maximum length; the zoo's scripts cut at 192 tokens, which changes 8 of 1,231 pairs)."""
    if model.vocabulary != "bert":
        return {"ndcg@10": None, "why": "TREC DL text is out of this model's vocabulary"}
    if model.folder is not None and not model.spec.startswith(RANDOM_LIKE):
        value = recorded_ndcg(model.folder)
        if value is not None:
            return {"ndcg@10": value, "source": str(model.folder / "metrics.json")}
    if model.spec == "minilm":
        metrics = json.loads((ZOO_DIR / NORMAL / "metrics.json").read_text())["evaluation"]["metrics"]
        return {"ndcg@10": metrics["biencoder_cosine"]["ndcg@10"], "source": f"{NORMAL}/metrics.json, biencoder_cosine"}
    trec = load_trec()

    def score(pairs):
        return ranker.score([q for q, _ in pairs], [p for _, p in pairs], overflow="truncate")

    result = test_ndcg(score, trec, zoo_split()["test_qids"])
    return {"ndcg@10": result["ndcg@10"], "n_queries": result["n_queries"], "source": "computed by evidence.py"}
