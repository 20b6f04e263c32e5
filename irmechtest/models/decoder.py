"""A hooked pre-RMSNorm decoder (Qwen2, Qwen3, Llama) that reuses a Hugging Face model's own weights.

The decoder families irmechtest loads are one architecture: token embeddings, blocks of pre-RMSNorm
grouped-query attention with rotary position embeddings (Qwen3 adds an RMSNorm on each query and key head)
and a gated MLP, and a final RMSNorm. As in ``encoder.py``, the Hugging Face modules are shared, not
copied, and every activation passes through a TransformerLens-named hook point:

* ``hook_embed``; ``blocks.{l}.hook_resid_pre|attn_out|resid_mid|mlp_out|resid_post``;
* ``blocks.{l}.ln1|ln2.hook_scale|hook_normalized`` (RMSNorm: ``scale`` is the root mean square, as in
  TransformerLens's RMSNorm, and ``normalized`` is before the learned weight), ``ln_final.hook_*``;
* ``blocks.{l}.attn.hook_q`` [batch, pos, n_heads, d_head], ``hook_k`` / ``hook_v`` [batch, pos,
  n_key_value_heads, d_head] (grouped-query attention: one key / value head per group, as TransformerLens
  hooks them), then Qwen3's ``attn.q_norm`` / ``attn.k_norm``, then ``hook_rot_q`` / ``hook_rot_k`` after
  the rotary embedding; ``hook_attn_scores`` / ``hook_pattern`` [batch, n_heads, query_pos, key_pos] and
  ``hook_z`` per query head; ``hook_result`` when hooked;
* ``blocks.{l}.mlp.hook_pre`` (gate projection, before the activation), ``hook_pre_linear`` (up
  projection), ``hook_post`` (activation(gate) * up): TransformerLens's gated-MLP names.

Attention is computed explicitly under a causal mask joined with the padding mask, so writing to any hook,
the pattern included, changes everything downstream. The score is read at the last real token (left
padding puts it last): ``logit(yes) - logit(no)`` for a ``*ForCausalLM`` judge (Qwen3-Reranker), the score
head for ``*ForSequenceClassification`` (RankLLaMA), or last-token pooling for a sentence-transformers
embedder (Qwen3-Embedding). Parity with Hugging Face: tests/test_decoder.py.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from irmechtest.models.encoder import HookedAttention
from irmechtest.models.hooks import HookPoint
from irmechtest.models.ranker import Batch, HookedRanker, InputError, Overflow, last_real_position

DECODER_FAMILIES: dict[str, str] = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama"}


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of a hooked decoder, read off the Hugging Face config (TransformerLens's field names).

    ``n_token_types`` and ``position_ids_from_padding`` are the encoder's fields that ``HookedRanker`` and
    the loader read; a rotary decoder has no token types and numbers positions 0..n-1 as Hugging Face does
    when no position ids are given (rotary attention depends only on relative positions, so left padding
    shifts nothing but rounding).
    """

    family: str
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    d_embed: int
    n_ctx: int
    pad_token_id: int
    ln_eps: float
    n_token_types: int = 0
    position_ids_from_padding: bool = False


@dataclass(frozen=True)
class YesNoPrompt:
    """How a ``*ForCausalLM`` judge reads a pair: ``prefix + body + suffix``, the three tokenised apart and
    joined (as Qwen3-Reranker's model card does), scored by ``logit(yes) - logit(no)`` at the last token."""

    prefix: str
    body: str  # with the placeholders {query} and {document}
    suffix: str
    yes: str = "yes"
    no: str = "no"


@dataclass(frozen=True)
class PairPrompt:
    """How a ``*ForSequenceClassification`` decoder reads a pair: the tokenizer's own pair encoding of the
    formatted query and document (RankLLaMA's model card: ``tokenizer(f"query: {q}", f"document: {d}")``)."""

    query: str = "query: {query}"
    document: str = "document: {document}"


# Qwen3-Reranker's published template (model card, "Usage with Transformers"), with its default instruction.
QWEN3_RERANKER_PROMPT = YesNoPrompt(
    prefix=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    ),
    body=(
        "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
        "<Query>: {query}\n<Document>: {document}"
    ),
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
)
# Per-family defaults where the checkpoint does not say: no Llama yes / no reranker publishes its own
# template, so Qwen3-Reranker's (plain text apart from Qwen's chat markers) serves every family.
DEFAULT_YES_NO_PROMPT = {family: QWEN3_RERANKER_PROMPT for family in DECODER_FAMILIES}
DEFAULT_PAIR_PROMPT = {family: PairPrompt() for family in DECODER_FAMILIES}
# A prompt, or overrides of some fields of the family default (``[tool.irmechtest.models."SPEC".prompt]``).
PromptSpec = YesNoPrompt | PairPrompt | Mapping[str, str]
PROMPT_KEYS = ("prefix", "body", "suffix", "yes", "no", "query", "document")
_PLACEHOLDERS = {"body": ("query", "document"), "query": ("query",), "document": ("document",)}


