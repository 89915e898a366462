"""Feed-forward depth from optical flow and cameras: the depth head of the shipped stage 2 (not the paper's).

Once a frame's neighbours and the relative cameras are known, the flow to each neighbour says how far every pixel
is: along the pixel ray, the inverse depth rho that makes the 3D point land on the flow's end point solves

    m x R^T (p - rho t) = 0   =>   rho = <m x R^T p, m x R^T t> / |m x R^T t|^2

(p the pixel's ray in frame a, m the ray of its flow end point in frame b, [R t] b's camera in a's frame, OpenCV;
|m x R^T t| is how much the point moves per unit of inverse depth, i.e. the parallax the pair gives it). Two-frame
flow at 64 px is too noisy to use that as it is (depth AbsRel 0.27-1.4 per path kind with TRUE cameras, and
undefined for pans, which do not translate). So ``FlowDepthNet``, a small U-Net, reads the frame, the flow to
both temporal neighbours and these closed-form estimates with their parallax, and returns inverse depth in units
of the cameras' step length (``FlowCameraHead`` chains unit steps, so depth and cameras share one scale).

It is trained in ``research/flow_depth_probe.py`` self-supervised by photometric reprojection (neighbour frames
warped into the frame through the predicted depth), with the TRUE cameras of generated TRAINING clips: the
LABELLED SYNTHETIC PRIOR. No depth labels are used. Held-out (docs/research/LEARNING.md): better than a constant depth
where the camera translates, far worse on pans (the loss has no depth signal there), worse overall (0.43 vs 0.30).
With the pan gate (``neighbour_disagreement``), windows whose flow measures no depth get a constant:
0.298, level with a constant depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from pensieve_ns.cameras import camera_scale, invert_rigid
from pensieve_ns.checkpoints import load_head_weights
from pensieve_ns.model.camera_head import CameraPrediction
from pensieve_ns.model.flow_pose import FLOW_SCALE, FLOW_SIZE, GRID, temporal_flows
from pensieve_ns.model.gaussian_head import DepthHeadConfig

IN_CHANNELS = 9  # grey, (flow, rho, parallax) to the previous and the next frame


def flow_inverse_depth(
    flow: Float[Tensor, "G G 2"], b_in_a: Float[Tensor, "4 4"], focal: float, side: int = FLOW_SIZE
) -> Tuple[Float[Tensor, "G G"], Float[Tensor, "G G"]]:
    """Closed-form two-view inverse depth on a G x G grid of cells: flow a -> b in ``side``-pixel frames, b's
    OpenCV camera-to-world in a's camera frame (its translation sets the unit), focal length in ``side`` pixels
    with the principal point at the centre. Returns rho (1 / z-depth in a, in units of |t|; signed: negative is
    behind the camera) and the parallax |m x R^T t| per unit of rho (0 where the pair has no baseline)."""
    G = flow.shape[0]
    c = (torch.arange(G, dtype=flow.dtype, device=flow.device) + 0.5) * side / G
    v, u = torch.meshgrid(c, c, indexing="ij")
    ones = torch.ones_like(u)
    p = torch.stack([(u - side / 2) / focal, (v - side / 2) / focal, ones], -1)
    m = torch.stack([(u + flow[..., 0] - side / 2) / focal, (v + flow[..., 1] - side / 2) / focal, ones], -1)
    R, t = b_in_a[:3, :3].to(flow), b_in_a[:3, 3].to(flow)
    a = torch.linalg.cross(m, p @ R, dim=-1)  # p @ R = R^T p per cell
    d = torch.linalg.cross(m, (R.T @ t).expand_as(m), dim=-1)
    w2 = (d * d).sum(-1)
    return (a * d).sum(-1) / w2.clamp_min(1e-12), w2.sqrt()


def depth_input(
    flows: Dict[Tuple[int, int], np.ndarray], grey: np.ndarray, c2w: Float[Tensor, "L 4 4"], focal: float, i: int
) -> Float[Tensor, "9 G G"]:
    """The network's input for frame i of a window in temporal order: grey i, then for the previous and the next
    frame (zeros where there is none) the flow i -> j / FLOW_SCALE, rho (clamped to [-2, 2]) and the parallax."""
    parts = [torch.from_numpy(grey[i]).float()[None] / 255.0]
    for j in (i - 1, i + 1):
        if (i, j) not in flows:
            parts.append(torch.zeros(4, GRID, GRID))
            continue
        flow = torch.from_numpy(flows[(i, j)]).float()
        rho, parallax = flow_inverse_depth(flow, (invert_rigid(c2w[i]) @ c2w[j]).float(), focal)
        parts += [flow.permute(2, 0, 1) / FLOW_SCALE, rho.clamp(-2, 2)[None], parallax[None]]
    return torch.cat(parts)


def neighbour_disagreement(x: Float[Tensor, "L 9 G G"]) -> float:
    """How little a window's flow measures depth, from the net's own inputs: over the frames with both
    temporal neighbours, the median |rho_prev - rho_next| over the median |rho|. Where the camera translates, the
    two neighbours' closed-form inverse depths measure one depth map and agree (validation: arcs and orbits 0.03-0.33
    but for one arc at 0.67, walks 0.14-0.55 but for one at 0.94); in a pan neither measures anything, and they
    disagree (0.67-1.87). inf for a window with no frame between two neighbours."""
    inner = x[1:-1]
    if len(inner) == 0:
        return float("inf")
    a, b = inner[:, 3].flatten().float(), inner[:, 7].flatten().float()
    return float((a - b).abs().median() / torch.cat([a, b]).abs().median().clamp_min(1e-9))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


class FlowDepthNet(nn.Module):
    """[N, 9, G, G] (``depth_input``) -> log inverse depth [N, 1, G, G] in step units. A U-Net with CoordConv
    (32 -> 16 -> 8 -> 4 and back), so it can spread the estimates of well-measured cells over the poorly measured
    ones and fall back on the image where nothing is measured (pans)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.enc = nn.ModuleList([_block(IN_CHANNELS + 2, w), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 2)])
        self.dec = nn.ModuleList([_block(8 * w, 4 * w), _block(6 * w, 2 * w), _block(3 * w, w)])
        self.out = nn.Conv2d(w, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, -1.0)  # depth about e steps before training
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None])

    def forward(self, x: Float[Tensor, "N 9 G G"]) -> Float[Tensor, "N 1 G G"]:
        skips, h = [], torch.cat([x, self.coords.expand(len(x), -1, -1, -1)], 1)
        for block in self.enc:
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return 8 * torch.tanh(self.out(h) / 8)  # a soft bound: a hard clamp can stick there with no gradient


