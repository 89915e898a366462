"""Per-frame, camera and context transformers (docs/method.md §1.1): frames -> F_cam and F_ctx features."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from pensieve_ns.model.vit import ViT, ViTSize

NORM_MEAN, NORM_STD = 0.45, 0.226
FEATURE_CHANNELS = 16
"""Channels each transformer outputs per pixel; 5 input channels (RGB, v, u) are appended to them."""


def normalise(x: Tensor) -> Tensor:
    return (x - NORM_MEAN) / NORM_STD


def images_with_uv(images: Float[Tensor, "B L 3 H W"]) -> Float[Tensor, "B L 5 H W"]:
    """RGB plus row (v = row / (H-1)) and column (u = col / (W-1)) maps, all normalised."""
    B, L, _, H, W = images.shape
    v = torch.linspace(0, 1, H, dtype=images.dtype, device=images.device)[:, None].expand(H, W)
    u = torch.linspace(0, 1, W, dtype=images.dtype, device=images.device)[None, :].expand(H, W)
    uv = torch.stack([v, u])[None, None].expand(B, L, 2, H, W)
    return normalise(torch.cat([images, uv], dim=2))


def frame_index_channel(x: Float[Tensor, "B L C H W"]) -> Float[Tensor, "B L 1 H W"]:
    """idx_j = j / (L - 1 + 1e-4), normalised: an identity tag (frames are shuffled, it is not time)."""
    B, L, _, H, W = x.shape
    idx = torch.arange(L, dtype=x.dtype, device=x.device) / (L - 1 + 1e-4)
    return normalise(idx)[None, :, None, None, None].expand(B, L, 1, H, W)


class Bridge(nn.Module):
    """1x1 conv on every frame (22 -> 16 channels, with bias) in front of a cross-frame ViT."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Float[Tensor, "B L C H W"]) -> Float[Tensor, "B L Co H W"]:
        B, L = x.shape[:2]
        return self.conv(x.flatten(0, 1)).unflatten(0, (B, L))


class PensieveEncoder(nn.Module):
    """Shared per-frame ViT, camera ViT over all L frames, context ViT over the G context frames."""

    def __init__(self, frame: ViTSize, camera: ViTSize, context: ViTSize, patch: int, checkpointing: bool = False):
        super().__init__()
        c = FEATURE_CHANNELS
        self.frame_vit = ViT(5, c, frame, patch, checkpointing)
        self.camera_bridge = Bridge(c + 5 + 1, c)
        self.camera_vit = ViT(c, c, camera, patch, checkpointing)
        self.context_bridge = Bridge(c + 5 + 1, c)
        self.context_vit = ViT(c, c, context, patch, checkpointing)

    def forward(
        self, images: Float[Tensor, "B L 3 H W"], context: Int[Tensor, "B G"], camera_features: bool = True
    ) -> Tuple[Optional[Float[Tensor, "B L 21 H W"]], Float[Tensor, "B G 21 H W"]]:
        """(F_cam for every frame, F_ctx for the context frames), 16 learned + 5 input channels each. F_cam is None
        with ``camera_features=False`` (a camera head that reads the images itself skips the camera ViT)."""
        B, L = images.shape[:2]
        x = images_with_uv(images)
        # Per-frame transformer: each frame is its own sequence.
        f_self = torch.cat([self.frame_vit(x.flatten(0, 1)[:, None]).unflatten(0, (B, L))[:, :, 0], x], dim=2)
        f_cam = None
        if camera_features:
            cam_in = torch.cat([f_self, frame_index_channel(f_self)], dim=2)
            f_cam = torch.cat([self.camera_vit(self.camera_bridge(cam_in)), x], dim=2)
        pick = context[:, :, None, None, None].expand(-1, -1, *f_self.shape[2:])
        ctx = torch.gather(f_self, 1, pick)
        ctx_in = torch.cat([ctx, frame_index_channel(ctx)], dim=2)
        f_ctx = torch.cat([self.context_vit(self.context_bridge(ctx_in)), torch.gather(x, 1, pick[:, :, :5])], dim=2)
        return f_cam, f_ctx
