"""PensieveModel: the whole forward path of a training step (stages 1 and 2), top to bottom in ``get_outputs``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.models.base_model import ModelConfig
from nerfstudio.models.splatfacto import SplatfactoModel

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation

from pensieve_ns.cameras import invert_rigid, normalise_cameras, plucker_rays
from pensieve_ns.losses import depth_projection_loss, disparity_smoothness_loss, gather_frames, weighted_image_loss
from pensieve_ns.model.camera_head import CameraHeadConfig, CameraPrediction
from pensieve_ns.model.encoder import FEATURE_CHANNELS, PensieveEncoder
from pensieve_ns.model.gaussian_head import DepthHeadConfig, GaussianHeadConfig
from pensieve_ns.render import render
from pensieve_ns.model.lvsm_head import LVSMHead
from pensieve_ns.model.scene import SceneMixin
from pensieve_ns.model.vit import ViTSize


@dataclass
class PensieveModelConfig(ModelConfig):
    """Stage 1 (docs/method.md §1.1-1.3): the four transformers' sizes, the camera head and the image losses. Presets
    (``pensieve_ns/presets.py``) fill it; ``PensieveStage2ModelConfig`` adds the Gaussians."""

    _target: Type = field(default_factory=lambda: PensieveModel)
    patch: int = 8
    frame_vit: ViTSize = field(default_factory=lambda: ViTSize(dim=768, depth=12, heads=16, hook=5))
    camera_vit: ViTSize = field(default_factory=ViTSize)
    context_vit: ViTSize = field(default_factory=ViTSize)
    lvsm_vit: ViTSize = field(default_factory=ViTSize)
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    """The paper's head on the camera transformer's features, or ``FlowCameraHeadConfig``."""
    lpips_weight: float = 0.5
    """LPIPS-VGG weight; its backbone weights must be loadable (offline: provide them or set 0)."""
    checkpointing: bool = False
    """Gradient checkpointing in every transformer (saves memory at paper scale; the paper uses it)."""
    autocast_bf16: bool = False
    """Run the transformers under bf16 autocast (for GPUs; outputs stay float32). The paper trains in bf16."""
    scene_sample: int = 0
    """Which fixed evaluation sample becomes the model's "current scene" (what ns-export and ns-viewer show)."""
    labelled_prior: str = ""
    """Non-empty where some weights were trained with the LABELLED SYNTHETIC PRIOR (known cameras of generated
    clips): says which. ``pensieve-eval`` and ``pensieve-reconstruct`` copy it into what they write."""
    sh_degree: ClassVar[int] = 0
    """Colours are view-independent (degree-0 SH); read by nerfstudio's Splatfacto export path. Not an option."""


@dataclass
class PensieveStage2ModelConfig(PensieveModelConfig):
    """Stage 2 (docs/method.md §1.4, §1.5, §2.2): stage 1 plus Gaussians from the context features, splatted into every
    frame, and the depth losses."""

    gaussian_head: GaussianHeadConfig = field(default_factory=GaussianHeadConfig)
    depth_head: DepthHeadConfig = field(default_factory=DepthHeadConfig)
    """The paper's (the Gaussian head's own inverse depth), or ``FlowDepthHeadConfig``."""
    renderer: Literal["auto", "torch", "gsplat"] = "auto"
    """Splat backend: 'auto' uses gsplat on CUDA and the tiled PyTorch renderer elsewhere."""
    tile_size: int = 16
    tiles_per_chunk: int = 0
    """Tiled CPU renderer: composite this many tiles at a time under gradient checkpointing, which bounds the
    memory of a backward pass (0: every tile at once, fastest while it fits). Ignored by gsplat."""
    depth_projection_weight: float = 1.0
    depth_projection_max_step: int = 600000
    """The depth projection loss decays linearly to 0 at this training step."""
    depth_smooth_weight: float = 0.001


