"""PensievePipeline: feeds whole clip batches (context and targets) to the model instead of rays."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import torch
import torch.distributed as dist
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel as DDP
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from pensieve_ns.checkpoints import forget_start_weights
from pensieve_ns.data.datamanager import PensieveDataManagerConfig
from pensieve_ns.errors import PensieveInputError, exit_with_error
from pensieve_ns.model.pensieve import PensieveModelConfig


@dataclass
class PensievePipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: PensievePipeline)
    datamanager: PensieveDataManagerConfig = field(default_factory=PensieveDataManagerConfig)
    model: PensieveModelConfig = field(default_factory=PensieveModelConfig)


def check_preset(config: PensievePipelineConfig) -> None:
    """Refuse, before any data is read or weights built, a preset whose image size the patch size cannot tile."""
    H, W = config.datamanager.image_size
    p = config.model.patch
    if H % p or W % p or H <= 0 or W <= 0:
        raise PensieveInputError(
            None,
            f"image size {H}x{W} is not a multiple of the patch size {p}: set "
            f"--pipeline.datamanager.image-size to multiples of {p} (e.g. {max(p, H // p * p)} {max(p, W // p * p)})",
        )


class PensievePipeline(VanillaPipeline):
    """Same training loop contract as nerfstudio's; the model sees the batch (clips), not the cameras."""

    def __init__(
        self,
        config: PensievePipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[GradScaler] = None,
    ):
        if test_mode != "val":  # nerfstudio's eval_setup (ns-export, ns-viewer, ns-eval): a checkpoint follows
            forget_start_weights(config.model)
        try:
            check_preset(config)
            # world_size=1 here: nerfstudio's own DDP wrap hard-codes GPU device ids; wrapped below instead.
            super().__init__(config, device, test_mode, 1, local_rank, grad_scaler)
        except PensieveInputError as err:
            exit_with_error(err, "pensieve-ns")
        self.world_size = world_size
        if world_size > 1:
            on_gpu = torch.device(device).type == "cuda"
            # A frozen camera head, or cameras given in the batch, leave parameters unused: DDP must be told.
            self._model = DDP(self._model, device_ids=[local_rank] if on_gpu else None, find_unused_parameters=True)
            dist.barrier()

    @torch.no_grad()
    def update_scene(self) -> bool:
        """Predict the Gaussians and cameras of the fixed evaluation sample ``model.config.scene_sample`` and keep
        them as the model's current scene (saved with the checkpoint). Stage 2 only; False where nothing was set."""
        model = self.model
        samples = getattr(self.datamanager, "eval_samples", [])
        if model.gaussian_head is None or len(samples) == 0:
            return False
        _, batch = self.datamanager.eval_batch(min(model.config.scene_sample, len(samples) - 1))
        was_training = model.training
        model.eval()
        out = model(batch)
        model.train(was_training)
        gs = out["gaussians"]
        model.set_scene(gs.means[0], gs.quats[0], gs.scales[0], gs.opacities[0], gs.colors[0],
                        out["c2w_opencv"][0], out["K"][0], batch["images"][0])
        return True

    def load_pipeline(self, loaded_state, step: int) -> None:
        """nerfstudio's load; then, where the checkpoint holds a current scene, ``train_dataset`` and ``eval_dataset``
        become that clip's frames with their predicted cameras: the frustums ns-viewer draws and the poses
        ns-render interpolates (its --pose-source eval|train)."""
        super().load_pipeline(loaded_state, step)
        if self.model.has_scene() and self.test_mode != "val":  # not while training (resume)
            from pensieve_ns.model.scene import SceneFrames, open_viewer_at_first_camera

            self.datamanager.train_dataset = self.datamanager.eval_dataset = SceneFrames(self.model)
            self.viewer_start = open_viewer_at_first_camera(self.model)  # found by ns-viewer's ViewerControl scrape

    def get_train_loss_dict(self, step: int):
        _, batch = self.datamanager.next_train(step)
        outputs = self._model(batch)  # through DDP's forward when distributed
        metrics = self.model.get_metrics_dict(outputs, batch)
        return outputs, self.model.get_loss_dict(outputs, batch, metrics), metrics

    def get_eval_loss_dict(self, step: int):
        self.eval()
        _, batch = self.datamanager.next_eval(step)
        with torch.no_grad():
            outputs = self.model(batch)
            metrics = self.model.get_metrics_dict(outputs, batch)
            losses = self.model.get_loss_dict(outputs, batch, metrics)
        self.train()
        return outputs, losses, metrics

    def get_eval_image_metrics_and_images(self, step: int):
        """Target-aware evaluation of one fixed held-out sample ([ctx0, targets..., ctx1]); LVSM render."""
        self.eval()
        _, batch = self.datamanager.next_eval_image(step)
        with torch.no_grad():
            metrics, images = self.model.get_image_metrics_and_images(self.model(batch), batch)
        metrics["num_rays"] = int(batch["images"][0].numel() // 3)
        self.train()
        return metrics, images

    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ):
        """What ns-eval reports: pensieve-eval's target-aware protocol (``eval.protocol``) over every fixed
        evaluation sample: scene means of the image metrics (LVSM and, in stage 2, Gaussian branch; std with
        ``get_std``), and pose metrics where the clips have ground-truth cameras. The same numbers as
        ``pensieve-eval --mode target-aware`` on the same data."""
        from pensieve_ns.eval.metrics import lpips_metric
        from pensieve_ns.eval.protocol import evaluate_sample, summarise_rows

        self.eval()
        rows, pairs = [], []
        lpips_fn = lpips_metric(self.model.lpips) if self.model.lpips is not None else None
        with torch.no_grad():
            for _, batch in self.datamanager.fixed_indices_eval_dataloader:
                row, pair, _ = evaluate_sample(self.model, batch, "target-aware", lpips_fn=lpips_fn)
                rows.append(row)
                pairs.append(pair)
        self.train()
        out = {k: v for k, v in summarise_rows(rows, pairs).items() if v is not None}
        if get_std:
            for key in [k for k in rows[0] if k.startswith(("psnr", "ssim", "lpips"))]:
                values = torch.tensor([r[key] for r in rows if r.get(key) is not None], dtype=torch.float64)
                out[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
        return out
