"""Presets: what each registered method trains, in Python (nerfstudio's own ``method_configs.py`` style).

A preset is a function returning a ``Preset``: the stage-1 model, data and schedule, and how stage 2 extends them.
``tiny`` and ``flow64`` are CPU presets; ``re10k`` and ``dl3dv`` are the paper's (docs/method.md §2), with every
counter stated once in the paper's units (``PaperCounters``) and converted to nerfstudio steps in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Dict, Optional, Tuple, Type

import torch
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig

from pensieve_ns.checkpoints import STAGE1_MODULES, STAGE2_MODULES
from pensieve_ns.data.datamanager import PensieveDataManagerConfig
from pensieve_ns.data.sampler import ClipSamplerConfig
from pensieve_ns.model.flow_depth import FlowDepthHeadConfig
from pensieve_ns.model.flow_pose import FlowCameraHeadConfig
from pensieve_ns.model.gaussian_head import GaussianHeadConfig
from pensieve_ns.model.pensieve import PensieveModelConfig, PensieveStage2ModelConfig
from pensieve_ns.model.vit import ViTSize
from pensieve_ns.pipeline import PensievePipelineConfig
from pensieve_ns.trainer import PensieveTrainerConfig

FLOW_PRIOR = ("flow camera head (and, in stage 2, flow depth head) trained on generated clips with known cameras; "
              "decoder trained self-supervised on generated clips")
"""What the shipped flow64 weights learned from labelled synthetic cameras (copied into their outputs)."""


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """AdamW as the paper uses it: lr 4e-4, betas (0.9, 0.95), PyTorch's default weight decay 0.01."""

    _target: Type = torch.optim.AdamW
    lr: float = 4e-4
    betas: Tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01


@dataclass
class Schedule:
    """Learning rate (linear warm-up, cosine decay to ``lr_final``), length and logging cadence, in optimizer steps."""

    lr: float
    lr_final: float
    warmup_steps: int
    steps: int
    eval_image_every: int = 200
    eval_all_every: int = 1000
    save_every: int = 200


@dataclass
class Preset:
    """Stage 1 as built, and what stage 2 adds (``stage2`` turns a stage-1 model config into stage 2's)."""

    model: PensieveModelConfig
    data: PensieveDataManagerConfig
    schedule: Schedule
    stage2: Callable[[PensieveModelConfig], PensieveStage2ModelConfig]
    stage2_schedule: Schedule
    gap_warmup: Optional[Tuple[int, int]] = (1, 500)
    """Stage 2's sampler gap warm-up: from this gap, over this many steps, to the preset's largest gap (None: none)."""
    accumulation: int = 1
    """Gradient accumulation (nerfstudio's ``gradient_accumulation_steps``): steps per optimizer update."""
    stage2_start: Tuple[str, ...] = STAGE1_MODULES
    """What stage 2 takes from its ``--stage1-checkpoint``."""


def small_vit(depth: int = 2) -> ViTSize:
    return ViTSize(dim=128, depth=depth, heads=4, mlp_hidden=512, hook=0)


def extend_to_stage2(model: PensieveModelConfig, **stage2) -> PensieveStage2ModelConfig:
    """A stage-2 model config holding every field of ``model`` plus ``stage2``'s."""
    return PensieveStage2ModelConfig(**{f.name: getattr(model, f.name) for f in fields(model) if f.init}, **stage2)


def cpu_stage2(model: PensieveModelConfig, **extra) -> PensieveStage2ModelConfig:
    """Stage 2 scaled to the CPU: one Gaussian per 2x2 pixels, small splats (short per-tile lists for the tiled
    renderer), the depth projection loss decaying by step 2000."""
    return extend_to_stage2(
        model, gaussian_head=GaussianHeadConfig(hidden=32, stride=2, footprint=(0.1, 1.5)), tile_size=8,
        depth_projection_weight=1.0, depth_projection_max_step=2000, depth_smooth_weight=0.001, **extra,
    )


def tiny() -> Preset:
    """64 px clips, width 128, two layers per transformer, the paper's camera head: what CPUs train."""
    model = PensieveModelConfig(
        patch=8, frame_vit=small_vit(), camera_vit=small_vit(), context_vit=small_vit(), lvsm_vit=small_vit(),
        lpips_weight=0.0,  # LPIPS-VGG needs downloaded weights; offline machines train without it
    )
    model.camera_head.hidden = 128
    data = PensieveDataManagerConfig(
        image_size=(64, 64), batch_size=4,
        sampler=ClipSamplerConfig(window_frames=5, min_views=2, max_context=4, min_gap=1, max_gap=3, eval_views=5),
    )
    return Preset(model, data, Schedule(lr=4e-4, lr_final=1e-5, warmup_steps=100, steps=2000), cpu_stage2,
                  Schedule(lr=4e-4, lr_final=1e-5, warmup_steps=100, steps=1000))


