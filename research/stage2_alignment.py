"""Does stage 2 make the cameras real? Stage 1 vs stage 2 for the same CPU budget, against ground truth.

    python benchmarks/stage2_alignment.py [--stage1-minutes 10] [--stage2-minutes 20] \
        [--oracle-from benchmarks/results/stage1_learning/exp4_p4_lvsm4/oracle.pt] [--out ...]

Budgets are in minutes of 2-core CPU time (process time / 2), so they are the same whatever else runs.
The model of the stage-1 learning benchmark (32 px, patch 4, width 128, LVSM depth 4) is first trained
self-supervised, warm-started from that benchmark's oracle (frame/context transformers and LVSM head; a clearly
labelled synthetic prior, generated clips with known cameras), for ``--stage1-minutes``. Its state then
continues for ``--stage2-minutes`` two ways, on the same generated *training* clips:
  - "stage 1 continued": the stage-1 loss only (the control: same extra wall time);
  - "stage 2": + a fresh Gaussian head, Gaussian renders of all frames in the loss, the depth projection loss
    (decaying linearly over the budget's expected steps) and disparity smoothness, gap warm-up 1 -> max gap.
All three are measured, feed-forward and target-aware, on *held-out* generated clips (other textures and seeds)
and on ../shared/data/chair_orbit (a real rendered object orbit; never trained on here), at the same size:
relative pose accuracy (Racc/Tacc at 5/15/30 deg, pairs within each 5-frame sample, translation direction after
the similarity-invariant relative-pose comparison) next to identity poses, focal error, held-out-frame PSNR of
the LVSM and Gaussian branches next to blending the context frames, and depth AbsRel of the Gaussian branch's
rendered depth (median-scaled per frame) against the generator's depth. Writes results.json, table.md,
curves.png and examples.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pensieve_ns.checkpoints import load_model_state  # noqa: E402
from pensieve_ns.data.dataset import ClipFrames, ClipSampleDataset  # noqa: E402
from pensieve_ns.data.frames import resize_center_crop  # noqa: E402
from pensieve_ns.data.sampler import ClipSamplerConfig, SampleSpec, TrainBatchSampler, eval_specs  # noqa: E402
from pensieve_ns.data.sources import find_clips  # noqa: E402
from pensieve_ns.data.synthetic import write_dataset  # noqa: E402
from pensieve_ns.eval.metrics import depth_abs_rel  # noqa: E402
from pensieve_ns.eval.poses import focal_error, relative_pose_errors, summarise  # noqa: E402
from pensieve_ns.model.pensieve import PensieveModel, PensieveModelConfig  # noqa: E402
from pensieve_ns.model.vit import ViTSize  # noqa: E402
from stage1_learning import CAMERA_PATH, psnr  # noqa: E402

CHAIR = ROOT.parent / "shared" / "data" / "chair_orbit"


def make_model(args, gaussians: bool) -> PensieveModel:
    size = ViTSize(dim=args.width, depth=args.depth, heads=4, mlp_hidden=4 * args.width, hook=0)
    lvsm = ViTSize(dim=args.width, depth=args.lvsm_depth, heads=4, mlp_hidden=4 * args.width, hook=0)
    cfg = PensieveModelConfig(
        patch=args.patch, camera_hidden=args.width, lpips_weight=0.0, frame_vit=size, camera_vit=size,
        context_vit=size, lvsm_vit=lvsm, gaussians=gaussians, gaussian_hidden=32, gaussian_stride=args.stride,
        gaussian_footprint=(0.1, 1.5), tile_size=8, depth_projection_weight=1.0,
        depth_projection_max_step=args.depth_decay_steps, depth_smooth_weight=1e-3, renderer="torch",
        camera_head=args.camera_head, pair_symmetric=True, pair_chain=True, camera_head_weights=args.camera_head_weights,
        depth_head=args.depth_head, depth_head_weights=args.depth_head_weights,
        depth_unmeasured_threshold=args.depth_unmeasured_threshold,
    )
    return cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")


def train_for(model, dataset, sampler, minutes: float, lr: float, warmup: int = 20, freeze_camera_head: bool = False,
              freeze_depth_head: bool = False) -> List[Dict]:
    """AdamW (0.9, 0.95) for a budget of ``minutes`` x 2 CPU-minutes (this process's CPU time on its 2 threads,
    so other work on the machine does not shorten it): linear warm-up, then constant lr."""
    frozen = [model.camera_head] * freeze_camera_head + [model.depth_head] * (freeze_depth_head and model.depth_head is not None)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.get_param_groups()["model"] if p.requires_grad], lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    it = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    curve, start, running, step = [], time.process_time(), {}, 0
    model.train()
    while time.process_time() - start < minutes * 60 * 2:
        sampler.step = model.step = step
        batch = next(it)
        losses = model.get_loss_dict(model(batch), batch)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for k, v in losses.items():
            running.setdefault(k, []).append(float(v))
        step += 1
        if step % 25 == 0:
            curve.append({"step": step, "seconds": (time.process_time() - start) / 2, **{k: float(np.mean(v)) for k, v in running.items()}})
            running = {}
            print(f"  step {step} " + " ".join(f"{k} {v:.4f}" for k, v in curve[-1].items() if k not in ("step", "seconds"))
                  + f" ({curve[-1]['seconds']:.0f} s)", flush=True)
    return curve




@torch.no_grad()
def evaluate(model, items: List[Dict], depths: Optional[List[np.ndarray]]) -> Dict:
    model.eval()
    rows, pairs, pairs_id = [], [], []
    for k, item in enumerate(items):
        out = model({key: v[None] for key, v in item.items()})
        imgs, ctx = item["images"], item["context"].tolist()
        tgt = [i for i in range(len(imgs)) if i not in ctx]
        blend = imgs[ctx].mean(0, keepdim=True).expand(len(tgt), -1, -1, -1)
        row = {"psnr_lvsm": float(psnr(out["rgb"][0, tgt], imgs[tgt]).mean()),
               "psnr_blend": float(psnr(blend, imgs[tgt]).mean()),
               "focal_rel_err": focal_error(float(out["K"][0, 0, 0, 0]), float(item["gt_K"][0, 0, 0]))}
        if "rgb_gs" in out:
            row["psnr_gs"] = float(psnr(out["rgb_gs"][0, tgt], imgs[tgt]).mean())
            if depths is not None:
                d = out["depth_gs"][0, :, 0].numpy()
                alpha = out["alpha_gs"][0, :, 0].numpy()
                row["depth_absrel"] = float(np.nanmean([depth_abs_rel(d[i], depths[k][i], (alpha[i] > 0.5) & (depths[k][i] > 0))
                                                        for i in range(len(imgs))]))
        rows.append(row)
        gt = item["gt_c2w_opencv"].double().numpy()
        pairs.append(relative_pose_errors(out["c2w_opencv"][0].double().numpy(), gt))
        pairs_id.append(relative_pose_errors(np.tile(np.eye(4), (len(gt), 1, 1)), gt))
    result = {key: float(np.nanmean([r[key] for r in rows if key in r])) for key in rows[0]}
    result["poses"] = summarise(pairs)
    result["poses_identity"] = summarise(pairs_id)
    return result


def load_depths(frames: ClipFrames, specs: List[SampleSpec], hw) -> List[np.ndarray]:
    import cv2

    out = []
    for s in specs:
        paths = frames.clips[s.clip].gt.depth_paths
        maps = [cv2.imread(str(paths[f]), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0 for f in s.frames]
        out.append(np.stack([resize_center_crop(m[..., None], hw)[..., 0] if m.shape != hw else m for m in maps]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--lvsm-depth", type=int, default=4)
    ap.add_argument("--stride", type=int, default=2, help="one Gaussian per stride x stride pixels")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-clips", type=int, default=96)
    ap.add_argument("--eval-clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--max-gap", type=int, default=4)
    ap.add_argument("--eval-gap", type=int, default=None, help="frame gap of the evaluation samples (default: mid gap)")
    ap.add_argument("--stage1-minutes", type=float, default=10)
    ap.add_argument("--stage2-minutes", type=float, default=20)
    ap.add_argument("--depth-decay-steps", type=int, default=2000)
    ap.add_argument("--oracle-from", type=Path, default=ROOT / "benchmarks/results/stage1_learning/exp4_p4_lvsm4/oracle.pt")
    ap.add_argument("--camera-head", choices=("features", "pair_flow", "flow_pose"), default="features")
    ap.add_argument("--camera-head-weights", type=Path, default=None,
                    help="pre-trained camera head (the LABELLED PRIOR); with --stage1-from, it replaces the saved head")
    ap.add_argument("--stage1-from", type=Path, default=None,
                    help="a saved stage-1 state (stage1_learning.py) or a nerfstudio .ckpt: skips stage-1 training")
    ap.add_argument("--freeze-camera-head", action="store_true", help="stage 2 and the control keep the camera head as it is")
    ap.add_argument("--depth-head", choices=("gaussian", "flow"), default="gaussian",
                    help="'flow': stage 2's Gaussian depth from FlowDepthHead (needs --camera-head flow_pose)")
    ap.add_argument("--depth-head-weights", type=Path, default=None, help="FlowDepthHead weights (flow_depth_probe.py; the LABELLED PRIOR)")
    ap.add_argument("--freeze-depth-head", action="store_true", help="stage 2 keeps the flow depth head as it is")
    ap.add_argument("--depth-unmeasured-threshold", type=float, default=None,
                    help="flow depth head: constant depth for windows whose flow measures none (exp 42)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/stage2_alignment")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    hw = (args.size, args.size)
    sampler_cfg = ClipSamplerConfig(window_frames=5, min_views=2, max_context=4, min_gap=1, max_gap=args.max_gap, eval_views=5,
                                    eval_gap=args.eval_gap)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "train", args.train_clips, args.frames, args.size, seed=0, split="train")
        write_dataset(Path(tmp) / "heldout", args.eval_clips, args.frames, args.size, seed=10_000, split="heldout")
        train_frames = ClipFrames(find_clips(Path(tmp) / "train"), hw)
        eval_frames = ClipFrames(find_clips(Path(tmp) / "heldout"), hw)
        train_frames.preload()
        eval_frames.preload()
        specs = eval_specs([c.num_frames for c in eval_frames.clips], sampler_cfg)
        depths = load_depths(eval_frames, specs, hw)
    dataset, eval_set = ClipSampleDataset(train_frames), ClipSampleDataset(eval_frames)
    items = [eval_set[s] for s in specs]
    chair_items = []
    if CHAIR.exists():  # every 4th frame (7.2 deg apart), 5-frame samples [ctx, t, t, t, ctx] around the orbit
        chair_frames = ClipFrames(find_clips(CHAIR), hw)
        chair_set = ClipSampleDataset(chair_frames)
        chair_items = [chair_set[SampleSpec(0, tuple(s + 4 * i for i in range(5)), (0, 4))] for s in range(0, 180, 12)]

    s1 = make_model(args, gaussians=False)
    if args.stage1_from is not None:  # a trained stage 1 (e.g. LEARNING.md exp 37, the shipped model)
        # A stage1_learning.py state, or a nerfstudio checkpoint (the shipped pretrained/stage1-prior32).
        state = load_model_state(args.stage1_from) if args.stage1_from.suffix == ".ckpt" else torch.load(args.stage1_from, weights_only=True)
        if args.camera_head_weights is not None:  # the saved stage 1's decoder with another camera head
            state = {k: v for k, v in state.items() if not k.startswith("camera_head.")}
        missing, unexpected = s1.load_state_dict(state, strict=args.camera_head_weights is None)
        assert not unexpected and all(k.startswith("camera_head.") for k in missing), (missing, unexpected)
        print(f"stage 1 from {args.stage1_from}", flush=True)
        curves = {"stage1": []}
    else:  # Stage 1, self-supervised, warm-started from the oracle decoder.
        oracle = torch.load(args.oracle_from, weights_only=True)
        s1.load_state_dict({k: v for k, v in oracle.items() if not k.startswith(CAMERA_PATH)}, strict=False)
        print(f"stage 1 (warm start from {args.oracle_from.name}): {args.stage1_minutes} min", flush=True)
        curves = {"stage1": train_for(s1, dataset, TrainBatchSampler([c.num_frames for c in train_frames.clips], args.batch, sampler_cfg, seed=1),
                                      args.stage1_minutes, args.lr)}
    s1_state = copy.deepcopy(s1.state_dict())
    results = {"config": {k: str(v) for k, v in vars(args).items()}}
    models = {"stage 1": s1}

    cont = make_model(args, gaussians=False)
    cont.load_state_dict(s1_state)
    print(f"stage 1 continued: {args.stage2_minutes} min", flush=True)
    curves["stage1_continued"] = train_for(cont, dataset, TrainBatchSampler([c.num_frames for c in train_frames.clips], args.batch, sampler_cfg, seed=2),
                                           args.stage2_minutes, args.lr, freeze_camera_head=args.freeze_camera_head)
    models["stage 1 continued"] = cont

    s2 = make_model(args, gaussians=True)
    s2.load_state_dict(s1_state, strict=False)  # the Gaussian head starts fresh
    s2_cfg = copy.deepcopy(sampler_cfg)
    s2_cfg.gap_warmup_start, s2_cfg.gap_warmup_steps = 1, 100
    print(f"stage 2: {args.stage2_minutes} min", flush=True)
    curves["stage2"] = train_for(s2, dataset, TrainBatchSampler([c.num_frames for c in train_frames.clips], args.batch, s2_cfg, seed=2),
                                 args.stage2_minutes, args.lr, freeze_camera_head=args.freeze_camera_head,
                                 freeze_depth_head=args.freeze_depth_head)
    models["stage 2"] = s2

    for name, model in models.items():
        results[name] = {"heldout": evaluate(model, items, depths), "chair_orbit": evaluate(model, chair_items, None) if chair_items else None}
        print(name, json.dumps(results[name]["heldout"], default=float)[:400], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"results": results, "curves": curves}, indent=1))
    write_table(results, args.out)
    plot(curves, models["stage 2"], items, depths, args.out)


def write_table(results: Dict, out: Path) -> None:
    lines = ["| model | data | Racc@5/15/30 | identity Racc@5/15/30 | Tacc@5/15/30 | identity Tacc@5/15/30 | pred/true pair angle | focal err | PSNR LVSM | PSNR GS | PSNR blend | depth AbsRel |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    acc = lambda d, k: "/".join(f"{d[f'{k}@{t}']:.2f}" for t in (5, 15, 30))  # noqa: E731
    for name, r in results.items():
        if name == "config":
            continue
        for data in ("heldout", "chair_orbit"):
            e = r[data]
            if e is None:
                continue
            p, i = e["poses"], e["poses_identity"]
            lines.append(
                f"| {name} | {data} | {acc(p, 'Racc')} | {acc(i, 'Racc')} | {acc(p, 'Tacc')} | {acc(i, 'Tacc')} | "
                f"{p['pred_pair_angle_mean']:.1f}/{p['true_pair_angle_mean']:.1f} | {e['focal_rel_err']:.2f} | {e['psnr_lvsm']:.2f} | "
                f"{e.get('psnr_gs', float('nan')):.2f} | {e['psnr_blend']:.2f} | {e.get('depth_absrel', float('nan')):.3f} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


@torch.no_grad()
def plot(curves: Dict, model, items, depths, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run, curve in curves.items():
        ax.plot([c["seconds"] / 60 for c in curve], [c["l2"] for c in curve], label=f"{run} l2")
        if curve and "depth_projection" in curve[-1]:
            ax.plot([c["seconds"] / 60 for c in curve], [c["depth_projection"] for c in curve], "--", label=f"{run} depth proj.")
    ax.set_xlabel("minutes")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    model.eval()
    fig, axes = plt.subplots(4, 5, figsize=(10, 8))
    item = items[0]
    o = model({k: v[None] for k, v in item.items()})
    for i in range(5):
        for row, (img, title) in enumerate([(item["images"][i].permute(1, 2, 0), "GT"), (o["rgb"][0, i].clamp(0, 1).permute(1, 2, 0), "LVSM"),
                                            (o["rgb_gs"][0, i].clamp(0, 1).permute(1, 2, 0), "Gaussians"), (None, "depth")]):
            ax = axes[row, i]
            if img is None:
                ax.imshow(np.concatenate([depths[0][i], o["depth_gs"][0, i, 0].numpy()], 1), cmap="viridis")
                title = "depth GT | GS"
            else:
                ax.imshow(img.numpy())
            ax.set_title(f"{title} {'ctx' if i in item['context'].tolist() else 'tgt'}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=100)


if __name__ == "__main__":
    main()
