"""Image metrics of rendered frames (torchmetrics PSNR and SSIM, LPIPS where a network is given) and the
median-scaled depth error."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

LpipsFn = Optional[Callable[[Tensor, Tensor], Tensor]]
"""LPIPS of image pairs [T, 3, H, W] in [0, 1] -> [T], or None where no LPIPS network is available."""


def lpips_metric(net) -> Callable[[Tensor, Tensor], Tensor]:
    """An ``lpips.LPIPS`` network as an ``LpipsFn`` (inputs in [0, 1])."""
    return lambda a, b: net(a, b, normalize=True).flatten()


@torch.no_grad()
def image_metrics(pred: Float[Tensor, "T 3 H W"], gt: Float[Tensor, "T 3 H W"], lpips_fn: LpipsFn = None) -> Dict[str, Optional[float]]:
    """PSNR (images clipped to [0, 1]), SSIM (Gaussian 11x11 window) and LPIPS, each averaged per image; LPIPS is
    None when no LPIPS network is given (absent, never 0)."""
    p = pred.clamp(0, 1)
    psnr = torch.stack([peak_signal_noise_ratio(a[None], b[None], data_range=1.0) for a, b in zip(p, gt)]).mean()
    ssim = torch.stack([structural_similarity_index_measure(a[None], b[None], data_range=1.0) for a, b in zip(p, gt)]).mean()
    lp = float(lpips_fn(p, gt).mean()) if lpips_fn is not None else None
    return {"psnr": float(psnr), "ssim": float(ssim), "lpips": lp}


@torch.no_grad()
def held_out_image_metrics(
    pred: Float[Tensor, "L 3 H W"], gt: Float[Tensor, "L 3 H W"], context: Int[Tensor, "G"]
) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
    """PSNR/SSIM averaged over the frames not in ``context``, and the PSNR of blending the context frames;
    image: targets side by side, ground truth above the prediction."""
    keep = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
    keep[context] = False
    p, g = pred[keep].clamp(0, 1), gt[keep]
    m = image_metrics(p, g)
    # The trivial baseline every figure is read against: the mean of the context frames.
    blend = gt[context].mean(0, keepdim=True).expand_as(g)
    row = lambda x: torch.cat(list(x.permute(0, 2, 3, 1)), dim=1)  # noqa: E731  [T,3,H,W] -> [H, T*W, 3]
    metrics = {"psnr": m["psnr"], "ssim": m["ssim"], "psnr_blend_context": image_metrics(blend, g)["psnr"]}
    return metrics, {"img": torch.cat([row(g), row(p)], dim=0)}


def depth_abs_rel(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """AbsRel after median scaling: mean |s * pred - gt| / gt, s = median(gt) / median(pred), over the entries
    (any shape, pred and gt alike) where gt > 0, pred is finite and positive, and mask (if given) holds. Scale-free,
    as self-supervised depth is. NaN where fewer than 10 entries are valid."""
    valid = (gt > 0) & np.isfinite(pred) & (pred > 0)
    if mask is not None:
        valid &= mask
    p, g = pred[valid], gt[valid]
    if len(g) < 10:
        return float("nan")
    p = p * np.median(g) / np.median(p)
    return float(np.mean(np.abs(p - g) / g))
