"""Relative pose of a frame pair from an explicit correlation volume (issue 5, LEARNING.md exps 20-22).

A pooled CNN on stacked frames has to discover correspondence by itself, and at CPU scale regressing rotation that
way sits on the predict-the-mean plateau for thousands of steps (LEARNING.md exps 9-19). Here correspondence is
given: both frames go through one shared CNN, every feature of frame a is compared with every feature of frame b
(a global correlation volume, as in optical-flow and relative-pose networks), and a small CNN reads the volume
*keeping its layout* (no spatial mean: where the motion is tells rotation from translation). With
``explicit_flow`` the soft-argmax displacement of each cell is added: rotation is nearly linear in that flow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def cell_coords(grid: int) -> Float[Tensor, "2 g g"]:
    """Cell centres of a grid x grid map in [-1, 1]: x (columns) then y (rows)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, grid), torch.linspace(-1, 1, grid), indexing="ij")
    return torch.stack([xs, ys])


def correlation_volume(
    fa: Float[Tensor, "N C g g"], fb: Float[Tensor, "N C g g"], temperature: float = 0.1
) -> Float[Tensor, "N gg g g"]:
    """Cosine similarity of every cell of a with every cell of b, over ``temperature``: channel k at cell (y, x)
    is how well cell k of b (row-major) matches cell (y, x) of a."""
    N, _, g, _ = fa.shape
    fa, fb = F.normalize(fa, dim=1).flatten(2), F.normalize(fb, dim=1).flatten(2)
    return (torch.einsum("nca,ncb->nba", fa, fb) / temperature).view(N, g * g, g, g)


def soft_argmax_displacement(volume: Float[Tensor, "N gg g g"]) -> Float[Tensor, "N 3 g g"]:
    """Where each cell of a lands in b (softmax-weighted mean of b's cell centres) minus where it is, in [-1, 1]
    units (x, y), and the sharpness of the match (the largest softmax weight)."""
    N, _, g, _ = volume.shape
    coords = cell_coords(g).to(volume)
    match = volume.softmax(dim=1)
    target = torch.einsum("nbhw,cb->nchw", match, coords.flatten(1))
    return torch.cat([target - coords, match.amax(dim=1, keepdim=True)], dim=1)


class CorrelationPoseNet(nn.Module):
    """(frame a, frame b) -> ``out_dim`` raw pose values of b relative to a.

    The shared encoder works at 1/2 resolution (``grid`` cells a side for 2 * grid pixel frames), the volume has
    one channel per cell of b at every cell of a, plus the cell coordinates of a (and the soft-argmax flow). The
    last layer is zero-initialised: all outputs are 0 at the start."""

    def __init__(self, out_dim: int = 7, width: int = 64, grid: int = 16, hidden: int = 256, explicit_flow: bool = True):
        super().__init__()
        self.grid, self.explicit_flow = grid, explicit_flow
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.reader = nn.Sequential(
            nn.Conv2d(grid * grid + 2 + (3 if explicit_flow else 0), 128, 1), nn.GELU(),
            nn.Conv2d(128, 128, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(128, 128, 3, stride=2, padding=1), nn.GELU(),
        )
        side = (grid + 3) // 4
        last = nn.Linear(hidden, out_dim)
        nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * side * side, hidden), nn.GELU(), last)

    def forward(self, a: Float[Tensor, "N 3 H W"], b: Float[Tensor, "N 3 H W"]) -> Float[Tensor, "N out"]:
        """Frames in [0, 1], any size (resampled to 2 * grid); returns the raw pose of b relative to a."""
        N, size = a.shape[0], 2 * self.grid
        x = torch.cat([a, b])
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        f = self.encoder((x - 0.45) / 0.226)  # [2N, C, g, g]
        volume = correlation_volume(f[:N], f[N:])
        parts = [volume, cell_coords(self.grid).to(volume).expand(N, 2, self.grid, self.grid)]
        if self.explicit_flow:
            parts.append(soft_argmax_displacement(volume))
        return self.head(self.reader(torch.cat(parts, dim=1)))
