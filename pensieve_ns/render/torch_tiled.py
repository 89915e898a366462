"""The CPU splat renderer: EWA projection and tiled front-to-back compositing in pure PyTorch.

gsplat has no CPU path (its reference functions still call CUDA for compositing), so this module owns every step.
Autograd carries gradients into every Gaussian attribute, into the world-to-camera matrices (R and t) and into
the intrinsics (fx, fy): the whole projection is written in torch.

Conventions: world-to-camera ``viewmats`` in OpenCV axes (x right, y down, z forward); pixel (u, v) covers
[u, u + 1) x [v, v + 1), so its centre is (u + 0.5, v + 0.5), as in gsplat and ``cameras.pixel_rays_opencv``.

How it stays cheap: a Gaussian only reaches pixels where its alpha can pass the 1/255 threshold, i.e. within
r = sigma_max * sqrt(2 ln(255 o)) of its centre. Each Gaussian is listed in the tiles its r-box touches, the
lists are sorted by depth and padded to the longest one, and compositing runs on [tiles, pixels per tile,
Gaussians per tile] instead of [pixels, all Gaussians]. Because a Gaussian is only dropped where its alpha is below
the threshold anyway, the tiled image equals the dense one exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from pensieve_ns.cameras import quaternion_to_matrix

ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped (as in 3DGS and gsplat)
ALPHA_MAX = 0.999  # keeps transmittance > 0 so the product stays invertible
EPS2D = 0.3  # low-pass dilation of every 2D covariance, in pixels^2 (3DGS, gsplat)
NEAR_PLANE = 0.01


def quat_scale_to_covar(
    quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"]
) -> Float[Tensor, "N 3 3"]:
    """Sigma = R S S^T R^T from (w, x, y, z) quaternions (normalised here) and per-axis standard deviations."""
    M = quaternion_to_matrix(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


class Projected(NamedTuple):
    """Gaussians projected into C cameras."""

    means2d: Float[Tensor, "C N 2"]  # pixels
    conics: Float[Tensor, "C N 3"]  # upper triangle (a, b, c) of the inverse 2D covariance
    depths: Float[Tensor, "C N"]  # camera z
    radii: Float[Tensor, "C N"]  # pixels; 0 = culled (no gradient)


def project_gaussians(
    means: Float[Tensor, "N 3"],
    covars: Float[Tensor, "N 3 3"],
    opacities: Float[Tensor, "N"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
) -> Projected:
    """EWA splatting: Sigma_2d = J W Sigma W^T J^T + 0.3 I, with the Jacobian J of the pinhole at the mean.

    As in 3DGS/gsplat the Jacobian uses x/z and y/z clamped to 1.3 times the field of view, so Gaussians far
    outside the image keep bounded footprints. Gaussians behind the near plane or unable to reach alpha 1/255
    are culled (radius 0).
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None]  # [C, N, 3]
    covars_c = R[:, None] @ covars[None] @ R.transpose(-1, -2)[:, None]  # [C, N, 3, 3]
    x, y, z = means_c.unbind(-1)
    in_front = z > NEAR_PLANE
    z = torch.where(in_front, z, torch.ones_like(z))  # culled anyway; avoids dividing by ~0
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x = 0.3 * 0.5 * width / fx
    lim_y = 0.3 * 0.5 * height / fy
    tx = torch.minimum(torch.maximum(x / z, -(cx / fx + lim_x)), (width - cx) / fx + lim_x)
    ty = torch.minimum(torch.maximum(y / z, -(cy / fy + lim_y)), (height - cy) / fy + lim_y)
    zero = torch.zeros_like(z)
    J = torch.stack(
        [torch.stack([fx / z, zero, -fx * tx / z], -1), torch.stack([zero, fy / z, -fy * ty / z], -1)], dim=-2
    )  # [C, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    a, b, c = cov2d[..., 0, 0] + EPS2D, cov2d[..., 0, 1], cov2d[..., 1, 1] + EPS2D
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lambda_max = mid + (mid * mid - det).clamp_min(0.0).sqrt()
        o = opacities.detach().clamp(max=ALPHA_MAX)[None].expand_as(z)
        reach = torch.sqrt(2.0 * torch.log((o / ALPHA_MIN).clamp_min(1.0)))  # Mahalanobis radius where alpha = 1/255
        radii = torch.where(in_front & (o > ALPHA_MIN), lambda_max.sqrt() * reach, torch.zeros_like(z))
    return Projected(means2d, conics, means_c[..., 2], radii)