def flow64() -> Preset:
    """The shipped 64 px model: patch 4, LVSM depth 4, the flow camera head (labelled synthetic prior, frozen).
    Stage 2 puts the Gaussians at the flow depth head's depth (also frozen); windows whose flow measures no depth
    (pans) get one constant depth."""
    model = PensieveModelConfig(
        patch=4, frame_vit=small_vit(), camera_vit=small_vit(), context_vit=small_vit(), lvsm_vit=small_vit(4),
        camera_head=FlowCameraHeadConfig(freeze=True), lpips_weight=0.0, labelled_prior=FLOW_PRIOR,
    )
    data = PensieveDataManagerConfig(
        image_size=(64, 64), batch_size=16,
        sampler=ClipSamplerConfig(window_frames=5, min_views=2, max_context=4, min_gap=1, max_gap=2, eval_views=5, eval_gap=2),
    )

    def stage2(m: PensieveModelConfig) -> PensieveStage2ModelConfig:
        return cpu_stage2(m, depth_head=FlowDepthHeadConfig(freeze=True, unmeasured_threshold=0.6))

    return Preset(model, data, Schedule(lr=3e-4, lr_final=7.5e-6, warmup_steps=20, steps=400), stage2,
                  Schedule(lr=3e-4, lr_final=7.5e-6, warmup_steps=20, steps=1000))


@dataclass(frozen=True)
class PaperCounters:
    """The paper's counters in its own units (docs/method.md §2.3), converted to nerfstudio steps here only.

    The paper trains with HF accelerate on ``gpus`` GPUs, ``batch_per_gpu`` clips per process and gradient
    accumulation ``accumulation``. Its LR schedule counts scheduler calls, which accelerate makes ``gpus`` times per
    optimizer update; its depth-projection decay and gap warm-up count per-process iterations (one micro-batch).
    A nerfstudio step is one per-process iteration (its trainer accumulates gradients over
    ``gradient_accumulation_steps`` steps and steps the LR schedule every step), so iterations carry over as they are
    and scheduler calls become calls / gpus * accumulation steps."""

    gpus: int = 8
    batch_per_gpu: int = 2
    accumulation: int = 4
    warmup_calls: int = 16_000
    total_calls: int = 1_600_000
    depth_projection_iterations: int = 600_000
    gap_warmup_iterations: int = 20_000
    gap_warmup_start: int = 4

    def steps(self, scheduler_calls: int) -> int:
        """Scheduler calls -> nerfstudio steps (per-process iterations)."""
        return scheduler_calls // self.gpus * self.accumulation


RE10K = PaperCounters()
DL3DV = PaperCounters(warmup_calls=0, total_calls=512_000, depth_projection_iterations=48_000)


def paper_vits(model: PensieveModelConfig) -> PensieveModelConfig:
    """The paper's transformer sizes (docs/method.md §1.1), bf16 autocast and gradient checkpointing (on CUDA)."""
    model.frame_vit = ViTSize(dim=768, depth=12, heads=16, mlp_hidden=4096, hook=5)
    for name in ("camera_vit", "context_vit", "lvsm_vit"):
        setattr(model, name, ViTSize(dim=512, depth=8, heads=16, mlp_hidden=4096, hook=3))
    model.patch, model.lpips_weight, model.autocast_bf16, model.checkpointing = 8, 0.5, True, True
    return model


def paper_schedule(counters: PaperCounters) -> Schedule:
    return Schedule(lr=4e-4, lr_final=1e-5, warmup_steps=counters.steps(counters.warmup_calls),
                    steps=counters.steps(counters.total_calls), eval_image_every=2000, eval_all_every=20000,
                    save_every=2000)


