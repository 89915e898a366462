"""PensieveModel: the whole forward path of a training step (stages 1 and 2), top to bottom in ``get_outputs``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.models.base_model import ModelConfig
from nerfstudio.models.splatfacto import SplatfactoModel

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation

from pensieve_ns.cameras import camera_scale, invert_rigid, normalise_cameras, plucker_rays
from pensieve_ns.checkpoints import load_camera_head_weights, load_depth_head_weights
from pensieve_ns.losses import camera_prior_loss, depth_projection_loss, disparity_smoothness_loss
from pensieve_ns.model.camera_head import CameraHead, PairCameraHead
from pensieve_ns.model.flow_depth import FlowDepthHead
from pensieve_ns.model.flow_pose import FlowCameraHead, temporal_flows
from pensieve_ns.model.encoder import FEATURE_CHANNELS, PensieveEncoder
from pensieve_ns.model.gaussian_head import GaussianHead
from pensieve_ns.render import render
from pensieve_ns.model.lvsm_head import LVSMHead
from pensieve_ns.model.scene import SceneMixin
from pensieve_ns.model.vit import ViTSize


@dataclass
class PensieveModelConfig(ModelConfig):
    """Sizes of the four transformers and the loss weights (presets in pensieve_ns/configs/ set these)."""

    _target: Type = field(default_factory=lambda: PensieveModel)
    patch: int = 8
    frame_vit: ViTSize = field(default_factory=lambda: ViTSize(dim=768, depth=12, heads=16, hook=5))
    camera_vit: ViTSize = field(default_factory=ViTSize)
    context_vit: ViTSize = field(default_factory=ViTSize)
    lvsm_vit: ViTSize = field(default_factory=ViTSize)
    camera_head: Literal["features", "pair_flow", "flow_pose"] = "features"
    """'features': the paper's head on the camera transformer's features (method.md §1.2). 'pair_flow' (issue 5,
    not the paper): each frame's camera relative to the first from the two images' correlation volume
    (``PairCameraHead``). 'flow_pose' (issue 5, not the paper): from classical optical flow between the frames
    (``FlowCameraHead``). Both can start from weights pre-trained with the labelled prior (``camera_head_weights``)."""
    camera_head_weights: Optional[Path] = None
    """A ``PairCameraHead`` (``benchmarks/camera_probe.py --save``) or ``FlowCameraHead``
    (``benchmarks/flow_pose_probe.py``) state dict to start from. Trained on generated clips with known cameras:
    using it is the LABELLED SYNTHETIC PRIOR, and results say so."""
    pair_grid: int = 16
    """Correlation grid of 'pair_flow' (frames are resampled to 2 * pair_grid pixels)."""
    pair_symmetric: bool = True
    """'pair_flow' sees each pair both ways; swapping two frames then inverts their relative pose exactly."""
    pair_chain: bool = True
    """'pair_flow' reads the frames in temporal order (``frame_index``) and predicts each against its predecessor,
    composing the steps; False: every frame against frame 0, whose angles shrink with the span (LEARNING.md
    exp 34: pair angle 0.57 -> 0.70 of the truth, Racc@5 0.53 -> 0.58 with the same weights)."""
    freeze_camera_head: bool = False
    """Keep the camera head's weights as they are (not in the optimizer). For a 'pair_flow' or 'flow_pose' head
    pre-trained with the labelled prior, whose cameras then depend on the images alone: self-supervised training
    moves such cameras away from the truth (LEARNING.md exp 29), and the shipped models froze them (exps 35, 37)."""
    camera_hidden: int = 512
    camera_quaternion: Literal["spec", "residual"] = "spec"
    """'spec': the paper's head (w row all ones); 'residual': q = identity + output (see CameraHead)."""
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
    camera_prior_weight: float = 0.0
    """LABELLED SYNTHETIC PRIOR, off by default: > 0 adds a supervised loss between the predicted cameras and the
    known cameras of generated clips (``losses.camera_prior_loss``). Only for pre-training on generated data;
    a clip without ground truth is refused."""
    camera_prior_rotation_weight: float = 1.0
    """Weight of the prior's rotation term inside ``camera_prior_loss`` (its squared Frobenius distance is about
    the squared angle in radians, 0.03 at 10 degrees, against centre terms of order one; the pair head's
    pre-training used 1600)."""

    # Stage 2 (method.md §1.4, §1.5, §2.2): Gaussians from the context features, splatted into every frame.
    gaussians: bool = False
    """Predict per-pixel Gaussians and render them into all L predicted cameras (stage 2)."""
    depth_head: Literal["gaussian", "flow"] = "gaussian"
    """Where the Gaussians' depth comes from. 'gaussian': the Gaussian head's own inverse-depth channel (the
    paper). 'flow' (issue 5, not the paper; needs camera_head='flow_pose'): ``FlowDepthHead``, optical flow to the
    temporal neighbours read under the predicted cameras, in the cameras' own scale."""
    depth_head_weights: Optional[Path] = None
    """A ``FlowDepthHead`` state dict (``benchmarks/flow_depth_probe.py``): trained photometrically with the known
    cameras of generated clips, the LABELLED SYNTHETIC PRIOR (no depth labels)."""
    freeze_depth_head: bool = False
    """Keep the flow depth head's weights as they are (not in the optimizer), as stage 2 alignment exp 5 did."""
    depth_unmeasured_threshold: Optional[float] = None
    """depth_head='flow': windows whose flow measures no depth (pans; ``flow_depth.neighbour_disagreement`` above
    this) get one constant depth instead of the net's map (LEARNING.md exp 42). None: never."""
    gaussian_hidden: int = 512
    gaussian_stride: int = 1
    """One Gaussian per stride x stride context pixels (1 = per pixel, the paper; 2-4 keep the CPU renderer fast)."""
    gaussian_footprint: Tuple[float, float] = (0.5, 15.0)
    """Range of each splat's scale times W / depth (the paper's 0.5..15; roughly its size in pixels over fx / W)."""
    renderer: Literal["auto", "torch", "gsplat"] = "auto"
    """Splat backend: 'auto' uses gsplat on CUDA and the tiled PyTorch renderer elsewhere."""
    tile_size: int = 16
    depth_projection_weight: float = 0.0
    depth_projection_max_step: int = 600000
    """The depth projection loss decays linearly to 0 at this step."""
    depth_smooth_weight: float = 0.0
    scene_sample: int = 0
    """Which fixed evaluation sample becomes the model's "current scene" (what ns-export and ns-viewer show)."""
    sh_degree: int = 0
    """Colours are view-independent (degree-0 SH); read by nerfstudio's Splatfacto code paths."""


