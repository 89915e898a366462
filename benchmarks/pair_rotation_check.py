"""Control for the camera probe (LEARNING.md exps 9, 16-17): the probe's pair CNN in a bare loop, regressing the
relative rotation of two frames 1-3 apart, scored on 256 held-out pairs against predicting no rotation.

    python benchmarks/pair_rotation_check.py --train-clips 3000 --frames 8 --steps 5000 [--loss mse|frobenius] [--shuffle]
        [--net cnn|corr|flow] [--seed S] [--cache DIR] [--size 32] [--path-kind pan|orbit|arc|walk]
        [--warmup-kind pan --warmup-steps 500]

--loss mse: MSE of the relative axis-angle in degrees; frobenius: 1600 * ||R_pred - R_true||_F^2 (the probe's
rotation term at --rot-weight 1600). --shuffle: the two frames in random order (the probe's case).
--net cnn: the probe's early-fusion pair CNN, spatial mean; corr: per-frame features, their global correlation
volume and a spatial readout (``CorrelationPoseNet``: motion made explicit, LEARNING.md exp 20); flow: the same
plus each cell's soft-argmax displacement.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from camera_probe import PairCNN, make_clips  # noqa: E402
from pensieve_ns.model.pair_pose import CorrelationPoseNet  # noqa: E402
from pensieve_ns.cameras import axis_angle_to_matrix  # noqa: E402

DEG = 57.29578


def relative_axis_angle(c2w_a: torch.Tensor, c2w_b: torch.Tensor) -> torch.Tensor:
    """log(R_a^T R_b) as an axis-angle vector (radians), OpenCV c2w inputs."""
    R = c2w_a[:3, :3].T @ c2w_b[:3, :3]
    angle = torch.arccos(((R.trace() - 1) / 2).clamp(-1, 1))
    axis = torch.stack([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return axis / (2 * torch.sin(angle) + 1e-9) * angle


def pairs(clips, n: int, rng: np.random.Generator, shuffle: bool):
    X, Y = [], []
    for _ in range(n):
        frames, c2w, _ = clips[int(rng.integers(len(clips)))]
        i = int(rng.integers(0, len(frames) - 4))
        j = i + int(rng.integers(1, 4))
        if shuffle and rng.random() < 0.5:
            i, j = j, i
        X.append(torch.cat([frames[i], frames[j]]))
        Y.append(relative_axis_angle(c2w[i], c2w[j]))
    return torch.stack(X), torch.stack(Y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-clips", type=int, default=3000)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--loss", choices=("mse", "frobenius"), default="mse")
    p.add_argument("--shuffle", action="store_true")
    p.add_argument("--net", choices=("cnn", "corr", "flow"), default="cnn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=32, help="frame size in pixels")
    p.add_argument("--path-kind", default=None, help="one camera path kind only (orbit, arc, walk, pan)")
    p.add_argument("--warmup-kind", default=None, help="curriculum: the first --warmup-steps on this path kind only")
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--warmup-clips", type=int, default=600)
    p.add_argument("--cache", type=Path, default=None, help="share generated clips with camera_probe.py")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    half = args.train_clips // 2  # two halves, the camera probe's cache layout
    S, kind = args.size, args.path_kind
    train = make_clips(half, args.frames, S, "train", 0, args.cache, kind) + make_clips(
        args.train_clips - half, args.frames, S, "train", half, args.cache, kind)
    held = make_clips(24, 24, S, "heldout", 10_000, None, kind)
    warm = make_clips(args.warmup_clips, 8, S, "train", 50_000, args.cache, args.warmup_kind) if args.warmup_kind else None
    if args.net == "cnn":
        net = PairCNN().conv
        head = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 3))
        params = list(net.parameters()) + list(head.parameters())
        predict = lambda X: head(net((X - 0.45) / 0.226).mean(dim=(-2, -1)))  # noqa: E731  degrees
    else:
        corr = CorrelationPoseNet(out_dim=3, grid=S // 2, explicit_flow=args.net == "flow")
        params = list(corr.parameters())
        predict = lambda X: corr(X[:, :3], X[:, 3:])  # noqa: E731  degrees
    opt = torch.optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(args.seed)
    Xh, Yh = pairs(held, 256, np.random.default_rng(1), args.shuffle)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        X, Y = pairs(warm if warm and step <= args.warmup_steps else train, 32, rng, args.shuffle)
        if args.loss == "mse":
            loss = ((predict(X) - Y * DEG) ** 2).mean()
        else:
            loss = 1600 * ((axis_angle_to_matrix(predict(X) / DEG) - axis_angle_to_matrix(Y)) ** 2).sum(dim=(-2, -1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0:
            with torch.no_grad():
                err = (predict(Xh) / DEG - Yh).norm(dim=-1) * DEG
            base = Yh.norm(dim=-1) * DEG
            print(f"{step} loss {loss.item():.2f} held-out rot err median {err.median():.2f} mean {err.mean():.2f} "
                  f"(zero-pred {base.median():.2f}/{base.mean():.2f}) acc@5 {(err < 5).float().mean():.2f} vs "
                  f"{(base < 5).float().mean():.2f} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
