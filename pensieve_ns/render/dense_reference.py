"""Dense reference splatting: every pixel against every Gaussian, sorted by depth. Slow (pixels x Gaussians) and
only for checking ``torch_tiled`` (tests) and for the renderer benchmark's baseline.

It shares the projection with ``torch_tiled`` and restates the compositing rule on its own: alpha =
min(0.999, o exp(-d^T Sigma^-1 d / 2)), dropped below 1/255, front to back.
"""

from __future__ import annotations

from typing import Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.render.torch_tiled import ALPHA_MAX, ALPHA_MIN, project_gaussians, quat_scale_to_covar


def render_dense(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, "N"],
    colors: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    rows: Tuple[int, int] = (0, -1),
) -> Tuple[Float[Tensor, "C 3 h W"], Float[Tensor, "C 1 h W"], Float[Tensor, "C 1 h W"]]:
    """Same outputs as ``render_torch`` (premultiplied colour, alpha, alpha-weighted depth) for image rows
    [rows[0], rows[1]) (all by default), so callers can bound memory by rendering a few rows at a time."""
    r0, r1 = rows[0], height if rows[1] < 0 else rows[1]
    proj = project_gaussians(means, quat_scale_to_covar(quats, scales), opacities, viewmats, Ks, width, height)
    v, u = torch.meshgrid(
        torch.arange(r0, r1, dtype=means.dtype, device=means.device),
        torch.arange(width, dtype=means.dtype, device=means.device),
        indexing="ij",
    )
    pix = torch.stack([u, v], -1).reshape(-1, 2) + 0.5
    out = []
    for c in range(viewmats.shape[0]):
        order = torch.argsort(proj.depths[c])
        keep = order[proj.radii[c][order] > 0]
        d = pix[:, None] - proj.means2d[c][keep][None]  # [P, N, 2]
        a, b, cc = proj.conics[c][keep].unbind(-1)
        power = -0.5 * (a * d[..., 0] ** 2 + cc * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1]
        alpha = (opacities[keep] * torch.exp(power.clamp(max=0))).clamp(max=ALPHA_MAX)
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
        before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
        w = alpha * before
        rgb, acc, depth = w @ colors[keep], w.sum(1, keepdim=True), w @ proj.depths[c][keep][:, None]
        out.append(torch.cat([rgb, acc, depth], 1).T.reshape(5, r1 - r0, width))
    out = torch.stack(out)
    return out[:, :3], out[:, 3:4], out[:, 4:5]
