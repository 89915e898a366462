"""Feed-forward depth from flow and predicted cameras (issue 5, LEARNING.md exp 39).

    python benchmarks/flow_depth_probe.py --train-clips 2000 --steps 4000 --out DIR
    python benchmarks/flow_depth_probe.py --weights DIR/flow_depth_head.pt --eval-seed 10000 --eval-clips 24 --out DIR2

``FlowDepthNet`` (pensieve_ns/model/flow_depth.py) reads a frame, the DIS flow to its temporal neighbours and the
closed-form inverse depth those flows give under the cameras of ``FlowCameraHead`` (exp 38's weights, frozen).
Training is self-supervised: the predicted depth warps the window's other frames (1 and 2 steps away) into the
frame through the TRUE cameras of generated TRAINING clips (the labelled synthetic prior; translations scaled to
a mean step of 1, the unit the camera head chains), and the loss is the per-pixel minimum over those warps of
0.85 SSIM + 0.15 L1 (monodepth2's photometric error, with its auto-mask of pixels that an unwarped frame already
explains), plus edge-aware smoothness of mean-normalised inverse depth. No depth labels are used in training.

Evaluation: 5 frames at gap 2 from the middle of 24-frame held-out-split clips at 64 px (validation seeds 20000+
by default; the stage-1 benchmark's clips with ``--eval-seed 10000 --eval-clips 24``), cameras AND depth
predicted feed-forward; depth AbsRel (median-scaled per frame) against the generator's depth, per path kind, next
to a constant depth and the closed-form two-view estimate. Writes results.json and table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.cameras import invert_rigid, unproject_depth  # noqa: E402
from pensieve_ns.checkpoints import load_camera_head_weights, load_depth_head_weights  # noqa: E402
from pensieve_ns.data.synthetic import generate_clip  # noqa: E402
from pensieve_ns.eval.metrics import depth_abs_rel  # noqa: E402
from pensieve_ns.losses import warp_frames  # noqa: E402
from pensieve_ns.model.flow_depth import FlowDepthNet, depth_input, flow_inverse_depth, neighbour_disagreement  # noqa: E402
from pensieve_ns.model.flow_pose import FLOW_SIZE, GRID, FlowCameraHead, temporal_flows  # noqa: E402

CAMERA_WEIGHTS = Path(__file__).resolve().parent / "results/flow_pose_probe/exp38_flow_pose_net/flow_camera_head.pt"
_HEAD = None


def _camera_head() -> FlowCameraHead:
    global _HEAD
    if _HEAD is None:
        torch.set_num_threads(1)
        _HEAD = FlowCameraHead()
        _HEAD.load_state_dict(load_camera_head_weights(CAMERA_WEIGHTS, head=_HEAD))
        _HEAD.eval()
    return _HEAD


def _unit_steps(c2w: np.ndarray) -> np.ndarray:
    """Scale a window's camera centres so its mean step is 1 (pans, with no step, are left as they are)."""
    step = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).mean()
    out = c2w.copy()
    if step > 1e-6:
        out[:, :3, 3] = (out[:, :3, 3] - out[0, :3, 3]) / step
    return out


def window(clip, idx: np.ndarray) -> dict:
    """Everything one window needs: the net's inputs under the PREDICTED cameras, frames, true cameras."""
    frames = clip.frames[idx]
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 255
    clip_pairs = temporal_flows(images)  # 64 px frames pass square_frames unchanged
    with torch.no_grad():
        c2w, K, _ = _camera_head()(images, flows=clip_pairs)
    flows, grey = clip_pairs[0]
    focal = float(K[0, 0, 0, 0])
    x = torch.stack([depth_input(flows, grey, c2w[0].double(), focal, i) for i in range(len(idx))])
    rho_true = []  # the closed-form estimate under the TRUE cameras (a baseline)
    for i in range(len(idx)):
        num = torch.zeros(GRID, GRID, dtype=torch.float64)
        den = torch.zeros_like(num)
        for j in (i - 1, i + 1):
            if 0 <= j < len(idx):
                rho, par = flow_inverse_depth(torch.from_numpy(flows[(i, j)]).double(), torch.from_numpy(invert_rigid(clip.c2w_opencv[idx[i]]) @ clip.c2w_opencv[idx[j]]), float(clip.K[0, 0]))
                num, den = num + rho * par ** 2, den + par ** 2
        rho_true.append(num / den.clamp_min(1e-12))
    return {"x": x.half(), "frames": frames, "c2w": _unit_steps(clip.c2w_opencv[idx]).astype(np.float32), "K": clip.K.astype(np.float32),
            "kind": clip.info["path"], "depth": clip.depth[idx].astype(np.float32), "rho_true": torch.stack(rho_true).float().numpy()}