def resolve_prompt(default: YesNoPrompt | PairPrompt, given: PromptSpec | None) -> YesNoPrompt | PairPrompt:
    """The prompt in force: ``given``, or the default with the fields ``given`` overrides; checked."""
    if given is None:
        prompt = default
    elif isinstance(given, Mapping):
        allowed = [f.name for f in fields(default)]
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(f"prompt key {unknown[0]!r} does not apply to a {type(default).__name__}; keys: {allowed}")
        prompt = replace(default, **given)
    elif type(given) is not type(default):
        raise ValueError(f"this ranker reads pairs with a {type(default).__name__}, got a {type(given).__name__}")
    else:
        prompt = given
    for key, names in _PLACEHOLDERS.items():
        template = getattr(prompt, key, None)
        if template is not None:
            found = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            if found != set(names):
                raise ValueError(f"prompt {key} must have the placeholders {set(names)}, got {found or 'none'}")
    return prompt


class HookedRMSNorm(nn.Module):
    """RMSNorm computed in steps so its scale can be read or frozen (``hook_scale``), in fp32 as Hugging Face
    computes it whatever the model's dtype."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.weight * self.hook_normalized((x / scale).to(dtype))


@dataclass
class AttentionInputs:
    """What every decoder block's attention needs besides the residual stream: the additive causal-and-padding
    mask [batch, 1, query_pos, key_pos] and the rotary cos / sin [batch, pos, d_head]."""

    mask: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [batch, pos, head, d_head] (Hugging Face's rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


class HookedDecoderAttention(HookedAttention):
    """Causal grouped-query attention with rotary embeddings (and Qwen3's per-head q / k RMSNorm)."""

    def __init__(
        self,
        cfg: DecoderConfig,
        query: nn.Linear,
        key: nn.Linear,
        value: nn.Linear,
        output: nn.Linear,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
    ) -> None:
        super().__init__(cfg, query, key, value, output)  # type: ignore[arg-type]
        self.q_norm = None if q_norm is None else HookedRMSNorm(q_norm)
        self.k_norm = None if k_norm is None else HookedRMSNorm(k_norm)
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], -1, self.cfg.d_head)

    def forward(self, x: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:  # type: ignore[override]
        group = self.cfg.n_heads // self.cfg.n_key_value_heads
        q = self.hook_q(self._heads(self.q_proj(x)))
        k = self.hook_k(self._heads(self.k_proj(x)))
        v = self.hook_v(self._heads(self.v_proj(x)))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = self.hook_rot_q(_rotate(q, inputs.cos, inputs.sin))
        k = self.hook_rot_k(_rotate(k, inputs.cos, inputs.sin))
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) * self.scaling
        scores = self.hook_attn_scores(scores + inputs.mask)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
        z = self.hook_z(torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))
        return self.project(z)


class HookedGatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` with TransformerLens's gated-MLP hooks."""

    def __init__(
        self, gate: nn.Linear, up: nn.Linear, down: nn.Linear, act: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        super().__init__()
        self.gate, self.up, self.down, self.act = gate, up, down, act
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.act(self.hook_pre(self.gate(x))) * self.hook_pre_linear(self.up(x))
        return self.down(self.hook_post(post))


class HookedDecoderBlock(nn.Module):
    """One pre-RMSNorm decoder layer: ``resid_mid = resid_pre + attn(ln1(resid_pre))``,
    ``resid_post = resid_mid + mlp(ln2(resid_mid))`` (TransformerLens's HookedTransformer block)."""

    def __init__(
        self, ln1: HookedRMSNorm, attn: HookedDecoderAttention, ln2: HookedRMSNorm, mlp: HookedGatedMLP
    ) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = ln1, attn, ln2, mlp
        for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(
        self, resid_pre: torch.Tensor, inputs: AttentionInputs, attn_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The block's output; a given ``attn_out`` resumes after attention (as ``encoder.HookedBlock``)."""
        if attn_out is None:
            resid_pre = self.hook_resid_pre(resid_pre)
            attn_out = self.attn(self.ln1(resid_pre), inputs)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn_out))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class LastTokenHead(nn.Module):
    """Logits at the last real token: an output projection's rows (``rows``: the no / yes tokens of a language
    model head, read on the fly so the weights stay shared), or all of a score head's labels."""

    def __init__(self, out: nn.Linear, rows: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.out = out
        self.rows = rows

    @property
    def num_labels(self) -> int:
        return 2 if self.rows is not None else self.out.out_features

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return self.out(pooled)
        rows = list(self.rows)
        bias = None if self.out.bias is None else self.out.bias[rows]
        return nn.functional.linear(pooled, self.out.weight[rows], bias)


@dataclass
class DecoderParts:
    """What ``decoder_parts`` hands over: the config and the modules to share with the hooked decoder."""

    cfg: DecoderConfig
    word_embeddings: nn.Embedding
    blocks: list[HookedDecoderBlock]
    ln_final: HookedRMSNorm
    rotary: nn.Module
    head: LastTokenHead | None


def decoder_config(hf_config, pad_token_id: int) -> DecoderConfig:
    c = hf_config
    sliding = [t for t in (getattr(c, "layer_types", None) or []) if t != "full_attention"]
    if sliding or getattr(c, "use_sliding_window", False):
        raise ValueError(
            f"{c.model_type} with sliding-window attention is not supported: irmechtest's decoder attends to "
            "the whole (causal) context in every layer"
        )
    return DecoderConfig(
        family=c.model_type,
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_key_value_heads=c.num_key_value_heads or c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        d_embed=c.hidden_size,
        n_ctx=c.max_position_embeddings,
        pad_token_id=pad_token_id,
        ln_eps=c.rms_norm_eps,
    )


def decoder_parts(hf_model: nn.Module, pad_token_id: int, label_rows: tuple[int, int] | None = None) -> DecoderParts:
    """Map a Qwen2 / Qwen3 / Llama model (bare, ``*ForCausalLM`` or ``*ForSequenceClassification``) onto
    the hooked decoder; ``label_rows`` (no, yes) picks a causal LM's judgement tokens."""
    family = hf_model.config.model_type
    if family not in DECODER_FAMILIES:
        raise ValueError(f"{family!r} is not a decoder family ({', '.join(DECODER_FAMILIES)})")
    cfg = decoder_config(hf_model.config, pad_token_id)
    base = hf_model.base_model
    blocks = []
    for layer in base.layers:
        sa, mlp = layer.self_attn, layer.mlp
        attn = HookedDecoderAttention(
            cfg, sa.q_proj, sa.k_proj, sa.v_proj, sa.o_proj, getattr(sa, "q_norm", None), getattr(sa, "k_norm", None)
        )
        blocks.append(
            HookedDecoderBlock(
                HookedRMSNorm(layer.input_layernorm),
                attn,
                HookedRMSNorm(layer.post_attention_layernorm),
                HookedGatedMLP(mlp.gate_proj, mlp.up_proj, mlp.down_proj, mlp.act_fn),
            )
        )
    head = None
    if hasattr(hf_model, "lm_head"):
        if label_rows is None:
            raise ValueError("a causal language model ranks by its label tokens: give label_rows=(no, yes)")
        head = LastTokenHead(hf_model.lm_head, label_rows)
    elif hasattr(hf_model, "score"):
        head = LastTokenHead(hf_model.score)
    return DecoderParts(cfg, base.embed_tokens, blocks, HookedRMSNorm(base.norm), base.rotary_emb, head)


class HookedDecoderRanker(HookedRanker):
    """``HookedRanker`` over a causal decoder: the score is read at the last real token (docs/architecture.md).

    ``prompt`` says how a cross-encoder reads a pair (``YesNoPrompt`` for a causal LM judge, ``PairPrompt``
    for a score head); bi-encoders encode each text alone and pool its last token.
    """

    TOP_HOOKS = ("embed", "pooled", "logits")
    causal = True

    def __init__(self, parts: DecoderParts, tokenizer, *, prompt: YesNoPrompt | PairPrompt | None = None, **kw) -> None:
        super().__init__(parts, tokenizer, **kw)  # type: ignore[arg-type]
        self.prompt = prompt
        # Decoders pad on the left, so the scoring position is the last one in every row.
        self.tokenizer.padding_side = "left"

    def _attach(self, parts: DecoderParts) -> None:  # type: ignore[override]
        self.embed = parts.word_embeddings
        self.token_type_embed = None
        self.blocks = nn.ModuleList(parts.blocks)
        self.ln_final = parts.ln_final
        self.rotary = parts.rotary
        self.head = parts.head

    @property
    def W_pos(self) -> torch.Tensor:
        raise AttributeError("a rotary decoder has no position-embedding matrix")

    # ------------------------------------------------------------------------------------ tokenising
    def _encode_texts(
        self, first: Sequence[str], second: Sequence[str] | None, overflow: Overflow
    ) -> dict[str, torch.Tensor]:
        prompt = self.prompt
        if second is None:
            return super()._encode_texts(first, None, overflow)
        if isinstance(prompt, PairPrompt):
            queries = [prompt.query.format(query=q) for q in first]
            return super()._encode_texts(queries, [prompt.document.format(document=d) for d in second], overflow)
        if not isinstance(prompt, YesNoPrompt):
            raise TypeError(f"{self.name}: a decoder cross-encoder needs a YesNoPrompt or a PairPrompt")
        return self._encode_yes_no(prompt, first, second, overflow)

    def _encode_yes_no(
        self, prompt: YesNoPrompt, queries: Sequence[str], documents: Sequence[str], overflow: Overflow
    ) -> dict[str, torch.Tensor]:
        """[BOS] + prefix + body + suffix token ids, left-padded; only the body (its document end) may be cut.

        The tokenizer's beginning-of-sequence token leads when it has one (Llama); Qwen's tokenizers have none,
        which leaves Qwen3-Reranker's model-card inputs exactly.
        """
        tok = self.tokenizer
        prefix, suffix = (tok(t, add_special_tokens=False)["input_ids"] for t in (prompt.prefix, prompt.suffix))
        prefix = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + prefix
        bodies = tok(
            [prompt.body.format(query=q, document=d) for q, d in zip(queries, documents, strict=True)],
            add_special_tokens=False,
        )["input_ids"]
        room = self.max_length - len(prefix) - len(suffix)
        too_long = [i for i, body in enumerate(bodies) if len(body) > room]
        if too_long and overflow == "error":
            i = too_long[0]
            raise InputError(
                f"{len(too_long)} input(s) exceed the model's maximum length of {self.max_length} tokens "
                f"(first: #{i}, {len(prefix) + len(bodies[i]) + len(suffix)} tokens with the prompt). "
                "irmechtest does not truncate silently: shorten the documents, or pass overflow='truncate' to cut "
                "the document side."
            )
        if overflow not in ("error", "truncate"):
            raise ValueError(f"overflow must be 'error' or 'truncate', got {overflow!r}")
        rows = [prefix + body[:room] + suffix for body in bodies]
        width = max(len(r) for r in rows)
        pad = self.cfg.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------------------------- forward
    def embed_inputs(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.hook_embed(self.embed(batch.input_ids) if inputs_embeds is None else inputs_embeds)

    def attention_context(self, batch: Batch, resid: torch.Tensor) -> AttentionInputs:
        mask = batch.attention_mask.bool()
        n = mask.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
        allowed = causal[None, None] & mask[:, None, None, :]
        # One finite minimum per masked entry: a padding row then has a uniform pattern, never a NaN.
        additive = torch.zeros(allowed.shape, dtype=resid.dtype, device=mask.device)
        additive = additive.masked_fill(~allowed, torch.finfo(resid.dtype).min)
        cos, sin = self.rotary(resid, batch.position_ids)
        return AttentionInputs(additive, cos, sin)

    def head_logits(self, batch: Batch, states: torch.Tensor) -> torch.Tensor:
        last = last_real_position(batch.attention_mask)
        return self.head(self.hook_pooled(states[torch.arange(len(states), device=states.device), last]))


def _token_id(tokenizer, token: str) -> int:
    """The id of a single-token label (Qwen3-Reranker's ``convert_tokens_to_ids("yes")``), or a clear error."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the label {token!r} is not one token of this tokenizer: set the prompt's yes / no tokens")
    return token_id


def decoder_ranker_parts(
    hf_model: nn.Module, tokenizer, kind: str, prompt: PromptSpec | None
) -> tuple[DecoderParts, YesNoPrompt | PairPrompt | None, dict[str, str]]:
    """Parts, the prompt in force (the family default unless given) and the adaptations made, for the identity.

    A tokenizer without a padding token pads with its end-of-sequence token (the attention mask, not the
    token, marks padding here); that adaptation is reported, not silent.
    """
    family = hf_model.config.model_type
    adaptations: dict[str, str] = {}
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the {family} tokenizer has neither a padding nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
        adaptations["pad_token"] = f"{tokenizer.eos_token!r} (the tokenizer has no padding token)"
    label_rows = None
    if kind == "cross-encoder":
        causal_lm = hasattr(hf_model, "lm_head")
        prompt = resolve_prompt((DEFAULT_YES_NO_PROMPT if causal_lm else DEFAULT_PAIR_PROMPT)[family], prompt)
        if causal_lm:
            label_rows = (_token_id(tokenizer, prompt.no), _token_id(tokenizer, prompt.yes))
    elif prompt:
        raise ValueError("a bi-encoder encodes texts alone: it takes no prompt")
    return decoder_parts(hf_model, tokenizer.pad_token_id, label_rows), prompt, adaptations
