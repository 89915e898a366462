"""nerfstudio's Trainer with crash-safe checkpoints.

nerfstudio 1.1.5 ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints, so a run killed
mid-write can leave a truncated newest checkpoint that ``--load-dir`` picks up. Here the checkpoint is written to a
hidden temporary file in the same folder, flushed to disk, and renamed into place (atomic on POSIX); older
checkpoints are removed only after that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread


@dataclass
class PensieveTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: PensieveTrainer)

    def __post_init__(self) -> None:
        # Built by ns-train's CLI after nerfstudio's train script is fully imported, and before it launches
        # workers: the moment to let --machine.num-devices N run on CPUs (see pensieve_ns/distributed.py).
        from pensieve_ns.distributed import enable_cpu_workers

        enable_cpu_workers()


class PensieveTrainer(Trainer):
    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        tmp_path = self.checkpoint_dir / f".{ckpt_path.name}.tmp"  # not matched by nerfstudio's *.ckpt globs
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
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
