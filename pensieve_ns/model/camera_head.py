"""The latent camera of each frame (docs/method.md §1.2): pooled features -> quaternion, translation, focal.

Cameras come out as OpenCV camera-to-world (``c2w_opencv``) and pixel intrinsics ``K`` shared by the clip.
``CameraHeadConfig`` is the paper's head; ``flow_pose.FlowCameraHeadConfig`` the alternative the shipped model uses.
Every camera head answers ``predict(images, frame_index, features) -> CameraPrediction``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple, Type

import torch
from jaxtyping import Float, Int
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from pensieve_ns.cameras import intrinsics_matrix, quaternion_to_matrix

FOCAL_MIN, FOCAL_SPAN, FOCAL_SCALE = 0.1, 2.9, 0.1


def focal_from_raw(raw: Tensor, size: int) -> Tensor:
    """f = size * (0.1 + 2.9 * sigmoid(0.1 * raw)): 0.1..3 image sizes, 1.55 at raw = 0 (FOV about 36 deg)."""
    return size * (FOCAL_MIN + FOCAL_SPAN * torch.sigmoid(FOCAL_SCALE * raw))


class CameraPrediction(NamedTuple):
    """What a camera head gives the rest of the model."""

    c2w_opencv: Float[Tensor, "B L 4 4"]
    """Per-frame OpenCV camera-to-world: what the renderers use."""
    K: Float[Tensor, "B L 3 3"]
    """Pixel intrinsics, one pinhole per clip."""
    flows: Optional[List] = None
    """Optical flow between temporal neighbours, where the head computed it (a flow depth head reuses it)."""
    c2w_unit_steps: Optional[Float[Tensor, "B L 4 4"]] = None
    """The flow head's cameras before normalisation (unit-length steps between neighbours): what a flow depth head
    reads. ``c2w_opencv`` is these normalised."""


@dataclass
class CameraHeadConfig(InstantiateConfig):
    """The paper's camera head (docs/method.md §1.2) on the camera transformer's features."""

    _target: Type = field(default_factory=lambda: CameraHead)
    hidden: int = 512
    """Width of the 1x1 convolution."""

    def setup(self, in_channels: int = 21, **kwargs) -> nn.Module:  # type: ignore[override]
        return CameraHead(in_channels, self.hidden)


class CameraHead(nn.Module):
    """1x1 conv -> global mean -> linear to 10 raw values (docs/method.md §1.2).

    Zero-initialised except the quaternion's w row (all ones), so w is the sum of the pooled features and every
    camera starts at the identity. At CPU scale that sum grows large, and since the rotation is q / |q| every
    rotation gradient is divided by |w|: rotations move slowly (docs/research/LEARNING.md)."""

    reads_features = True
    """The model computes the camera transformer's features only for heads that read them."""

    def __init__(self, in_channels: int = 21, hidden: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.linear = nn.Linear(hidden, 10, bias=False)
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.weight[0].fill_(1.0)  # quaternion w: identity rotation at start

    def predict(
        self, images: Float[Tensor, "B L 3 H W"], frame_index: Optional[Int[Tensor, "B L"]], features: Float[Tensor, "B L C H W"]
    ) -> CameraPrediction:
        c2w, K, _ = self(features)
        return CameraPrediction(c2w, K)

    def forward(
        self, features: Float[Tensor, "B L C H W"]
    ) -> Tuple[Float[Tensor, "B L 4 4"], Float[Tensor, "B L 3 3"], Float[Tensor, "B L 10"]]:
        """Per-frame c2w_opencv [B, L, 4, 4], clip-shared K [B, L, 3, 3] (pixels) and the raw outputs."""
        B, L, _, H, W = features.shape
        # A bias-free 1x1 conv commutes with the spatial mean, so pooling first is exact and H*W times cheaper.
        pooled = self.conv(features.mean(dim=(-2, -1)).reshape(B * L, -1, 1, 1)).flatten(1)
        raw = self.linear(pooled).view(B, L, 10)
        quat = raw[..., :4]
        quat = quat / (quat.norm(dim=-1, keepdim=True) + 1e-5)
        c2w = torch.zeros(B, L, 4, 4, dtype=raw.dtype, device=raw.device)
        c2w[..., :3, :3] = quaternion_to_matrix(quat)
        c2w[..., :3, 3] = raw[..., 4:7]
        c2w[..., 3, 3] = 1.0
        # One pinhole per clip: focal lengths averaged over its frames, principal point at the centre.
        fx = focal_from_raw(raw[..., 7], W).mean(dim=1, keepdim=True).expand(B, L)
        fy = focal_from_raw(raw[..., 8], H).mean(dim=1, keepdim=True).expand(B, L)
        K = intrinsics_matrix(fx, fy, torch.full_like(fx, W / 2), torch.full_like(fy, H / 2))
        return c2w, K, raw
