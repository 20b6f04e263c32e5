"""monoT5 (``T5ForConditionalGeneration``) as a hooked encoder-decoder ranker, sharing the HF model's modules.

monoT5 reads ``Query: q Document: d Relevant:`` and its score is logit("true") - logit("false") at the
first decoder step (Nogueira et al. 2020; MechIR 0.2.0 scores it the same way). Hook names follow
TransformerLens's ``HookedEncoderDecoder``: ``hook_embed`` (encoder input), ``encoder.{l}.*`` and
``encoder_final_ln``, ``decoder.{l}.*`` with ``cross_attn`` and ``hook_resid_mid_cross``, ``decoder_final_ln``,
``hook_logits`` (the first step's vocabulary logits). Blocks are pre-RMSNorm (``ln1`` / ``ln2`` / decoder
``ln3``, ``hook_scale`` = the RMS); attention is unscaled (T5) and its relative-position bias, computed
once per stack from layer 0's bucket embedding as in T5, is part of ``hook_attn_scores`` with the mask.

The probes built on the encoder-only block layout (``blocks.{l}``: patching, circuits, NIG) do not apply to
this layout and say so (docs/circuits.md); the behavioural axioms and the W_E probes run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from irmechtest.models.encoder import EncoderConfig, HookedAttention, HookedMLP
from irmechtest.models.hooks import HookedRootModule, HookPoint
from irmechtest.models.modern_encoders import HookedGatedMLP, PreLNBlock
from irmechtest.models.ranker import Batch, HookedRanker, InputError, Overflow

# The model card's prompt and label words (castorini/monot5-*-msmarco; pygaggle's MonoT5).
MONOT5_TEMPLATE = "Query: {query} Document: {document} Relevant:"
MONOT5_LABELS = ("true", "false")


class HookedRMSNorm(nn.Module):
    """T5's LayerNorm: no centring, no bias; ``hook_scale`` is the root mean square."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.hook_scale((x.float().pow(2).mean(-1, keepdim=True) + self.eps).sqrt().to(x.dtype))
        return self.hook_normalized(self.weight * (x / scale))


class T5GatedMLP(HookedGatedMLP):
    """T5 v1.1's gated MLP: two projections, ``wi_0`` activated (``hook_pre``), ``wi_1`` the gate."""

    def __init__(self, gate: nn.Linear, linear: nn.Linear, fc_out: nn.Linear, act) -> None:
        super().__init__(gate, fc_out, act)
        self.linear = linear

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc_in(x), self.linear(x)


class T5DecoderBlock(nn.Module):
    """Self-attention, cross-attention over the encoder output, MLP; each pre-RMSNorm (TransformerLens's T5Block)."""

    def __init__(self, ln1, attn, ln2, cross_attn, ln3, mlp) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2, self.cross_attn, self.ln3, self.mlp = ln1, attn, ln2, cross_attn, ln3, mlp
        for name in (
            "resid_pre",
            "attn_out",
            "resid_mid",
            "cross_attn_out",
            "resid_mid_cross",
            "mlp_out",
            "resid_post",
        ):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(
        self, resid_pre: torch.Tensor, self_mask: torch.Tensor, encoder_out: torch.Tensor, cross_mask: torch.Tensor
    ) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(self.attn(self.ln1(resid_pre), self_mask)))
        cross = self.hook_cross_attn_out(self.cross_attn(self.ln2(resid_mid), cross_mask, kv=encoder_out))
        resid_mid_cross = self.hook_resid_mid_cross(resid_mid + cross)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln3(resid_mid_cross)))
        return self.hook_resid_post(resid_mid_cross + mlp_out)


def _t5_config(c) -> EncoderConfig:
    return EncoderConfig(
        family="t5",
        n_layers=c.num_layers,
        n_heads=c.num_heads,
        d_model=c.d_model,
        d_head=c.d_kv,
        d_mlp=c.d_ff,
        d_vocab=c.vocab_size,
        d_embed=c.d_model,
        # Relative positions have no table limit; 512 is the input length T5 and monoT5 were trained at.
        n_ctx=512,
        n_token_types=0,
        pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0,
        ln_eps=c.layer_norm_epsilon,
        position_ids_from_padding=False,
    )


def _attention(cfg: EncoderConfig, hf_attn: nn.Module) -> HookedAttention:
    attn = HookedAttention(cfg, hf_attn.q, hf_attn.k, hf_attn.v, hf_attn.o)
    attn.scaling = 1.0  # T5 folds the 1 / sqrt(d_head) into its initialisation, not into attention
    return attn


def _mlp(ff: nn.Module) -> nn.Module:
    if hasattr(ff, "wi_0"):
        return T5GatedMLP(ff.wi_0, ff.wi_1, ff.wo, ff.act)
    return HookedMLP(ff.wi, ff.wo, ff.act)


def label_token_ids(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str]) -> list[int]:
    """The one token each label word encodes to; a word that is not one token is a clear error."""
    ids = []
    for word in labels:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"label word {word!r} is {len(pieces)} tokens in this tokenizer; monoT5 needs one")
        ids.append(pieces[0])
    return ids