def gather_frames(x: Float[Tensor, "B L *rest"], index: Tensor) -> Float[Tensor, "B G *rest"]:
    """x[b, index[b]] for every b."""
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def weighted_image_loss(
    per_frame: Float[Tensor, "B L"], weights: Float[Tensor, "B L"]
) -> Float[Tensor, ""]:
    """Pooled weighted mean: sum of per-frame means times their weights over the sum of weights (method.md §2.2)."""
    return (per_frame * weights).sum() / weights.sum()


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
        if cfg.camera_head in ("pair_flow", "flow_pose"):
            if cfg.camera_head == "pair_flow":
                self.camera_head = PairCameraHead(cfg.pair_grid, symmetric=cfg.pair_symmetric)
            else:
                self.camera_head = FlowCameraHead()
            if cfg.camera_head_weights is not None:
                self.camera_head.load_state_dict(load_camera_head_weights(cfg.camera_head_weights, self.camera_head))
        else:
            self.camera_head = CameraHead(FEATURE_CHANNELS + 5, cfg.camera_hidden, cfg.camera_quaternion)
        if cfg.freeze_camera_head:
            self.camera_head.requires_grad_(False)
        self.lvsm = LVSMHead(cfg.lvsm_vit, cfg.patch, FEATURE_CHANNELS + 5, cfg.checkpointing)
        self.gaussian_head = (
            GaussianHead(FEATURE_CHANNELS + 5, cfg.gaussian_hidden, cfg.gaussian_stride, cfg.gaussian_footprint) if cfg.gaussians else None
        )
        self.depth_head = None
        if cfg.gaussians and cfg.depth_head == "flow":
            if cfg.camera_head != "flow_pose" or cfg.camera_source != "predicted":
                raise ValueError("depth_head='flow' reads the flow camera head's cameras: set camera_head='flow_pose' "
                                 "(and camera_source='predicted')")
            self.depth_head = FlowDepthHead(unmeasured_threshold=cfg.depth_unmeasured_threshold)
            if cfg.depth_head_weights is not None:
                self.depth_head.load_state_dict(load_depth_head_weights(cfg.depth_head_weights, self.depth_head))
            if cfg.freeze_depth_head:
                self.depth_head.requires_grad_(False)
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
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            # Camera features of all frames (None for the pair head, which reads the images), scene of the context.
            f_cam, f_ctx = self.encoder(images, context, camera_features=self.config.camera_head == "features")
        f_ctx = f_ctx.float()  # cameras and rays in float32
        if self.config.camera_source == "ground_truth":  # oracle: known cameras of generated clips
            c2w, K = normalise_cameras(batch["gt_c2w_opencv"]), batch["gt_K"]
        elif self.config.camera_head in ("pair_flow", "flow_pose"):
            # Frame to frame in time (pair_chain) or each frame against the first; OpenCV c2w with batch frame 0
            # the identity, clip intrinsics. Its translation scale is free (the prior
            # loss compares normalised cameras), so the decoder gets the oracle's convention: farthest centre at 1.
            frame_index = batch.get("frame_index")
            if self.depth_head is not None:  # both flow heads read the flow between temporal neighbours: once
                flows = temporal_flows(images, frame_index)
                c2w_head, K, _ = self.camera_head(images, frame_index, chain=self.config.pair_chain,
                                                  flows=flows if self.config.pair_chain else None)
            else:
                c2w_head, K, _ = self.camera_head(images, frame_index, chain=self.config.pair_chain)
            c2w = normalise_cameras(c2w_head)
        else:
            c2w, K, _ = self.camera_head(f_cam.float())  # latent cameras (OpenCV c2w) and clip intrinsics
        rays = plucker_rays(c2w, K, H, W)  # [B, L, 6, H, W]
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            rgb = self.lvsm(f_ctx, gather_frames(rays, context), rays).float()  # every frame, one pass each
        outputs = {"rgb": rgb, "c2w_opencv": c2w, "K": K, "f_ctx": f_ctx}
        if self.gaussian_head is None:
            return outputs

        # Stage 2: Gaussians along the context frames' rays (predicted cameras), splatted into all L cameras over
        # uniform noise while training (pushes coverage to 1), over mid-grey when evaluating.
        depth = None
        if self.depth_head is not None:  # flow depth under the head's unit-step cameras, then in c2w's scale
            depth = self.depth_head(images, c2w_head, K, frame_index, flows) / camera_scale(c2w_head)[:, None, None, None, None]
            depth = gather_frames(depth, context)
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
                   background=background[b], backend=self.config.renderer, tile_size=self.config.tile_size)
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
        losses = {"l2": cfg.l2_weight * weighted_image_loss(mse, weights)}
        if self.lpips is not None:
            per_frame = self.lpips(pred.flatten(0, 1), gt.flatten(0, 1), normalize=True).view(weights.shape)
            losses["lpips"] = cfg.lpips_weight * weighted_image_loss(per_frame, weights)
        if cfg.camera_prior_weight > 0:  # the labelled synthetic prior (generated clips with known cameras)
            if "has_gt" in batch and not bool(batch["has_gt"].all()):
                raise ValueError("camera_prior_weight > 0 needs ground-truth cameras (generated clips) for every clip")
            losses["camera_prior"] = cfg.camera_prior_weight * camera_prior_loss(
                outputs["c2w_opencv"], outputs["K"], batch["gt_c2w_opencv"], batch["gt_K"],
                rotation_weight=cfg.camera_prior_rotation_weight,
            )
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