def _train_one(job):
    seed, frames = job
    rng = np.random.default_rng(seed)
    clip = generate_clip(seed, frames, FLOW_SIZE, "train")
    gap = int(rng.integers(1, 3))
    start = int(rng.integers(0, frames - 4 * gap))
    w = window(clip, start + np.arange(5) * gap)
    del w["rho_true"]
    w["depth"] = w["depth"].astype(np.float16)  # kept ONLY for the labelled diagnostic (--depth-labels, exp 41)
    return w


def _eval_one(seed):
    return window(generate_clip(seed, 24, FLOW_SIZE, "heldout"), 7 + np.arange(5) * 2)


def prepare(fn, jobs, path: Path, workers: int):
    if path.exists():
        return torch.load(path, weights_only=False)
    with Pool(workers) as pool:
        out = pool.map(fn, jobs, chunksize=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return out


def ssim_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel over 3 x 3 windows, [N, C, H, W] -> [N, 1, H, W]."""
    pool = lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="reflect"), 3, 1)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    var_a, var_b, cov = pool(a * a) - mu_a ** 2, pool(b * b) - mu_b ** 2, pool(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ((1 - ssim) / 2).clamp(0, 1).mean(1, keepdim=True)


def photometric(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.85 * ssim_error(a, b) + 0.15 * (a - b).abs().mean(1, keepdim=True)


MOTION = slice(1, 9)  # the input channels that come from flow and cameras (all but the grey frame)


def net_input(x: torch.Tensor, inputs: str) -> torch.Tensor:
    """``inputs="image"``: the motion channels zeroed, so the net sees the grey frame alone (exp 41-42)."""
    if inputs == "image":
        x = x.clone()
        x[:, MOTION] = 0
    return x


def supervised_loss(net: FlowDepthNet, items, inputs: str):
    """DIAGNOSTIC ONLY (exp 41): the scale-invariant log error (Eigen et al.) against the generator's depth, to
    measure how far a net with these inputs could get at all. Never used for a shipped weight."""
    x = net_input(torch.cat([it["x"].float() for it in items]), inputs)
    gt = torch.from_numpy(np.concatenate([it["depth"] for it in items]).astype(np.float32))[:, None]
    log_rho = F.interpolate(net(x), size=gt.shape[-2:], mode="bilinear", align_corners=False)
    d = (-log_rho - gt.clamp_min(1e-3).log()).flatten(1)
    loss = (d.pow(2).mean(1) - 0.85 * d.mean(1).pow(2)).mean()
    return loss, {"silog": loss.item()}


def loss_fn(net: FlowDepthNet, items, smooth: float, rho_dropout: float = 0.0, inputs: str = "all"):
    x = net_input(torch.cat([it["x"].float() for it in items]), inputs)  # [N*5, 9, G, G]
    if rho_dropout > 0:  # frames whose closed-form rho is replaced by noise like a pan's (no translation, exp 40)
        hide = torch.rand(len(x)) < rho_dropout
        x[hide, 3], x[hide, 7] = 0.05 * torch.randn_like(x[hide, 3]), 0.05 * torch.randn_like(x[hide, 7])  # a pan's spread
    rgb = torch.cat([torch.from_numpy(it["frames"]).permute(0, 3, 1, 2).float() / 255 for it in items])
    c2w = torch.cat([torch.from_numpy(it["c2w"]) for it in items]).double()
    L = len(items[0]["frames"])
    K = torch.cat([torch.from_numpy(it["K"]).expand(L, 3, 3) for it in items]).float()
    log_rho = net(x)
    rho = F.interpolate(log_rho.exp(), size=(FLOW_SIZE, FLOW_SIZE), mode="bilinear", align_corners=False)
    depth = 1.0 / rho
    refs, srcs = [], []
    for n in range(len(items)):
        for i in range(L):
            for j in (i - 2, i - 1, i + 1, i + 2):
                if 0 <= j < L:
                    refs.append(n * L + i), srcs.append(n * L + j)
    refs, srcs = torch.tensor(refs), torch.tensor(srcs)
    src_in_ref = (invert_rigid(c2w[refs]) @ c2w[srcs]).float()  # the source camera in the reference camera's frame
    points = unproject_depth(depth[refs, 0], K[refs], torch.eye(4).expand(len(refs), 4, 4)).flatten(1, 2)
    warped, _ = warp_frames(rgb[srcs], points, src_in_ref, K[refs], near=1e-3)  # no mask: border pixels repeat
    err = photometric(warped, rgb[refs])  # [P, 1, S, S]
    still = photometric(rgb[srcs], rgb[refs]) + 1e-5 * torch.rand_like(err)  # monodepth2's auto-mask
    big = torch.full((len(x), 4, FLOW_SIZE, FLOW_SIZE), 1e3)
    slot = torch.cat([torch.arange(int((refs == r).sum())) for r in torch.unique_consecutive(refs)])
    errs = big.index_put((refs, slot), err[:, 0]).clone()
    stills = big.index_put((refs, slot), still[:, 0])
    best, _ = errs.min(1)
    keep = (best < stills.min(1)[0]).float()
    photo = (best * keep).sum() / keep.sum().clamp_min(1)
    r = rho / rho.mean((2, 3), keepdim=True)
    gx, gy = (r[..., :, 1:] - r[..., :, :-1]).abs(), (r[..., 1:, :] - r[..., :-1, :]).abs()
    ix = (rgb[..., :, 1:] - rgb[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (rgb[..., 1:, :] - rgb[..., :-1, :]).abs().mean(1, keepdim=True)
    sm = (gx * torch.exp(-ix)).mean() + (gy * torch.exp(-iy)).mean()
    return photo + smooth * sm, {"photo": photo.item(), "smooth": sm.item(), "auto_mask": keep.mean().item()}


@torch.no_grad()
def evaluate(net: FlowDepthNet, items, inputs: str = "all", unmeasured_threshold: Optional[float] = None) -> dict:
    net.eval()
    rows = {"net": {}, "net_gated": {}, "true_depth_through_grid": {}, "closed_form_true_cameras": {}, "closed_form_pred_cameras": {}, "constant": {}}
    for it in items:
        x = it["x"].float()
        rho = F.interpolate(net(net_input(x, inputs)).exp(), size=(FLOW_SIZE, FLOW_SIZE), mode="bilinear", align_corners=False)[:, 0].numpy()
        up = lambda r: F.interpolate(torch.from_numpy(np.asarray(r, np.float32))[:, None], size=(FLOW_SIZE, FLOW_SIZE), mode="nearest")[:, 0].numpy()  # noqa: E731
        # the closed-form estimate under the predicted cameras: parallax-weighted mean of both neighbours' rho
        rp, wp = x[:, [3, 7]].numpy(), x[:, [4, 8]].numpy() ** 2
        pred_cf = up((rp * wp).sum(1) / np.maximum(wp.sum(1), 1e-12))
        # a ceiling: the true depth seen through the net's 32 x 32 grid (inverse depth averaged per cell, upsampled)
        grid_gt = F.interpolate(F.avg_pool2d(torch.from_numpy(1 / np.maximum(it["depth"], 1e-3))[:, None], FLOW_SIZE // GRID), size=(FLOW_SIZE, FLOW_SIZE), mode="bilinear", align_corners=False)[:, 0].numpy()
        maps = {"net": 1 / rho, "true_depth_through_grid": 1 / grid_gt, "closed_form_true_cameras": 1 / up(it["rho_true"]), "closed_form_pred_cameras": 1 / pred_cf,
                "constant": np.ones_like(rho)}
        # exp 42: the head's gate, on the same inputs (a window whose flow measures no depth gets a constant)
        gated = unmeasured_threshold is not None and neighbour_disagreement(x) > unmeasured_threshold
        maps["net_gated"] = np.full_like(rho, float(np.median(1 / rho))) if gated else 1 / rho
        rows.setdefault("share_of_windows_gated", {}).setdefault(it["kind"], []).append((float(gated), 1.0))
        for name, d in maps.items():
            d = np.where(np.isfinite(d) & (d > 0), d, np.nan)
            e = [depth_abs_rel(np.nan_to_num(d[i], nan=-1.0), it["depth"][i]) for i in range(len(d))]
            cover = float(np.mean(np.isfinite(d)))
            rows[name].setdefault(it["kind"], []).append((float(np.nanmean(e)), cover))
    out = {}
    for name, kinds in rows.items():
        allv = [v for k in kinds.values() for v in k]
        out[name] = {"abs_rel": float(np.nanmean([e for e, _ in allv])), "coverage": float(np.mean([c for _, c in allv])),
                     "per_kind": {k: float(np.nanmean([e for e, _ in v])) for k, v in sorted(kinds.items())},
                     "clips": len(allv), "abs_rel_per_clip": [e for e, _ in allv]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-clips", type=int, default=2000)
    p.add_argument("--train-seed", type=int, default=100_000, help="generated TRAIN split clips (not the camera head's 0-2999)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=8, help="windows of 5 frames per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--smooth", type=float, default=1e-3)
    p.add_argument("--rho-dropout", type=float, default=0.0, help="share of training frames whose closed-form rho is replaced by noise (exp 40)")
    p.add_argument("--inputs", choices=("all", "image"), default="all", help="image: the net sees the grey frame alone (exp 41-42)")
    p.add_argument("--depth-labels", action="store_true", help="DIAGNOSTIC (exp 41): train on the generator's depth instead of photometric self-supervision")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--unmeasured-threshold", type=float, default=None,
                   help="exp 42: also report the net with the head's gate (constant depth where the flow measures none)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-seed", type=int, default=20_000, help="20000+: validation; 10000+: the stage-1 benchmark's clips")
    p.add_argument("--eval-clips", type=int, default=48)
    p.add_argument("--weights", type=Path, default=None, help="evaluate these weights only (no training)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/flow_depth_cache"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    evals = prepare(_eval_one, [args.eval_seed + k for k in range(args.eval_clips)], args.cache / f"eval_{args.eval_seed}x{args.eval_clips}.pt", args.workers)
    torch.set_num_threads(args.threads)
    net, log = FlowDepthNet(args.width), []
    if args.weights is not None:
        net.load_state_dict({k[len("net."):]: v for k, v in load_depth_head_weights(args.weights).items()})
    else:
        jobs = [(args.train_seed + k, args.frames) for k in range(args.train_clips)]
        train = prepare(_train_one, jobs, args.cache / f"train_{args.train_seed}x{args.train_clips}_{args.frames}f_d.pt", args.workers)
        print(f"data ready: {len(train)} train windows, {len(evals)} eval, {time.time() - t0:.0f} s", flush=True)
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
        for step in range(1, args.steps + 1):
            net.train()
            batch = [train[int(k)] for k in rng.integers(0, len(train), args.batch)]
            if args.depth_labels:
                loss, parts = supervised_loss(net, batch, args.inputs)
            else:
                loss, parts = loss_fn(net, batch, args.smooth, args.rho_dropout, args.inputs)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step(), sched.step()
            if step % 100 == 0:
                print(f"step {step} loss {loss.item():.4f} {parts} {time.time() - t0:.0f} s", flush=True)
            if step % args.eval_every == 0 or step == args.steps:
                r = evaluate(net, evals, args.inputs)
                log.append({"step": step, "abs_rel": r["net"]["abs_rel"], "per_kind": r["net"]["per_kind"], "s": time.time() - t0})
                print("eval", json.dumps(log[-1]), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, args.out / "flow_depth_head.pt")
    r = evaluate(net, evals, args.inputs, args.unmeasured_threshold)
    kinds = sorted(r["net"]["per_kind"])
    lines = [f"{args.eval_clips} held-out-split clips at seeds {args.eval_seed}+, frames 7-15 at gap 2 of 24, {FLOW_SIZE} px; cameras from "
             "the exp-38 flow head except where marked TRUE. Depth AbsRel median-scaled per frame, all pixels.", "",
             "| depth | AbsRel | coverage | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for name, v in r.items():
        lines.append(f"| {name} | {v['abs_rel']:.3f} | {v['coverage']:.2f} | " + " | ".join(f"{v['per_kind'].get(k, float('nan')):.3f}" for k in kinds) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "log": log, "final": r}, indent=1))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
