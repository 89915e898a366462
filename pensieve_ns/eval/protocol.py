"""The paper's evaluation protocols (docs/method.md §3) on one sample, and their summary over scenes.

A sample is a batch of one clip, frames ordered [ctx0, targets..., ctx1] with ground-truth cameras
(``ClipSampleDataset`` items with ``has_gt``). Two modes:

- ``target-aware`` (§3.2, RE10K): the camera transformer sees all frames, targets included; every target is
  rendered at its predicted camera by the LVSM head and, in stage 2, by the Gaussians. No refinement.
- ``target-aligned`` (§3.3, DL3DV): the model sees only the context frames. The ground-truth cameras are moved
  into the predicted world by the similarity that takes the ground-truth context cameras onto the predicted ones
  (``align.similarity_from_cameras``), the targets get the predicted intrinsics, then optionally ``tto_steps``
  Adam steps refine each target camera (rotation AND translation, unlike the released code's quirk) against the
  target image through the splat renderer (black background, Gaussians frozen; through the LVSM head for a stage-1
  run). Both branches then render the refined cameras. Not built: the released code's "pseudo middle frame"
  bootstrap.

Pose metrics come from ``eval.poses``: pairs of the frames with predicted cameras (all frames in target-aware mode,
the context in target-aligned mode), ATE after similarity alignment, focal-length error.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.cameras import axis_angle_to_matrix
from pensieve_ns.eval.align import apply_similarity, similarity_from_cameras
from pensieve_ns.eval.metrics import LpipsFn, image_metrics
from pensieve_ns.eval.poses import PairErrors, absolute_trajectory_error, focal_error, relative_pose_errors, summarise

Mode = Literal["target-aware", "target-aligned"]
MODES = ("target-aware", "target-aligned")


def refine_target_cameras(
    render_fn: Callable[[Tensor], Tensor], c2w: Float[Tensor, "T 4 4"], target: Float[Tensor, "T 3 H W"],
    steps: int, lr: float, lpips_fn: LpipsFn = None,
) -> Float[Tensor, "T 4 4"]:
    """Adam on a rotation (axis-angle) and translation offset of each camera (c2w @ [R(w) | v]), minimising
    L2 (+ 0.5 LPIPS where available) between ``render_fn(c2w)`` [T, 3, H, W] and the target images."""
    w = torch.zeros(c2w.shape[0], 3, requires_grad=True)
    v = torch.zeros(c2w.shape[0], 3, requires_grad=True)
    opt = torch.optim.Adam([w, v], lr=lr)
    base = c2w.detach()

    def moved() -> Tensor:
        delta = torch.eye(4, dtype=base.dtype).repeat(base.shape[0], 1, 1)
        delta[:, :3, :3] = axis_angle_to_matrix(w)
        delta[:, :3, 3] = v
        return base @ delta

    for _ in range(steps):
        with torch.enable_grad():
            rgb = render_fn(moved())
            loss = ((rgb - target) ** 2).mean()
            if lpips_fn is not None:
                loss = loss + 0.5 * lpips_fn(rgb, target).mean()
            opt.zero_grad()
            loss.backward()
        opt.step()
    return moved().detach()


SamplePairs = Tuple[PairErrors, PairErrors]
"""Pair errors of one sample's predicted cameras and of the identity baseline (every camera the same)."""


def pose_metrics(pred_c2w: Tensor, gt_c2w: Tensor, pred_K: Tensor, gt_K: Tensor) -> Tuple[Dict[str, float], SamplePairs]:
    """ATE (3+ cameras) and focal error of one sample's predicted cameras, plus the pair errors of the prediction
    and of the identity baseline (pooled over scenes later)."""
    pred_c2w, gt_c2w, pred_K, gt_K = (x.detach().double().cpu() for x in (pred_c2w, gt_c2w, pred_K, gt_K))
    pairs = relative_pose_errors(pred_c2w.numpy(), gt_c2w.numpy())
    identity = relative_pose_errors(np.tile(np.eye(4), (len(gt_c2w), 1, 1)), gt_c2w.numpy())
    out = absolute_trajectory_error(pred_c2w.numpy(), gt_c2w.numpy()) if len(gt_c2w) > 2 else {"ate": None, "ate_rel": None}
    out["focal_err"] = focal_error(float(pred_K[0, 0, 0]), float(gt_K[0, 0, 0]))
    return out, (pairs, identity)


