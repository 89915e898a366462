"""The registered methods (``ns-train --help`` lists them); their presets are in ``presets.py``.

    ns-train pensieve-stage1          tiny CPU preset: 64 px, width 128, two layers per transformer
    ns-train pensieve-stage2          the same, plus Gaussians (start from a stage-1 run: --stage1-checkpoint)
    ns-train pensieve-stage2-flow64   stage 2 of the shipped 64 px model (its flow camera and depth heads, frozen)
    ns-train pensieve-stage1-re10k    the paper, RealEstate10K stage 1 (GPUs)
    ns-train pensieve-stage2-re10k    the paper, RealEstate10K stage 2 (--stage1-checkpoint a stage1-re10k run)
    ns-train pensieve-stage2-dl3dv    the paper's DL3DV fine-tune (--stage1-checkpoint a stage2-re10k run)

Every field of every config is reachable from ``ns-train`` (``--pipeline.model.camera-head.freeze True`` ...).
Imported by nerfstudio while it builds its CLI: keep imports cheap and never import
``nerfstudio.configs.method_configs`` here (circular import).
"""

from __future__ import annotations

from nerfstudio.plugins.types import MethodSpecification

from pensieve_ns.presets import PRESETS, stage1_config, stage2_config  # noqa: F401  (re-exported)

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
    description="Pensieve stage 2 at 64 px from the shipped model (--stage1-checkpoint pretrained/stage1-flow64 "
    "--pipeline.model.depth-head.weights pretrained/flow-depth-head/flow_depth_head.pt): its flow camera and "
    "depth heads, pre-trained with the labelled synthetic prior, stay frozen.",
)

pensieve_stage1_re10k = MethodSpecification(
    config=stage1_config("re10k"),
    description="Pensieve stage 1 at the paper's settings on RealEstate10K (256 px, GPUs: bf16, checkpointing).",
)

pensieve_stage2_re10k = MethodSpecification(
    config=stage2_config("re10k"),
    description="Pensieve stage 2 at the paper's settings on RealEstate10K (--stage1-checkpoint a stage1-re10k run).",
)

pensieve_stage2_dl3dv = MethodSpecification(
    config=stage2_config("dl3dv"),
    description="Pensieve's DL3DV fine-tune at the paper's settings, 256x448 (--stage1-checkpoint a stage2-re10k run).",
)
