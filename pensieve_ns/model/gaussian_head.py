"""Stage-2 Gaussian head (docs/method.md §1.4): per-pixel 3D Gaussians from the context features and cameras.

Each context frame's features go through three 3x3 convs (non-affine InstanceNorm, GELU, no biases) and a 1x1 conv
to 11 raw channels: inverse depth 1, rotation 4, opacity 1, colour 3, scale 2. Gaussians are placed along the pixel
rays of the frame's *predicted* OpenCV camera, so the image losses reach the cameras through the positions.
With ``stride`` k > 1 (the CPU preset), features and pixels are average-pooled k x k first: one Gaussian per k x k
block, at the block centre, with k times the footprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from pensieve_ns.cameras import matrix_to_quaternion, quaternion_multiply, unproject_depth

SH_C0 = 0.28209479177387814  # colour = SH_C0 * DC + 0.5 (degree-0 spherical harmonics)
MIN_DEPTH, MAX_DEPTH = 1.0, 100.0
FLATNESS = 1e-3  # third scale relative to the in-plane ones: flat 3D Gaussians stand in for 2DGS surfels


class Gaussians(NamedTuple):
    """G * h * w Gaussians per clip in world coordinates (the OpenCV world of the predicted cameras)."""

    means: Float[Tensor, "B N 3"]
    quats: Float[Tensor, "B N 4"]  # (w, x, y, z), unit
    scales: Float[Tensor, "B N 3"]  # standard deviations
    opacities: Float[Tensor, "B N"]
    colors: Float[Tensor, "B N 3"]  # RGB = SH_C0 * DC + 0.5
    depth: Float[Tensor, "B G 1 h w"]  # predicted z depth of each context pixel (block), for the depth losses


def inverse_depth_activation(raw: Tensor) -> Tensor:
    """d = 1 / (1/100 + (1 - 1/100) sigmoid(raw)): z depth in [1, 100], uniform-ish in inverse depth."""
    return 1.0 / (1.0 / MAX_DEPTH + (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH) * torch.sigmoid(raw))


@dataclass
class GaussianHeadConfig(InstantiateConfig):
    """The stage-2 Gaussian head (docs/method.md §1.4)."""

    _target: Type = field(default_factory=lambda: GaussianHead)
    hidden: int = 512
    stride: int = 1
    """One Gaussian per stride x stride context pixels (1 = per pixel, the paper; 2-4 keep the CPU renderer fast)."""
    footprint: Tuple[float, float] = (0.5, 15.0)
    """Range of each splat's scale times W / depth (the paper's 0.5..15; roughly its size in pixels over fx / W)."""

    def setup(self, in_channels: int = 21, **kwargs) -> nn.Module:  # type: ignore[override]
        return GaussianHead(in_channels, self.hidden, self.stride, self.footprint)


@dataclass
class DepthHeadConfig(InstantiateConfig):
    """Where the Gaussians' depth comes from. This one is the paper's: the Gaussian head's own inverse-depth
    channel, no separate head. ``flow_depth.FlowDepthHeadConfig`` is the alternative the shipped stage 2 uses."""

    _target: Type = field(default_factory=lambda: GaussianChannelDepth)

    def setup(self, **kwargs) -> nn.Module:  # type: ignore[override]
        return GaussianChannelDepth()


class GaussianChannelDepth(nn.Module):
    """The paper's depth: nothing from outside the Gaussian head (``predict`` gives None)."""

    def predict(self, images: Float[Tensor, "B L 3 H W"], cameras, frame_index: Optional[Int[Tensor, "B L"]] = None) -> None:
        return None


class GaussianHead(nn.Module):
    def __init__(
        self, in_channels: int = 21, hidden: int = 512, stride: int = 1, footprint: Tuple[float, float] = (0.5, 15.0)
    ):
        """footprint: range of s * W / d (the paper's 0.5..15); the splat's standard deviation in pixels is about
        fx / W times that (times the stride). Smaller ranges keep the CPU renderer's per-tile lists short."""
        super().__init__()
        self.stride = stride
        self.footprint = footprint
        layers = []
        for i in range(3):
            layers += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, padding=1, bias=False),
                       nn.InstanceNorm2d(hidden, affine=False)]
            if i < 2:
                layers.append(nn.GELU())
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Conv2d(hidden, 11, 1, bias=False)

    def forward(
        self,
        features: Float[Tensor, "B G C H W"],
        images: Float[Tensor, "B G 3 H W"],
        c2w_opencv: Float[Tensor, "B G 4 4"],
        K: Float[Tensor, "B G 3 3"],
        depth: Optional[Float[Tensor, "B G 1 H W"]] = None,
    ) -> Gaussians:
        """``depth``: z-depth of every context pixel from elsewhere (``FlowDepthHead``), used instead of the head's
        own inverse-depth channel (averaged over each stride block in inverse depth)."""
        B, G, _, H, W = features.shape
        k = self.stride
        x, rgb = features.flatten(0, 1), images.flatten(0, 1)
        if k > 1:
            x, rgb = F.avg_pool2d(x, k), F.avg_pool2d(rgb, k)
        h, w = x.shape[-2:]
        raw = self.out(self.trunk(x)).view(B, G, 11, h, w)
        raw_depth, raw_rot, raw_opacity, raw_rgb, raw_scale = raw.split([1, 4, 1, 3, 2], dim=2)
        if depth is None:
            depth = inverse_depth_activation(raw_depth)  # [B, G, 1, h, w]
        else:
            inv = depth.flatten(0, 1).clamp_min(1e-6).reciprocal()
            depth = (F.avg_pool2d(inv, k) if k > 1 else inv).reciprocal().view(B, G, 1, h, w)

        # Centres along the frame's pixel rays at the predicted depth, in the world of its c2w (OpenCV).
        means = unproject_depth(depth[:, :, 0], K, c2w_opencv, stride=k)  # [B, G, h, w, 3]
        R = c2w_opencv[..., :3, :3]

        # Rotation predicted in camera axes, composed with the camera's rotation: q_world = q_cam ⊗ q_local.
        # (+1 on w: the identity at a zero output, where plain normalisation would be ill-conditioned.)
        q_local = raw_rot.movedim(2, -1) + torch.tensor([1.0, 0.0, 0.0, 0.0], device=x.device, dtype=x.dtype)
        q_local = q_local / q_local.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        q_cam = matrix_to_quaternion(R)[:, :, None, None].expand_as(q_local)
        quats = quaternion_multiply(q_cam, q_local)

        # Scales proportional to depth, normalised by image size (footprint range in pixels), flat along the normal.
        lo, hi = self.footprint
        footprint = (lo + (hi - lo) * torch.sigmoid(raw_scale)) * k
        sxy = footprint * depth * torch.tensor([1.0 / W, 1.0 / H], device=x.device, dtype=x.dtype).view(1, 1, 2, 1, 1)
        scales = torch.cat([sxy, FLATNESS * sxy.mean(dim=2, keepdim=True)], dim=2).movedim(2, -1)

        opacities = torch.sigmoid(raw_opacity)[:, :, 0]
        colors = rgb.view(B, G, 3, h, w) + SH_C0 * raw_rgb  # residual on the input pixel: DC = (rgb-0.5)/C0 + raw
        flat = lambda a: a.reshape(B, G * h * w, *a.shape[4:])  # noqa: E731  [B, G, h, w, ...] -> [B, N, ...]
        return Gaussians(
            means=flat(means),
            quats=flat(quats),
            scales=flat(scales),
            opacities=flat(opacities),
            colors=flat(colors.movedim(2, -1)),
            depth=depth,
        )