def _tile_lists(
    proj: Projected, width: int, height: int, tile: int
) -> Tuple[Tensor, int, int]:
    """Per tile, the ids (c * N + n) of the Gaussians whose r-box touches it, front to back, padded with -1.

    Returns the table [C * tiles_y * tiles_x, M] and the tile grid (tiles_x, tiles_y).
    """
    C, N = proj.depths.shape
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    with torch.no_grad():
        mx, my = proj.means2d[..., 0], proj.means2d[..., 1]
        r = proj.radii
        # Pixel centre u + 0.5 within r of the mean <=> u in [mx - r - 0.5, mx + r - 0.5].
        x0 = torch.floor((mx - r - 0.5) / tile).clamp(min=0)
        x1 = torch.floor((mx + r - 0.5) / tile).clamp(max=tiles_x - 1)
        y0 = torch.floor((my - r - 0.5) / tile).clamp(min=0)
        y1 = torch.floor((my + r - 0.5) / tile).clamp(max=tiles_y - 1)
        keep = (r > 0) & (x1 >= x0) & (y1 >= y0)
        nx = torch.where(keep, x1 - x0 + 1, torch.zeros_like(x0)).long()
        ny = torch.where(keep, y1 - y0 + 1, torch.zeros_like(y0)).long()
        # Enumerate (Gaussian, tile) pairs in depth order per camera, then stable-sort by tile.
        order = torch.argsort(proj.depths.masked_fill(~keep, float("inf")), dim=1)  # [C, N]
        flat = (order + torch.arange(C, device=order.device)[:, None] * N).reshape(-1)
        counts = (nx * ny).reshape(-1)[flat]
        total = int(counts.sum())
        if total == 0:
            return torch.full((C * tiles_x * tiles_y, 0), -1, dtype=torch.long, device=order.device), tiles_x, tiles_y
        gid = torch.repeat_interleave(flat, counts)
        starts = torch.cumsum(counts, 0) - counts
        k = torch.arange(total, device=gid.device) - torch.repeat_interleave(starts, counts)
        w = nx.reshape(-1)[gid]
        tx = x0.reshape(-1)[gid].long() + k % w
        ty = y0.reshape(-1)[gid].long() + k // w
        tile_id = (gid // N) * (tiles_x * tiles_y) + ty * tiles_x + tx
        tile_id, perm = torch.sort(tile_id, stable=True)
        gid = gid[perm]
        per_tile = torch.bincount(tile_id, minlength=C * tiles_x * tiles_y)
        tile_start = torch.cumsum(per_tile, 0) - per_tile
        slot = torch.arange(total, device=gid.device) - tile_start[tile_id]
        table = torch.full((C * tiles_x * tiles_y, int(per_tile.max())), -1, dtype=torch.long, device=gid.device)
        table[tile_id, slot] = gid
    return table, tiles_x, tiles_y


def _composite_tiles(
    pixels: Float[Tensor, "T P 2"],
    means2d: Float[Tensor, "T M 2"],
    conics: Float[Tensor, "T M 3"],
    opacities: Float[Tensor, "T M"],
    features: Float[Tensor, "T M D"],
    present: Float[Tensor, "T M"],
) -> Float[Tensor, "T P D+1"]:
    """Front-to-back alpha compositing of each tile's sorted Gaussians: sum_i f_i a_i prod_{j<i} (1 - a_j).

    Returns the composited features and, as the last channel, the accumulated alpha.
    """
    d = pixels[:, :, None, :] - means2d[:, None, :, :]  # [T, P, M, 2]
    a, b, c = conics[:, None, :, 0], conics[:, None, :, 1], conics[:, None, :, 2]
    power = -0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1]
    alpha = (opacities[:, None] * torch.exp(power.clamp(max=0.0))).clamp(max=ALPHA_MAX)
    alpha = torch.where((alpha >= ALPHA_MIN) & (present[:, None] > 0), alpha, torch.zeros_like(alpha))
    transmittance = torch.cumprod(1.0 - alpha, dim=-1)
    before = torch.cat([torch.ones_like(transmittance[..., :1]), transmittance[..., :-1]], dim=-1)
    weights = alpha * before  # [T, P, M]
    out = torch.einsum("tpm,tmd->tpd", weights, features)
    return torch.cat([out, weights.sum(-1, keepdim=True)], dim=-1)


