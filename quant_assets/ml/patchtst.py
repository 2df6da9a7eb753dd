"""PatchTST: each channel's window cut into patches, one Transformer shared by all channels.

After Nie et al. 2023, "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers".
A window x is [B, L, V]. The model
  1. cuts each channel's L values into patches of `patch_len` steps every `stride` steps
     (N = (L - patch_len) // stride + 1 patches) and embeds each patch linearly, plus a learned
     position per patch,
  2. runs every channel through the same pre-norm Transformer encoder on its own (channel
     independence: the B * V channel sequences are one batch, attention is across the N patches of
     one channel, never across channels),
  3. mean-pools each channel's N patch outputs into one d-dim vector: [B, V, d],
  4. reads the concatenation of the V pooled vectors (plus a learned coin vector when `n_coins` > 0)
     through a linear head into `n_targets` outputs: [B, n_targets].

How exogenous inputs enter: every input column, market feature or exogenous (funding, on-chain,
derivatives), is one more channel, encoded exactly like the others and independently of them. The
labels are not an input channel, so nothing is forecast per channel as in the paper's head: the head
on the pooled channel vectors is the only place channels meet, and it is where the model learns how
much each one's encoded history says about the horizon's return. The paper's per-window instance
normalisation (RevIN) is left out: inputs are already standardised on training rows, and the level of
a feature (a funding rate far from its mean) is information a return forecast should keep.
LayerNorm, no BatchNorm (the paper's choice): a sample's output never depends on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PatchTSTConfig:
    n_vars: int  # V: channels (every input column)
    input_len: int = 96  # L
    n_targets: int = 2
    n_coins: int = 0  # > 0: a learned coin vector appended to the pooled representation
    coin_dim: int = 4
    patch_len: int = 16
    stride: int = 8
    # smaller than iTransformer's: the encoder runs once per channel (77 of them in the student's
    # columns), so d = 16 already costs about 4x iTransformer's d = 32 per window (benchmarks/backbones.py)
    d_model: int = 16
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 32
    dropout: float = 0.0

    def __post_init__(self):
        if not 0 < self.patch_len <= self.input_len or self.stride <= 0:
            raise ValueError(f"PatchTST: patch_len {self.patch_len} must be in 1..input_len ({self.input_len}) "
                             f"and stride {self.stride} positive")  # fmt: skip
        if self.d_model % self.n_heads:
            raise ValueError(f"PatchTST: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    @property
    def n_patches(self) -> int:
        return (self.input_len - self.patch_len) // self.stride + 1


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, T, d]
        B, T, d = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), SelfAttention(d, heads, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ff_dim), nn.GELU(), nn.Linear(ff_dim, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.drop(self.attn(self.norm1(h)))
        return h + self.drop(self.mlp(self.norm2(h)))


class PatchTST(nn.Module):
    def __init__(self, config: PatchTSTConfig):
        super().__init__()
        c = self.config = config
        self.patch = nn.Linear(c.patch_len, c.d_model)
        self.pos = nn.Parameter(torch.zeros(c.n_patches, c.d_model))
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.ff_dim, c.dropout) for _ in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.coin_emb = nn.Embedding(c.n_coins, c.coin_dim) if c.n_coins > 0 else None
        extra = c.coin_dim if c.n_coins > 0 else 0
        self.head = nn.Linear(c.n_vars * c.d_model + extra, c.n_targets)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor, coin: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, V] (standardised, gaps filled), coin [B] ids -> [B, n_targets]."""
        c = self.config
        B, L, V = x.shape
        if (c.input_len, c.n_vars) != (L, V):
            raise ValueError(
                f"PatchTST: input shape {tuple(x.shape)}, config wants [B, {c.input_len}, {c.n_vars}]"
            )
        patches = x.transpose(1, 2).unfold(2, c.patch_len, c.stride)  # [B, V, N, patch_len]
        h = (self.patch(patches) + self.pos).flatten(0, 1)  # [B * V, N, d]: channels are independent
        for block in self.blocks:
            h = block(h)
        pooled = self.norm(h).mean(dim=1).view(B, V * c.d_model)  # [B, V * d]
        if self.coin_emb is not None:
            if coin is None:
                raise ValueError("PatchTST: config has a coin embedding, so forward needs coin ids [B]")
            pooled = torch.cat([pooled, self.coin_emb(coin)], dim=1)
        return self.head(pooled)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
