"""A Llama-style decoder-only causal LM in one file: RMSNorm, RoPE, SwiGLU, optional GQA.

Module names equal `transformers`' LlamaForCausalLM (`model.embed_tokens`,
`model.layers.{i}.self_attn.{q,k,v,o}_proj`, `model.layers.{i}.mlp.{gate,up,down}_proj`,
`model.layers.{i}.{input,post_attention}_layernorm`, `model.norm`, `lm_head`), and so does the
arithmetic (RMSNorm in fp32, `rotate_half` RoPE with inv_freq = 1 / theta^(2i/d), GQA's query
head h reading kv head h // group), so `state_dict()` *is* a LlamaForCausalLM checkpoint (see
`pretrain.export`).
The state dict holds parameters only: RoPE's cos/sin are computed in fp32 in each forward
(cheap: seq_len x head_dim / 2), so casting the model to bf16 never rounds the frequencies.

Labels follow `transformers`: `labels` is aligned with `input_ids` (usually `labels = input_ids`)
and shifted inside, position t's logits predicting labels[:, t + 1]; -100 is ignored. `labels`
may also run one token past `input_ids`, so that the last position has a target too: with a
`pretrain.dataset.TokenDataset` window of seq_len + 1 tokens, `model(window[:, :-1],
labels=window)` reads seq_len positions and scores all seq_len of them (as training does: a
window of max_position_embeddings + 1 tokens fits, and every matmul is seq_len long, not
seq_len + 1). `model(window, labels=window)` gives the same loss from one position more.

Generation reuses the keys and values of the positions already read (`KVCache`): pass the same
cache to every call, first the prompt, then one new token at a time; each call's positions
follow the cached ones. Without a cache (training, evaluation) nothing of this runs, and with
one the first call (the prompt) attends exactly as a call without a cache does.

Batched generation of prompts of different lengths uses a `PaddedKVCache`: the prompts are
left-padded to one width, so every row writes its next token to the same cache slot, while each
row has its own RoPE positions (slot - its padding) and an attention mask that hides its padding
slots (causal within the prompt). Rows that finish are dropped (`PaddedKVCache.keep`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

IGNORE_INDEX = -100


class ModelConfig(BaseModel):
    """The architecture; field names are `transformers.LlamaConfig`'s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int | None = Field(None, ge=1)  # None: = num_attention_heads (no GQA)
    max_position_embeddings: int = Field(2048, ge=1)
    rms_norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    tie_word_embeddings: bool = False
    initializer_range: float = Field(0.02, gt=0)
    scale_residual_init: bool = True  # o_proj, down_proj: std / sqrt(2 * layers) (GPT-2)

    @model_validator(mode="before")
    @classmethod
    def _default_kv_heads(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("num_key_value_heads") is None:
            data = {**data, "num_key_value_heads": data.get("num_attention_heads")}
        return data

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple "
                             f"of num_key_value_heads {self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads  # never None once validated


class CausalLMOutput(NamedTuple):
    logits: Tensor  # (batch, seq, vocab)
    loss: Tensor | None  # mean next-token cross-entropy, when labels were given


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_cos_sin(config: ModelConfig, seq_len: int, device: torch.device,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (seq_len, head_dim) for positions 0..seq_len-1, computed in fp32."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


class LayerCache:
    """One layer's slice of a `KVCache`: the keys and values of positions 0..start-1."""

    padded = False  # PaddedLayerCache: rows with padding, their own mask and positions

    def __init__(self, keys: Tensor, values: Tensor, start: int):
        self.keys, self.values, self.start = keys, values, start

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' keys and values (batch, kv_heads, seq, head_dim); returns
        those of every position so far (the new ones themselves when nothing was cached)."""
        end = self.start + k.shape[2]
        self.keys[:, :, self.start:end] = k
        self.values[:, :, self.start:end] = v
        if self.start == 0:
            return k, v
        return self.keys[:, :, :end], self.values[:, :, :end]

    def mask(self, seq: int, device: torch.device) -> Tensor | None:
        """Which cached keys each of `seq` new queries may attend to (None: all of them)."""
        if seq == 1:
            return None
        keys = torch.arange(self.start + seq, device=device)
        queries = torch.arange(self.start, self.start + seq, device=device)
        return keys[None, :] <= queries[:, None]


class PaddedLayerCache(LayerCache):
    """One layer's slice of a `PaddedKVCache`: the attention mask hides each row's padding."""

    padded = True

    def __init__(self, keys: Tensor, values: Tensor, start: int, pad: Tensor):
        super().__init__(keys, values, start)
        self.pad = pad

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.start + k.shape[2]
        self.keys[:, :, self.start:end] = k
        self.values[:, :, self.start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]

    def mask(self, seq: int, device: torch.device) -> Tensor:
        """(batch, 1, seq, start + seq): query slot q of row b sees key slot k <= q that is not
        padding (k >= pad[b]); a padding query sees itself only (never a row of nothing, whose
        softmax would be nan)."""
        keys = torch.arange(self.start + seq, device=device)
        queries = torch.arange(self.start, self.start + seq, device=device)
        causal = keys[None, :] <= queries[:, None]
        real = keys[None, :] >= self.pad[:, None]  # (batch, keys)
        mask = (causal[None] & real[:, None]) | (keys[None, :] == queries[:, None])[None]
        return mask[:, None]


class KVCache:
    """Keys and values of every position read so far, per layer, in preallocated buffers of
    (batch, kv_heads, capacity, head_dim); `length` positions are filled."""

    def __init__(self, config: ModelConfig, batch: int, capacity: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if not 0 < capacity <= config.max_position_embeddings:
            raise ValueError(f"cache capacity {capacity} must be in [1, max_position_embeddings "
                             f"{config.max_position_embeddings}]")
        shape = (batch, config.kv_heads, capacity, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype)
                     for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype)
                       for _ in range(config.num_hidden_layers)]
        self.capacity, self.length = capacity, 0

    def layer(self, index: int) -> LayerCache:
        return LayerCache(self.keys[index], self.values[index], self.length)

    def advance(self, seq: int) -> None:
        self.length += seq


class PaddedKVCache(KVCache):
    """A `KVCache` for a batch of left-padded sequences of different lengths: row b's first
    pad[b] slots are padding, so its token in slot s is at position s - pad[b]. Every call
    writes the same slots for every row (the prompts, right-aligned, then one new token per
    row per step). `keep(rows)` drops the other rows and the slots only their padding used.
    Capacity counts slots, which may exceed max_position_embeddings (positions may not)."""

    def __init__(self, config: ModelConfig, pad: Sequence[int] | Tensor, capacity: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        pad = torch.as_tensor(pad, dtype=torch.long, device=device)
        if pad.ndim != 1 or not len(pad) or int(pad.min()) < 0 or int(pad.max()) >= capacity:
            raise ValueError(f"pad must be one count in [0, capacity {capacity}) per row")
        shape = (len(pad), config.kv_heads, capacity, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype)
                     for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype)
                       for _ in range(config.num_hidden_layers)]
        self.capacity, self.length, self.pad = capacity, 0, pad

    def layer(self, index: int) -> PaddedLayerCache:
        return PaddedLayerCache(self.keys[index], self.values[index], self.length, self.pad)

    def positions(self, seq: int) -> Tensor:
        """(batch, seq) RoPE positions of the next `seq` slots (0 on padding)."""
        slots = torch.arange(self.length, self.length + seq, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp(min=0)

    def keep(self, rows: Sequence[int] | Tensor) -> None:
        """Keep only `rows` (indices into the current batch, in the order given), and drop the
        leading slots that are padding in every row kept."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.pad.device)
        pad = self.pad[rows]
        cut = min(int(pad.min()), self.length)
        self.keys = [k[rows, :, cut:] for k in self.keys]  # advanced indexing copies
        self.values = [v[rows, :, cut:] for v in self.values]
        self.pad, self.length, self.capacity = pad - cut, self.length - cut, self.capacity - cut


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (config.num_attention_heads, config.kv_heads,
                                                    config.head_dim)
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor,
                cache: LayerCache | None = None) -> Tensor:
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v)
        # GQA: query head h reads kv head h // (heads // kv_heads), inside the kernel (K and V
        # are not repeated in memory; the math backend, used with a mask, repeats them itself)
        gqa = self.kv_heads != self.heads
        if cache is None or (cache.start == 0 and not cache.padded):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # new queries after cached keys (is_causal would align them to key 0), or
            # padded rows (their padding masked)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.mask(seq, x.device),
                                               enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor,
                cache: LayerCache | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """`model.*` of LlamaForCausalLM: embeddings, layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: Tensor, cache: KVCache | None = None) -> Tensor:
        """Hidden states of `input_ids`; with a cache, they are positions cache.length... and
        are added to it."""
        seq = input_ids.shape[1]
        start = 0 if cache is None else cache.length
        if isinstance(cache, PaddedKVCache):
            return self._forward_padded(input_ids, cache)
        if start + seq > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {start + seq} tokens > max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        if cache is not None and start + seq > cache.capacity:
            raise ValueError(f"sequence of {start + seq} tokens > the cache's capacity "
                             f"{cache.capacity}")
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(self.config, start + seq, x.device, x.dtype)
        if start:
            cos, sin = cos[start:], sin[start:]
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin) if cache is None else layer(x, cos, sin, cache.layer(index))
        if cache is not None:
            cache.advance(seq)
        return self.norm(x)

    def _forward_padded(self, input_ids: Tensor, cache: PaddedKVCache) -> Tensor:
        """forward() with a PaddedKVCache: each row at its own positions, padding masked."""
        batch, seq = input_ids.shape
        if batch != len(cache.pad):
            raise ValueError(f"{batch} rows but the cache holds {len(cache.pad)}")
        if cache.length + seq > cache.capacity:
            raise ValueError(f"{cache.length + seq} slots > the cache's capacity "
                             f"{cache.capacity}")
        positions = cache.positions(seq)
        if int(positions.max()) + 1 > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {int(positions.max()) + 1} tokens > "
                             f"max_position_embeddings {self.config.max_position_embeddings}")
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(self.config, int(positions.max()) + 1, x.device, x.dtype)
        cos, sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)  # (b, 1, seq, d)
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.layer(index))
        cache.advance(seq)
        return self.norm(x)


def next_token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy (fp32) of logits[:, t] against targets[:, t], already shifted;
    positions whose target is -100 are left out (all left out: nan)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                           ignore_index=IGNORE_INDEX)


def compile_layers(model: CausalLM) -> None:
    """torch.compile every decoder layer in place, as torchtitan does: parameter names and
    checkpoints stay the same, identical layers share one compiled graph (one compile, not
    num_hidden_layers), and inductor fuses each layer's norms, RoPE and SwiGLU elementwise
    work around the matmuls and attention. The loss is compiled too, so the fp32 upcast of
    the logits is fused into the cross-entropy instead of materialised."""
    for layer in model.model.layers:
        layer.compile()
    model.loss_fn = torch.compile(next_token_loss)


class CausalLM(nn.Module):
    """LlamaForCausalLM: `model` (the decoder) and `lm_head` (tied to the embeddings or not)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if self.lm_head.weight.device.type != "meta":  # meta: shapes only, nothing to fill
            self.init_weights()
        self.loss_fn = next_token_loss  # compile_layers swaps in a compiled one

    def init_weights(self) -> None:
        """normal(0, initializer_range) for every matrix, ones for norms; o_proj and down_proj
        get std / sqrt(2 * num_hidden_layers) when scale_residual_init (GPT-2, nanoGPT)."""
        std = self.config.initializer_range
        residual_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                scaled = self.config.scale_residual_init and name.endswith(("o_proj", "down_proj"))
                if not (name == "lm_head" and self.config.tie_word_embeddings):
                    nn.init.normal_(module.weight, mean=0.0, std=residual_std if scaled else std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None,
                cache: KVCache | None = None) -> CausalLMOutput:
        """input_ids: (batch, seq) int64; labels: (batch, seq) or (batch, seq + 1), aligned with
        input_ids (not shifted; see the module's docstring).
        cache: the keys and values of earlier positions (generation; see `KVCache`)."""
        logits = self.lm_head(self.model(input_ids, cache))
        loss = None
        if labels is not None:
            extra = labels.shape[1] - input_ids.shape[1]
            if labels.shape[0] != input_ids.shape[0] or extra not in (0, 1):
                raise ValueError(f"labels of shape {tuple(labels.shape)} for input_ids of shape "
                                 f"{tuple(input_ids.shape)}: as long, or one token longer")
            loss = self.loss_fn(logits if extra else logits[:, :-1], labels[:, 1:])
        return CausalLMOutput(logits, loss)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied matrix counts once); without the input embedding table
        (but with a tied lm_head) if exclude_embeddings."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings and not self.config.tie_word_embeddings:
            total -= self.model.embed_tokens.weight.numel()
        return total

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward), as in PaLM (appendix B) and nanoGPT:

            6 * N + 12 * L * H * Q * T

        N = num_params(exclude_embeddings=True): every weight used in a matmul, lm_head
        included, the embedding lookup not (2 FLOPs per weight forward, 4 backward). The second
        term is attention's QK^T and AV over T = seq_len keys with H heads of dim Q in L layers,
        not halved for the causal mask (the usual MFU convention). MFU = flops_per_token *
        tokens/s / peak FLOP/s."""
        config = self.config
        attention = (12 * config.num_hidden_layers * config.num_attention_heads
                     * config.head_dim * seq_len)
        return 6 * self.num_params(exclude_embeddings=True) + attention
