"""ModernBERT and DeBERTa-v2 / v3 as hooked encoders, sharing the Hugging Face model's own modules.

They live apart from ``encoder.py`` because their blocks are not BERT's post-LayerNorm block with plain
attention:

* ModernBERT is pre-LayerNorm (``ln1`` before attention, ``ln2`` before the MLP, ``ln_final`` after the
  last block; its first block has no attention LayerNorm), has one fused Q / K / V projection, rotary
  positions inside attention (``hook_rot_q`` / ``hook_rot_k``, TransformerLens's names), a GeGLU MLP
  (``hook_pre`` is the activated half, ``hook_pre_linear`` the gate, as in TransformerLens's gated MLPs),
  and alternates global layers with local ones that attend within a sliding window.
* DeBERTa-v2 / v3 keeps BERT's post-LayerNorm block (``HookedBlock``) but its attention adds
  content-to-position (``hook_c2p``) and position-to-content (``hook_p2c``) terms from relative-position
  embeddings shared by all layers; ``hook_attn_scores`` is the full score the softmax sees.

In both, the padding mask is added to ``hook_attn_scores`` as in every other family, and ModernBERT's local
window is part of it too, so writing to any hook changes what is computed downstream. Parity with Hugging
Face is tested in tests/test_parity.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position
from transformers.models.modernbert.modeling_modernbert import rotate_half

from irmechtest.models.encoder import (
    ClassifierHead,
    EncoderConfig,
    EncoderParts,
    HookedAttention,
    HookedBlock,
    HookedLayerNorm,
    HookedMLP,
)
from irmechtest.models.hooks import HookPoint


# --------------------------------------------------------------------------------------------- ModernBERT
class FusedSlice:
    """One of Q / K / V inside a fused projection, read as a weight (for ``W_Q``, ``W_K``, ``W_V``)."""

    def __init__(self, fused: nn.Linear, index: int, width: int) -> None:
        self.fused, self.rows = fused, slice(index * width, (index + 1) * width)

    @property
    def weight(self) -> torch.Tensor:
        return self.fused.weight[self.rows]


class RotaryAttention(HookedAttention):
    """ModernBERT attention: fused ``Wqkv``, rotary q / k, and on local layers a window |query - key| <= w."""

    def __init__(
        self, cfg: EncoderConfig, wqkv: nn.Linear, wo: nn.Linear, rotary: nn.Module, layer_type: str, window: int | None
    ) -> None:
        width = cfg.n_heads * cfg.d_head
        super().__init__(cfg, *(FusedSlice(wqkv, i, width) for i in range(3)), wo)
        self.wqkv, self.rotary, self.layer_type, self.window = wqkv, rotary, layer_type, window
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()

    def _project(self, x: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.wqkv(x).view(*x.shape[:-1], 3, self.cfg.n_heads, self.cfg.d_head).unbind(dim=-3)
        return q, k, v

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(q.shape[1], device=q.device)
        cos, sin = self.rotary(q, positions[None], self.layer_type)  # [1, pos, d_head]
        cos, sin = cos[:, :, None], sin[:, :, None]  # broadcast over heads: q, k are [batch, pos, head, d_head]
        q = self.hook_rot_q((q.float() * cos + rotate_half(q.float()) * sin).to(q.dtype))
        k = self.hook_rot_k((k.float() * cos + rotate_half(k.float()) * sin).to(k.dtype))
        scores = super()._scores(q, k)
        if self.window is None:
            return scores
        outside = (positions[:, None] - positions[None, :]).abs() > self.window
        return scores.masked_fill(outside, torch.finfo(scores.dtype).min)


class UnitNorm(nn.Module):
    """ModernBERT's first block has no attention LayerNorm (``nn.Identity``). Its stand-in keeps every
    block's hook vocabulary: ``hook_scale`` is 1 (x / 1 is exact), so freezing it, as path patching does,
    is a no-op, and writing to it rescales the block's attention input."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(x / self.hook_scale(torch.ones_like(x[..., :1])))


