"""A small GPT-style causal transformer over bytes (pre-norm, learned positions)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "GPTConfig", "per_sample_loss"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GPTConfig:
    """Model size.

    Args:
        vocab_size: tokens in the vocabulary (256 for bytes).
        seq_len: the longest context.
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        dim: model width.
    """

    vocab_size: int = 256
    seq_len: int = 128
    num_layers: int = 2
    num_heads: int = 4
    dim: int = 128


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Next-token model: ``forward(tokens) -> logits`` of shape (batch, time, vocab)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.seq_len, cfg.dim))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def per_sample_loss(model: nn.Module, sample: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each row of ``sample`` (batch, seq_len + 1).

    ``model`` may be wrapped (DDP): the call goes through the wrapper's forward.
    """
    logits = model(sample[:, :-1])
    loss = F.cross_entropy(logits.transpose(1, 2), sample[:, 1:], reduction="none")
    return loss.mean(dim=1)
