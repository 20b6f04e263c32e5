"""A hooked post-LayerNorm transformer encoder that reuses a Hugging Face model's own weights.

BERT and MiniLM, ELECTRA, DistilBERT, RoBERTa and XLM-RoBERTa are the same post-LayerNorm encoder with
different module names, embedding details and classifier heads. The family adapters below map each
family's modules onto one hooked computation; the modules are shared,
not copied, so editing a weight here edits the Hugging Face model too, and parity with Hugging Face is a
property of the arithmetic (tested in tests/test_parity.py), not of a weight conversion. ModernBERT and
DeBERTa build on these parts in ``modern_encoders.py``, monoT5 in ``encoder_decoder.py``.

Attention is always computed explicitly (scores, pattern, z) so that every TransformerLens hook point is
a real intervention point. On CPU this costs nothing measurable against Hugging Face's SDPA path
(tests/benchmarks/test_bench_hooks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from irmechtest.models.hooks import HookPoint


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a hooked encoder, read off the Hugging Face config (TransformerLens's field names)."""

    family: str
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    d_embed: int
    n_ctx: int
    n_token_types: int
    pad_token_id: int
    ln_eps: float
    position_ids_from_padding: bool
    # DeBERTa projects embeddings to d_model before their LayerNorm, ELECTRA after it.
    embed_project_before_ln: bool = False


