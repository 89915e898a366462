"""What the flow solver's bundle adjustment pays for its Jacobian: analytic (``flow.bundle.reprojection``) against
torch autograd (``reprojection_autograd``: ``torch.func`` vmap of jacrev, the way it was computed before), in the
same process, on random problems of the solver's shape (8 or 50 frames, N observations between frame pairs at most
3 apart, 64 px). Prints a table and writes JSON; also the largest difference between the two Jacobians.

    python benchmarks/bundle_jacobian_timing.py --out benchmarks/results/bundle_jacobian_timing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_timing import time_call  # noqa: E402

from pensieve_ns.flow.bundle import reprojection, reprojection_autograd  # noqa: E402


def problem(frames: int, n: int, seed: int = 0):
    """Cameras along a sideways arc with small pose updates, and N observations of samples at depth 2-4."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 0.01, (frames, 6))
    R0 = np.stack([cv2.Rodrigues(np.array([0.0, 0.05 * k, 0.0]))[0] for k in range(frames)])
    c0 = np.stack([[0.2 * k, 0.0, 0.0] for k in range(frames)])
    I = rng.integers(0, frames, n)
    J = np.clip(I + rng.choice([-3, -2, -1, 1, 2, 3], n), 0, frames - 1)
    J = np.where(J == I, (I + 1) % frames, J)
    pix, target = rng.uniform(0, 64, (n, 2)), rng.uniform(0, 64, (n, 2))
    return (poses, np.log(60.0), np.log(rng.uniform(2, 4, n)), R0, c0, I, J, pix, target, np.array([32.0, 32.0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bundle_jacobian_timing"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for frames, n in [(8, 2000), (8, 10000), (50, 40000)]:
        p = problem(frames, n)
        analytic = time_call(lambda: reprojection(*p, jacobian=True), "cpu", args.repeats)
        autograd = time_call(lambda: reprojection_autograd(*p), "cpu", args.repeats)
        diff = float(np.abs(reprojection(*p, jacobian=True)[1] - reprojection_autograd(*p)[1]).max())
        rows.append({"frames": frames, "observations": n, "autograd_ms": 1e3 * autograd["median_s"],
                     "analytic_ms": 1e3 * analytic["median_s"], "speedup": autograd["median_s"] / analytic["median_s"],
                     "max_abs_difference": diff})
    lines = ["| frames | observations | autograd (torch.func) ms | analytic ms | speed-up | max abs difference |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['frames']} | {r['observations']} | {r['autograd_ms']:.1f} | {r['analytic_ms']:.1f} | "
              f"{r['speedup']:.1f}x | {r['max_abs_difference']:.1e} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(f"Median of {args.repeats} calls, {args.threads} torch thread(s), CPU.\n\n{table}\n")
    (args.out / "results.json").write_text(json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows},
                                                      indent=2))


if __name__ == "__main__":
    main()