@torch.no_grad()
def evaluate_sample(
    model, batch: Dict[str, Tensor], mode: Mode, tto_steps: int = 0, tto_lr: float = 0.05, lpips_fn: LpipsFn = None,
) -> Tuple[Dict, Optional[SamplePairs], Dict[str, Tensor]]:
    """One sample (batch of one clip, on the model's device) -> (row of metrics and timings, pair errors or None
    where the clip has no ground-truth cameras, images [T, 3, H, W] on the CPU for figures: gt, rgb, rgb_gs).

    Without ground-truth cameras only target-aware mode runs, and the row has no pose fields."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    images, context = batch["images"], batch["context"]
    L = images.shape[1]
    targets = torch.tensor([i for i in range(L) if i not in set(context[0].tolist())], device=images.device)
    gt_c2w, gt_K = batch["gt_c2w_opencv"][0], batch["gt_K"][0]
    has_gt = bool(batch["has_gt"].all())
    if not has_gt and mode != "target-aware":
        raise ValueError("target-aligned evaluation needs ground-truth cameras")
    row: Dict = {"frames": batch["frame_index"][0].tolist(), "context": context[0].tolist(), "targets": targets.tolist()}
    t0 = time.perf_counter()
    if mode == "target-aware":
        outputs = model.get_outputs(batch)
        row["feed_forward_s"] = time.perf_counter() - t0
        views = {k: outputs[k][0, targets] for k in ("rgb", "rgb_gs") if k in outputs}
        pose, pairs = pose_metrics(outputs["c2w_opencv"][0], gt_c2w, outputs["K"][0], gt_K) if has_gt else ({}, None)
    else:
        ctx_batch = {"images": images[:, context[0]], "context": torch.arange(context.shape[1], device=images.device)[None]}
        outputs = model.get_outputs(ctx_batch)
        row["feed_forward_s"] = time.perf_counter() - t0
        pred_ctx, K = outputs["c2w_opencv"][0], outputs["K"][0]
        s, R, t = similarity_from_cameras(gt_c2w[context[0]], pred_ctx)
        tgt_c2w = apply_similarity(gt_c2w[targets], s, R, t)
        tgt_K = K[:1].expand(len(targets), 3, 3)
        ctx_idx = ctx_batch["context"]
        t1 = time.perf_counter()
        if tto_steps > 0:  # PSNR at the aligned cameras before refinement, to show what refinement adds
            before = model.render_views(outputs, ctx_idx, tgt_c2w[None], tgt_K[None])
            for key, name in (("rgb", "lvsm"), ("rgb_gs", "gs")):
                if key in before:
                    row[f"psnr_{name}_before_tto"] = image_metrics(before[key][0], images[0, targets], None)["psnr"]
            t1 = time.perf_counter()
            branch = "rgb_gs" if "gaussians" in outputs else "rgb"
            render_fn = lambda c: model.render_views(outputs, ctx_idx, c[None], tgt_K[None], background=0.0)[branch][0]  # noqa: E731
            tgt_c2w = refine_target_cameras(render_fn, tgt_c2w, images[0, targets], tto_steps, tto_lr, lpips_fn)
        row["tto_s"] = time.perf_counter() - t1
        row["tto_steps"] = tto_steps
        rendered = model.render_views(outputs, ctx_idx, tgt_c2w[None], tgt_K[None])
        views = {k: rendered[k][0] for k in ("rgb", "rgb_gs") if k in rendered}
        pose, pairs = pose_metrics(pred_ctx, gt_c2w[context[0]], K, gt_K)
    gt = images[0, targets]
    for key, name in (("rgb", "lvsm"), ("rgb_gs", "gs")):
        if key in views:
            row.update({f"{k}_{name}": v for k, v in image_metrics(views[key], gt, lpips_fn).items()})
    blend = images[0, context[0]].mean(0, keepdim=True).expand_as(gt)
    row["psnr_blend_context"] = image_metrics(blend, gt, None)["psnr"]
    row.update(pose)
    return row, pairs, {k: v.detach().cpu() for k, v in {"gt": gt, **views}.items()}


def summarise_rows(rows: List[Dict], pairs: List[Optional[SamplePairs]]) -> Dict[str, Optional[float]]:
    """Means over scenes of every numeric row field (None where no scene has it), pair metrics pooled over all
    pairs of the scenes with cameras (``poses.summarise``) with the identity baseline's accuracies beside them
    (``identity_Racc@5`` ...), and the number of scenes."""
    out: Dict[str, Optional[float]] = {"scenes": len(rows)}
    skip = {"frames", "context", "targets", "scene"}
    keys = {k for r in rows for k in r}
    for key in sorted(keys - set(out) - skip):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    with_cameras = [p for p in pairs if p is not None]
    if with_cameras:
        out.update(summarise([p for p, _ in with_cameras]))
        base = summarise([i for _, i in with_cameras])
        out.update({f"identity_{k}": v for k, v in base.items() if k.startswith(("Racc", "Tacc", "AUC"))})
    return out
