"""Feed-forward cameras from classical optical flow: the camera head of the shipped model (not the paper's head).

A learned head has to find correspondence in its own features, and at 32-64 px it does so poorly
(docs/research/LEARNING.md). Here correspondence is classical: OpenCV's
DIS optical flow between two frames (no learned weights, one pass, no per-scene optimisation), area-averaged onto a
32 x 32 grid, and only the step flow -> (rotation, translation direction, focal length) is learned. Flow fields of
a rigid scene are nearly linear in the rotation, and the focal length shows in their second-order terms.

Frames are centre-cropped to a square and resampled to ``FLOW_SIZE`` pixels before the flow, so the network always
sees the statistics it was trained on (``research/flow_pose_probe.py``: 64 px generated clips with known cameras,
the LABELLED SYNTHETIC PRIOR). Cameras come out as OpenCV camera-to-world (x right, y down, z forward) and pixel
intrinsics of the input frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from pensieve_ns.cameras import axis_angle_to_matrix, intrinsics_matrix, invert_rigid, normalise_cameras
from pensieve_ns.cameras import chain as chain_poses
from pensieve_ns.checkpoints import load_head_weights
from pensieve_ns.data.frames import grey
from pensieve_ns.model.camera_head import CameraHeadConfig, CameraPrediction

GRID = 32  # cells a side of the network's input
FLOW_SIZE = 64  # frames are resampled to this many pixels a side before the flow
UP = 2  # and upsampled this many times more for DIS (its 8-pixel patches are coarse at 64 px)
FLOW_SCALE = 8.0  # flow in FLOW_SIZE pixels is divided by this


def pair_flow(grey_a: np.ndarray, grey_b: np.ndarray, dis) -> np.ndarray:
    """DIS flow a -> b of two upsampled grey frames [S*UP, S*UP] uint8 -> [GRID, GRID, 2] float32 in frame
    pixels, area-averaged (many flow vectors per cell make the cell's flow finer than a pixel)."""
    f = dis.calc(grey_a, grey_b, None) / UP
    return cv2.resize(f, (GRID, GRID), interpolation=cv2.INTER_AREA)


def clip_flows(frames: np.ndarray, pairs) -> Tuple[Dict[Tuple[int, int], np.ndarray], np.ndarray]:
    """frames [L, S, S, 3] uint8 (S = FLOW_SIZE) -> flows {(a, b): [GRID, GRID, 2]} for each (a, b) in ``pairs``
    (both ways) and the grey frames on the grid [L, GRID, GRID] uint8."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    up = [grey(f, UP) for f in frames]  # the grey conversion and cubic upsampling optical flow reads
    flows = {}
    for a, b in pairs:
        flows[(a, b)] = pair_flow(up[a], up[b], dis)
        flows[(b, a)] = pair_flow(up[b], up[a], dis)
    small = np.stack([cv2.resize(x, (GRID, GRID), interpolation=cv2.INTER_AREA) for x in up])
    return flows, small


def pair_input(flows, grey: np.ndarray, a: int, b: int) -> np.ndarray:
    """The network's input for pair (a, b): [6, GRID, GRID] float32 = flow a -> b (2), flow b -> a (2), grey a, b."""
    return np.concatenate([flows[(a, b)].transpose(2, 0, 1) / FLOW_SCALE, flows[(b, a)].transpose(2, 0, 1) / FLOW_SCALE,
                           grey[a][None] / 255.0, grey[b][None] / 255.0]).astype(np.float32)


def square_frames(images: Float[Tensor, "L 3 H W"]) -> np.ndarray:
    """Frames in [0, 1] -> centre square resampled to FLOW_SIZE: [L, FLOW_SIZE, FLOW_SIZE, 3] uint8. The crop
    keeps the principal point central and the focal length in pixels, so f / side is the same before and after."""
    H, W = images.shape[-2:]
    s = min(H, W)
    crop = images[..., (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s].detach().float()
    if s != FLOW_SIZE:
        crop = F.interpolate(crop, size=(FLOW_SIZE, FLOW_SIZE), mode="area" if s > FLOW_SIZE else "bilinear", align_corners=None if s > FLOW_SIZE else False)
    return (crop.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def temporal_flows(
    images: Float[Tensor, "B L 3 H W"], frame_index: Optional[Int[Tensor, "B L"]] = None
) -> List[Tuple[Dict[Tuple[int, int], np.ndarray], np.ndarray]]:
    """Per clip, ``clip_flows`` between temporal neighbours (i, i + 1) of its frames put in temporal order
    (``frame_index.argsort``; batch order if None): what both flow heads read, so the model computes it once."""
    B, L = images.shape[:2]
    order = frame_index.argsort(dim=1) if frame_index is not None else torch.arange(L, device=images.device).expand(B, L)
    pairs = [(i, i + 1) for i in range(L - 1)]
    return [clip_flows(square_frames(images[b, order[b]]), pairs) for b in range(B)]


class FlowPoseNet(nn.Module):
    """[N, 6, GRID, GRID] pair inputs (``pair_input``) -> [N, 7] raw: axis-angle of b in a's camera frame (units of
    0.1 rad), translation direction (unnormalised), log(focal / side). CoordConv and no global pooling: where the
    flow is tells rotation from translation. The last layer is zero-initialised: identity, focal 1 side."""

    def __init__(self, width: int = 64, hidden: int = 256):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(8, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GELU(),  # 16 x 16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),  # 8 x 8
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),  # 4 x 4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, hidden), nn.GELU(), nn.Linear(hidden, 7))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None])

    def forward(self, x: Float[Tensor, "N 6 G G"]) -> Float[Tensor, "N 7"]:
        return self.head(self.body(torch.cat([x, self.coords.expand(len(x), -1, -1, -1)], 1)))

    def symmetric(
        self, x_ab: Float[Tensor, "N 6 G G"], x_ba: Float[Tensor, "N 6 G G"]
    ) -> Tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3"], Float[Tensor, "N"]]:
        """Axis-angle (rad) of b in a's frame, b's centre direction in a's frame (unit), focal / side. Both readings
        are combined so that the reverse pair gets exactly the inverse rotation and the same focal length:
        rotation (w_ab - w_ba) / 2, direction of (t_ab - R t_ba) / 2 (from b, a's centre is -R^T t_ab)."""
        o_ab, o_ba = self(torch.cat([x_ab, x_ba])).chunk(2)
        rot = 0.1 * (o_ab[:, :3] - o_ba[:, :3]) / 2
        R = axis_angle_to_matrix(rot)
        t = (o_ab[:, 3:6] - torch.einsum("nij,nj->ni", R, o_ba[:, 3:6])) / 2
        return rot, F.normalize(t, dim=1, eps=1e-6), torch.exp((o_ab[:, 6] + o_ba[:, 6]) / 2)


@dataclass
class FlowCameraHeadConfig(CameraHeadConfig):
    """Cameras from optical flow between temporal neighbours (``FlowCameraHead``), not the paper's head."""

    _target: Type = field(default_factory=lambda: FlowCameraHead)
    weights: Optional[Path] = None
    """A ``FlowCameraHead`` state dict to start from. Trained on generated clips with known cameras: using it is the
    LABELLED SYNTHETIC PRIOR, and results say so. Forgotten once a checkpoint fills the model."""
    freeze: bool = False
    """Keep the head's weights as they are (not in the optimizer): self-supervised training moves pre-trained
    cameras away from the truth (docs/research/LEARNING.md), so the shipped model freezes them."""

    def setup(self, **kwargs) -> nn.Module:  # type: ignore[override]
        head = FlowCameraHead()
        if self.weights is not None:
            head.load_state_dict(load_head_weights(self.weights, head, "camera head"))
        if self.freeze:
            head.requires_grad_(False)
        return head


class FlowCameraHead(nn.Module):
    """Per-frame cameras of a clip from ``FlowPoseNet`` on the flow between frames, read in temporal order: each frame
    against its predecessor (``chain``, the default and what it was trained for) or against batch frame 0. Step
    translations are unit directions, so the chained centres assume a steady speed (scale is free anyway). One
    focal length per clip: the mean over its pairs."""

    reads_features = False

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = FlowPoseNet(width)

    def predict(self, images: Float[Tensor, "B L 3 H W"], frame_index: Optional[Int[Tensor, "B L"]], features=None) -> CameraPrediction:
        """Chained cameras, normalised (batch frame 0 the identity, farthest centre at 1: the scale is free), with
        the flows and the unit-step cameras a flow depth head reads."""
        flows = temporal_flows(images, frame_index)
        c2w_steps, K, _ = self(images, frame_index, chain=True, flows=flows)
        return CameraPrediction(normalise_cameras(c2w_steps), K, flows, c2w_steps)

    def forward(
        self, images: Float[Tensor, "B L 3 H W"], frame_index: Optional[Int[Tensor, "B L"]] = None, chain: bool = True,
        flows: Optional[List] = None,
    ) -> Tuple[Float[Tensor, "B L 4 4"], Float[Tensor, "B L 3 3"], Float[Tensor, "B L 7"]]:
        """c2w_opencv [B, L, 4, 4] (batch frame 0 the identity), K [B, L, 3, 3] in pixels of the input frames, and
        the raw per-pair values [B, L, 7] (axis-angle in degrees, direction, focal / side; zeros for the first).
        ``flows``: ``temporal_flows(images, frame_index)`` when the caller has it already (chain only)."""
        B, L, _, H, W = images.shape
        dev, dt = images.device, images.dtype
        if frame_index is None:
            frame_index = torch.arange(L, device=dev).expand(B, L)
        eye = torch.eye(4, dtype=dt, device=dev)
        if L == 1:  # no pair: identity and a focal length of one side
            f = torch.full((B, 1), float(min(H, W)), dtype=dt, device=dev)
            return eye.repeat(B, 1, 1, 1), intrinsics_matrix(f, f, torch.full_like(f, W / 2), torch.full_like(f, H / 2)), images.new_zeros(B, 1, 7)
        if chain:
            order, pairs = frame_index.argsort(dim=1), [(i, i + 1) for i in range(L - 1)]
            flows = temporal_flows(images, frame_index) if flows is None else flows
        else:
            if flows is not None:
                raise ValueError("precomputed flows are between temporal neighbours: they need chain=True")
            order, pairs = torch.arange(L, device=dev).expand(B, L), [(0, i + 1) for i in range(L - 1)]
            flows = [clip_flows(square_frames(images[b]), pairs) for b in range(B)]
        x_ab, x_ba = [], []
        for clip, grey in flows:
            x_ab += [pair_input(clip, grey, i, j) for i, j in pairs]
            x_ba += [pair_input(clip, grey, j, i) for i, j in pairs]
        param = next(self.parameters())
        rot, direction, focal = self.net.symmetric(torch.from_numpy(np.stack(x_ab)).to(param), torch.from_numpy(np.stack(x_ba)).to(param))
        steps = eye.repeat(B, L - 1, 1, 1)
        steps[..., :3, :3] = axis_angle_to_matrix(rot).view(B, L - 1, 3, 3).to(dt)
        steps[..., :3, 3] = direction.view(B, L - 1, 3).to(dt)
        if chain:
            c2w_seq = chain_poses(eye.expand(B, 4, 4), steps)  # [B, L, 4, 4] in temporal order
        else:
            c2w_seq = torch.cat([eye.expand(B, 1, 4, 4), steps], dim=1)
        c2w = torch.empty_like(c2w_seq).scatter(1, order[..., None, None].expand_as(c2w_seq), c2w_seq)
        c2w = invert_rigid(c2w[:, :1]) @ c2w  # batch frame 0 is the identity
        raw = torch.cat([torch.rad2deg(rot), direction, focal[:, None]], dim=1).view(B, L - 1, 7).to(dt)
        raw = torch.cat([raw.new_zeros(B, 1, 7), raw], dim=1)
        raw = torch.empty_like(raw).scatter(1, order[..., None].expand_as(raw), raw)
        f = focal.view(B, L - 1).mean(dim=1, keepdim=True).expand(B, L).to(dt) * min(H, W)
        K = intrinsics_matrix(f, f, torch.full_like(f, W / 2), torch.full_like(f, H / 2))
        return c2w, K, raw