def paper_preset(c: PaperCounters, data: PensieveDataManagerConfig, smooth_weight: float, **preset) -> Preset:
    """The paper's model and schedule for ``c``; stage 2 adds one Gaussian per pixel, footprints 0.5-15, depth
    projection 1 decaying by ``c``'s iterations and smoothness ``smooth_weight``. ``tiles_per_chunk`` only bounds
    the CPU renderer's memory (gsplat ignores it)."""

    def stage2(m: PensieveModelConfig) -> PensieveStage2ModelConfig:
        return extend_to_stage2(m, gaussian_head=GaussianHeadConfig(hidden=512, stride=1, footprint=(0.5, 15.0)),
                                tile_size=16, tiles_per_chunk=64, depth_projection_weight=1.0,
                                depth_projection_max_step=c.depth_projection_iterations, depth_smooth_weight=smooth_weight)

    return Preset(paper_vits(PensieveModelConfig()), data, paper_schedule(c), stage2, paper_schedule(c),
                  accumulation=c.accumulation, **preset)


def re10k() -> Preset:
    """The paper on RealEstate10K (docs/method.md §1-2): 256x256 (resize and centre crop), 7-frame windows with gaps
    12-48, 2 clips per GPU with gradient accumulation 4; stage 2: smoothness 1e-3, depth projection decaying by 600k
    iterations, and the gap warm-up 4 -> 48 over 20k."""
    data = PensieveDataManagerConfig(
        image_size=(256, 256), batch_size=RE10K.batch_per_gpu,
        sampler=ClipSamplerConfig(window_frames=7, min_views=2, max_context=6, min_gap=12, max_gap=48, eval_views=5),
    )
    return paper_preset(RE10K, data, 0.001, gap_warmup=(RE10K.gap_warmup_start, RE10K.gap_warmup_iterations))


def dl3dv() -> Preset:
    """The paper's DL3DV fine-tune (docs/method.md §2): from a RealEstate10K stage-2 run (every module), 256x448
    frames, 5-frame windows with gaps 1-4, no warm-up, depth projection decaying by 48k iterations, smoothness
    2e-4. Stage 2 only (``pensieve-stage2-dl3dv``)."""
    data = PensieveDataManagerConfig(
        image_size=(256, 448), batch_size=DL3DV.batch_per_gpu,
        sampler=ClipSamplerConfig(window_frames=5, min_views=2, max_context=4, min_gap=1, max_gap=4, eval_views=5),
    )
    return paper_preset(DL3DV, data, 0.0002, gap_warmup=None, stage2_start=STAGE2_MODULES)


PRESETS: Dict[str, Callable[[], Preset]] = {"tiny": tiny, "flow64": flow64, "re10k": re10k, "dl3dv": dl3dv}


def trainer_config(
    method_name: str, model: PensieveModelConfig, data: PensieveDataManagerConfig, s: Schedule, accumulation: int = 1
) -> PensieveTrainerConfig:
    return PensieveTrainerConfig(
        method_name=method_name,
        gradient_accumulation_steps={"model": accumulation},
        steps_per_eval_batch=0,
        steps_per_eval_image=s.eval_image_every,
        steps_per_eval_all_images=s.eval_all_every,
        steps_per_save=s.save_every,
        max_num_iterations=s.steps,
        mixed_precision=False,
        pipeline=PensievePipelineConfig(datamanager=data, model=model),
        optimizers={
            "model": {
                "optimizer": AdamWOptimizerConfig(lr=s.lr),
                "scheduler": CosineDecaySchedulerConfig(
                    warm_up_end=s.warmup_steps, learning_rate_alpha=s.lr_final / s.lr, max_steps=s.steps
                ),
            }
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="tensorboard",
    )


def method_name(stage: int, preset: str) -> str:
    return f"pensieve-stage{stage}" if preset == "tiny" else f"pensieve-stage{stage}-{preset}"


def stage1_config(preset: str = "tiny") -> PensieveTrainerConfig:
    p = PRESETS[preset]()
    return trainer_config(method_name(1, preset), p.model, p.data, p.schedule, p.accumulation)


def stage2_config(preset: str = "tiny") -> PensieveTrainerConfig:
    """Stage 1's model and data plus the Gaussian head, the splat renders and the depth losses; initialised from
    a stage-1 checkpoint (``--stage1-checkpoint``) with a fresh optimizer and schedule."""
    p = PRESETS[preset]()
    if p.gap_warmup is not None:
        p.data.sampler.gap_warmup_start, p.data.sampler.gap_warmup_steps = p.gap_warmup
    config = trainer_config(method_name(2, preset), p.stage2(p.model), p.data, p.stage2_schedule, p.accumulation)
    config.stage1_modules = p.stage2_start
    return config
