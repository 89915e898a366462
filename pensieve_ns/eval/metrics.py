"""Image metrics of held-out frames (torchmetrics PSNR and SSIM)."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


@torch.no_grad()
def held_out_image_metrics(
    pred: Float[Tensor, "L 3 H W"], gt: Float[Tensor, "L 3 H W"], context: Int[Tensor, "G"]
) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
    """PSNR/SSIM averaged over the frames not in ``context``, and the PSNR of blending the context frames;
    image: targets side by side, ground truth above the prediction."""
    keep = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
    keep[context] = False
    p, g = pred[keep].clamp(0, 1), gt[keep]
    psnr = torch.stack([peak_signal_noise_ratio(a[None], b[None], data_range=1.0) for a, b in zip(p, g)]).mean()
    ssim = structural_similarity_index_measure(p, g, data_range=1.0)
    # The trivial baseline every figure is read against: the mean of the context frames.
    blend = gt[context].mean(0, keepdim=True).expand_as(g)
    psnr_blend = torch.stack([peak_signal_noise_ratio(a[None], b[None], data_range=1.0) for a, b in zip(blend, g)]).mean()
    row = lambda x: torch.cat(list(x.permute(0, 2, 3, 1)), dim=1)  # noqa: E731  [T,3,H,W] -> [H, T*W, 3]
    metrics = {"psnr": float(psnr), "ssim": float(ssim), "psnr_blend_context": float(psnr_blend)}
    return metrics, {"img": torch.cat([row(g), row(p)], dim=0)}
