"""Losses that need more than a line: the weighted image loss, LPIPS-VGG loading (offline-aware), the depth
projection loss and the edge-aware disparity smoothness of stage 2."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from pensieve_ns.cameras import invert_rigid, unproject_depth
from pensieve_ns.errors import PensieveInputError


def gather_frames(x: Float[Tensor, "B L *rest"], index: Tensor) -> Float[Tensor, "B G *rest"]:
    """x[b, index[b]] for every b."""
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def weighted_image_loss(per_frame: Float[Tensor, "B L"], weights: Float[Tensor, "B L"]) -> Float[Tensor, ""]:
    """Pooled weighted mean: sum of per-frame means times their weights over the sum of weights (docs/method.md §2.2)."""
    return (per_frame * weights).sum() / weights.sum()


def load_lpips_vgg():
    """The ``lpips`` package's VGG variant, frozen. Its backbone comes from torchvision's ImageNet VGG16 weights,
    which torchvision downloads once into ``$TORCH_HOME/hub/checkpoints``; offline, that fails, and this says
    what to do instead of a traceback."""
    import lpips

    try:
        model = lpips.LPIPS(net="vgg", verbose=False)
    except Exception as err:  # urllib errors, missing files, hash mismatches
        raise PensieveInputError(
            None,
            f"LPIPS-VGG weights cannot be loaded ({type(err).__name__}: {err}). Put torchvision's vgg16-397923af.pth "
            "in $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints), or train without LPIPS: "
            "--pipeline.model.lpips-weight 0",
        ) from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def warp_frames(
    target_images: Float[Tensor, "N 3 H W"], world: Float[Tensor, "N HW 3"], target_c2w_opencv: Float[Tensor, "N 4 4"],
    target_K: Float[Tensor, "N 3 3"], near: float,
) -> Tuple[Float[Tensor, "N 3 H W"], Float[Tensor, "N 1 H W"]]:
    """Sample each target frame (bilinear) where the world points of a source pixel grid project into it.

    Returns the warped frames and a mask of points in front of the target camera (z > near) and inside its image.
    """
    N, _, H, W = target_images.shape
    w2c = invert_rigid(target_c2w_opencv)
    cam = world @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]  # [N, HW, 3], target camera (OpenCV)
    proj = cam @ target_K.transpose(-1, -2)
    z = proj[..., 2]
    in_front = z > near
    z = torch.where(in_front, z, torch.ones_like(z))
    x = proj[..., 0] / z - 0.5  # pixel-index coordinates: centre of pixel u is at u
    y = proj[..., 1] / z - 0.5
    valid = in_front & (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
    grid = torch.stack([x / (W - 1) * 2 - 1, y / (H - 1) * 2 - 1], dim=-1).view(N, H, W, 2)
    warped = F.grid_sample(target_images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped, valid.view(N, 1, H, W)


def depth_projection_loss(
    images: Float[Tensor, "B L 3 H W"],
    depth: Float[Tensor, "B S 1 H W"],
    source: Int[Tensor, "B S"],
    c2w_opencv: Float[Tensor, "B L 4 4"],
    K: Float[Tensor, "B L 3 3"],
    radius: int = 3,
) -> Tuple[Float[Tensor, ""], Float[Tensor, ""]]:
    """Photometric reprojection (docs/method.md §2.2): warp real frames with depth and cameras.

    For each depth map (frame ``source[b, s]`` of the clip), back-project its pixel centres with that frame's
    camera, project them into the frames r = ±1..±radius away in the clip's (shuffled) order, sample those real
    frames bilinearly there, and take mean |I_{i+r}(x) - I_i| over pixels that are in front of the camera, inside
    the image and have depth > 0 (the mean runs over all pixels; invalid ones count 0).
    Returns (sum of the (b, s, r) terms, number of terms), so callers can pool several depth sources.
    """
    B, L, _, H, W = images.shape
    S = depth.shape[1]

    src_img, src_c2w, src_K = gather_frames(images, source), gather_frames(c2w_opencv, source), gather_frames(K, source)
    world = unproject_depth(depth[:, :, 0], src_K, src_c2w).reshape(B, S, H * W, 3)
    total, count = images.new_zeros(()), images.new_zeros(())
    for r in [*range(-radius, 0), *range(1, radius + 1)]:
        target = source + r
        exists = (target >= 0) & (target < L)  # [B, S]
        if not exists.any():
            continue
        target = target.clamp(0, L - 1)
        warped, valid = warp_frames(
            gather_frames(images, target).flatten(0, 1), world.flatten(0, 1),
            gather_frames(c2w_opencv, target).flatten(0, 1), gather_frames(K, target).flatten(0, 1), near=1e-5,
        )
        valid = valid.view(B, S, 1, H, W) & (depth > 0)
        err = ((warped.view(B, S, 3, H, W) - src_img).abs() * valid).mean(dim=(2, 3, 4))  # [B, S]
        total = total + (err * exists).sum()
        count = count + exists.sum()
    return total, count


def disparity_smoothness_loss(
    depth: Float[Tensor, "N 1 H W"], image: Float[Tensor, "N 3 H W"]
) -> Float[Tensor, ""]:
    """Edge-aware smoothness of mean-normalised disparity: |d disp| exp(-2 mean_c |d I|), x plus y (monodepth)."""
    disp = torch.where(depth > 1e-5, 1.0 / depth.clamp_min(1e-5), torch.zeros_like(depth))
    disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    wx = torch.exp(-2.0 * (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True))
    wy = torch.exp(-2.0 * (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True))
    return (dx * wx).mean() + (dy * wy).mean()
