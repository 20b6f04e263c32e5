"""The planted-circuit reference cross-encoder: a tiny BERT whose BM25-like mechanism is known by construction.

Every probe in the suite needs a model whose answer is known in advance: this one is a real
``BertForSequenceClassification`` (post-LayerNorm, fp32, eval mode) whose weights are written by code from
seeded generators, so that matching heads, a relevance-scoring head and an IDF direction exist where the
``PlantedTruth`` says they do and nowhere else. ``build_random_twin`` gives the same shape and tokenizer with
the standard random init, the negative control. See ``docs/planted.md`` for the derivation.

Residual layout (every direction orthogonal to the all-ones vector, so LayerNorm never has a mean to
remove; every token's embedding has the same norm, so LayerNorm is one known scale factor):

* ``sem`` (24): a unit "meaning" vector per word; synonyms share most of it.
* ``idf`` (1): ``f(w)``, an affine function of the word's IDF: the dominant singular direction of W_E.
* ``fill`` (40): a per-word random direction with whatever norm makes every word row equally long.
* ``seg`` (2): query / document segment (token type 0 / 1).
* ``pos`` (16): sinusoidal positions.
* ``special`` (5): one direction per special token.
* ``match`` (3): one per matching head, written at every token: its attention mass on document tokens.
* ``score`` (1): written by the scoring head; the pooler reads it at [CLS].
* ``junk`` (24): where the distractor heads and the MLPs write; nothing reads it.
* ``context`` (1): written by the query-contextualisation head; the scoring head reads it with ``match``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, PreTrainedTokenizerBase

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FILLER_WORD = "a"
"""The length-matching filler of perturbation baselines (as in MechIR): a function word of low IDF."""

# Most common first: the rank gives the Zipf document frequency, hence the IDF.
_FUNCTION_TEXT = (
    "the , . of and to a in is for that on with as it by was are at from be this or an what how ? which can not"
)
_COMMON_TEXT = (
    "people time year world day life water home house work job school city town state country family "
    "money health food car business music information power book game service number water system "
    "government company program market group part place name story church history law war art "
    "science energy heart body child kid student teacher picture image movie film price cost road "
    "street shop store doctor medicine answer start begin big large small little fast quick old new "
    "good bad happy sad sick rich buy sell travel trip"
)
_TOPIC_TEXT = (
    "computer software internet phone language court police army hospital university college library "
    "museum bank insurance tax loan credit mortgage river mountain lake island desert weather rain snow "
    "storm temperature climate animal dog cat horse bird fish plant tree flower fruit apple banana "
    "coffee tea wine beer bread cheese chicken rice sugar salt blood brain bone skin cancer diabetes "
    "vitamin protein calorie muscle pain symptom treatment surgery vaccine virus infection pregnancy "
    "sleep exercise diet weight age birth death marriage wedding divorce religion culture painting "
    "novel poem author actor singer guitar piano football baseball basketball tennis golf player team "
    "coach season president election vote senator congress constitution treaty empire kingdom queen "
    "king castle bridge tower building airport train bus flight ticket hotel beach vacation passport "
    "canada france germany japan china india brazil mexico egypt paris london tokyo quebec chicago "
    "texas california florida ocean sea forest woods stone rock error mistake rule regulation salary "
    "wage lawyer attorney baby infant smart clever boat ship journey response reply photo residence "
    "vehicle huge tiny rapid cash purchase employment highway pupil instructor illness disease "
    "sickness drug medication physician automobile wealthy intelligent glad unhappy ill tale voyage "
    "vessel cheap inexpensive"
)
_RARE_TEXT = (
    "chemistry physics biology geology astronomy planet earth moon sun star galaxy telescope atom "
    "molecule electron oxygen carbon iron gold silver copper battery engine motor fuel gasoline "
    "electricity solar nuclear volcano earthquake glacier photosynthesis chlorophyll mitochondria enzyme "
    "hormone insulin thyroid kidney liver lung tuberculosis malaria antibiotic penicillin anthropology "
    "archaeology philosophy psychology sociology economics inflation recession bankruptcy dividend "
    "cryptocurrency blockchain algorithm database encryption compiler semiconductor microscope "
    "submarine helicopter satellite asteroid comet nebula quasar fossil dinosaur mammoth glacial "
    "tsunami hurricane tornado monsoon savanna tundra rainforest coral reef dolphin whale shark octopus "
    "penguin giraffe elephant kangaroo cheetah orchid tulip cactus bamboo saffron cinnamon vanilla "
    "espresso quinoa avocado pineapple mango lentil tofu sushi croissant baguette pharaoh pyramid "
    "sphinx mummy gladiator samurai viking knight cathedral monastery synagogue mosque renaissance "
    "baroque symphony opera violin cello saxophone ballet sonnet haiku manuscript parchment"
)
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("car", "automobile", "vehicle"),
    ("doctor", "physician"),
    ("big", "large", "huge"),
    ("fast", "quick", "rapid"),
    ("house", "home", "residence"),
    ("city", "town"),
    ("buy", "purchase"),
    ("child", "kid"),
    ("begin", "start"),
    ("money", "cash"),
    ("movie", "film"),
    ("ocean", "sea"),
    ("disease", "illness", "sickness"),
    ("medicine", "medication", "drug"),
    ("price", "cost"),
    ("job", "employment"),
    ("small", "little", "tiny"),
    ("road", "street", "highway"),
    ("student", "pupil"),
    ("teacher", "instructor"),
    ("shop", "store"),
    ("error", "mistake"),
    ("rule", "regulation"),
    ("answer", "reply", "response"),
    ("picture", "photo", "image"),
    ("baby", "infant"),
    ("smart", "intelligent", "clever"),
    ("stone", "rock"),
    ("rich", "wealthy"),
    ("story", "tale"),
    ("forest", "woods"),
    ("salary", "wage"),
    ("lawyer", "attorney"),
    ("happy", "glad"),
    ("sad", "unhappy"),
    ("sick", "ill"),
    ("trip", "journey", "voyage"),
    ("boat", "ship", "vessel"),
    ("cheap", "inexpensive"),
)


def _words() -> list[str]:
    """The word list, most frequent first, without repeats (a word listed twice keeps its first rank)."""
    seen: dict[str, None] = {}
    for text in (_FUNCTION_TEXT, _COMMON_TEXT, _TOPIC_TEXT, _RARE_TEXT):
        for word in text.split():
            seen.setdefault(word, None)
    return list(seen)


WORDS: tuple[str, ...] = tuple(_words())
CONTENT_WORDS: tuple[str, ...] = tuple(w for w in WORDS if w not in _FUNCTION_TEXT.split())

# Model shape.
HIDDEN = 128
LAYERS = 3
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 256
MAX_POSITIONS = 256

_SUBSPACES = {
    "sem": 24,
    "idf": 1,
    "fill": 40,
    "seg": 2,
    "pos": 16,
    "special": 5,
    "match": 3,
    "score": 1,
    "junk": 24,
    "context": 1,
}

# Embedding magnitudes (before the embedding LayerNorm).
_SEM_NORM = 1.0
_F_LOW, _F_HIGH = 0.25, 0.9  # f(w) for the lowest and the highest IDF of the vocabulary
_WORD_NORM = math.sqrt(_SEM_NORM**2 + _F_HIGH**2)  # every word row (and every special row) has this norm
_POS_NORM = 0.8
_SEG_NORM = 1.0
_SYNONYM_SHARE = 0.95  # a synonym's meaning vector is this much its group's: cosine about 0.9
# After the embedding LayerNorm every token has norm sqrt(HIDDEN): coordinates are scaled by this.
_LN_SCALE = math.sqrt(HIDDEN) / math.sqrt(_WORD_NORM**2 + _POS_NORM**2 + _SEG_NORM**2)


@dataclass(frozen=True)
class _MatchingHead:
    layer: int
    head: int
    beta: float  # logit of an exact match (cosine 1), before the document offset
    delta: float  # logit taken off every document key: sets the saturation constant e**delta
    label: str


_MATCHING = (
    _MatchingHead(0, 1, beta=12.0, delta=2.0, label="exact"),
    _MatchingHead(0, 3, beta=9.0, delta=0.5, label="soft"),
    _MatchingHead(1, 2, beta=10.0, delta=1.0, label="mid"),
)
_SCORING = (2, 3)
_CONTEXTUALISATION = (1, 0)
_CONTEXT_IDF_SPREAD = 4.0  # its query -> query logit difference between the highest and the lowest IDF word
# Every token's logit on [CLS] (+6 net of the -10 on specials), whose match signal is empty: a sink holding
# most of the mass, so a word's attention follows its own IDF rather than its query's length.
_CONTEXT_SINK_LOGIT = 16.0
_CONTEXT_WRITE = 1.5  # norm written per unit of layer-0 match signal read from the attended query tokens
_SPECIAL_SELF_LOGIT = 30.0  # specials attend to their own kind in the matching heads
_SPECIAL_KEY_LOGIT = -10.0  # and every token avoids specials there (net +20 for a special's own kind)
_SCORING_IDF_SPREAD = 1.8  # scoring-head logit difference between the highest and the lowest IDF word
_SCORING_SINK_LOGIT = 5.5  # [CLS] -> [CLS] takes most of the mass, so the denominator varies little by query
_BLOCKED_LOGIT = 30.0  # taken off document tokens and non-[CLS] specials in the scoring head
_MATCH_WRITE = 2.0  # norm written per unit of matching-head attention mass on the document
_SCORE_VALUE, _SCORE_OUT = 4.0, 5.0  # their product is the scoring head's gain
_POOLER_GAIN = 0.12
_CLASSIFIER_WEIGHT, _CLASSIFIER_BIAS = 20.0, -4.0
_DISTRACTOR_WRITE = 0.6  # output norm bound of a distractor head (the residual has norm sqrt(128))
_MLP_WRITE = 0.4

_DISTRACTORS = {
    (0, 0): "previous-token",
    (0, 2): "same-segment",
    (1, 1): "first-token",
    (1, 3): "previous-token",
    (2, 0): "same-segment",
    (2, 1): "diffuse",
    (2, 2): "first-token",
}
_POS_FREQUENCIES = tuple(2.2 * 0.55**k for k in range(_SUBSPACES["pos"] // 2))


@dataclass
class PlantedTruth:
    """What the planted model does, by construction: the answer key every probe is checked against.

    ``idf`` and ``synonyms`` describe the vocabulary (the corpus), so the random twin keeps them; the
    mechanism fields (heads, edges, ``idf_direction``) are empty for the twin.
    """

    matching_heads: list[tuple[int, int]] = field(default_factory=list)
    scoring_heads: list[tuple[int, int]] = field(default_factory=list)
    contextualisation_heads: list[tuple[int, int]] = field(default_factory=list)
    edges: list[tuple[tuple[int, int], tuple[int, int], str]] = field(default_factory=list)
    idf: dict[str, float] = field(default_factory=dict)
    idf_direction: torch.Tensor | None = None
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    head_roles: dict[tuple[int, int], str] = field(default_factory=dict)
    content_words: list[str] = field(default_factory=list)
    filler: str = FILLER_WORD
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able copy (tuples become lists, head keys become "layer.head")."""
        data = asdict(self)
        data["idf_direction"] = None if self.idf_direction is None else self.idf_direction.tolist()
        data["head_roles"] = {f"{layer}.{head}": role for (layer, head), role in self.head_roles.items()}
        return data


