"""The CUDA splat renderer: gsplat's ``rasterization`` with the camera-space trick that gives fx, fy gradients.

gsplat (1.4.0 .. 1.5.3) back-propagates into means, covariances and viewmats but returns no gradient for ``Ks``
(gsplat issues #718, #727). So each camera is rendered in its own camera space, with the focal lengths folded
into the Gaussians: mu' = A mu_cam and Sigma' = A Sigma_cam A^T with A = diag(fx / f0, fy / f0, 1), rendered
through a fixed K0 = [[f0, 0, cx], [0, f0, cy], [0, 0, 1]] and an identity view. pi_K0(A x) = pi_K(x) and the
EWA Jacobian composes exactly, so the image is the same and autograd reaches R, t, fx and fy through PyTorch.
Colours are view-independent (SH degree 0), which the trick requires.
"""

from __future__ import annotations

from typing import Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.render.torch_tiled import EPS2D, NEAR_PLANE, quat_scale_to_covar


def render_gsplat(
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
) -> Tuple[Float[Tensor, "C 3 H W"], Float[Tensor, "C 1 H W"], Float[Tensor, "C 1 H W"]]:
    """Same contract as ``render_torch``: premultiplied colour over black, alpha, alpha-weighted z depth."""
    from gsplat import rasterization  # imported lazily: gsplat compiles CUDA kernels on first use

    covars = quat_scale_to_covar(quats, scales)
    eye = torch.eye(4, dtype=means.dtype, device=means.device)[None]
    rgb, alpha, depth = [], [], []
    for c in range(viewmats.shape[0]):  # each camera has its own camera-space Gaussians
        R, t, K = viewmats[c, :3, :3], viewmats[c, :3, 3], Ks[c]
        f0 = K[0, 0].detach()
        A = torch.stack([K[0, 0] / f0, K[1, 1] / f0, torch.ones_like(f0)])
        means_cam = (means @ R.T + t) * A
        covars_cam = A[:, None] * (R @ covars @ R.T) * A[None, :]
        K0 = torch.stack(
            [torch.stack([f0, 0 * f0, K[0, 2].detach()]), torch.stack([0 * f0, f0, K[1, 2].detach()]),
             torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype, device=K.device)]
        )
        out, acc, _ = rasterization(
            means_cam, None, None, opacities, colors, eye, K0[None], width, height,
            near_plane=NEAR_PLANE, eps2d=EPS2D, tile_size=tile_size, render_mode="RGB+ED", covars=covars_cam,
            packed=False,
        )
        rgb.append(out[0, ..., :3].permute(2, 0, 1))
        alpha.append(acc[0].permute(2, 0, 1))
        depth.append(out[0, ..., 3:4].permute(2, 0, 1) * acc[0].permute(2, 0, 1))  # expected -> alpha-weighted
    return torch.stack(rgb), torch.stack(alpha), torch.stack(depth)