@dataclass
class FlowDepthHeadConfig(DepthHeadConfig):
    """The Gaussians' depth from optical flow read under the predicted cameras (``FlowDepthHead``), not the paper's."""

    _target: Type = field(default_factory=lambda: FlowDepthHead)
    weights: Optional[Path] = None
    """A ``FlowDepthHead`` state dict (trained photometrically with the known cameras of generated clips: the
    LABELLED SYNTHETIC PRIOR, no depth labels). Forgotten once a checkpoint fills the model."""
    freeze: bool = False
    """Keep the head's weights as they are (not in the optimizer)."""
    unmeasured_threshold: Optional[float] = None
    """Windows whose flow measures no depth (pans: ``neighbour_disagreement`` above this) get one constant depth
    instead of the net's map. None: never."""

    def setup(self, **kwargs) -> nn.Module:  # type: ignore[override]
        head = FlowDepthHead(unmeasured_threshold=self.unmeasured_threshold)
        if self.weights is not None:
            head.load_state_dict(load_head_weights(self.weights, head, "depth head"))
        if self.freeze:
            head.requires_grad_(False)
        return head


class FlowDepthHead(nn.Module):
    """Per-frame z-depth of a clip from ``FlowDepthNet``, given the clip's cameras (normally ``FlowCameraHead``'s,
    whose unit steps set the scale). Frames are read in temporal order (``frame_index``); each against its two
    temporal neighbours in the batch."""

    def __init__(self, width: int = 32, unmeasured_threshold: Optional[float] = None):
        super().__init__()
        self.net = FlowDepthNet(width)
        self.unmeasured_threshold = unmeasured_threshold
        """Windows whose ``neighbour_disagreement`` exceeds this (flow that measures no depth: pans) get one constant
        depth, the median of the net's over the window, instead of the net's map. None: never."""

    def predict(
        self, images: Float[Tensor, "B L 3 H W"], cameras: CameraPrediction, frame_index: Optional[Int[Tensor, "B L"]] = None
    ) -> Float[Tensor, "B L 1 H W"]:
        """z-depth of every pixel in the units of ``cameras.c2w_opencv``. Reads the unit-step cameras and flows of a
        flow camera head where the prediction carries them (the scale it was trained in), else the cameras as given."""
        if cameras.c2w_unit_steps is None:
            return self(images, cameras.c2w_opencv, cameras.K, frame_index, cameras.flows)
        steps = cameras.c2w_unit_steps
        return self(images, steps, cameras.K, frame_index, cameras.flows) / camera_scale(steps)[:, None, None, None, None]

    def forward(
        self,
        images: Float[Tensor, "B L 3 H W"],
        c2w_opencv: Float[Tensor, "B L 4 4"],
        K: Float[Tensor, "B L 3 3"],
        frame_index: Optional[Int[Tensor, "B L"]] = None,
        flows: Optional[List] = None,
    ) -> Float[Tensor, "B L 1 H W"]:
        """z-depth of every pixel in the cameras' units. Non-square frames: depth is predicted on the centre square
        and extended to the border by replication. A single frame (no neighbour) gets the image-only estimate.
        ``flows``: ``temporal_flows(images, frame_index)`` when the caller has it already (the camera head's)."""
        B, L, _, H, W = images.shape
        if frame_index is None:
            frame_index = torch.arange(L, device=images.device).expand(B, L)
        if flows is None:
            flows = temporal_flows(images, frame_index)
        s = min(H, W)
        inputs, unmeasured = [], []
        for b, (clip, grey) in enumerate(flows):
            order = frame_index[b].argsort()
            c2w = c2w_opencv[b, order].detach().double().cpu()
            focal = float(K[b, 0, 0, 0].detach()) * FLOW_SIZE / s
            x = torch.stack([depth_input(clip, grey, c2w, focal, i) for i in range(L)])
            unmeasured.append(self.unmeasured_threshold is not None and neighbour_disagreement(x) > self.unmeasured_threshold)
            inputs.append(torch.empty_like(x).index_copy_(0, order.cpu(), x))
        param = next(self.parameters())
        log_rho = self.net(torch.cat(inputs).to(param))
        if any(unmeasured):  # a fronto-parallel plane at the net's median depth: the scale stays the cameras'
            log_rho = log_rho.view(B, L, 1, GRID, GRID)
            flat = log_rho.flatten(1).median(1).values.view(B, 1, 1, 1, 1).expand_as(log_rho)
            gate = torch.tensor(unmeasured, device=log_rho.device).view(B, 1, 1, 1, 1)
            log_rho = torch.where(gate, flat, log_rho).view(B * L, 1, GRID, GRID)
        rho = F.interpolate(log_rho.exp(), size=(s, s), mode="bilinear", align_corners=False)
        top, left = (H - s) // 2, (W - s) // 2
        rho = F.pad(rho, (left, W - s - left, top, H - s - top), mode="replicate")
        return (1.0 / rho).view(B, L, 1, H, W).to(images.dtype)
