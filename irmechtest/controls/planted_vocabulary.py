"""The planted model's vocabulary: its words (function, common, topic and rare, ranked for a Zipf IDF), synonym
groups, WordPiece tokenizer, the query-passage sampler, and the ``ProbeCorpus`` the planted model and its twin
declare. The weights that use them are written in ``planted.py``.
"""

from __future__ import annotations

import math
import random

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertTokenizerFast, PreTrainedTokenizerBase

from irmechtest.models.ranker import ProbeCorpus

MAX_POSITIONS = 256  # the tokenizer's length limit and the model's position table
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


def probe_corpus() -> ProbeCorpus:
    """The text the planted model and its twin declare for the probes: their own words, synonyms and IDF."""
    return ProbeCorpus("planted.sample_pairs", sample_pairs, synonym_map(), word_idf())