@dataclass
class PlantedModel:
    model: BertForSequenceClassification
    tokenizer: PreTrainedTokenizerBase
    truth: PlantedTruth


def word_idf() -> dict[str, float]:
    """BM25 IDF of each word under a Zipf law: df(rank) = 0.5 N / rank, N = 1e6 documents."""
    n_docs = 1_000_000
    idf = {}
    for rank, word in enumerate(WORDS, start=1):
        df = 0.5 * n_docs / rank
        idf[word] = round(math.log(1 + (n_docs - df + 0.5) / (df + 0.5)), 4)
    return idf


def synonym_map() -> dict[str, list[str]]:
    """Each word of a synonym group -> the other words of its group."""
    return {w: [o for o in group if o != w] for group in SYNONYM_GROUPS for w in group}


def build_tokenizer() -> PreTrainedTokenizerBase:
    """A BERT WordPiece tokenizer over the planted words: [CLS] query [SEP] document [SEP], lowercased."""
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *WORDS))}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
    )


def planted_config() -> BertConfig:
    """The shape shared by the planted model and its twin; eager attention so patterns can be returned."""
    return BertConfig(
        vocab_size=len(SPECIAL_TOKENS) + len(WORDS),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        num_labels=1,
        pad_token_id=0,
        attn_implementation="eager",
    )


