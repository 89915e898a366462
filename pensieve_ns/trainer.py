"""nerfstudio's Trainer with crash-safe checkpoints.

nerfstudio 1.1.5 ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints, so a run killed
mid-write can leave a truncated newest checkpoint that ``--load-dir`` picks up. Here the checkpoint is written to a
hidden temporary file in the run folder (beside the checkpoint folder, on the same file system), flushed to disk,
and renamed into place (atomic on POSIX); older checkpoints are removed only after that. The temporary file must not
sit in the checkpoint folder: nerfstudio's ``--load-dir`` parses a step number out of every file name there, and a
run killed mid-write then could not resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple, Type

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from pensieve_ns.checkpoints import STAGE1_MODULES
from pensieve_ns.errors import PensieveInputError, exit_with_error


@dataclass
class PensieveTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: PensieveTrainer)
    stage1_checkpoint: Optional[Path] = None
    """pensieve-stage2: the stage-1 run to start from (its folder, config.yml or a step-*.ckpt). Its backbone,
    camera head and LVSM head are loaded, the Gaussian head starts fresh, and so do the optimizer and schedule.
    Ignored when resuming with --load-dir / --load-checkpoint."""
    stage1_modules: Tuple[str, ...] = STAGE1_MODULES
    """The modules taken from ``--stage1-checkpoint`` (the DL3DV fine-tune also takes the Gaussian head)."""

    def __post_init__(self) -> None:
        # Built by ns-train's CLI after nerfstudio's train script is fully imported, and before it launches
        # workers: the moment to let --machine.num-devices N run on CPUs (see pensieve_ns/distributed.py).
        from pensieve_ns.distributed import enable_cpu_workers

        enable_cpu_workers()


def check_stage2_start(model_config, modules) -> None:
    """Refuse a stage-2 start that would leave a frozen head at its random weights: a frozen flow depth head gets
    nothing from a stage-1 run, so it needs its own starting weights."""
    depth_head = getattr(model_config, "depth_head", None)
    from_checkpoint = "depth_head." in modules
    if getattr(depth_head, "freeze", False) and getattr(depth_head, "weights", None) is None and not from_checkpoint:
        raise PensieveInputError(None, "a frozen flow depth head needs its weights: pass --pipeline.model."
                                 "depth-head.weights (the shipped ones: pretrained/flow-depth-head/flow_depth_head.pt)")


class PensieveTrainer(Trainer):
    def _load_checkpoint(self) -> None:
        """Resume as nerfstudio does; otherwise, for stage 2, initialise from the stage-1 run."""
        if self.config.load_dir is not None or self.config.load_checkpoint is not None:
            return super()._load_checkpoint()
        model = self.pipeline.model
        if model.gaussian_head is None:  # stage 1
            return super()._load_checkpoint()
        try:
            if self.config.stage1_checkpoint is None:
                raise PensieveInputError(
                    None, "pensieve-stage2 starts from a stage-1 run: pass --stage1-checkpoint "
                    "outputs/EXP/pensieve-stage1/TIMESTAMP (or a step-*.ckpt in it)",
                )
            from pensieve_ns.checkpoints import load_stage1_weights

            check_stage2_start(model.config, self.config.stage1_modules)
            ckpt, count = load_stage1_weights(model, self.config.stage1_checkpoint, self.config.stage1_modules)
        except PensieveInputError as err:
            exit_with_error(err, "pensieve-stage2")
        CONSOLE.print(f"Stage 2 initialised from {ckpt} ({count} tensors of {', '.join(m.rstrip('.') for m in self.config.stage1_modules)})")

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        tmp_path = self.checkpoint_dir.parent / f".{ckpt_path.name}.tmp"  # outside the folder --load-dir lists
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        pipeline.update_scene()  # stage 2: the current scene of ns-export / ns-viewer travels in the checkpoint
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        with open(tmp_path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != ckpt_path:
                    old.unlink()
