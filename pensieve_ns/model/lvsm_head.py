"""Stage-1 proxy renderer (docs/method.md §1.3): a decoder-only transformer over context tokens and a ray-only target."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from pensieve_ns.model.vit import ViT, ViTSize


class LVSMHead(nn.Module):
    """Renders each target camera from the context features and the Plücker rays of all cameras.

    Context frame tokens are [F_ctx (21), Plücker (6)]; the target frame is [zeros (21), Plücker (6)]; one
    ViT runs jointly over the G + 1 frames and the target's sigmoid output is the image. Every target gets
    its own pass (batched together here).
    """

    def __init__(self, size: ViTSize, patch: int, feature_channels: int = 21, checkpointing: bool = False):
        super().__init__()
        self.feature_channels = feature_channels
        self.vit = ViT(feature_channels + 6, 3, size, patch, checkpointing)

    def forward(
        self,
        context_features: Float[Tensor, "B G 21 H W"],
        context_rays: Float[Tensor, "B G 6 H W"],
        target_rays: Float[Tensor, "B T 6 H W"],
    ) -> Float[Tensor, "B T 3 H W"]:
        B, G, C, H, W = context_features.shape
        T = target_rays.shape[1]
        ctx = torch.cat([context_features, context_rays], dim=2)  # [B, G, 27, H, W]
        ctx = ctx[:, None].expand(B, T, G, C + 6, H, W)
        tgt = torch.cat([target_rays.new_zeros(B, T, C, H, W), target_rays], dim=2)[:, :, None]
        seq = torch.cat([ctx, tgt], dim=2).flatten(0, 1)  # [B*T, G+1, 27, H, W]
        out = self.vit(seq)[:, -1]  # the target frame's output
        return torch.sigmoid(out).unflatten(0, (B, T))