def render_torch(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, "N"],
    colors: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    tile_size: int = 16,
    tiles_per_chunk: int = 0,
) -> Tuple[Float[Tensor, "C 3 H W"], Float[Tensor, "C 1 H W"], Float[Tensor, "C 1 H W"]]:
    """Render N Gaussians into C cameras on any device; returns the colour composited over black (premultiplied),
    the accumulated alpha and the alpha-weighted z depth (not yet divided by alpha).

    ``tiles_per_chunk`` > 0 composites that many tiles at a time under gradient checkpointing, so the memory of
    a backward pass is bounded by one chunk's [tiles, pixels, Gaussians] instead of the whole image's.
    """
    C = viewmats.shape[0]
    proj = project_gaussians(means, quat_scale_to_covar(quats, scales), opacities, viewmats, Ks, width, height)
    table, tiles_x, tiles_y = _tile_lists(proj, width, height, tile_size)
    present = (table >= 0).to(means.dtype)
    ids = table.clamp(min=0)  # [T, M]
    n = means.shape[0]
    m2d = proj.means2d.reshape(-1, 2)[ids]
    con = proj.conics.reshape(-1, 3)[ids]
    opa = opacities[ids % n] if n else opacities.new_zeros(ids.shape)
    feats = torch.cat([colors[ids % n], proj.depths.reshape(-1)[ids][..., None]], dim=-1)  # rgb + z
    # Pixel centres of every tile, [T, P, 2], in tile-major order.
    ys, xs = torch.meshgrid(
        torch.arange(tile_size, device=means.device), torch.arange(tile_size, device=means.device), indexing="ij"
    )
    local = torch.stack([xs, ys], -1).reshape(-1, 2).to(means.dtype) + 0.5
    ty, tx = torch.meshgrid(
        torch.arange(tiles_y, device=means.device), torch.arange(tiles_x, device=means.device), indexing="ij"
    )
    origin = torch.stack([tx, ty], -1).reshape(-1, 2).to(means.dtype) * tile_size
    pixels = (origin[:, None] + local[None]).repeat(C, 1, 1)
    T = pixels.shape[0]
    chunk = tiles_per_chunk if tiles_per_chunk > 0 else T
    pieces = []
    for s in range(0, T, chunk):
        args = (pixels[s : s + chunk], m2d[s : s + chunk], con[s : s + chunk], opa[s : s + chunk],
                feats[s : s + chunk], present[s : s + chunk])
        if tiles_per_chunk > 0 and torch.is_grad_enabled():
            pieces.append(checkpoint(_composite_tiles, *args, use_reentrant=False))
        else:
            pieces.append(_composite_tiles(*args))
    out = torch.cat(pieces, 0)  # [C * ty * tx, P, 5]
    out = out.view(C, tiles_y, tiles_x, tile_size, tile_size, 5).permute(0, 5, 1, 3, 2, 4)
    out = out.reshape(C, 5, tiles_y * tile_size, tiles_x * tile_size)[..., :height, :width]
    return out[:, :3], out[:, 4:5], out[:, 3:4]
