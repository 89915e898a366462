"""Test-time refinement of one clip's cameras and depth by photometric reprojection (direct bundle adjustment).

What it optimises, for one clip of L frames in temporal order:
  - poses as a CHAIN of relative motions: c2w_i = c2w_{i-1} @ D_i @ exp(delta_i), where D_i is the initial
    relative motion (from the feed-forward cameras, or identity) and delta_i (axis-angle and translation, in
    camera i-1's frame) is learned. A chain keeps every photometric term local: frame 40 need not travel 300
    degrees through bad minima to reach its place on an orbit; only its neighbours' relative motions change.
  - one log-depth map per frame on a coarse grid (bilinearly upsampled), normalised to a mean log-depth of 0
    over the clip (the photometric loss cannot see global scale);
  - one log focal length shared by the clip (principal point fixed at the image centre).
The loss warps each frame's neighbours (+-1..radius) into it through its depth and the cameras and takes the
mean L1 error over pixels that land inside the neighbour (valid-normalised, so pushing pixels out of view does
not pay), plus edge-aware disparity smoothness. Coarse-to-fine over an image pyramid widens the basin.

Cameras in and out are OpenCV camera-to-world; K is in pixels of the input images. This is TEST-TIME
optimisation: figures from it are reported separately from the feed-forward figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.cameras import axis_angle_to_matrix, chain, invert_rigid, unproject_depth
from pensieve_ns.losses import disparity_smoothness_loss, warp_frames


@dataclass
class RefineConfig:
    levels: Tuple[int, ...] = (4, 2, 1)
    """Downsampling factor of each pyramid level, coarse to fine."""
    steps_per_level: Tuple[int, ...] = (300, 200, 150)
    depth_cells: int = 16
    """Depth grid is depth_cells x depth_cells per frame."""
    radius: int = 3
    """Each frame is compared with its neighbours up to this many frames away."""
    lr_pose: float = 3e-3
    lr_depth: float = 3e-2
    lr_focal: float = 3e-3
    smooth_weight: float = 0.02
    optimise_focal: bool = True
    init_depth: float = 1.0
    focal_sweep: Tuple[float, ...] = (0.5, 0.6, 0.72, 0.86, 1.04, 1.24, 1.49, 1.79)
    """Focal lengths (times the image width, 1.2x apart: FOV 31..90 deg) tried when no K_init is given."""
    sweep_steps: int = 60
    """Steps per level of each sweep trial."""
    sweep_levels: int = 2
    sweep_finalists: int = 1
    """The best this many sweep starts each run the full pyramid; the lowest final photometric error wins."""
    """Each sweep trial runs the first sweep_levels levels of the pyramid (the finer, the better it separates)."""
    orbit_sweep: Tuple[float, ...] = ()
    """Per-frame turn rates (degrees) of orbit starts, tried with every focal of the sweep when no c2w_init is
    given (object-centric clips): frame i starts turned by i x rate about the vertical axis through a point at
    ``init_depth`` in front of frame 0 (``orbit_cameras``). Empty: identity starts only. 0 is the identity start."""
    log_every: int = 50


@dataclass
class RefineResult:
    c2w_opencv: Float[Tensor, "L 4 4"]
    K: Float[Tensor, "3 3"]
    depth: Float[Tensor, "L 1 H W"]
    photometric: float = float("nan")
    """Final photometric error of the returned solution."""
    history: List[dict] = field(default_factory=list)


def se3(delta: Float[Tensor, "*batch 6"]) -> Float[Tensor, "*batch 4 4"]:
    """[axis-angle | translation] -> rigid 4x4 (rotation by Rodrigues, translation applied after it)."""
    T = torch.zeros(*delta.shape[:-1], 4, 4, dtype=delta.dtype, device=delta.device)
    T[..., :3, :3] = axis_angle_to_matrix(delta[..., :3])
    T[..., :3, 3] = delta[..., 3:]
    T[..., 3, 3] = 1.0
    return T


def orbit_cameras(L: int, deg_per_frame: float, distance: float, dtype=torch.float32, device=None) -> Float[Tensor, "L 4 4"]:
    """OpenCV c2w of L cameras orbiting a point ``distance`` in front of camera 0 (on its +z axis), turning
    ``deg_per_frame`` per frame about the camera's vertical (y) axis through that point, always facing it."""
    angles = torch.deg2rad(torch.arange(L, dtype=dtype, device=device) * deg_per_frame)
    axis = torch.zeros(L, 3, dtype=dtype, device=device)
    axis[:, 1] = angles
    R = axis_angle_to_matrix(axis)  # [L, 3, 3]
    p = torch.tensor([0.0, 0.0, distance], dtype=dtype, device=device)
    c2w = torch.eye(4, dtype=dtype, device=device).repeat(L, 1, 1)
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = p - R @ p  # rotation about p: x -> R (x - p) + p
    return c2w


def photometric_error(
    images: Float[Tensor, "L 3 H W"], depth: Float[Tensor, "L H W"], c2w: Float[Tensor, "L 4 4"], K: Float[Tensor, "3 3"],
    radius: int,
) -> Float[Tensor, ""]:
    """Mean over neighbour offsets r of the valid-normalised L1 error between frame i and frame i+r warped into it."""
    L, _, H, W = images.shape
    world = unproject_depth(depth, K.expand(L, 3, 3), c2w).reshape(L, H * W, 3)  # [L, HW, 3]
    terms = []
    for r in [*range(-radius, 0), *range(1, radius + 1)]:
        src = torch.arange(max(0, -r), min(L, L - r), device=images.device)
        if len(src) == 0:
            continue
        warped, valid = warp_frames(images[src + r], world[src], c2w[src + r], K.expand(len(src), 3, 3), near=1e-3)
        valid = valid.float()
        err = ((warped - images[src]).abs().mean(1, keepdim=True) * valid).sum() / valid.sum().clamp_min(1.0)
        terms.append(err)
    return torch.stack(terms).mean()


