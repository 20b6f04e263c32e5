"""Rankers as hooked models: one object for cross-encoders and bi-encoders.

``HookedRanker`` wraps a Hugging Face encoder of a supported family (see ``encoder.SUPPORTED_FAMILIES``)
and computes exactly what the checkpoint computes (fp32, padding, ``token_type_ids``; tests/test_parity.py)
while exposing TransformerLens hook points; decoders (Qwen2 / Qwen3 / Llama) are ``decoder.HookedDecoderRanker``,
which reads the score at the last token. The score is what a ranker sorts by:

* cross-encoder: the classifier logit (one label) or the logit difference ``logit[1] - logit[0]`` (two
  labels, i.e. the log-odds of the softmax's "relevant" class);
* bi-encoder (sentence-transformers): the similarity of the pooled query and document embeddings. Hooks
  act on the document pass; the query side is encoded once with hooks suspended and held fixed, which is
  how the bi-encoder literature patches (documents are perturbed, queries are not).

Loading lives in ``loading.py``; this module knows nothing about where weights come from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from irmechtest.models.encoder import EncoderParts, HookedLayerNorm
from irmechtest.models.hooks import HookedRootModule, HookPoint

RankerKind = Literal["cross-encoder", "bi-encoder"]
Overflow = Literal["error", "truncate"]


class InputError(ValueError):
    """Inputs that a ranker cannot score as given (empty, too long)."""


class ScoreError(RuntimeError):
    """A forward pass produced scores that cannot be trusted (NaN or infinite)."""


@dataclass(frozen=True)
class Pooling:
    """A sentence-transformers pooling recipe: how token states become one embedding, and how to compare."""

    mode: Literal["cls", "mean", "max", "mean_sqrt_len", "lasttoken"] = "mean"
    normalize: bool = False
    similarity: Literal["cosine", "dot"] = "cosine"


@dataclass
class Batch:
    """Tokenised model inputs; for a bi-encoder, the document side plus the fixed query embeddings."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    query_embeddings: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def _map(self, fn) -> Batch:
        tensors = {
            name: None if value is None else fn(value)
            for name, value in (
                ("input_ids", self.input_ids),
                ("attention_mask", self.attention_mask),
                ("position_ids", self.position_ids),
                ("token_type_ids", self.token_type_ids),
                ("query_embeddings", self.query_embeddings),
            )
        }
        return replace(self, **tensors)

    def to(self, device: str | torch.device) -> Batch:
        return self._map(lambda t: t.to(device))

    def index(self, rows: torch.Tensor | slice | list[int]) -> Batch:
        """Rows of the batch (a slice, indices, or a repeat pattern for stacking patched copies)."""
        return self._map(lambda t: t[rows])

    def prefix(self, length: int) -> Batch:
        """The first ``length`` positions (query embeddings untouched): with right padding, a batch whose
        rows are all at most ``length`` real tokens long scores the same without the padding beyond it."""
        return replace(
            self,
            input_ids=self.input_ids[:, :length],
            attention_mask=self.attention_mask[:, :length],
            position_ids=self.position_ids[:, :length],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[:, :length],
        )


