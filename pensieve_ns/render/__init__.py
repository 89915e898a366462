"""``render``: one splat-rendering function, two backends (pure PyTorch anywhere, gsplat on CUDA)."""

from __future__ import annotations

from typing import Literal, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.render.torch_tiled import render_torch

Backend = Literal["auto", "torch", "gsplat"]


def render(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, "N"],
    colors: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    background: Optional[Float[Tensor, "C 3 H W"]] = None,
    backend: Backend = "auto",
    tile_size: int = 16,
    tiles_per_chunk: int = 0,
) -> Tuple[Float[Tensor, "C 3 H W"], Float[Tensor, "C 1 H W"], Float[Tensor, "C 1 H W"]]:
    """Render N world-space Gaussians into C pinhole cameras.

    means: centres (world). quats: rotations (w, x, y, z), normalised here. scales: standard deviations along the
    rotated axes. opacities: in [0, 1]. colors: RGB (SH degree 0, view-independent). viewmats: world-to-camera in
    OpenCV axes. Ks: pixel intrinsics; the pixel (u, v) has its centre at (u + 0.5, v + 0.5).
    background: image (or per-camera colour broadcast as [C, 3, 1, 1]) behind the splats; None = black.

    Returns rgb [C, 3, H, W] (splats over the background), alpha [C, 1, H, W] and the expected z depth
    [C, 1, H, W] (sum of w_i z_i over alpha; 0 where alpha < 1e-4). Gradients reach every Gaussian attribute,
    R and t of ``viewmats`` and fx, fy of ``Ks`` on both backends.

    backend: "torch" (any device, tiled EWA splatting), "gsplat" (CUDA), "auto" (gsplat for CUDA tensors).
    """
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda)
    if use_gsplat:
        if not means.is_cuda:
            raise ValueError("the gsplat backend needs CUDA tensors; use backend='torch' on the CPU")
        from pensieve_ns.render.gsplat_cuda import render_gsplat

        rgb, alpha, depth_sum = render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, tile_size)
    else:
        rgb, alpha, depth_sum = render_torch(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, tile_size, tiles_per_chunk
        )
    covered = alpha > 1e-4
    depth = torch.where(covered, depth_sum / alpha.clamp_min(1e-4), torch.zeros_like(depth_sum))
    if background is not None:
        rgb = rgb + (1.0 - alpha) * background
    return rgb, alpha, depth