class PensieveModel(SceneMixin, SplatfactoModel):
    """Latent cameras and latent scene from an unposed clip; renders every frame with the LVSM head (stage 1) and
    with Gaussians splatted from the context frames (stage 2).

    A ``SplatfactoModel`` only so that ``ns-export gaussian-splat``, ``ns-viewer`` and ``ns-render`` accept it:
    none of Splatfacto's own modules, losses or densification are used; what they read is the "current scene"
    of ``SceneMixin`` (one clip's predicted Gaussians and cameras).
    """

    config: PensieveModelConfig

    def populate_modules(self) -> None:
        # No super().populate_modules(): it would add a ray collider, and this model takes clips, not rays.
        cfg = self.config
        self.encoder = PensieveEncoder(cfg.frame_vit, cfg.camera_vit, cfg.context_vit, cfg.patch, cfg.checkpointing)
        self.camera_head = cfg.camera_head.setup(in_channels=FEATURE_CHANNELS + 5)
        self.lvsm = LVSMHead(cfg.lvsm_vit, cfg.patch, FEATURE_CHANNELS + 5, cfg.checkpointing)
        stage2 = isinstance(cfg, PensieveStage2ModelConfig)
        self.gaussian_head = cfg.gaussian_head.setup(in_channels=FEATURE_CHANNELS + 5) if stage2 else None
        self.depth_head = cfg.depth_head.setup() if stage2 else None
        self.step = 0  # training iteration, for the depth projection loss's decay (set by a callback)
        self.init_scene_buffers()
        self.lpips = None
        if cfg.lpips_weight > 0:
            from pensieve_ns.losses import load_lpips_vgg

            self.lpips = load_lpips_vgg()

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"model": [p for n, p in self.named_parameters() if not n.startswith("lpips.") and p.requires_grad]}

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        def set_step(step: int) -> None:
            self.step = step

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step)]

    def get_outputs(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:  # type: ignore[override]
        """One clip batch -> renders of all L frames and the predicted cameras.

        batch: images [B, L, 3, H, W] in [0, 1], context [B, G] (positions into L).
        returns: rgb [B, L, 3, H, W]; c2w_opencv [B, L, 4, 4]; K [B, L, 3, 3] (pixels, shared per clip); f_ctx
        (the latent scene, [B, G, 21, H, W]).
        Stage 2 adds rgb_gs, alpha_gs, depth_gs (Gaussian renders of all L frames, [B, L, C, H, W]), depth_pred
        (the head's depth of each context pixel block, [B, G, 1, h, w]) and the Gaussians themselves.
        """
        images, context = batch["images"], batch["context"]
        H, W = images.shape[-2:]
        reads_features = self.camera_head.reads_features and "given_c2w_opencv" not in batch
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            # Camera features of all frames (only for a head that reads them), latent scene of the context.
            f_cam, f_ctx = self.encoder(images, context, camera_features=reads_features)
        f_ctx = f_ctx.float()  # cameras and rays in float32
        if "given_c2w_opencv" in batch:  # cameras from elsewhere (pensieve-reconstruct --cameras), normalised
            cameras = CameraPrediction(normalise_cameras(batch["given_c2w_opencv"]), batch["given_K"])
        else:  # latent cameras (OpenCV c2w) and clip intrinsics
            cameras = self.camera_head.predict(images, batch.get("frame_index"), f_cam.float() if reads_features else None)
        c2w, K = cameras.c2w_opencv, cameras.K
        rays = plucker_rays(c2w, K, H, W)  # [B, L, 6, H, W]
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            rgb = self.lvsm(f_ctx, gather_frames(rays, context), rays).float()  # every frame, one pass each
        outputs = {"rgb": rgb, "c2w_opencv": c2w, "K": K, "f_ctx": f_ctx}
        if self.gaussian_head is None:
            return outputs

        # Stage 2: Gaussians along the context frames' rays (predicted cameras), splatted into all L cameras over
        # uniform noise while training (pushes coverage to 1), over mid-grey when evaluating. Depth from the depth
        # head where it gives one (in c2w's units), else the Gaussian head's own.
        depth = self.depth_head.predict(images, cameras, batch.get("frame_index"))
        depth = gather_frames(depth, context) if depth is not None else None
        gs = self.gaussian_head(f_ctx, gather_frames(images, context), gather_frames(c2w, context), gather_frames(K, context), depth)
        background = torch.rand_like(images) if self.training else torch.full_like(images, 0.5)
        outputs["rgb_gs"], outputs["alpha_gs"], outputs["depth_gs"] = self.splat(gs, c2w, K, background)
        outputs["depth_pred"] = gs.depth
        outputs["gaussians"] = gs
        return outputs

    def splat(
        self, gs, c2w_opencv: Float[Tensor, "B T 4 4"], K: Float[Tensor, "B T 3 3"], background: Float[Tensor, "B T 3 H W"]
    ) -> Tuple[Float[Tensor, "B T 3 H W"], Float[Tensor, "B T 1 H W"], Float[Tensor, "B T 1 H W"]]:
        """Each clip's Gaussians (``GaussianHead`` output, batched) rendered into its T cameras: rgb, alpha, depth."""
        H, W = background.shape[-2:]
        w2c = invert_rigid(c2w_opencv)
        renders = [
            render(gs.means[b], gs.quats[b], gs.scales[b], gs.opacities[b], gs.colors[b], w2c[b], K[b], W, H,
                   background=background[b], backend=self.config.renderer, tile_size=self.config.tile_size,
                   tiles_per_chunk=self.config.tiles_per_chunk)
            for b in range(c2w_opencv.shape[0])
        ]
        return tuple(torch.stack(x) for x in zip(*renders))

    def render_views(
        self, outputs: Dict[str, Tensor], context: Tensor, c2w_opencv: Float[Tensor, "B T 4 4"], K: Float[Tensor, "B T 3 3"],
        background: float = 0.5,
    ) -> Dict[str, Tensor]:
        """Render the scene of ``get_outputs`` (its latent scene and, in stage 2, its Gaussians) at other cameras.

        Differentiable in the cameras (the evaluation's target-pose refinement uses it). outputs: what
        ``get_outputs`` returned for a batch with context positions ``context`` [B, G]. returns: rgb [B, T, 3, H, W]
        (LVSM head) and, in stage 2, rgb_gs / alpha_gs / depth_gs (Gaussians over a constant ``background``)."""
        f_ctx = outputs["f_ctx"]
        H, W = f_ctx.shape[-2:]
        ctx_rays = plucker_rays(gather_frames(outputs["c2w_opencv"], context), gather_frames(outputs["K"], context), H, W)
        with torch.autocast(f_ctx.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            rgb = self.lvsm(f_ctx, ctx_rays, plucker_rays(c2w_opencv, K, H, W)).float()
        views = {"rgb": rgb}
        if "gaussians" not in outputs:
            return views
        bg = torch.full((*c2w_opencv.shape[:2], 3, H, W), background, dtype=rgb.dtype, device=rgb.device)
        views["rgb_gs"], views["alpha_gs"], views["depth_gs"] = self.splat(outputs["gaussians"], c2w_opencv, K, bg)
        return views

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        with torch.no_grad():
            held_out = batch["loss_weights"] == batch["loss_weights"].max()
            metrics = {"focal_over_width": outputs["K"][:, 0, 0, 0].mean() / batch["images"].shape[-1]}
            for key, name in (("rgb", "psnr_held_out"), ("rgb_gs", "psnr_gs_held_out")):
                if key in outputs:
                    mse = ((outputs[key] - batch["images"]) ** 2).mean(dim=(2, 3, 4))  # [B, L]
                    metrics[name] = -10 * torch.log10(mse[held_out].mean())
            return metrics

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """L2 + LPIPS over every rendered frame (LVSM and, in stage 2, Gaussian renders, one shared normaliser),
        pooled with the 0.1 (context) / 1.0 (held-out) weights; stage 2 adds the depth projection loss (linear
        decay to 0 at ``depth_projection_max_step``) and edge-aware disparity smoothness."""
        cfg, images = self.config, batch["images"]
        renders = [outputs[k] for k in ("rgb", "rgb_gs") if k in outputs]
        weights = torch.cat([batch["loss_weights"]] * len(renders), dim=1)  # [B, R*L]
        pred = torch.cat(renders, dim=1)
        gt = torch.cat([images] * len(renders), dim=1)
        mse = ((pred - gt) ** 2).mean(dim=(2, 3, 4))
        losses = {"l2": weighted_image_loss(mse, weights)}
        if self.lpips is not None:
            per_frame = self.lpips(pred.flatten(0, 1), gt.flatten(0, 1), normalize=True).view(weights.shape)
            losses["lpips"] = cfg.lpips_weight * weighted_image_loss(per_frame, weights)
        if "depth_gs" not in outputs:
            return losses
        B, L, _, H, W = images.shape
        context = batch["context"]
        # The head's depth of each context pixel block, upsampled to the full grid (nearest) for the warps.
        depth_pred = outputs["depth_pred"]
        k = H // depth_pred.shape[-2]
        depth_pred_full = depth_pred.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        decay = max(cfg.depth_projection_max_step - self.step, 0) / cfg.depth_projection_max_step
        if cfg.depth_projection_weight > 0 and decay > 0:
            c2w, K = outputs["c2w_opencv"], outputs["K"]
            every = torch.arange(L, device=images.device).expand(B, L)
            s1, n1 = depth_projection_loss(images, outputs["depth_gs"], every, c2w, K)
            s2, n2 = depth_projection_loss(images, depth_pred_full, context, c2w, K)
            losses["depth_projection"] = cfg.depth_projection_weight * decay * (s1 + s2) / (n1 + n2).clamp_min(1)
        if cfg.depth_smooth_weight > 0:
            ctx_images = gather_frames(images, context).flatten(0, 1)
            smooth = disparity_smoothness_loss(outputs["depth_gs"].flatten(0, 1), images.flatten(0, 1))
            smooth = smooth + disparity_smoothness_loss(depth_pred_full.flatten(0, 1), ctx_images)
            losses["depth_smooth"] = cfg.depth_smooth_weight * smooth / 2
        return losses

    @torch.no_grad()
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR/SSIM of the held-out frames of one evaluation clip (LVSM branch; stage 2 also the Gaussian branch,
        keys ``*_gs``); images: ground truth over prediction, and the Gaussian branch's depth maps."""
        from pensieve_ns.eval.metrics import held_out_image_metrics

        metrics, images = held_out_image_metrics(outputs["rgb"][0], batch["images"][0], batch["context"][0])
        if "rgb_gs" in outputs:
            from nerfstudio.utils.colormaps import apply_depth_colormap

            gs_metrics, gs_images = held_out_image_metrics(outputs["rgb_gs"][0], batch["images"][0], batch["context"][0])
            metrics.update({f"{k}_gs": v for k, v in gs_metrics.items() if k != "psnr_blend_context"})
            images["img_gs"] = gs_images["img"]
            depth = outputs["depth_gs"][0].permute(0, 2, 3, 1)  # [L, H, W, 1]
            acc = outputs["alpha_gs"][0].permute(0, 2, 3, 1)
            images["depth_gs"] = torch.cat(list(apply_depth_colormap(depth, accumulation=acc)), dim=1)
        return metrics, images