class HookedRanker(HookedRootModule):
    """A ranker whose every activation is a TransformerLens-named hook point.

    Hook names: ``hook_embed``, ``hook_pos_embed``, ``hook_token_type_embed``, ``hook_full_embed``,
    ``blocks.{l}.hook_resid_pre|resid_mid|resid_post|normalized_resid_post|attn_out|mlp_out``,
    ``blocks.{l}.attn.hook_q|k|v|attn_scores|pattern|z|result``, ``blocks.{l}.mlp.hook_pre|post``,
    ``blocks.{l}.ln1|ln2.hook_scale|normalized``, ``hook_pooled``, ``hook_logits``. Families add their own
    (``modern_encoders.py``): ModernBERT ``attn.hook_rot_q|rot_k``, ``mlp.hook_pre_linear``,
    ``ln_final.hook_scale`` and no ``normalized_resid_post`` (pre-LayerNorm); DeBERTa ``attn.hook_c2p|p2c``.

    Other architectures subclass it (``decoder.HookedDecoderRanker``, ``encoder_decoder.HookedEncoderDecoderRanker``)
    and override the extension points: ``_attach`` (which modules), ``TOP_HOOKS``, ``embed_inputs``,
    ``run_blocks``, ``final_states`` and ``head_logits`` (where and how the score is read), and for prompt-based
    inputs ``_encode_texts``.
    """

    TOP_HOOKS: tuple[str, ...] = ("embed", "pos_embed", "token_type_embed", "full_embed", "pooled", "logits")
    causal = False  # whether a token attends only to earlier ones (decoders): some probes read other directions
    # The hook layout: one stack of ``blocks``. monoT5 (``encoder_decoder.py``) is "encoder-decoder", with
    # ``encoder`` and ``decoder`` stacks; properties that read ``blocks.{l}`` declare ``layouts=("blocks",)``.
    layout = "blocks"

    def __init__(
        self,
        parts: EncoderParts,
        tokenizer: PreTrainedTokenizerBase,
        *,
        kind: RankerKind,
        name: str,
        max_length: int,
        pooling: Pooling | None = None,
        identity: dict | None = None,
    ) -> None:
        super().__init__()
        if kind == "cross-encoder" and parts.head is None:
            raise ValueError("a cross-encoder needs a classifier head")
        if kind == "bi-encoder" and pooling is None:
            raise ValueError("a bi-encoder needs a pooling recipe")
        self.cfg = parts.cfg
        self.tokenizer = tokenizer
        self.kind: RankerKind = kind
        self.name = name
        self.max_length = max_length
        self.pooling = pooling
        self.identity = dict(identity or {}, name=name)
        self._attach(parts)
        # A family without absolute positions (rotary, relative) or token types has no hook for them: a hook
        # point that never fires would take a user's edit silently.
        absent = {name_ for name_ in ("pos_embed", "token_type_embed") if getattr(self, name_, None) is None}
        for name_ in self.TOP_HOOKS:
            if name_ not in absent:
                setattr(self, f"hook_{name_}", HookPoint())
        self._query_cache: dict[str, torch.Tensor] = {}
        self.setup_hooks()
        self.eval()
        self.requires_grad_(False)

    def _attach(self, parts: EncoderParts) -> None:
        """Take over the architecture's shared Hugging Face modules."""
        self.embed = parts.word_embeddings
        self.pos_embed = parts.position_embeddings
        self.token_type_embed = parts.token_type_embeddings
        self.embed_ln = HookedLayerNorm(parts.embed_ln)
        self.embed_project = parts.embed_project
        self.blocks = nn.ModuleList(parts.blocks)
        self.ln_final = None if parts.final_ln is None else HookedLayerNorm(parts.final_ln)
        self.head = parts.head

    # ----------------------------------------------------------------------------------------- weights
    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def W_E(self) -> torch.Tensor:
        """Word-embedding matrix [d_vocab, d_embed]: the matrix the SVD-IDF probe decomposes."""
        return self.embed.weight

    @property
    def W_pos(self) -> torch.Tensor:
        return self.pos_embed.weight

    def _stack(self, attr: str) -> torch.Tensor:
        # Heads are counted from the weight: under grouped-query attention K and V have fewer heads than Q.
        cfg = self.cfg
        weights = [getattr(block.attn, attr).weight for block in self.blocks]
        return torch.stack([w.T.reshape(cfg.d_model, -1, cfg.d_head).transpose(0, 1) for w in weights])

    @property
    def W_Q(self) -> torch.Tensor:
        """[n_layers, n_heads, d_model, d_head], TransformerLens's layout."""
        return self._stack("q_proj")

    @property
    def W_K(self) -> torch.Tensor:
        return self._stack("k_proj")

    @property
    def W_V(self) -> torch.Tensor:
        return self._stack("v_proj")

    @property
    def W_O(self) -> torch.Tensor:
        """[n_layers, n_heads, d_head, d_model]."""
        return torch.stack([block.attn.W_O for block in self.blocks])

    # ------------------------------------------------------------------------------------ tokenising
    def _check_texts(self, texts: Sequence[str], what: str) -> None:
        if isinstance(texts, str):
            raise TypeError(f"{what} must be a sequence of strings, not one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{what}[{i}] is empty: a ranker cannot score an empty text")

    def _encode_texts(
        self, first: Sequence[str], second: Sequence[str] | None, overflow: Overflow
    ) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        pairs = (first,) if second is None else (first, second)
        if overflow == "error":
            lengths = tok(*pairs, truncation=False, return_length=True, verbose=False)["length"]
            too_long = [i for i, n in enumerate(lengths) if n > self.max_length]
            if too_long:
                i = too_long[0]
                raise InputError(
                    f"{len(too_long)} input(s) exceed the model's maximum length of {self.max_length} tokens "
                    f"(first: #{i}, {lengths[i]} tokens). irmechtest does not truncate silently, since that "
                    "could cut away a perturbed term: shorten the documents, or pass overflow='truncate' to "
                    "cut the document side."
                )
        elif overflow != "truncate":
            raise ValueError(f"overflow must be 'error' or 'truncate', got {overflow!r}")
        truncation = "only_second" if second is not None else True
        return tok(*pairs, padding=True, truncation=truncation, max_length=self.max_length, return_tensors="pt")

    def _position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.position_ids_from_padding:
            # RoBERTa numbers real tokens from pad_token_id + 1 and gives padding the pad position.
            pad = self.cfg.pad_token_id
            not_pad = input_ids.ne(pad).long()
            return torch.cumsum(not_pad, dim=1) * not_pad + pad
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)

    def batch_from_encoding(self, encoded: dict[str, torch.Tensor]) -> Batch:
        """A ``Batch`` from tokenizer output (input_ids, attention_mask, optional token_type_ids)."""
        input_ids = encoded["input_ids"].to(self.device)
        token_type_ids = None
        if self.token_type_embed is not None:
            # RoBERTa-style models have one token type: segment ids from a BERT-style tokenizer do not apply.
            given = encoded.get("token_type_ids") if self.cfg.n_token_types > 1 else None
            token_type_ids = torch.zeros_like(input_ids) if given is None else given.to(self.device)
        return Batch(
            input_ids=input_ids,
            attention_mask=encoded["attention_mask"].to(self.device),
            position_ids=self._position_ids(input_ids),
            token_type_ids=token_type_ids,
        )

    def tokenize(self, queries: Sequence[str], documents: Sequence[str], overflow: Overflow = "error") -> Batch:
        """Tokenise query-document pairs the way the checkpoint expects them."""
        self._check_texts(queries, "queries")
        self._check_texts(documents, "documents")
        if len(queries) != len(documents):
            raise InputError(f"got {len(queries)} queries but {len(documents)} documents")
        if self.kind == "cross-encoder":
            return self.batch_from_encoding(self._encode_texts(queries, documents, overflow))
        batch = self.batch_from_encoding(self._encode_texts(documents, None, overflow))
        batch.query_embeddings = self.encode_queries(queries, overflow)
        return batch

    # ------------------------------------------------------------------------------------- forward
    def _additive_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.W_E.dtype
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def embed_inputs(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The residual stream entering block 0; ``inputs_embeds`` replaces the word embeddings (for IG)."""
        words = self.embed(batch.input_ids) if inputs_embeds is None else inputs_embeds
        x = self.hook_embed(words)
        if self.token_type_embed is not None:
            x = x + self.hook_token_type_embed(self.token_type_embed(batch.token_type_ids))
        if self.pos_embed is not None:
            x = x + self.hook_pos_embed(self.pos_embed(batch.position_ids))
        project = self.embed_project
        if project is not None and self.cfg.embed_project_before_ln:
            x = project(x)
        x = self.embed_ln(x)
        if project is not None and not self.cfg.embed_project_before_ln:
            x = project(x)
        return self.hook_full_embed(x)

    def attention_context(self, batch: Batch, resid: torch.Tensor) -> Any:
        """What every block's attention needs besides the residual stream: here the additive padding mask."""
        return self._additive_mask(batch.attention_mask)

    def run_blocks(
        self,
        batch: Batch,
        resid: torch.Tensor,
        start_at_layer: int = 0,
        stop_at_layer: int | None = None,
        attn_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks ``start_at_layer`` up to ``stop_at_layer``; ``attn_out`` resumes the first after its attention
        (``HookedBlock.forward`` says which of its hooks then do not fire)."""
        context = self.attention_context(batch, resid)
        for i, block in enumerate(self.blocks[start_at_layer:stop_at_layer]):
            resid = block(resid, context, attn_out if i == 0 else None)
        return resid

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence-transformers pooling of final token states into one embedding per row."""
        assert self.pooling is not None
        mode = self.pooling.mode
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if mode == "cls":
            pooled = hidden[:, 0]
        elif mode == "lasttoken":
            pooled = hidden[torch.arange(len(hidden), device=hidden.device), last_real_position(attention_mask)]
        elif mode == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        elif mode == "mean":
            pooled = masked_mean(hidden, attention_mask)
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9).sqrt()
        if self.pooling.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def similarity(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        assert self.pooling is not None
        if self.pooling.similarity == "dot":
            return (queries * documents).sum(-1)
        return nn.functional.cosine_similarity(queries, documents, dim=-1)

    def final_states(self, final_resid: torch.Tensor) -> torch.Tensor:
        """Token states that pooling and the head read: a pre-norm family's last block output still needs its
        final norm (``ln_final``); a post-LN encoder's is already normalised."""
        return final_resid if self.ln_final is None else self.ln_final(final_resid)

    def head_logits(self, batch: Batch, states: torch.Tensor) -> torch.Tensor:
        """A cross-encoder's logits [batch, num_labels]: the encoder classifier reads the first token, or the
        mean of the real tokens (a ModernBERT option)."""
        head = self.head
        tokens = states[:, 0] if head.pooling == "cls" else masked_mean(states, batch.attention_mask)
        pooled = head.act(head.dense(tokens))
        return head.out(self.hook_pooled(pooled if head.norm is None else head.norm(pooled)))

    def score_from_resid(self, batch: Batch, final_resid: torch.Tensor) -> torch.Tensor:
        """The ranker's score from the last block's output."""
        states = self.final_states(final_resid)
        if self.kind == "bi-encoder":
            doc = self.hook_pooled(self.pool(states, batch.attention_mask))
            return self.similarity(batch.query_embeddings, doc)
        logits = self.hook_logits(self.head_logits(batch, states))
        return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]

    def forward(
        self,
        batch: Batch,
        *,
        start_at_layer: int = 0,
        resid: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attn_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of a batch, shape [batch].

        ``start_at_layer`` with ``resid`` (that layer's ``resid_pre``) skips the layers below: the patching
        engine starts patched copies where the patch is instead of recomputing what cannot change. With
        ``attn_out`` (that layer's attention output) too, the layer resumes after its attention.
        """
        if resid is None:
            if start_at_layer or attn_out is not None:
                raise ValueError("start_at_layer and attn_out need resid, the residual stream entering that layer")
            resid = self.embed_inputs(batch, inputs_embeds)
        final = self.run_blocks(batch, resid, start_at_layer, attn_out=attn_out)
        return self.score_from_resid(batch, final)

    # --------------------------------------------------------------------------------- bi-encoder
    @contextmanager
    def suspended_hooks(self) -> Iterator[None]:
        """Run without any hook firing, e.g. to encode the fixed query side of a bi-encoder."""
        saved = {hp: hp._forward_hooks for hp in self.hook_dict.values()}
        try:
            for hp in saved:
                hp._forward_hooks = type(hp._forward_hooks)()
            yield
        finally:
            for hp, hooks in saved.items():
                hp._forward_hooks = hooks

    def encode(self, texts: Sequence[str], overflow: Overflow = "error") -> torch.Tensor:
        """Sentence embeddings (bi-encoders), computed with whatever hooks are active."""
        if self.kind != "bi-encoder":
            raise TypeError(f"{self.name} is a cross-encoder: it scores pairs and has no text embeddings")
        self._check_texts(texts, "texts")
        batch = self.batch_from_encoding(self._encode_texts(texts, None, overflow))
        final = self.run_blocks(batch, self.embed_inputs(batch))
        return self.pool(self.final_states(final), batch.attention_mask)

    def encode_queries(self, queries: Sequence[str], overflow: Overflow = "error") -> torch.Tensor:
        missing = sorted({q for q in queries if q not in self._query_cache})
        if missing:
            with torch.no_grad(), self.suspended_hooks():
                for text, emb in zip(missing, self.encode(missing, overflow), strict=True):
                    self._query_cache[text] = emb
        return torch.stack([self._query_cache[q] for q in queries])

    # ------------------------------------------------------------------------------------ scoring
    def score(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        batch_size: int = 32,
        overflow: Overflow = "error",
        progress: bool | None = None,
    ) -> np.ndarray:
        """Scores of query-document pairs as float64, in input order.

        A progress bar appears for long inputs on a terminal and stays quiet in CI (``progress=None``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(queries) != len(documents):
            raise InputError(f"got {len(queries)} queries but {len(documents)} documents")
        n_batches = math.ceil(len(queries) / batch_size)
        out: list[np.ndarray] = []
        with torch.no_grad(), progress_bar(n_batches, f"scoring with {self.name}", long=4, show=progress) as bar:
            for start in range(0, len(queries), batch_size):
                stop = start + batch_size
                batch = self.tokenize(queries[start:stop], documents[start:stop], overflow)
                out.append(self(batch).double().cpu().numpy())
                bar.update()
        scores = np.concatenate(out) if out else np.zeros(0)
        check_finite(scores, self.name)
        return scores


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of each row's real token states [batch, d_model] (padding excluded)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def last_real_position(attention_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the last real token, whether the batch is padded on the left or the right."""
    flipped = attention_mask.flip(1).to(torch.int64)
    return attention_mask.shape[1] - 1 - flipped.argmax(dim=1)


LONG_WORK = 2000  # forward rows (patched copies, path points, reranked passages): tens of seconds on 2 CPU cores


def progress_bar(total: int, desc: str, *, long: int = LONG_WORK, show: bool | None = None) -> tqdm:
    """A bar for work of ``total`` steps, shown when it is longer than ``long`` steps (or as ``show`` says).

    Shown only on a terminal: tqdm disables itself without a TTY, so CI logs and pytest's captured output
    stay quiet. It disappears when done (``leave=False``): the terminal keeps pytest's own lines.
    """
    show = total > long if show is None else show
    return tqdm(total=total, desc=desc, disable=None if show else True, leave=False)


def check_finite(scores: np.ndarray | torch.Tensor, model_name: str) -> None:
    """Refuse NaN or infinite scores: every statistic built on them would be silently wrong."""
    values = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ScoreError(
            f"{model_name} produced {bad.size} non-finite score(s) (first at input #{bad[0]}: {values[bad[0]]}); "
            "check the weights (fp16 overflow?) and the inputs"
        )