def _subspace_bases(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Orthonormal column bases, mutually orthogonal and orthogonal to all-ones, in a random rotation.

    Orthogonal to all-ones: LayerNorm's mean subtraction is then the identity on the residual. The random
    rotation keeps the weights from being axis-aligned, which no trained model is.
    """
    gaussian = torch.randn(HIDDEN, HIDDEN, generator=gen, dtype=torch.float64)
    gaussian[:, 0] = 1.0
    q, _ = torch.linalg.qr(gaussian)
    bases, start = {}, 1
    for name, size in _SUBSPACES.items():
        bases[name] = q[:, start : start + size]
        start += size
    return bases


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """A random matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    gaussian = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)
    return q if rows >= cols else q.T


def _meaning_vectors(gen: torch.Generator) -> torch.Tensor:
    """Unit meaning vectors (words x sem): a synonym is its group's concept plus a little of its own."""
    dim = _SUBSPACES["sem"]
    vectors = _unit_rows(torch.randn(len(WORDS), dim, generator=gen, dtype=torch.float64))
    index = {w: i for i, w in enumerate(WORDS)}
    own = math.sqrt(1 - _SYNONYM_SHARE**2)
    for group in SYNONYM_GROUPS:
        concept = _unit_rows(torch.randn(dim, generator=gen, dtype=torch.float64))
        for word in group:
            noise = vectors[index[word]] - (vectors[index[word]] @ concept) * concept
            vectors[index[word]] = _SYNONYM_SHARE * concept + own * _unit_rows(noise)
    return vectors