class HookedGatedMLP(nn.Module):
    """GeGLU: ``Wi`` gives the activated half (``hook_pre``) and the gate (``hook_pre_linear``)."""

    def __init__(self, fc_in: nn.Linear, fc_out: nn.Linear, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fc_in, self.fc_out, self.act = fc_in, fc_out, act
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The activated half and the gate (one fused projection here; T5 has two)."""
        pre, linear = self.fc_in(x).chunk(2, dim=-1)
        return pre, linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre, linear = self._halves(x)
        return self.fc_out(self.hook_post(self.act(self.hook_pre(pre)) * self.hook_pre_linear(linear)))


class PreLNBlock(HookedBlock):
    """A pre-LayerNorm block: resid_mid = resid_pre + attn(ln1(resid_pre)), resid_post = resid_mid +
    mlp(ln2(resid_mid)); TransformerLens's names, and the same resume-after-attention contract as
    ``HookedBlock`` (there is no ``normalized_resid_post``: the next block normalises its own input)."""

    HOOKS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")

    def forward(
        self, resid_pre: torch.Tensor, additive_mask: torch.Tensor, attn_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attn_out is None:
            resid_pre = self.hook_resid_pre(resid_pre)
            attn_out = self.attn(self.ln1(resid_pre), additive_mask)
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


def modernbert_parts(hf_model: nn.Module, with_head: bool) -> EncoderParts:
    c = hf_model.config
    base = hf_model.base_model
    cfg = EncoderConfig(
        family="modernbert",
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        d_embed=c.hidden_size,
        n_ctx=c.max_position_embeddings,
        n_token_types=0,
        pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0,
        ln_eps=c.norm_eps,
        position_ids_from_padding=False,
    )
    blocks = []
    for layer in base.layers:
        window = c.sliding_window if layer.attention_type == "sliding_attention" else None
        attn = RotaryAttention(cfg, layer.attn.Wqkv, layer.attn.Wo, base.rotary_emb, layer.attention_type, window)
        ln1 = UnitNorm() if isinstance(layer.attn_norm, nn.Identity) else HookedLayerNorm(layer.attn_norm)
        mlp = HookedGatedMLP(layer.mlp.Wi, layer.mlp.Wo, layer.mlp.act)
        blocks.append(PreLNBlock(attn, ln1, mlp, HookedLayerNorm(layer.mlp_norm)))
    head = None
    if with_head:
        if c.classifier_pooling not in {"cls", "mean"}:
            raise ValueError(f"ModernBERT classifier_pooling {c.classifier_pooling!r} is not 'cls' or 'mean'")
        h = hf_model.head
        head = ClassifierHead(h.dense, h.act, hf_model.classifier, pooling=c.classifier_pooling, norm=h.norm)
    return EncoderParts(
        cfg=cfg,
        word_embeddings=base.embeddings.tok_embeddings,
        position_embeddings=None,
        token_type_embeddings=None,
        embed_ln=base.embeddings.norm,
        embed_project=None,
        blocks=blocks,
        head=head,
        final_ln=base.final_norm,
    )


# ------------------------------------------------------------------------------------------ DeBERTa-v2 / v3
class DisentangledAttention(HookedAttention):
    """DeBERTa's attention: content-to-content + c2p + p2c, each scaled by 1 / sqrt(d_head * (1 + #terms))."""

    def __init__(
        self, cfg: EncoderConfig, hf_attn: nn.Module, output: nn.Linear, rel_embeddings: nn.Module | None, rel_ln
    ) -> None:
        super().__init__(cfg, hf_attn.query_proj, hf_attn.key_proj, hf_attn.value_proj, output)
        self.terms = [t for t in ("c2p", "p2c") if t in hf_attn.pos_att_type]
        self.scaling = (cfg.d_head * (1 + len(self.terms))) ** -0.5
        self.relative = hf_attn.relative_attention
        if self.relative:
            self.span, self.buckets = hf_attn.pos_ebd_size, hf_attn.position_buckets
            self.max_relative = hf_attn.max_relative_positions
            self.rel_embeddings, self.rel_ln = rel_embeddings, rel_ln
            shared = hf_attn.share_att_key
            self.pos_key_proj = hf_attn.key_proj if shared else getattr(hf_attn, "pos_key_proj", None)
            self.pos_query_proj = hf_attn.query_proj if shared else getattr(hf_attn, "pos_query_proj", None)
        self.hook_c2p = HookPoint()
        self.hook_p2c = HookPoint()

    def _relative_embeddings(self) -> torch.Tensor:
        rel = self.rel_embeddings.weight
        return (rel if self.rel_ln is None else self.rel_ln(rel))[: 2 * self.span]

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = super()._scores(q, k)
        if not self.relative or not self.terms:
            return scores
        qh, kh = q.transpose(1, 2), k.transpose(1, 2)  # [batch, head, pos, d_head]
        rel_pos = build_relative_position(qh, kh, bucket_size=self.buckets, max_position=self.max_relative)[0]
        rel = self._relative_embeddings()
        n_rel = rel.shape[0]
        index = (rel_pos + self.span).clamp(0, n_rel - 1).expand(*scores.shape)
        if "c2p" in self.terms:
            pos_k = self._split(self.pos_key_proj(rel)).permute(1, 2, 0)  # [head, d_head, 2 span]
            c2p = torch.gather(torch.matmul(qh, pos_k), -1, index) * self.scaling
            scores = scores + self.hook_c2p(c2p)
        if "p2c" in self.terms:
            pos_q = self._split(self.pos_query_proj(rel)).permute(1, 2, 0)
            reverse = (-rel_pos + self.span).clamp(0, n_rel - 1).expand(*scores.shape)
            p2c = torch.gather(torch.matmul(kh, pos_q), -1, reverse).transpose(-1, -2) * self.scaling
            scores = scores + self.hook_p2c(p2c)
        return scores


def deberta_v2_parts(hf_model: nn.Module, with_head: bool) -> EncoderParts:
    c = hf_model.config
    base = hf_model.base_model
    encoder = base.encoder
    if encoder.conv is not None:
        raise ValueError(
            "DeBERTa-v2 checkpoints with a convolution after the first layer (conv_kernel_size > 0, e.g. "
            "deberta-v2-xlarge) are not supported; DeBERTa-v3 and deberta-v2 without it are"
        )
    cfg = EncoderConfig(
        family="deberta-v2",
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        d_embed=getattr(c, "embedding_size", None) or c.hidden_size,
        n_ctx=c.max_position_embeddings,
        n_token_types=c.type_vocab_size,
        pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0,
        ln_eps=c.layer_norm_eps,
        position_ids_from_padding=False,
        embed_project_before_ln=True,
    )
    rel_embeddings = getattr(encoder, "rel_embeddings", None)
    rel_ln = encoder.LayerNorm if "layer_norm" in encoder.norm_rel_ebd else None
    blocks = [
        HookedBlock(
            DisentangledAttention(cfg, layer.attention.self, layer.attention.output.dense, rel_embeddings, rel_ln),
            HookedLayerNorm(layer.attention.output.LayerNorm),
            HookedMLP(layer.intermediate.dense, layer.output.dense, layer.intermediate.intermediate_act_fn),
            HookedLayerNorm(layer.output.LayerNorm),
        )
        for layer in encoder.layer
    ]
    # HF also zeroes the embeddings of padding positions; they are masked as keys in every layer, so no
    # real token's state depends on them, and the hooked model leaves them as they are.
    emb = base.embeddings
    head = None
    if with_head:
        head = ClassifierHead(hf_model.pooler.dense, ACT2FN[c.pooler_hidden_act], hf_model.classifier)
    return EncoderParts(
        cfg=cfg,
        word_embeddings=emb.word_embeddings,
        position_embeddings=emb.position_embeddings,
        token_type_embeddings=emb.token_type_embeddings,
        embed_ln=emb.LayerNorm,
        embed_project=emb.embed_proj,
        blocks=blocks,
        head=head,
    )
