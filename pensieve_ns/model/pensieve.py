"""PensieveModel: the whole forward path of a training step (stage 1 today), top to bottom in ``get_outputs``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.models.base_model import Model, ModelConfig

from pensieve_ns.cameras import normalise_cameras, plucker_rays
from pensieve_ns.model.camera_head import CameraHead
from pensieve_ns.model.encoder import FEATURE_CHANNELS, PensieveEncoder
from pensieve_ns.model.lvsm_head import LVSMHead
from pensieve_ns.model.vit import ViTSize


@dataclass
class PensieveModelConfig(ModelConfig):
    """Sizes of the four transformers and the loss weights (presets in configs/ set these)."""

    _target: Type = field(default_factory=lambda: PensieveModel)
    patch: int = 8
    frame_vit: ViTSize = field(default_factory=lambda: ViTSize(dim=768, depth=12, heads=16, hook=5))
    camera_vit: ViTSize = field(default_factory=ViTSize)
    context_vit: ViTSize = field(default_factory=ViTSize)
    lvsm_vit: ViTSize = field(default_factory=ViTSize)
    camera_hidden: int = 512
    l2_weight: float = 1.0
    lpips_weight: float = 0.5
    """LPIPS-VGG weight; its backbone weights must be loadable (offline: provide them or set 0)."""
    checkpointing: bool = False
    """Gradient checkpointing in every transformer (saves memory at paper scale)."""
    autocast_bf16: bool = False
    """Run the transformers under bf16 autocast (for GPUs; outputs stay float32). The paper trains in bf16."""
    camera_source: Literal["predicted", "ground_truth"] = "predicted"
    """'ground_truth' is the ORACLE of the learning benchmark and of the optional synthetic prior: the LVSM head
    is fed normalised ground-truth cameras of generated clips. User data never supplies cameras."""


def gather_frames(x: Float[Tensor, "B L *rest"], index: Tensor) -> Float[Tensor, "B G *rest"]:
    """x[b, index[b]] for every b."""
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def weighted_image_loss(
    per_frame: Float[Tensor, "B L"], weights: Float[Tensor, "B L"]
) -> Float[Tensor, ""]:
    """Pooled weighted mean: sum of per-frame means times their weights over the sum of weights (method.md §2.2)."""
    return (per_frame * weights).sum() / weights.sum()


class PensieveModel(Model):
    """Latent cameras and latent scene from an unposed clip; renders every frame with the LVSM head."""

    config: PensieveModelConfig

    def populate_modules(self) -> None:
        # No super().populate_modules(): it would add a ray collider, and this model takes clips, not rays.
        cfg = self.config
        self.encoder = PensieveEncoder(cfg.frame_vit, cfg.camera_vit, cfg.context_vit, cfg.patch, cfg.checkpointing)
        self.camera_head = CameraHead(FEATURE_CHANNELS + 5, cfg.camera_hidden)
        self.lvsm = LVSMHead(cfg.lvsm_vit, cfg.patch, FEATURE_CHANNELS + 5, cfg.checkpointing)
        self.lpips = None
        if cfg.lpips_weight > 0:
            from pensieve_ns.losses import load_lpips_vgg

            self.lpips = load_lpips_vgg()

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"model": [p for n, p in self.named_parameters() if not n.startswith("lpips.")]}

    def get_outputs(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:  # type: ignore[override]
        """One clip batch -> renders of all L frames and the predicted cameras.

        batch: images [B, L, 3, H, W] in [0, 1], context [B, G] (positions into L).
        returns: rgb [B, L, 3, H, W]; c2w_opencv [B, L, 4, 4]; K [B, L, 3, 3] (pixels, shared per clip).
        """
        images, context = batch["images"], batch["context"]
        H, W = images.shape[-2:]
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            f_cam, f_ctx = self.encoder(images, context)  # camera features of all frames, scene of the context
        f_cam, f_ctx = f_cam.float(), f_ctx.float()  # cameras and rays in float32
        if self.config.camera_source == "ground_truth":  # oracle: known cameras of generated clips
            c2w, K = normalise_cameras(batch["gt_c2w_opencv"]), batch["gt_K"]
        else:
            c2w, K, _ = self.camera_head(f_cam)  # latent cameras (OpenCV c2w) and clip intrinsics
        rays = plucker_rays(c2w, K, H, W)  # [B, L, 6, H, W]
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            rgb = self.lvsm(f_ctx, gather_frames(rays, context), rays).float()  # every frame, one pass each
        return {"rgb": rgb, "c2w_opencv": c2w, "K": K}

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        with torch.no_grad():
            mse = ((outputs["rgb"] - batch["images"]) ** 2).mean(dim=(2, 3, 4))  # [B, L]
            held_out = batch["loss_weights"] == batch["loss_weights"].max()
            return {
                "psnr_held_out": -10 * torch.log10(mse[held_out].mean()),
                "focal_over_width": outputs["K"][:, 0, 0, 0].mean() / batch["images"].shape[-1],
            }

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """L2 + LPIPS over every rendered frame, pooled with the 0.1 (context) / 1.0 (held-out) weights."""
        weights = batch["loss_weights"]
        mse = ((outputs["rgb"] - batch["images"]) ** 2).mean(dim=(2, 3, 4))  # [B, L]
        losses = {"l2": self.config.l2_weight * weighted_image_loss(mse, weights)}
        if self.lpips is not None:
            pred, gt = outputs["rgb"].flatten(0, 1), batch["images"].flatten(0, 1)
            per_frame = self.lpips(pred, gt, normalize=True).view(weights.shape)
            losses["lpips"] = self.config.lpips_weight * weighted_image_loss(per_frame, weights)
        return losses

    @torch.no_grad()
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR/SSIM of the held-out frames of one evaluation clip; images: ground truth over prediction."""
        from pensieve_ns.eval.metrics import held_out_image_metrics

        return held_out_image_metrics(outputs["rgb"][0], batch["images"][0], batch["context"][0])