class HookedEncoderDecoderRanker(HookedRanker):
    """monoT5: the encoder reads the prompt, one decoder step scores it. Shares ``HookedRanker``'s
    tokenising checks, ``score()`` and hook machinery; the forward pass is its own."""

    layout = "encoder-decoder"

    def __init__(
        self,
        hf_model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        max_length: int,
        identity: dict | None = None,
        template: str = MONOT5_TEMPLATE,
        labels: Sequence[str] = MONOT5_LABELS,
    ) -> None:
        HookedRootModule.__init__(self)  # HookedRanker.__init__ builds an encoder-only layout
        c = hf_model.config
        self.cfg = cfg = _t5_config(c)
        self.tokenizer, self.kind, self.name, self.max_length = tokenizer, "cross-encoder", name, max_length
        self.pooling, self.identity, self.head = None, dict(identity or {}, name=name), None
        self.template, self.labels, self.label_ids = template, tuple(labels), label_token_ids(tokenizer, labels)
        self.embed = hf_model.shared
        self.pos_embed = self.token_type_embed = None
        enc, dec = hf_model.encoder.block, hf_model.decoder.block
        self.encoder = nn.ModuleList(
            PreLNBlock(
                _attention(cfg, b.layer[0].SelfAttention),
                HookedRMSNorm(b.layer[0].layer_norm),
                _mlp(b.layer[1].DenseReluDense),
                HookedRMSNorm(b.layer[1].layer_norm),
            )
            for b in enc
        )
        self.encoder_final_ln = HookedRMSNorm(hf_model.encoder.final_layer_norm)
        self.decoder = nn.ModuleList(
            T5DecoderBlock(
                HookedRMSNorm(b.layer[0].layer_norm),
                _attention(cfg, b.layer[0].SelfAttention),
                HookedRMSNorm(b.layer[1].layer_norm),
                _attention(cfg, b.layer[1].EncDecAttention),
                HookedRMSNorm(b.layer[2].layer_norm),
                _mlp(b.layer[2].DenseReluDense),
            )
            for b in dec
        )
        self.decoder_final_ln = HookedRMSNorm(hf_model.decoder.final_layer_norm)
        self.unembed = hf_model.lm_head
        # T5 rescales the decoder output before a tied unembedding (config.scale_decoder_outputs).
        self.output_scale = c.d_model**-0.5 if getattr(c, "scale_decoder_outputs", c.tie_word_embeddings) else 1.0
        start = getattr(c, "decoder_start_token_id", None)
        self.decoder_start_token_id = cfg.pad_token_id if start is None else start  # T5 starts from <pad>
        self._encoder_bias, self._decoder_bias = enc[0].layer[0].SelfAttention, dec[0].layer[0].SelfAttention
        self.hook_embed, self.hook_decoder_embed, self.hook_logits = HookPoint(), HookPoint(), HookPoint()
        self._query_cache: dict[str, torch.Tensor] = {}
        self.setup_hooks()
        self.eval()
        self.requires_grad_(False)

    def prompts(self, queries: Sequence[str], documents: Sequence[str]) -> list[str]:
        return [self.template.format(query=q, document=d) for q, d in zip(queries, documents, strict=True)]

    def tokenize(self, queries: Sequence[str], documents: Sequence[str], overflow: Overflow = "error") -> Batch:
        """The prompt, tokenised as one text. ``overflow="truncate"`` shortens the document's tokens, never
        the end of the prompt (``Relevant:``), which the score reads."""
        self._check_texts(queries, "queries")
        self._check_texts(documents, "documents")
        if len(queries) != len(documents):
            raise InputError(f"got {len(queries)} queries but {len(documents)} documents")
        if overflow == "truncate":
            documents = [self._fit_document(q, d) for q, d in zip(queries, documents, strict=True)]
            overflow = "error"
        return self.batch_from_encoding(self._encode_texts(self.prompts(queries, documents), None, overflow))

    def _fit_document(self, query: str, document: str) -> str:
        """``document`` cut at the token where its prompt fits ``max_length`` (unchanged when it fits)."""
        tok = self.tokenizer
        excess = len(tok(self.prompts([query], [document])[0])["input_ids"]) - self.max_length
        pieces = tok(document, add_special_tokens=False)["input_ids"]
        while excess > 0:
            if excess >= len(pieces):
                raise InputError(f"the query alone does not fit monoT5's {self.max_length} tokens: {query[:80]!r}")
            pieces = pieces[: len(pieces) - excess]
            document = tok.decode(pieces)
            excess = len(tok(self.prompts([query], [document])[0])["input_ids"]) - self.max_length
        return document

    def forward(
        self,
        batch: Batch,
        *,
        start_at_layer: int = 0,
        resid: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attn_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores [batch]: logit(true) - logit(false) at the first decoder step."""
        if start_at_layer or resid is not None or attn_out is not None:
            raise ValueError("an encoder-decoder ranker runs whole: resuming at a layer is for encoder-only layouts")
        n_rows, n_pos = batch.input_ids.shape
        device = batch.input_ids.device
        mask = self._additive_mask(batch.attention_mask)
        x = self.hook_embed(self.embed(batch.input_ids) if inputs_embeds is None else inputs_embeds)
        encoder_mask = self._encoder_bias.compute_bias(n_pos, n_pos, device=device) + mask
        for block in self.encoder:
            x = block(x, encoder_mask)
        encoder_out = self.encoder_final_ln(x)
        start = torch.full((n_rows, 1), self.decoder_start_token_id, device=device)
        y = self.hook_decoder_embed(self.embed(start))
        decoder_mask = self._decoder_bias.compute_bias(1, 1, device=device)  # one step: nothing to mask causally
        for block in self.decoder:
            y = block(y, decoder_mask, encoder_out, mask)
        logits = self.hook_logits(self.unembed(self.decoder_final_ln(y)[:, 0] * self.output_scale))
        return logits[:, self.label_ids[0]] - logits[:, self.label_ids[1]]