class HookedLayerNorm(nn.Module):
    """LayerNorm computed in steps so its scale can be read or frozen (``hook_scale``).

    Path patching on a post-LN model must say what happens to LayerNorm statistics; freezing
    ``hook_scale`` to its clean value is how irmechtest does it (docs/architecture.md).
    """

    def __init__(self, layer_norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight = layer_norm.weight
        self.bias = layer_norm.bias
        self.eps = layer_norm.eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        normalized = centred / scale * self.weight
        # ModernBERT's LayerNorms have no bias (norm_bias=False).
        return self.hook_normalized(normalized if self.bias is None else normalized + self.bias)


class HookedAttention(nn.Module):
    """Multi-head self-attention with per-head q / k / v / scores / pattern / z / result hooks."""

    def __init__(
        self, cfg: EncoderConfig, query: nn.Linear, key: nn.Linear, value: nn.Linear, output: nn.Linear
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = query, key, value, output
        self.scaling = cfg.d_head**-0.5
        for name in ("q", "k", "v", "attn_scores", "pattern", "z", "result"):
            setattr(self, f"hook_{name}", HookPoint())

    @property
    def W_O(self) -> torch.Tensor:
        """Output weights per head, [n_heads, d_head, d_model] as in TransformerLens."""
        cfg = self.cfg
        return self.o_proj.weight.T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.cfg.n_heads, self.cfg.d_head)

    def _project(self, x: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from ``x``, keys and values from ``kv`` (``x`` itself but in cross-attention), per head
        [batch, pos, head, d_head], before their hooks."""
        return self._split(self.q_proj(x)), self._split(self.k_proj(kv)), self._split(self.v_proj(kv))

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Attention scores [batch, head, query_pos, key_pos] before the padding mask; families with
        positions inside attention (rotary, relative) or a local window override this."""
        return torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) * self.scaling

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        # q, k, v, z: [batch, pos, head, d_head]; scores, pattern: [batch, head, query_pos, key_pos].
        q, k, v = self._project(x, x if kv is None else kv)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        scores = self.hook_attn_scores(self._scores(q, k) + additive_mask)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        z = self.hook_z(torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))
        return self.project(z)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The attention output from per-head ``z`` [batch, pos, head, d_head] (shared with the decoder)."""
        if self.hook_result.has_hooks:
            # Per-head outputs are only materialised when someone asks for them: they cost n_heads x memory.
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O)).sum(dim=2)
            return result if self.o_proj.bias is None else result + self.o_proj.bias
        return self.o_proj(z.reshape(*z.shape[:2], -1))


class HookedMLP(nn.Module):
    def __init__(self, fc_in: nn.Linear, fc_out: nn.Linear, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fc_in, self.fc_out, self.act = fc_in, fc_out, act
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.hook_post(self.act(self.hook_pre(self.fc_in(x)))))


class HookedBlock(nn.Module):
    """One post-LayerNorm encoder layer with TransformerLens's residual-stream hook names.

    As in TransformerLens's HookedEncoder, ``resid_mid`` and ``resid_post`` are the sums before their
    LayerNorm and ``normalized_resid_post`` (the next block's ``resid_pre``) is after it.
    """

    HOOKS: tuple[str, ...] = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post", "normalized_resid_post")

    def __init__(self, attn: HookedAttention, ln1: nn.Module, mlp: nn.Module, ln2: nn.Module) -> None:
        super().__init__()
        self.attn, self.ln1, self.mlp, self.ln2 = attn, ln1, mlp, ln2
        for name in self.HOOKS:
            setattr(self, f"hook_{name}", HookPoint())

    def forward(
        self, resid_pre: torch.Tensor, additive_mask: torch.Tensor, attn_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The block's output; a given ``attn_out`` (this block's attention output) resumes after attention.

        Resuming is how the patching engine skips the Q / K / V projections, attention and output projection
        of a layer whose attention output it already knows. Then ``hook_resid_pre`` and every ``attn.hook_*``
        of this block do not fire; ``hook_attn_out`` and every hook after it do.
        """
        if attn_out is None:
            resid_pre = self.hook_resid_pre(resid_pre)
            attn_out = self.attn(resid_pre, additive_mask)
        attn_out = self.hook_attn_out(attn_out)
        normalized_mid = self.ln1(self.hook_resid_mid(resid_pre + attn_out))
        mlp_out = self.hook_mlp_out(self.mlp(normalized_mid))
        resid_post = self.hook_resid_post(normalized_mid + mlp_out)
        return self.hook_normalized_resid_post(self.ln2(resid_post))


class ClassifierHead(nn.Module):
    """Cross-encoder head: dense, activation, optional LayerNorm (ModernBERT), output projection.

    It reads the first token, or the masked mean of all tokens (``pooling="mean"``, a ModernBERT option).
    """

    def __init__(
        self,
        dense: nn.Linear,
        act: Callable[[torch.Tensor], torch.Tensor],
        out: nn.Linear,
        *,
        pooling: Literal["cls", "mean"] = "cls",
        norm: nn.LayerNorm | None = None,
    ) -> None:
        super().__init__()
        self.dense, self.act, self.out = dense, act, out
        self.pooling = pooling
        self.norm = None if norm is None else HookedLayerNorm(norm)

    @property
    def num_labels(self) -> int:
        return self.out.out_features


@dataclass
class EncoderParts:
    """What a family adapter hands over: the config and the modules to share with the hooked encoder."""

    cfg: EncoderConfig
    word_embeddings: nn.Embedding
    position_embeddings: nn.Embedding | None  # None where positions act inside attention (rotary, relative)
    token_type_embeddings: nn.Embedding | None
    embed_ln: nn.LayerNorm
    embed_project: nn.Linear | None
    blocks: list[nn.Module]
    head: ClassifierHead | None
    final_ln: nn.LayerNorm | None = None  # pre-LayerNorm families normalise the last block's output


def _bert_like_blocks(cfg: EncoderConfig, layers: nn.ModuleList) -> list[HookedBlock]:
    """BERT, ELECTRA, RoBERTa and XLM-RoBERTa share one layer layout."""
    blocks = []
    for layer in layers:
        attn = layer.attention
        blocks.append(
            HookedBlock(
                HookedAttention(cfg, attn.self.query, attn.self.key, attn.self.value, attn.output.dense),
                HookedLayerNorm(attn.output.LayerNorm),
                HookedMLP(layer.intermediate.dense, layer.output.dense, layer.intermediate.intermediate_act_fn),
                HookedLayerNorm(layer.output.LayerNorm),
            )
        )
    return blocks


def _distilbert_blocks(cfg: EncoderConfig, layers: nn.ModuleList) -> list[HookedBlock]:
    return [
        HookedBlock(
            HookedAttention(cfg, la.attention.q_lin, la.attention.k_lin, la.attention.v_lin, la.attention.out_lin),
            HookedLayerNorm(la.sa_layer_norm),
            HookedMLP(la.ffn.lin1, la.ffn.lin2, la.ffn.activation),
            HookedLayerNorm(la.output_layer_norm),
        )
        for la in layers
    ]


def _bert_like_config(family: str, c) -> EncoderConfig:
    return EncoderConfig(
        family=family,
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        d_embed=getattr(c, "embedding_size", c.hidden_size),
        n_ctx=c.max_position_embeddings,
        n_token_types=c.type_vocab_size,
        pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0,
        ln_eps=c.layer_norm_eps,
        position_ids_from_padding=family in {"roberta", "xlm-roberta"},
    )


def _bert_like_parts(family: str, hf_model: nn.Module, classifier: nn.Module | None) -> EncoderParts:
    base = hf_model.base_model
    cfg = _bert_like_config(family, hf_model.config)
    emb = base.embeddings
    head = None
    if classifier is not None:
        head = _classifier_head(family, hf_model, classifier)
    return EncoderParts(
        cfg=cfg,
        word_embeddings=emb.word_embeddings,
        position_embeddings=emb.position_embeddings,
        token_type_embeddings=emb.token_type_embeddings,
        embed_ln=emb.LayerNorm,
        embed_project=getattr(base, "embeddings_project", None),
        blocks=_bert_like_blocks(cfg, base.encoder.layer),
        head=head,
    )


def _classifier_head(family: str, hf_model: nn.Module, classifier: nn.Module) -> ClassifierHead:
    if family == "bert":
        pooler = hf_model.base_model.pooler
        if pooler is None:
            raise ValueError("this BERT cross-encoder has no pooler, but its classifier reads the pooled output")
        return ClassifierHead(pooler.dense, pooler.activation, classifier)
    if family == "electra":
        return ClassifierHead(classifier.dense, classifier.activation, classifier.out_proj)
    return ClassifierHead(classifier.dense, torch.tanh, classifier.out_proj)


def _distilbert_parts(hf_model: nn.Module, with_head: bool) -> EncoderParts:
    base = hf_model.base_model
    c = hf_model.config
    cfg = EncoderConfig(
        family="distilbert",
        n_layers=c.n_layers,
        n_heads=c.n_heads,
        d_model=c.dim,
        d_head=c.dim // c.n_heads,
        d_mlp=c.hidden_dim,
        d_vocab=c.vocab_size,
        d_embed=c.dim,
        n_ctx=c.max_position_embeddings,
        n_token_types=0,
        pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0,
        ln_eps=1e-12,
        position_ids_from_padding=False,
    )
    head = ClassifierHead(hf_model.pre_classifier, torch.relu, hf_model.classifier) if with_head else None
    return EncoderParts(
        cfg=cfg,
        word_embeddings=base.embeddings.word_embeddings,
        position_embeddings=base.embeddings.position_embeddings,
        token_type_embeddings=None,
        embed_ln=base.embeddings.LayerNorm,
        embed_project=None,
        blocks=_distilbert_blocks(cfg, base.transformer.layer),
        head=head,
    )


SUPPORTED_FAMILIES: dict[str, str] = {
    "bert": "BERT (incl. MiniLM)",
    "electra": "ELECTRA",
    "distilbert": "DistilBERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa",
    "modernbert": "ModernBERT",
    "deberta-v2": "DeBERTa-v2 / v3",
    "t5": "T5 (monoT5, T5ForConditionalGeneration)",
}


def encoder_parts(hf_model: nn.Module, with_head: bool) -> EncoderParts:
    """Map a Hugging Face model of a supported family onto the hooked encoder's parts."""
    family = hf_model.config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedArchitectureError(family)
    if family == "distilbert":
        return _distilbert_parts(hf_model, with_head)
    if family == "t5":
        raise ValueError("T5 is an encoder-decoder: build it with encoder_decoder.HookedEncoderDecoderRanker")
    if family in {"modernbert", "deberta-v2"}:
        from irmechtest.models import modern_encoders

        adapter = modern_encoders.modernbert_parts if family == "modernbert" else modern_encoders.deberta_v2_parts
        return adapter(hf_model, with_head)
    return _bert_like_parts(family, hf_model, hf_model.classifier if with_head else None)


class UnsupportedArchitectureError(ValueError):
    def __init__(self, family: str, families: dict[str, str] | None = None) -> None:
        supported = ", ".join(f"{name} ({key})" for key, name in (families or SUPPORTED_FAMILIES).items())
        super().__init__(f"model_type {family!r} is not supported; supported families: {supported}")
        self.family = family
