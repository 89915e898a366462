"""The one ViT used by every transformer of the model (docs/method.md §1.1).

Pre-LN blocks with QK-RMSNorm and bias-free linears, a patch tokenizer, optional "hook" fusion of an
intermediate block with the last, and a dense unpatchify head. No positional embeddings: position enters
only through input channels (pixel coordinates, frame index). Frames of one sample are tokenized
separately and concatenated into one sequence, so attention is global across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


@dataclass
class ViTSize:
    """Width and depth of one transformer (the presets in ``method_configs.py`` fill these)."""

    dim: int = 512
    depth: int = 8
    heads: int = 16
    mlp_hidden: int = 4096
    hook: Optional[int] = 3
    """Index of the block whose output is fused with the last one (MLP fusion); None: no hook."""


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)

    def forward(self, x: Float[Tensor, "B N D"]) -> Float[Tensor, "B N D"]:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.out(out.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, bias=False)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden, bias=False), nn.GELU(), nn.Linear(mlp_hidden, dim, bias=False))

    def forward(self, x: Float[Tensor, "B N D"]) -> Float[Tensor, "B N D"]:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Dense ViT over the F frames of each sample jointly: [B, F, C_in, H, W] -> [B, F, C_out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, size: ViTSize, patch: int = 8, checkpointing: bool = False):
        super().__init__()
        self.patch, self.out_channels, self.checkpointing = patch, out_channels, checkpointing
        self.embed = nn.Linear(in_channels * patch * patch, size.dim, bias=False)
        self.embed_norm = nn.LayerNorm(size.dim, bias=False)
        self.blocks = nn.ModuleList(Block(size.dim, size.heads, size.mlp_hidden) for _ in range(size.depth))
        if size.hook is not None and not 0 <= size.hook < size.depth - 1:
            raise ValueError(f"hook {size.hook} must name a block before the last of {size.depth}")
        self.hook = size.hook
        self.fuse = nn.Linear(2 * size.dim, size.dim, bias=True) if size.hook is not None else None
        self.head_norm = nn.LayerNorm(size.dim, bias=False)
        self.head = nn.Linear(size.dim, out_channels * patch * patch, bias=False)

    def forward(self, x: Float[Tensor, "B F C H W"]) -> Float[Tensor, "B F Co H W"]:
        B, Fr, C, H, W = x.shape
        p = self.patch
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        h, w = H // p, W // p
        tokens = x.reshape(B, Fr, C, h, p, w, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, Fr * h * w, C * p * p)
        tokens = self.embed_norm(self.embed(tokens))
        hooked = None
        for k, block in enumerate(self.blocks):
            if self.checkpointing and self.training:
                tokens = torch.utils.checkpoint.checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
            if k == self.hook:
                hooked = tokens
        if self.fuse is not None:
            tokens = self.fuse(torch.cat([hooked, tokens], dim=-1))
        out = self.head(self.head_norm(tokens))
        out = out.reshape(B, Fr, h, w, self.out_channels, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(B, Fr, self.out_channels, H, W)
