"""Feed-forward relative pose from classical optical flow (issue 5, LEARNING.md exp 38).

    python benchmarks/flow_pose_probe.py --train-clips 3000 --steps 6000 --cache /tmp/flow_pose_cache --out DIR
    python benchmarks/flow_pose_probe.py --weights DIR/flow_camera_head.pt --eval-seed 10000 --eval-clips 24 --out DIR2

Why: the learned pair head reads its own correlation volume at 32 px and stops at Racc@5 0.64-0.72 on validation
(exps 27-37); a closed-form essential matrix on dense DIS flow, given the TRUE focal length, does no better at
32 px (0.57) but reaches 0.79 at 64 px (failing mostly on pans, where the essential matrix is degenerate; `/tmp`
check recorded in LEARNING.md). So here the correspondence is classical (OpenCV DIS flow, no learned weights, one
pass, no per-scene optimisation) and only the step flow -> (rotation, translation direction, focal length) is
learned, supervised on generated TRAINING clips with known cameras: the labelled synthetic prior of the issue.

Per frame pair (a, b), the network sees on a 32 x 32 grid: the flow a -> b and b -> a (64-px pixels / 8), the
grey frames a and b, and the cell coordinates. It is evaluated both ways and combined so that the pair and its
reverse get exactly inverse rotations (rotation = (net(a, b) - net(b, a)) / 2 as axis-angle). Poses of a window
are chained in time (each frame against its predecessor), as the pair head's are (exp 34).

Evaluation: validation clips (held-out split, seeds 20000+) by default, the stage-1 benchmark's clips with
``--eval-seed 10000 --eval-clips 24``; 5 frames at gap 2 from the middle of 24-frame clips, at 64 px. Camera
convention: OpenCV c2w throughout (x right, y down, z forward). Writes results.json and table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.cameras import invert_rigid  # noqa: E402
from pensieve_ns.checkpoints import load_camera_head_weights  # noqa: E402
from pensieve_ns.data.synthetic import generate_clip  # noqa: E402
from pensieve_ns.eval.poses import relative_pose_errors, summarise  # noqa: E402
from pensieve_ns.model.flow_pose import FlowCameraHead, FlowPoseNet, clip_flows, pair_input  # noqa: E402


def _prepare_one(job):
    seed, frames, size, split, max_gap = job
    clip = generate_clip(seed, frames, size, split)
    flows, grey = clip_flows(clip.frames, [(a, a + g) for g in range(1, max_gap + 1) for a in range(frames - g)])
    keys = sorted(flows)
    return (np.stack([flows[k] for k in keys]).astype(np.float16), np.array(keys, np.int16), grey,
            clip.c2w_opencv.astype(np.float32), float(clip.K[0, 0] / size), clip.info["path"])


def prepare(n: int, frames: int, size: int, split: str, seed: int, max_gap: int, cache: Path, workers: int):
    """Generate n clips and their flows (cached on disk, keyed by every argument)."""
    path = cache / f"{split}_{n}x{frames}_{size}px_seed{seed}_gap{max_gap}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    jobs = [(seed + k, frames, size, split, max_gap) for k in range(n)]
    with Pool(workers) as pool:
        out = pool.map(_prepare_one, jobs, chunksize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return out


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(R.astype(np.float64))[0].ravel()


def batch(clips, n: int, max_gap: int, rng: np.random.Generator):
    xs_ab, xs_ba, rots, dirs, focals = [], [], [], [], []
    for _ in range(n):
        flows, keys, grey, c2w, focal, _ = clips[int(rng.integers(len(clips)))]
        g = int(rng.integers(1, max_gap + 1))
        a = int(rng.integers(0, len(c2w) - g))
        b = a + g
        if rng.random() < 0.5:
            a, b = b, a
        fl = {tuple(k): f.astype(np.float32) for k, f in zip(keys.tolist(), flows) if (tuple(k) in ((a, b), (b, a)))}
        xs_ab.append(pair_input(fl, grey, a, b)), xs_ba.append(pair_input(fl, grey, b, a))
        T = invert_rigid(c2w[a].astype(np.float64)) @ c2w[b].astype(np.float64)  # b in a's frame (OpenCV c2w)
        rots.append(matrix_to_axis_angle(T[:3, :3])), focals.append(focal)
        dirs.append(T[:3, 3] / max(np.linalg.norm(T[:3, 3]), 1e-9))
    t = lambda v: torch.from_numpy(np.stack(v)).float()  # noqa: E731
    return t(xs_ab), t(xs_ba), t(rots), t(dirs), torch.tensor(focals, dtype=torch.float32)


def loss_fn(net: FlowPoseNet, data, rot_weight: float):
    x_ab, x_ba, rot, direction, focal = data
    p_rot, p_dir, p_focal = net.symmetric(x_ab, x_ba)
    rot_loss = (torch.rad2deg(p_rot - rot) ** 2).sum(1).mean()
    dir_loss = (1 - (p_dir * direction).sum(1)).mean()
    focal_loss = (torch.log(p_focal) - torch.log(focal)).abs().mean()
    return rot_weight * rot_loss / 100 + dir_loss + focal_loss, {"rot": rot_loss.item(), "dir": dir_loss.item(), "focal": focal_loss.item()}


@torch.no_grad()
def evaluate(net: FlowPoseNet, clips, idx: np.ndarray) -> dict:
    """The package's ``FlowCameraHead`` with these weights on each clip's window (chained in time), as the model
    runs it."""
    head = FlowCameraHead()
    head.net = net
    pairs, kinds, focal_err = [], {}, []
    identity = []
    for clip in clips:
        images = torch.from_numpy(clip.frames[idx]).permute(0, 3, 1, 2).float()[None] / 255
        c2w, K, _ = head(images)
        c2w, focal = c2w[0].double().numpy(), float(K[0, 0, 0, 0]) / images.shape[-1]
        pe = relative_pose_errors(c2w, clip.c2w_opencv[idx])
        pairs.append(pe), kinds.setdefault(clip.info["path"], []).append(pe)
        identity.append(relative_pose_errors(np.tile(np.eye(4), (len(idx), 1, 1)), clip.c2w_opencv[idx]))
        true = clip.K[0, 0] / clip.frames.shape[2]
        focal_err.append(abs(focal - true) / true)
    s = summarise(pairs)
    return {**s, "angle_ratio": s["pred_pair_angle_mean"] / s["true_pair_angle_mean"], "focal_err_median": float(np.median(focal_err)),
            "focal_err_mean": float(np.mean(focal_err)), "identity": summarise(identity),
            "per_kind": {k: summarise(v) for k, v in sorted(kinds.items())}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-clips", type=int, default=3000)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--max-gap", type=int, default=3)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rot-weight", type=float, default=1.0)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-seed", type=int, default=20_000, help="20000+: validation; 10000+: the stage-1 benchmark's clips")
    p.add_argument("--eval-clips", type=int, default=48)
    p.add_argument("--weights", type=Path, default=None, help="evaluate these weights only (no training)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/flow_pose_cache"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    idx = 7 + np.arange(5) * 2
    eval_clips = [generate_clip(args.eval_seed + k, 24, args.size, split="heldout") for k in range(args.eval_clips)]
    net = FlowPoseNet(args.width)
    log, t0 = [], time.time()
    if args.weights is not None:
        net.load_state_dict({k[len("net."):]: v for k, v in load_camera_head_weights(args.weights).items()})
    else:
        train = prepare(args.train_clips, args.frames, args.size, "train", 0, args.max_gap, args.cache, args.workers)
        print(f"data ready: {len(train)} clips, {time.time() - t0:.0f} s", flush=True)
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
        for step in range(1, args.steps + 1):
            net.train()
            loss, parts = loss_fn(net, batch(train, args.batch, args.max_gap, rng), args.rot_weight)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step(), sched.step()
            if step % 100 == 0:
                print(f"step {step} loss {loss.item():.4f} {parts} {time.time() - t0:.0f} s", flush=True)
            if step % args.eval_every == 0 or step == args.steps:
                net.eval()
                r = evaluate(net, eval_clips, idx)
                log.append({"step": step, "Racc@5": r["Racc@5"], "rot_err_median": r["rot_err_median"],
                            "angle_ratio": r["angle_ratio"], "focal_err_median": r["focal_err_median"], "s": time.time() - t0})
                print("eval", json.dumps(log[-1]), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, args.out / "flow_camera_head.pt")
    net.eval()
    r = evaluate(net, eval_clips, idx)
    ident = r["identity"]
    lines = [f"{args.eval_clips} held-out-split clips at seeds {args.eval_seed}+, frames {idx.tolist()} of 24, {args.size} px, chained.", "",
             "| cameras | Racc@5 | Racc@15 | Tacc@15 | median rot err | pred / true pair angle | focal err median |", "|---|---|---|---|---|---|---|",
             f"| identity | {ident['Racc@5']:.2f} | {ident['Racc@15']:.2f} | {ident['Tacc@15']:.2f} | {ident['rot_err_median']:.2f} | 0 / {ident['true_pair_angle_mean']:.2f} | - |",
             f"| flow pose net | {r['Racc@5']:.2f} | {r['Racc@15']:.2f} | {r['Tacc@15']:.2f} | {r['rot_err_median']:.2f} | {r['pred_pair_angle_mean']:.2f} / "
             f"{r['true_pair_angle_mean']:.2f} | {r['focal_err_median']:.3f} |"]
    lines += ["", "| kind | Racc@5 | median rot err | pred / true angle |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['Racc@5']:.2f} | {v['rot_err_median']:.2f} | {v['pred_pair_angle_mean']:.2f} / {v['true_pair_angle_mean']:.2f} |"
              for k, v in r["per_kind"].items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "log": log, "final": r},
                                                      indent=1, default=float))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
