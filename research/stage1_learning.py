"""Does stage 1 learn? Held-out generated clips, ground truth, trivial baselines, honesty checks.

    python benchmarks/stage1_learning.py [--steps 1200] [--size 32] [--out benchmarks/results/stage1_learning]

Three runs of the same tiny model, each for the same number of steps on generated *training* clips, measured on
*held-out* generated clips (other textures, other seeds):
  1. oracle      : the LVSM head fed normalised ground-truth cameras (the gate: must beat blending by >= 2 dB);
  2. scratch     : self-supervised, cameras predicted from pooled image features, from random init;
  3. warm-start  : self-supervised, frame/context transformers and LVSM head initialised from the oracle
                   (a clearly labelled synthetic prior: generated clips with known cameras), camera path fresh.
  4. prior       : warm-start plus the supervised camera loss on the generated training clips (the labelled
                   synthetic prior, ``camera_prior_weight``): the feed-forward cameras the prior gives.
  5. prior_selfsup: the prior model trained further WITHOUT cameras (``--selfsup-steps``): do the cameras hold?
Each is reported against its trivial baseline: held-out PSNR/SSIM vs blend-context and copy-nearest; relative
poses (Racc/Tacc at 5/15/30, medians, mean predicted vs true pair angle, their correlation) vs identity poses;
focal error. Honesty checks: poses depend on the input, a reversed pair gives the inverse relative rotation, and
the decoder depends on the cameras. Writes JSON, a Markdown table and PNG curves.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.data.dataset import ClipFrames, ClipSampleDataset  # noqa: E402
from pensieve_ns.data.sampler import ClipSamplerConfig, TrainBatchSampler, eval_specs  # noqa: E402
from pensieve_ns.data.sources import find_clips  # noqa: E402
from pensieve_ns.data.synthetic import write_dataset  # noqa: E402
from pensieve_ns.eval.poses import focal_error, relative_pose_errors, rotation_angle_deg, summarise  # noqa: E402
from pensieve_ns.model.pensieve import PensieveModel, PensieveModelConfig  # noqa: E402
from pensieve_ns.model.vit import ViTSize  # noqa: E402

CAMERA_PATH = ("encoder.camera_bridge.", "encoder.camera_vit.", "camera_head.")


def make_model(args, camera_source: str, camera_prior_weight: float = 0.0) -> PensieveModel:
    size = ViTSize(dim=args.width, depth=args.depth, heads=4, mlp_hidden=4 * args.width, hook=0)
    lvsm = ViTSize(dim=args.width, depth=args.lvsm_depth or args.depth, heads=4, mlp_hidden=4 * args.width, hook=0)
    cfg = PensieveModelConfig(
        patch=args.patch, camera_hidden=args.width, lpips_weight=0.0, camera_source=camera_source,
        camera_prior_weight=camera_prior_weight,
        camera_prior_rotation_weight=getattr(args, "prior_rot_weight", 1.0), camera_quaternion=getattr(args, "camera_quaternion", "spec"),
        l2_weight=getattr(args, "l2_weight", 1.0), camera_head=getattr(args, "camera_head", "features"),
        camera_head_weights=getattr(args, "camera_head_weights", None), pair_grid=getattr(args, "pair_grid", 16),
        pair_symmetric=getattr(args, "pair_symmetric", False), pair_chain=getattr(args, "pair_chain", False),
        frame_vit=size, camera_vit=size, context_vit=size, lvsm_vit=lvsm,
    )
    return cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(((a.clamp(0, 1) - b) ** 2).mean(dim=(-3, -2, -1)))


def train(model, dataset, sampler, steps: int, lr: float, log_every: int = 50) -> List[Dict]:
    if steps == 0:  # evaluate as initialised (e.g. a pre-trained camera head and a warm-started decoder)
        return []
    opt = torch.optim.AdamW([p for p in model.get_param_groups()["model"] if p.requires_grad], lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) * 0.975 + 0.025)
    )
    it = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    curve, start, running = [], time.perf_counter(), []
    model.train()
    for step in range(steps):
        batch = next(it)
        loss = sum(model.get_loss_dict(model(batch), batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0:
            curve.append({"step": step + 1, "loss": float(np.mean(running)), "seconds": time.perf_counter() - start})
            running = []
            print(f"  step {step + 1}/{steps} loss {curve[-1]['loss']:.4f} ({curve[-1]['seconds']:.0f} s)", flush=True)
    return curve


@torch.no_grad()
def evaluate(model, items: List[Dict], gt_focal: List[float]) -> Dict:
    """Target-aware evaluation on fixed held-out samples ([ctx0, t1, t2, t3, ctx1]) plus the honesty checks."""
    model.eval()
    rows, pairs, pairs_id, focal_errs = [], [], [], []
    outs = []
    for item, f_gt in zip(items, gt_focal):
        batch = {k: v[None] for k, v in item.items()}
        out = model(batch)
        outs.append(out)
        imgs, ctx = item["images"], item["context"].tolist()
        tgt = [i for i in range(len(imgs)) if i not in ctx]
        frames = item["frame_index"].numpy()
        blend = imgs[ctx].mean(0)
        nearest = [imgs[min(ctx, key=lambda c: abs(frames[c] - frames[t]))] for t in tgt]
        rows.append({
            "psnr": float(psnr(out["rgb"][0, tgt], imgs[tgt]).mean()),
            "psnr_blend": float(psnr(blend[None].expand(len(tgt), -1, -1, -1), imgs[tgt]).mean()),
            "psnr_nearest": float(psnr(torch.stack(nearest), imgs[tgt]).mean()),
        })
        gt = item["gt_c2w_opencv"].double().numpy()
        pairs.append(relative_pose_errors(out["c2w_opencv"][0].double().numpy(), gt))
        pairs_id.append(relative_pose_errors(np.tile(np.eye(4), (len(gt), 1, 1)), gt))
        focal_errs.append(focal_error(float(out["K"][0, 0, 0, 0]), f_gt))
    result = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    result["poses"] = summarise(pairs)
    result["poses_identity"] = summarise(pairs_id)
    result["focal_rel_err"] = float(np.mean(focal_errs))
    result["honesty"] = honesty_checks(model, items, outs)
    return result


@torch.no_grad()
def honesty_checks(model, items: List[Dict], outs: List[Dict]) -> Dict:
    # 1. Input dependence: relative rotations predicted for each clip vs for the next clip's frames.
    def rel_angles(c2w):
        R = c2w[0, :, :3, :3].double().numpy()
        return rotation_angle_deg(np.swapaxes(R[:-1], -1, -2) @ R[1:])

    diffs = []
    for k in range(len(items)):
        a, b = rel_angles(outs[k]["c2w_opencv"]), rel_angles(outs[(k + 1) % len(items)]["c2w_opencv"])
        diffs.append(np.abs(a - b).mean())
    # 2. Reversed pair: cameras of [a, b] and of [b, a]; R_ab from the first should be the inverse of R_ba.
    rev_err, rev_mag = [], []
    def pair_batch(item, order):
        keys = ("images", "gt_c2w_opencv", "gt_K")
        return {**{k: item[k][order][None] for k in keys}, "context": torch.tensor([[0]])}

    for item in items:
        fwd = model(pair_batch(item, [0, 2]))["c2w_opencv"][0].double().numpy()
        bwd = model(pair_batch(item, [2, 0]))["c2w_opencv"][0].double().numpy()
        R_ab = fwd[0, :3, :3].T @ fwd[1, :3, :3]
        R_ba = bwd[0, :3, :3].T @ bwd[1, :3, :3]
        rev_err.append(float(rotation_angle_deg(R_ab @ R_ba)))
        rev_mag.append(float(rotation_angle_deg(R_ab)))
    # 3. Camera dependence of the decoder: render each clip's targets with the next clip's cameras.
    drops = []
    for k, item in enumerate(items):
        other = outs[(k + 1) % len(items)]
        batch = {k2: v[None] for k2, v in item.items()}
        swapped = render_with_cameras(model, batch, other["c2w_opencv"], other["K"])
        ctx = item["context"].tolist()
        tgt = [i for i in range(len(item["images"])) if i not in ctx]
        own = psnr(outs[k]["rgb"][0, tgt], item["images"][tgt]).mean()
        drops.append(float(own - psnr(swapped[0, tgt], item["images"][tgt]).mean()))
    return {
        "pose_change_with_other_clip_deg": float(np.mean(diffs)),
        "reverse_pair_inconsistency_deg": float(np.mean(rev_err)),
        "reverse_pair_pred_angle_deg": float(np.mean(rev_mag)),
        "psnr_drop_with_other_clip_cameras_db": float(np.mean(drops)),
    }


def render_with_cameras(model, batch, c2w, K):
    from pensieve_ns.cameras import plucker_rays
    from pensieve_ns.model.pensieve import gather_frames

    H, W = batch["images"].shape[-2:]
    _, f_ctx = model.encoder(batch["images"], batch["context"])
    rays = plucker_rays(c2w, K, H, W)
    return model.lvsm(f_ctx, gather_frames(rays, batch["context"]), rays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--lvsm-depth", type=int, default=None, help="LVSM head depth (default: --depth)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-clips", type=int, default=96)
    parser.add_argument("--eval-clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--max-gap", type=int, default=4)
    parser.add_argument("--runs", default="oracle,scratch,warm")
    parser.add_argument("--oracle-from", type=Path, default=None, help="reuse a saved oracle state (skips its training)")
    parser.add_argument("--eval-gap", type=int, default=None, help="frame gap of the evaluation samples")
    parser.add_argument("--prior-weight", type=float, default=1.0, help="camera prior loss weight of the prior run")
    parser.add_argument("--prior-rot-weight", type=float, default=1.0, help="rotation term weight of the prior loss")
    parser.add_argument("--freeze-camera-head", action="store_true", help="train everything but the camera head")
    parser.add_argument("--selfsup-steps", type=int, default=None, help="steps of prior_selfsup (default --steps)")
    parser.add_argument("--camera-quaternion", choices=("spec", "residual"), default="spec")
    parser.add_argument("--camera-head", choices=("features", "pair_flow"), default="features")
    parser.add_argument("--camera-head-weights", type=Path, default=None,
                        help="pair_flow weights pre-trained with known cameras (camera_probe.py --save): the LABELLED PRIOR")
    parser.add_argument("--pair-grid", type=int, default=16)
    parser.add_argument("--pair-symmetric", action="store_true", help="pair_flow sees each pair both ways")
    parser.add_argument("--pair-chain", action="store_true", help="pair_flow: each frame against its predecessor in time")
    parser.add_argument("--l2-weight", type=float, default=1.0, help="image loss weight (0: a camera-only probe with --runs prior)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load-state", type=Path, default=None, help="the warm run starts from this saved state")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stage1_learning")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    hw = (args.size, args.size)
    sampler_cfg = ClipSamplerConfig(
        window_frames=5, min_views=2, max_context=4, min_gap=1, max_gap=args.max_gap, eval_views=5, eval_gap=args.eval_gap
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_dataset(Path(tmp) / "train", args.train_clips, args.frames, args.size, seed=0, split="train")
        write_dataset(Path(tmp) / "heldout", args.eval_clips, args.frames, args.size, seed=10_000, split="heldout")
        train_frames = ClipFrames(find_clips(Path(tmp) / "train"), hw)
        eval_frames = ClipFrames(find_clips(Path(tmp) / "heldout"), hw)
        train_frames.preload()
        eval_frames.preload()
        print(f"data: {args.train_clips} train + {args.eval_clips} held-out clips ({time.perf_counter() - t0:.0f} s)")
    dataset = ClipSampleDataset(train_frames)
    eval_set = ClipSampleDataset(eval_frames)
    specs = eval_specs([c.num_frames for c in eval_frames.clips], sampler_cfg)
    items = [eval_set[s] for s in specs]
    gt_focal = [float(eval_frames.gt_K[s.clip][0, 0, 0]) for s in specs]

    results, curves, oracle_state, states = {"config": {k: str(v) for k, v in vars(args).items()}}, {}, None, {}
    for run in args.runs.split(","):
        torch.manual_seed(args.seed)
        model = make_model(args, "ground_truth" if run == "oracle" else "predicted", args.prior_weight if run == "prior" else 0.0)
        steps = args.steps
        if run == "prior_selfsup":
            if "prior" not in states:
                raise SystemExit("prior_selfsup needs the prior run first (--runs ...,prior,prior_selfsup)")
            model.load_state_dict(states["prior"])
            steps = args.selfsup_steps or args.steps
        if run == "warm" and args.load_state is not None:  # a saved warm/prior run, to evaluate (e.g. on more clips)
            model.load_state_dict(torch.load(args.load_state, weights_only=True))
            print(f"loaded {args.load_state}")
        elif run in ("warm", "prior"):
            if oracle_state is None and args.oracle_from is not None:
                oracle_state = torch.load(args.oracle_from, weights_only=True)
            if oracle_state is None:
                raise SystemExit("the warm-start run needs the oracle run first (--runs oracle,...,warm)")
            shared = {k: v for k, v in oracle_state.items() if not k.startswith(CAMERA_PATH)}
            missing = model.load_state_dict(shared, strict=False)
            print(f"warm start: {len(shared)} tensors from the oracle; fresh: {len(missing.missing_keys)}")
        if args.freeze_camera_head and run != "oracle":  # cameras as pre-trained; only the rest learns
            for p in model.camera_head.parameters():
                p.requires_grad_(False)
        print(f"run {run}: {steps} steps")
        start = time.perf_counter()
        sampler = TrainBatchSampler([c.num_frames for c in train_frames.clips], args.batch, sampler_cfg, seed=args.seed)
        if run == "oracle" and args.oracle_from is not None:  # evaluate a saved oracle, no training
            state = torch.load(args.oracle_from, weights_only=True)
            if args.camera_head != "features":  # the oracle never uses its camera head: keep this run's
                state = {k: v for k, v in state.items() if not k.startswith("camera_head.")}
            model.load_state_dict(state, strict=args.camera_head == "features")
            curves[run] = []
        else:
            curves[run] = train(model, dataset, sampler, steps, args.lr if run != "prior_selfsup" else args.lr / 4)
        states[run] = copy.deepcopy(model.state_dict())
        if run in ("prior", "prior_selfsup", "warm") and steps > 0:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(states[run], args.out / f"{run}.pt")
        minutes = (time.perf_counter() - start) / 60
        results[run] = evaluate(model, items, gt_focal) | {"train_minutes": minutes}
        if run == "oracle":
            oracle_state = copy.deepcopy(model.state_dict())
            args.out.mkdir(parents=True, exist_ok=True)
            if args.oracle_from is None:
                torch.save(oracle_state, args.out / "oracle.pt")
            wrong = []
            with torch.no_grad():  # oracle with another clip's ground-truth rays: should fall towards blending
                for k, item in enumerate(items):
                    other = items[(k + 1) % len(items)]
                    batch = {k2: v[None] for k2, v in item.items()}
                    from pensieve_ns.cameras import normalise_cameras

                    rgb = render_with_cameras(model, batch, normalise_cameras(other["gt_c2w_opencv"][None]), other["gt_K"][None])
                    tgt = [i for i in range(5) if i not in item["context"].tolist()]
                    wrong.append(float(psnr(rgb[0, tgt], item["images"][tgt]).mean()))
            results[run]["psnr_with_other_clip_gt_cameras"] = float(np.mean(wrong))
        r = results[run]
        print(f"  {run}: PSNR {r['psnr']:.2f} (blend {r['psnr_blend']:.2f}, nearest {r['psnr_nearest']:.2f}); "
              f"pair angle {r['poses']['pred_pair_angle_mean']:.1f} vs true {r['poses']['true_pair_angle_mean']:.1f}; "
              f"Racc@5 {r['poses']['Racc@5']:.2f} (identity {r['poses_identity']['Racc@5']:.2f}); {minutes:.1f} min", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"results": results, "curves": curves}, indent=1))
    write_table(results, args.out)
    plot_curves(curves, args.out)


def write_table(results: Dict, out: Path) -> None:
    runs = [k for k in results if k != "config"]
    lines = [
        "| run | min | PSNR | blend | nearest | SSIM-free gap vs blend | pred/true pair angle | corr | Racc@5/15/30 | identity Racc@5/15/30 | Tacc@5/15/30 | rot err med | focal err | pose Δ other clip | reverse-pair err (pred angle) | PSNR drop other cams |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, p, i, h = results[run], results[run]["poses"], results[run]["poses_identity"], results[run]["honesty"]
        acc = lambda d, k: "/".join(f"{d[f'{k}@{t}']:.2f}" for t in (5, 15, 30))  # noqa: E731
        lines.append(
            f"| {run} | {r['train_minutes']:.1f} | {r['psnr']:.2f} | {r['psnr_blend']:.2f} | {r['psnr_nearest']:.2f} | "
            f"{r['psnr'] - r['psnr_blend']:+.2f} dB | {p['pred_pair_angle_mean']:.1f}/{p['true_pair_angle_mean']:.1f} | "
            f"{p['angle_correlation']:.2f} | {acc(p, 'Racc')} | {acc(i, 'Racc')} | {acc(p, 'Tacc')} | {p['rot_err_median']:.1f} | "
            f"{r['focal_rel_err']:.2f} | {h['pose_change_with_other_clip_deg']:.2f} | {h['reverse_pair_inconsistency_deg']:.2f} "
            f"({h['reverse_pair_pred_angle_deg']:.2f}) | {h['psnr_drop_with_other_clip_cameras_db']:.2f} |"
        )
    if "oracle" in results:
        lines.append(f"\nOracle with another clip's ground-truth cameras: PSNR {results['oracle']['psnr_with_other_clip_gt_cameras']:.2f}"
                     " (poses of the oracle row are the ground truth fed to it, so its pose columns are trivially perfect).")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_curves(curves: Dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run, curve in curves.items():
        ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], label=run)
    ax.set_xlabel("step")
    ax.set_ylabel("training L2 (weighted)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)


if __name__ == "__main__":
    main()
