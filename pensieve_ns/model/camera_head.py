"""The latent camera of each frame (method.md §1.2): pooled features -> quaternion, translation, focal.

Cameras come out as OpenCV camera-to-world (``c2w_opencv``) and pixel intrinsics ``K`` shared by the clip.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from pensieve_ns.cameras import axis_angle_to_matrix, intrinsics_matrix, invert_rigid, quaternion_to_matrix
from pensieve_ns.cameras import chain as chain_poses
from pensieve_ns.model.pair_pose import CorrelationPoseNet

FOCAL_MIN, FOCAL_SPAN, FOCAL_SCALE = 0.1, 2.9, 0.1


def focal_from_raw(raw: Tensor, size: int) -> Tensor:
    """f = size * (0.1 + 2.9 * sigmoid(0.1 * raw)): 0.1..3 image sizes, 1.55 at raw = 0 (FOV about 36 deg)."""
    return size * (FOCAL_MIN + FOCAL_SPAN * torch.sigmoid(FOCAL_SCALE * raw))


class CameraHead(nn.Module):
    """1x1 conv -> global mean -> linear to 10 raw values.

    ``quaternion="spec"`` (method.md §1.2): zero-initialised except the quaternion's w row (all ones), so w is the
    sum of the pooled features. At CPU scale that sum is large (about -31 after training in LEARNING.md exp 5), and
    since the rotation is q / |q| every rotation gradient is divided by |w|: rotations barely move.
    ``quaternion="residual"``: q = [1, 0, 0, 0] + raw with all rows zero-initialised: the same identity start, with
    rotation gradients of order one."""

    def __init__(self, in_channels: int = 21, hidden: int = 512, quaternion: str = "spec"):
        super().__init__()
        if quaternion not in ("spec", "residual"):
            raise ValueError(f"quaternion must be 'spec' or 'residual', not {quaternion!r}")
        self.residual = quaternion == "residual"
        self.conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.linear = nn.Linear(hidden, 10, bias=False)
        nn.init.zeros_(self.linear.weight)
        if not self.residual:
            with torch.no_grad():
                self.linear.weight[0].fill_(1.0)  # quaternion w: identity rotation at start

    def forward(
        self, features: Float[Tensor, "B L C H W"]
    ) -> Tuple[Float[Tensor, "B L 4 4"], Float[Tensor, "B L 3 3"], Float[Tensor, "B L 10"]]:
        """Per-frame c2w_opencv [B, L, 4, 4], clip-shared K [B, L, 3, 3] (pixels) and the raw outputs."""
        B, L, _, H, W = features.shape
        # A bias-free 1x1 conv commutes with the spatial mean, so pooling first is exact and H*W times cheaper.
        pooled = self.conv(features.mean(dim=(-2, -1)).reshape(B * L, -1, 1, 1)).flatten(1)
        raw = self.linear(pooled).view(B, L, 10)
        quat = raw[..., :4]
        if self.residual:
            quat = quat + torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=raw.dtype, device=raw.device)
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


class PairCameraHead(nn.Module):
    """Cameras from frame pairs (issue 5; not the paper's head): frame j's camera relative to frame 0 comes from
    ``CorrelationPoseNet(frame 0, frame j)``, which sees the two images and their correlation volume rather than
    pooled transformer features. Frame 0 is the identity; raw values per frame: axis-angle in degrees (3), camera
    centre (3), focal (1, as ``focal_from_raw``; averaged over frames 1..L-1). Zero-initialised output: identity
    cameras and a 36 degree field of view at the start.

    ``symmetric``: the network also sees every pair reversed, and the two answers are combined so that swapping
    the frames inverts the pose exactly: rotation (w_ab - w_ba) / 2, centre (t_ab - R t_ba) / 2, focal the mean
    (LEARNING.md exp 24: no constant rotation survives, and held-out error falls)."""

    def __init__(self, grid: int = 16, width: int = 64, symmetric: bool = True):
        super().__init__()
        self.symmetric = symmetric
        self.net = CorrelationPoseNet(out_dim=7, width=width, grid=grid)

    def relative(
        self, a: Float[Tensor, "N 3 H W"], b: Float[Tensor, "N 3 H W"]
    ) -> Tuple[Float[Tensor, "N 7"], Float[Tensor, "N 3 3"]]:
        """Raw pose of b relative to a (axis-angle in degrees, centre, focal raw) and its rotation matrix."""
        if not self.symmetric:
            raw = self.net(a, b)
            return raw, axis_angle_to_matrix(torch.deg2rad(raw[:, :3]))
        ab, ba = self.net(torch.cat([a, b]), torch.cat([b, a])).chunk(2)
        w = (ab[:, :3] - ba[:, :3]) / 2
        R = axis_angle_to_matrix(torch.deg2rad(w))
        t = (ab[:, 3:6] - (R @ ba[:, 3:6, None])[..., 0]) / 2
        return torch.cat([w, t, (ab[:, 6:] + ba[:, 6:]) / 2], dim=1), R

    def forward(
        self, images: Float[Tensor, "B L 3 H W"], frame_index: Optional[Int[Tensor, "B L"]] = None, chain: bool = False
    ) -> Tuple[Float[Tensor, "B L 4 4"], Float[Tensor, "B L 3 3"], Float[Tensor, "B L 7"]]:
        """Per-frame c2w_opencv [B, L, 4, 4] (frame 0 = identity), clip-shared K [B, L, 3, 3] and the raw outputs.

        ``chain``: read the frames in temporal order (``frame_index``, the video's frame numbers; batch order when
        None) and predict each against its predecessor, composing the steps. Short steps are what the head reads
        well: against frame 0 its angles shrink with the span (0.64 of the truth at 8 frames on pans, 0.97 when
        chained; LEARNING.md exp 34). Step centres are composed as predicted (their scale is set per pair), so
        the chained centres assume a roughly steady speed. Raw outputs are then per step (zeros for the first)."""
        B, L, _, H, W = images.shape
        eye = torch.eye(4, dtype=images.dtype, device=images.device)
        if chain and L > 1:
            if frame_index is None:
                frame_index = torch.arange(L, device=images.device).expand(B, L)
            order = frame_index.argsort(dim=1)  # [B, L] batch positions in temporal order
            seq = images.gather(1, order[..., None, None, None].expand_as(images))
            pair_raw, R = self.relative(seq[:, :-1].flatten(0, 1), seq[:, 1:].flatten(0, 1))
            pair_raw = pair_raw.view(B, L - 1, 7)
            steps = eye.repeat(B, L - 1, 1, 1)
            steps[..., :3, :3] = R.view(B, L - 1, 3, 3)
            steps[..., :3, 3] = pair_raw[..., 3:6]
            c2w_seq = chain_poses(eye.expand(B, 4, 4), steps)  # [B, L, 4, 4] in temporal order
            c2w = torch.empty_like(c2w_seq).scatter(1, order[..., None, None].expand_as(c2w_seq), c2w_seq)
            c2w = invert_rigid(c2w[:, :1]) @ c2w  # batch frame 0 is the identity, as unchained
            raw = torch.cat([pair_raw.new_zeros(B, 1, 7), pair_raw], dim=1)
            raw = torch.empty_like(raw).scatter(1, order[..., None].expand_as(raw), raw)  # per step, batch order
        else:
            first = images[:, :1].expand(B, L - 1, *images.shape[2:])
            pair_raw, R = self.relative(first.flatten(0, 1), images[:, 1:].flatten(0, 1))
            pair_raw = pair_raw.view(B, L - 1, 7)
            c2w = eye.repeat(B, L, 1, 1)
            c2w[:, 1:, :3, :3] = R.view(B, L - 1, 3, 3)
            c2w[:, 1:, :3, 3] = pair_raw[..., 3:6]
            raw = torch.cat([pair_raw.new_zeros(B, 1, 7), pair_raw], dim=1)
        # One focal length per clip, the mean over its pairs (a single frame: the default field of view).
        focal_raw = pair_raw[..., 6] if L > 1 else pair_raw.new_zeros(B, 1)
        f = focal_from_raw(focal_raw, W).mean(dim=1, keepdim=True).expand(B, L)
        K = intrinsics_matrix(f, f * H / W, torch.full_like(f, W / 2), torch.full_like(f, H / 2))
        return c2w, K, raw