def _idf_feature(idf: dict[str, float]) -> torch.Tensor:
    """f(w): IDF mapped affinely onto [_F_LOW, _F_HIGH], in WORDS order."""
    values = torch.tensor([idf[w] for w in WORDS], dtype=torch.float64)
    low, high = values.min(), values.max()
    return _F_LOW + (_F_HIGH - _F_LOW) * (values - low) / (high - low)


def _embeddings(bases: dict[str, torch.Tensor], f: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    meaning = _meaning_vectors(gen)
    fill_dirs = _unit_rows(torch.randn(len(WORDS), _SUBSPACES["fill"], generator=gen, dtype=torch.float64))
    fill_norm = torch.sqrt(_F_HIGH**2 - f**2)
    words = (
        _SEM_NORM * meaning @ bases["sem"].T
        + f[:, None] * bases["idf"].T
        + (fill_norm[:, None] * fill_dirs) @ bases["fill"].T
    )
    specials = _WORD_NORM * bases["special"].T
    positions = torch.arange(MAX_POSITIONS, dtype=torch.float64)[:, None]
    angles = positions * torch.tensor(_POS_FREQUENCIES, dtype=torch.float64)[None, :]
    sinusoid = torch.stack([angles.cos(), angles.sin()], dim=-1).reshape(MAX_POSITIONS, -1)
    sinusoid = sinusoid * _POS_NORM / math.sqrt(len(_POS_FREQUENCIES))
    return {
        "word_embeddings.weight": torch.cat([specials, words]),
        "position_embeddings.weight": sinusoid @ bases["pos"].T,
        "token_type_embeddings.weight": _SEG_NORM * bases["seg"].T,
    }


class _Attention:
    """The q/k/v/o weights of one layer, filled one head at a time in residual coordinates."""

    def __init__(self) -> None:
        self.q = torch.zeros(HIDDEN, HIDDEN, dtype=torch.float64)
        self.k = torch.zeros_like(self.q)
        self.v = torch.zeros_like(self.q)
        self.o = torch.zeros_like(self.q)

    def head(self, h: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor) -> None:
        """Set head ``h``: q, k, v are (rows <= HEAD_DIM) x HIDDEN readers; o is HIDDEN x (rows of v)."""
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        self.q[rows][: q.shape[0]] = q
        self.k[rows][: k.shape[0]] = k
        self.v[rows][: v.shape[0]] = v
        self.o[:, rows][:, : o.shape[1]] = o


def _matching_head(att: _Attention, spec: _MatchingHead, b: dict[str, torch.Tensor], write: torch.Tensor) -> None:
    """Query token i attends to token j with logit beta * cos(meaning_i, meaning_j) - delta * [j in document].

    Its value is the document-segment indicator, so what it writes at i is its attention mass on the
    document: the soft term frequency of i's word, saturated (i's attention to itself competes, e**delta
    plays BM25's k1); an unrelated document word takes almost none. Specials attend to their own kind
    and every token avoids them, so [CLS], [SEP] and [UNK] carry no match signal and give none.
    """
    scale = HEAD_DIM**0.25
    sem = math.sqrt(spec.beta) * scale / (_LN_SCALE * _SEM_NORM) * b["sem"].T
    own_kind = math.sqrt(_SPECIAL_SELF_LOGIT) * scale / (_LN_SCALE * _WORD_NORM) * b["special"].T
    seg = math.sqrt(spec.delta) * scale / (_LN_SCALE * _SEG_NORM)
    every_token = scale / (_LN_SCALE * _SEG_NORM) * b["seg"].sum(dim=1)
    any_special = _SPECIAL_KEY_LOGIT * scale / (_LN_SCALE * _WORD_NORM) * b["special"].sum(dim=1)
    q = torch.cat([sem, own_kind, seg * b["seg"][:, :1].T, every_token[None, :]])
    k = torch.cat([sem, own_kind, -seg * b["seg"][:, 1:].T, any_special[None, :]])
    v = b["seg"][:, 1:].T / (_LN_SCALE * _SEG_NORM)
    att.head(spec.head, q, k, v, _MATCH_WRITE * write[:, None])


def _scoring_head(att: _Attention, b: dict[str, torch.Tensor], f_span: float) -> None:
    """Every token attends to query token i with logit lambda * f(w_i), against a sink on [CLS].

    Documents and the other specials are blocked, so [CLS] reads sum_i e**(lambda f_i) / Z * match_i with
    Z nearly constant: an IDF-weighted sum of the matching heads' soft term frequencies. Other positions
    read the same sum (only [CLS] reaches the classifier); a query reading [CLS] alone would leave them a
    uniform average over the whole input, whose document match values are large.
    """
    q = math.sqrt(HEAD_DIM) / (_LN_SCALE * _SEG_NORM) * b["seg"].sum(dim=1)[None, :]
    lam = _SCORING_IDF_SPREAD / (_LN_SCALE * f_span)
    blocked_specials = b["special"][:, [0, 1, 3, 4]].sum(dim=1)
    k = (
        lam * b["idf"][:, 0]
        + _SCORING_SINK_LOGIT / (_LN_SCALE * _WORD_NORM) * b["special"][:, 2]
        - _BLOCKED_LOGIT / (_LN_SCALE * _SEG_NORM) * b["seg"][:, 1]
        - _BLOCKED_LOGIT / (_LN_SCALE * _WORD_NORM) * blocked_specials
    )
    v = _SCORE_VALUE * (b["match"].sum(dim=1) + b["context"][:, 0])
    att.head(_SCORING[1], q, k[None, :], v[None, :], _SCORE_OUT * b["score"])


def _contextualisation_head(att: _Attention, b: dict[str, torch.Tensor], f_span: float) -> None:
    """Query token i attends to query token j with logit lambda_c * f(w_j) and copies j's layer-0 match signal.

    Seed 002 sec. 4.2: query tokens focus on the query's higher-IDF tokens and the soft TF found there is
    spread over the whole query (written into ``context``, which the scoring head reads beside ``match``).
    Documents are blocked as keys; a sink on [CLS] (whose match signal is empty) keeps the softmax
    denominator nearly constant, so a word's attention grows with its IDF whatever the query's length.
    Specials attend to their own kind, as in the matching heads, so [CLS] copies its own (empty) signal.
    """
    scale = HEAD_DIM**0.25
    lam = _CONTEXT_IDF_SPREAD / (_LN_SCALE * f_span)
    own_kind = math.sqrt(_SPECIAL_SELF_LOGIT) * scale / (_LN_SCALE * _WORD_NORM) * b["special"].T
    every_token = math.sqrt(HEAD_DIM) / (_LN_SCALE * _SEG_NORM) * b["seg"].sum(dim=1)
    key = (
        lam * b["idf"][:, 0]
        - _BLOCKED_LOGIT / (_LN_SCALE * _SEG_NORM) * b["seg"][:, 1]
        + _SPECIAL_KEY_LOGIT / (_LN_SCALE * _WORD_NORM) * b["special"].sum(dim=1)
        + _CONTEXT_SINK_LOGIT / (_LN_SCALE * _WORD_NORM) * b["special"][:, 2]
    )
    q = torch.cat([own_kind, every_token[None, :]])
    k = torch.cat([own_kind, key[None, :]])
    layer_0 = [i for i, m in enumerate(_MATCHING) if m.layer == 0]
    v = b["match"][:, layer_0].sum(dim=1)
    att.head(_CONTEXTUALISATION[1], q, k, v[None, :], _CONTEXT_WRITE * b["context"])


def _distractor_head(att: _Attention, h: int, role: str, b: dict[str, torch.Tensor], gen: torch.Generator) -> None:
    """A head with a plausible pattern whose output lands in ``junk``, which nothing reads."""
    scale = HEAD_DIM**0.25
    if role == "previous-token":
        rotation = torch.zeros(_SUBSPACES["pos"], _SUBSPACES["pos"], dtype=torch.float64)
        for i, w in enumerate(_POS_FREQUENCIES):
            c, s = math.cos(w), math.sin(w)
            rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, s], [-s, c]])
        amplitude = 8.0 / (_LN_SCALE * _POS_NORM) ** 2  # logit 8 on the previous position
        q = math.sqrt(amplitude) * scale * rotation @ b["pos"].T
        k = math.sqrt(amplitude) * scale * b["pos"].T
    elif role == "first-token":
        q = scale / (_LN_SCALE * _SEG_NORM) * b["seg"].sum(dim=1)[None, :]
        k = 6.0 * scale / (_LN_SCALE * _WORD_NORM) * b["special"][:, 2:3].T
    elif role == "same-segment":
        q = 2.0 * scale / (_LN_SCALE * _SEG_NORM) * b["seg"].T
        k = q.clone()
    else:  # diffuse: a weak random bilinear form on meaning and position
        readers = torch.cat([b["sem"], b["pos"]], dim=1).T
        q = 0.2 * torch.randn(HEAD_DIM, readers.shape[0], generator=gen, dtype=torch.float64) @ readers
        k = 0.2 * torch.randn(HEAD_DIM, readers.shape[0], generator=gen, dtype=torch.float64) @ readers
    v = _orthonormal(HEAD_DIM, _SUBSPACES["sem"], gen) @ b["sem"].T / (_LN_SCALE * _SEM_NORM)
    o = _DISTRACTOR_WRITE * b["junk"] @ _orthonormal(_SUBSPACES["junk"], HEAD_DIM, gen)
    att.head(h, q, k, v, o)


