"""STMC1 neighbours: for each query term, the nearest whole-word tokens in a model's own word-embedding
space (a different stem), the semantic substitutes the STMC1 minimal pairs insert.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


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
