"""iTransformer: attention across variates, each variate's whole window one token.

After Liu et al. 2024, "iTransformer: Inverted Transformers Are Effective for Time Series
Forecasting". A window x is [B, L, V]: L steps of V input variables (market features and exogenous
columns alike; the model does not tell them apart). The model
  1. embeds each variate's L values into one d-dim token with a linear map shared by all variates,
     plus a learned vector per variate (the tokens are a set: without it the encoder could not tell
     funding from volume once the series are mixed),
  2. appends one learned target token (plus a learned coin vector when `n_coins` > 0): the labels
     (label_1h, label_4h) are not input series here, so they get their own token, which reads the
     variates through attention, the way iTransformer's target variate does,
  3. runs `n_layers` pre-norm encoder blocks (self-attention across the V + 1 tokens, then a
     token-wise MLP), so correlations between variables are learned by attention and the temporal
     pattern of each by the embedding and the MLP,
  4. reads the target token through a linear head into `n_targets` outputs: [B, n_targets].

Attention is over V + 1 tokens, not L steps: its cost grows with the feature count, not the lookback.
LayerNorm, no BatchNorm: a sample's output never depends on its batch (DDP equals one process).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ITransformerConfig:
    n_vars: int  # V: input variables (variate tokens)
    input_len: int = 96  # L
    n_targets: int = 2
    n_coins: int = 0  # > 0: a learned vector per coin id, added to the target token
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 64
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(
                f"iTransformer: d_model {self.d_model} is not divisible by n_heads {self.n_heads}"
            )


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


class ITransformer(nn.Module):
    def __init__(self, config: ITransformerConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Linear(c.input_len, c.d_model)  # a variate's whole window -> its token
        self.var_emb = nn.Parameter(torch.zeros(c.n_vars, c.d_model))
        self.target = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.coin_emb = nn.Embedding(c.n_coins, c.d_model) if c.n_coins > 0 else None
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.ff_dim, c.dropout) for _ in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.n_targets)
        nn.init.normal_(self.var_emb, std=0.02)
        nn.init.normal_(self.target, std=0.02)

    def forward(self, x: torch.Tensor, coin: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, V] (standardised, gaps filled), coin [B] ids -> [B, n_targets]."""
        c = self.config
        B = x.shape[0]
        if x.shape[1:] != (c.input_len, c.n_vars):
            raise ValueError(
                f"iTransformer: input shape {tuple(x.shape)}, config wants [B, {c.input_len}, {c.n_vars}]"
            )
        tokens = self.embed(x.transpose(1, 2)) + self.var_emb  # [B, V, d]
        target = self.target.expand(B, 1, c.d_model)
        if self.coin_emb is not None:
            if coin is None:
                raise ValueError("iTransformer: config has a coin embedding, so forward needs coin ids [B]")
            target = target + self.coin_emb(coin)[:, None]
        h = torch.cat([tokens, target], dim=1)  # [B, V + 1, d]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, -1]))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
