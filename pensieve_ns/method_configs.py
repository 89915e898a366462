"""``ns-train pensieve-stage1`` and ``ns-train pensieve-stage2``, built from the presets in ``pensieve_ns/configs/``
(package data, so a wheel carries them).

Imported by nerfstudio while it builds its CLI: keep imports cheap and never import
``nerfstudio.configs.method_configs`` here (circular import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Type

import numpy as np
import torch
import yaml
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from pensieve_ns.data.datamanager import PensieveDataManagerConfig
from pensieve_ns.data.sampler import ClipSamplerConfig
from pensieve_ns.model.pensieve import PensieveModelConfig
from pensieve_ns.model.vit import ViTSize
from pensieve_ns.pipeline import PensievePipelineConfig
from pensieve_ns.trainer import PensieveTrainerConfig

# nerfstudio's schedulers put numpy scalars into checkpoints, which torch >= 2.6 refuses to unpickle with
# weights_only=True (nerfstudio issue #3683): allow exactly those types.
torch.serialization.add_safe_globals([np.core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in ("float64", "float32", "int64")}])

# Inside the package, so a wheel install carries them (package-data in pyproject).
PRESETS = Path(__file__).resolve().parent / "configs"
# The flow64 preset's depth-head weights are a repository file, as the pretrained checkpoints are: a wheel install
# without the repository gets "depth head weights not found" when that stage 2 starts, not at import.
REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """AdamW as the paper uses it: lr 4e-4, betas (0.9, 0.95), PyTorch's default weight decay 0.01."""

    _target: Type = torch.optim.AdamW
    lr: float = 4e-4
    betas: Tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01


def load_preset(name: str) -> dict:
    path = PRESETS / f"{name}.yaml"
    return yaml.safe_load(path.read_text())


def stage1_config(preset: str = "tiny") -> PensieveTrainerConfig:
    p = load_preset(preset)
    m, d, t = p["model"], p["data"], p["train"]
    sizes = {k: ViTSize(**m[k]) for k in ("frame_vit", "camera_vit", "context_vit", "lvsm_vit")}
    return PensieveTrainerConfig(
        method_name="pensieve-stage1",
        steps_per_eval_batch=0,
        steps_per_eval_image=t["steps_per_eval_image"],
        steps_per_eval_all_images=t["steps_per_eval_all_images"],
        steps_per_save=t["steps_per_save"],
        max_num_iterations=t["max_num_iterations"],
        mixed_precision=False,
        pipeline=PensievePipelineConfig(
            datamanager=PensieveDataManagerConfig(
                image_size=tuple(d["image_size"]),
                batch_size=d["batch_size"],
                sampler=ClipSamplerConfig(**d["sampler"]),
            ),
            model=PensieveModelConfig(
                patch=m["patch"], camera_hidden=m["camera_hidden"], lpips_weight=m["lpips_weight"], **sizes,
                **{k: m[k] for k in ("camera_head", "pair_grid", "pair_symmetric", "pair_chain", "freeze_camera_head") if k in m},
            ),
        ),
        optimizers={
            "model": {
                "optimizer": AdamWOptimizerConfig(lr=t["lr"]),
                "scheduler": CosineDecaySchedulerConfig(
                    warm_up_end=t["warmup_steps"], learning_rate_alpha=t["lr_final"] / t["lr"], max_steps=t["max_num_iterations"]
                ),
            }
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="tensorboard",
    )


def stage2_config(preset: str = "tiny") -> PensieveTrainerConfig:
    """Stage 1's model and data plus the Gaussian head, the splat renders and the depth losses; initialised from
    a stage-1 checkpoint (``--stage1-checkpoint``) with a fresh optimizer and schedule. Method name
    ``pensieve-stage2``, or ``pensieve-stage2-PRESET`` for another preset than 'tiny'."""
    config = stage1_config(preset)
    p = load_preset(preset)
    s2 = p["stage2"]
    config.method_name = "pensieve-stage2" if preset == "tiny" else f"pensieve-stage2-{preset}"
    config.max_num_iterations = s2["max_num_iterations"]
    model = config.pipeline.model
    model.gaussians = True
    for key in ("gaussian_hidden", "gaussian_stride", "tile_size", "depth_projection_weight",
                "depth_projection_max_step", "depth_smooth_weight"):
        setattr(model, key, s2[key])
    model.gaussian_footprint = tuple(s2["gaussian_footprint"])
    if "depth_head" in s2:  # flow64: the flow depth head, its weights given relative to the repository
        model.depth_head, model.freeze_depth_head = s2["depth_head"], s2.get("freeze_depth_head", False)
        model.depth_head_weights = REPOSITORY / s2["depth_head_weights"] if s2.get("depth_head_weights") else None
        model.depth_unmeasured_threshold = s2.get("depth_unmeasured_threshold")
    sampler = config.pipeline.datamanager.sampler
    sampler.gap_warmup_start, sampler.gap_warmup_steps = s2["gap_warmup_start"], s2["gap_warmup_steps"]
    t = p["train"]
    config.optimizers["model"]["scheduler"] = CosineDecaySchedulerConfig(
        warm_up_end=t["warmup_steps"], learning_rate_alpha=t["lr_final"] / t["lr"], max_steps=s2["max_num_iterations"]
    )
    return config


pensieve_stage1 = MethodSpecification(
    config=stage1_config("tiny"),
    description="Pensieve stage 1: latent cameras and latent scene from unposed video (LVSM renderer).",
)

pensieve_stage2 = MethodSpecification(
    config=stage2_config("tiny"),
    description="Pensieve stage 2: Gaussians and splatting on top of stage 1, depth projection loss "
    "(start from a stage-1 run with --stage1-checkpoint).",
)

pensieve_stage2_flow64 = MethodSpecification(
    config=stage2_config("flow64"),
    description="Pensieve stage 2 at 64 px from the shipped pretrained/stage1-flow64 (--stage1-checkpoint "
    "pretrained/stage1-flow64): its flow camera head and the flow depth head, both pre-trained with the labelled "
    "synthetic prior, stay frozen.",
)