def refine_clip(
    images: Float[Tensor, "L 3 H W"],
    c2w_init: Optional[Float[Tensor, "L 4 4"]] = None,
    K_init: Optional[Float[Tensor, "3 3"]] = None,
    config: RefineConfig = RefineConfig(),
) -> RefineResult:
    """Refine the cameras (and depth) of one clip, frames in temporal order, images in [0, 1].

    c2w_init: OpenCV camera-to-world (default: identity for every frame). K_init: pixels; without it, a focal
    sweep picks the start: each of ``config.focal_sweep`` (times W) runs the coarsest level for
    ``config.sweep_steps`` on each of the first ``config.sweep_levels`` levels; the lowest photometric error wins.
    """
    L, _, H, W = images.shape
    dtype, device = images.dtype, images.device
    if c2w_init is not None:
        pose_starts = {"given": c2w_init.detach().to(dtype)}
    else:
        rates = config.orbit_sweep or (0.0,)
        pose_starts = {f"orbit {r:g} deg": orbit_cameras(L, r, config.init_depth, dtype, device) for r in rates}
    history: List[dict] = []
    if K_init is None:
        trials = []
        for name, c2w0 in pose_starts.items():
            for f in config.focal_sweep:
                K0 = _pinhole(f * W, W, H, dtype, device)
                trial = _Problem(images, c2w0, K0, config)
                levels = config.levels[: config.sweep_levels]
                err = trial.run(levels, (config.sweep_steps,) * len(levels), history, tag=f"sweep {name} f={f:g}W")
                trials.append((err, c2w0, K0))
        starts = [(c2w0, K0) for _, c2w0, K0 in sorted(trials, key=lambda t: t[0])[: config.sweep_finalists]]
    else:
        starts = [(c2w0, K_init.detach().to(dtype)) for c2w0 in pose_starts.values()]
    best = None
    for c2w_init, K0 in starts:  # the sweep's finalists each run the whole pyramid; the lowest final error wins
        problem = _Problem(images, c2w_init, K0, config)
        photo = problem.run(config.levels, config.steps_per_level, history, tag="final" if len(starts) > 1 else "")
        if best is None or photo < best[0]:
            best = (photo, problem)
    problem = best[1]
    with torch.no_grad():
        c2w, K = problem.cameras()
        depth = problem.depth(H, W)
    return RefineResult(c2w.detach(), K.detach(), depth.detach(), best[0], history)


def _pinhole(f: float, W: int, H: int, dtype, device) -> Tensor:
    return torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=dtype, device=device)


class _Problem:
    """The parameters of one refinement (pose chain, coarse log-depth, log focal) and their optimiser."""

    def __init__(self, images: Tensor, c2w_init: Tensor, K_init: Tensor, config: RefineConfig):
        L = images.shape[0]
        dtype, device = images.dtype, images.device
        self.images, self.config, self.c2w0, self.K_init = images, config, c2w_init[0], K_init
        self.steps_init = invert_rigid(c2w_init[:-1]) @ c2w_init[1:]  # [L-1, 4, 4] relative motions
        self.delta = torch.zeros(L - 1, 6, dtype=dtype, device=device, requires_grad=True)
        g = config.depth_cells
        self.log_depth = torch.full((L, 1, g, g), math.log(config.init_depth), dtype=dtype, device=device)
        self.log_depth.requires_grad_(True)
        self.log_focal = torch.zeros((), dtype=dtype, device=device, requires_grad=config.optimise_focal)
        groups = [{"params": [self.delta], "lr": config.lr_pose}, {"params": [self.log_depth], "lr": config.lr_depth}]
        if config.optimise_focal:
            groups.append({"params": [self.log_focal], "lr": config.lr_focal})
        self.optim = torch.optim.Adam(groups)

    def cameras(self) -> Tuple[Tensor, Tensor]:
        c2w = chain(self.c2w0, self.steps_init @ se3(self.delta))
        focal = self.K_init[:2, :2] * torch.exp(self.log_focal)  # principal point stays where it was
        K = torch.cat([torch.cat([focal, self.K_init[:2, 2:]], dim=1), self.K_init[2:]])
        return c2w, K

    def depth(self, h: int, w: int) -> Tensor:
        logd = self.log_depth - self.log_depth.mean()  # global scale is unobservable: fix the mean log-depth
        return torch.exp(F.interpolate(logd, size=(h, w), mode="bilinear", align_corners=False))

    def run(self, levels, steps_per_level, history: List[dict], tag: str = "") -> float:
        """Coarse-to-fine Adam; returns the last photometric error."""
        photo_value = float("inf")
        for level, steps in zip(levels, steps_per_level):
            imgs = F.avg_pool2d(self.images, level) if level > 1 else self.images
            h, w = imgs.shape[-2:]
            for step in range(steps):
                c2w, K = self.cameras()
                K_level = torch.cat([K[:2] / level, K[2:]])  # pixels of this level
                depth = self.depth(h, w)
                photo = photometric_error(imgs, depth[:, 0], c2w, K_level, self.config.radius)
                smooth = disparity_smoothness_loss(depth, imgs)
                loss = photo + self.config.smooth_weight * smooth
                self.optim.zero_grad(set_to_none=True)
                loss.backward()
                self.optim.step()
                photo_value = float(photo.detach())
                if step % self.config.log_every == 0 or step == steps - 1:
                    history.append({"tag": tag, "level": level, "step": step, "photometric": photo_value,
                                    "smooth": float(smooth.detach()), "focal": float(K[0, 0].detach())})
        return photo_value