def _mlp(b: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A GELU MLP reading meaning and position and writing a little into ``junk``."""
    readers = torch.cat([b["sem"], b["pos"]], dim=1).T
    w_in = torch.randn(INTERMEDIATE, readers.shape[0], generator=gen, dtype=torch.float64) @ readers
    w_in = w_in / (_LN_SCALE * math.sqrt(_SEM_NORM**2 + _POS_NORM**2))
    w_out = b["junk"] @ torch.randn(_SUBSPACES["junk"], INTERMEDIATE, generator=gen, dtype=torch.float64)
    w_out = w_out * _MLP_WRITE / math.sqrt(INTERMEDIATE)
    return {
        "intermediate.dense.weight": w_in,
        "intermediate.dense.bias": torch.full((INTERMEDIATE,), -0.5, dtype=torch.float64),
        "output.dense.weight": w_out,
        "output.dense.bias": torch.zeros(HIDDEN, dtype=torch.float64),
    }


def _planted_state(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every parameter of the planted model, and the IDF direction (unit, in the residual)."""
    gen = torch.Generator().manual_seed(seed)
    b = _subspace_bases(gen)
    f = _idf_feature(word_idf())
    ones, zeros = torch.ones(HIDDEN, dtype=torch.float64), torch.zeros(HIDDEN, dtype=torch.float64)
    state = {f"bert.embeddings.{k}": v for k, v in _embeddings(b, f, gen).items()}
    state["bert.embeddings.LayerNorm.weight"], state["bert.embeddings.LayerNorm.bias"] = ones, zeros
    match_dirs = {(m.layer, m.head): b["match"][:, i] for i, m in enumerate(_MATCHING)}
    for layer in range(LAYERS):
        att = _Attention()
        for h in range(HEADS):
            if (layer, h) in match_dirs:
                spec = next(m for m in _MATCHING if (m.layer, m.head) == (layer, h))
                _matching_head(att, spec, b, match_dirs[(layer, h)])
            elif (layer, h) == _SCORING:
                _scoring_head(att, b, _F_HIGH - _F_LOW)
            elif (layer, h) == _CONTEXTUALISATION:
                _contextualisation_head(att, b, _F_HIGH - _F_LOW)
            else:
                _distractor_head(att, h, _DISTRACTORS[(layer, h)], b, gen)
        prefix = f"bert.encoder.layer.{layer}."
        for name, weight in (("self.query", att.q), ("self.key", att.k), ("self.value", att.v)):
            state[f"{prefix}attention.{name}.weight"] = weight
            state[f"{prefix}attention.{name}.bias"] = zeros
        state[f"{prefix}attention.output.dense.weight"] = att.o
        state[f"{prefix}attention.output.dense.bias"] = zeros
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[f"{prefix}{ln}.weight"], state[f"{prefix}{ln}.bias"] = ones, zeros
        state.update({prefix + k: v for k, v in _mlp(b, gen).items()})
    pooler = 0.02 * torch.randn(HIDDEN, HIDDEN, generator=gen, dtype=torch.float64)
    pooler[0] = _POOLER_GAIN * b["score"][:, 0]
    state["bert.pooler.dense.weight"], state["bert.pooler.dense.bias"] = pooler, zeros
    classifier = torch.zeros(1, HIDDEN, dtype=torch.float64)
    classifier[0, 0] = _CLASSIFIER_WEIGHT
    state["classifier.weight"] = classifier
    state["classifier.bias"] = torch.tensor([_CLASSIFIER_BIAS], dtype=torch.float64)
    return state, b["idf"][:, 0].clone()


def _new_model(config: BertConfig, seed: int) -> BertForSequenceClassification:
    """HF's standard random init under a fixed seed, leaving the caller's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForSequenceClassification(config)


_DESCRIPTION = (
    "Planted BM25-like cross-encoder (3 layers x 4 heads, hidden 128). Matching heads {matching} attend "
    "from each token to tokens of similar meaning (logit ~ cosine of the words' meaning vectors, minus an "
    "offset on document keys) and write their attention mass on the document (a saturated soft term "
    "frequency) into a match direction of the residual. Query-contextualisation head {context} makes every "
    "query token attend to the query's higher-IDF tokens and copies the layer-0 matching heads' signal found "
    "there into a context direction. Scoring head {scoring} attends from [CLS] to query tokens with logit "
    "proportional to the IDF feature f(w) (the dominant singular direction of W_E, against a sink on [CLS]) "
    "and reads the match and context directions, so [CLS] holds sum_i e^(lambda f_i) * (MS_i + C_i); the "
    "pooler and classifier read that one direction. Other heads are distractors writing into a subspace "
    "nothing reads. Edges: each matching head and the contextualisation head -> the scoring head's values; "
    "each layer-0 matching head -> the contextualisation head's values."
)


def build_planted_model(seed: int = 0) -> PlantedModel:
    """The planted model: ``seed`` changes the rotation and random parts, never the mechanism or the truth."""
    config = planted_config()
    model = _new_model(config, seed)
    state, idf_direction = _planted_state(seed)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.eval()
    matching = [(m.layer, m.head) for m in _MATCHING]
    roles = {(m.layer, m.head): f"matching ({m.label})" for m in _MATCHING}
    roles[_SCORING] = "relevance scoring"
    roles[_CONTEXTUALISATION] = "query contextualisation"
    roles.update({head: f"distractor ({role})" for head, role in _DISTRACTORS.items()})
    truth = PlantedTruth(
        matching_heads=matching,
        scoring_heads=[_SCORING],
        contextualisation_heads=[_CONTEXTUALISATION],
        edges=[
            *((head, _SCORING, "v") for head in [*matching, _CONTEXTUALISATION]),
            *((head, _CONTEXTUALISATION, "v") for head in matching if head[0] < _CONTEXTUALISATION[0]),
        ],
        idf=word_idf(),
        idf_direction=idf_direction.to(torch.float32),
        synonyms=synonym_map(),
        head_roles=dict(sorted(roles.items())),
        content_words=list(CONTENT_WORDS),
        description=_DESCRIPTION.format(
            matching=", ".join("{}.{}".format(*head) for head in matching),
            scoring="{}.{}".format(*_SCORING),
            context="{}.{}".format(*_CONTEXTUALISATION),
        ),
    )
    return PlantedModel(model=model, tokenizer=build_tokenizer(), truth=truth)


def build_random_twin(seed: int = 0) -> PlantedModel:
    """Same config and tokenizer, HF's random init: the negative control (no mechanism, empty truth)."""
    model = _new_model(planted_config(), seed)
    model.eval()
    truth = PlantedTruth(
        idf=word_idf(),
        synonyms=synonym_map(),
        content_words=list(CONTENT_WORDS),
        description="Random-init twin of the planted BM25-like cross-encoder: same shape, no mechanism.",
    )
    return PlantedModel(model=model, tokenizer=build_tokenizer(), truth=truth)


def sample_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Query-document pairs in the planted vocabulary, so probes on the planted model see no [UNK].

    A query has 1-4 content words of distinct meaning; a document has 5-15 other content words, the
    filler here and there, and in about two pairs of three 1-3 occurrences of query words or synonyms.
    """
    rng = random.Random(seed)
    synonyms = synonym_map()
    pairs = []
    while len(pairs) < n:
        query = rng.sample(CONTENT_WORDS, rng.randint(1, 4))
        related = {w for q in query for w in (q, *synonyms.get(q, []))}
        if len(related) < sum(1 + len(synonyms.get(q, [])) for q in query):
            continue  # two query words of the same meaning
        others = [w for w in rng.sample(CONTENT_WORDS, 24) if w not in related]
        document = others[: rng.randint(5, 15)]
        if rng.random() < 2 / 3:
            for _ in range(rng.randint(1, 3)):
                term = rng.choice(query)
                pick = rng.choice(synonyms[term]) if term in synonyms and rng.random() < 0.3 else term
                document.insert(rng.randint(0, len(document)), pick)
        if rng.random() < 0.5:
            document.insert(rng.randint(0, len(document)), FILLER_WORD)
        pairs.append((" ".join(query), " ".join(document)))
    return pairs


def save_planted(path: str | Path, random: bool = False, seed: int = 0) -> Path:
    """Write an ordinary HF checkpoint (safetensors, tokenizer) plus ``planted_truth.json``."""
    planted = build_random_twin(seed) if random else build_planted_model(seed)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    planted.model.save_pretrained(out, safe_serialization=True)
    planted.tokenizer.save_pretrained(out)
    (out / "planted_truth.json").write_text(json.dumps(planted.truth.to_json(), indent=1))
    return out
