"""Can a feed-forward test tell a pan (no translation, no depth in the motion) from a translating clip? (exp 41)

    python benchmarks/pan_gate_check.py --seed 20000 --clips 48 --out benchmarks/results/flow_depth_probe/exp41_pan_gate.json

For each validation clip (held-out split, seeds 20000+: not the benchmark's clips), the window of exp 40 (frames
7-15 at gap 2, 64 px), the DIS flow between temporal neighbours and exp 38's predicted cameras: the median over the
frame of the flow that the predicted ROTATION alone does not explain (``rotation_residual``), next to the same
under the TRUE rotation. A pan should show only flow noise there. Prints a table per path kind, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flow_depth_probe import _camera_head  # noqa: E402
from pensieve_ns.cameras import invert_rigid  # noqa: E402
from pensieve_ns.data.synthetic import generate_clip  # noqa: E402
from pensieve_ns.model.flow_pose import FLOW_SIZE, temporal_flows  # noqa: E402


def rotation_residual(flow: torch.Tensor, b_in_a: torch.Tensor, focal: float, side: int = FLOW_SIZE) -> torch.Tensor:
    """[G, G, 2] flow a -> b (``side`` pixels), b's OpenCV camera-to-world in a's frame, focal in ``side`` pixels
    -> [G, G]: how far each cell's flow end point lies from where b's rotation alone would carry it (its
    translation is not used)."""
    G = flow.shape[0]
    c = (torch.arange(G, dtype=flow.dtype) + 0.5) * side / G
    v, u = torch.meshgrid(c, c, indexing="ij")
    p = torch.stack([(u - side / 2) / focal, (v - side / 2) / focal, torch.ones_like(u)], -1)
    q = p @ b_in_a[:3, :3].to(flow)  # R^T p: the ray's direction in b's camera
    z = q[..., 2].clamp_min(1e-6)
    end = torch.stack([focal * q[..., 0] / z + side / 2, focal * q[..., 1] / z + side / 2], -1)
    return (torch.stack([u, v], -1) + flow - end).norm(dim=-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = []
    for seed in range(args.seed, args.seed + args.clips):
        clip = generate_clip(seed, 24, FLOW_SIZE, "heldout")
        idx = 7 + np.arange(5) * 2
        images = torch.from_numpy(clip.frames[idx]).permute(0, 3, 1, 2).float()[None] / 255
        pairs = temporal_flows(images)
        with torch.no_grad():
            c2w, K, _ = _camera_head()(images, flows=pairs)
        flows, c2w, focal = pairs[0][0], c2w[0].double(), float(K[0, 0, 0, 0])
        pred, true = [], []
        for (i, j), flow in flows.items():
            flow = torch.from_numpy(flow).double()
            pred.append(float(rotation_residual(flow, invert_rigid(c2w[i]) @ c2w[j], focal).median()))
            gt = torch.from_numpy(invert_rigid(clip.c2w_opencv[idx[i]]) @ clip.c2w_opencv[idx[j]])
            true.append(float(rotation_residual(flow, gt, float(clip.K[0, 0])).median()))
        step = float(np.linalg.norm(np.diff(clip.c2w_opencv[idx, :3, 3], axis=0), axis=1).mean())
        rows.append({"seed": seed, "kind": clip.info["path"], "residual_pred_rotation_px": float(np.median(pred)),
                     "residual_true_rotation_px": float(np.median(true)), "mean_step": step})
    kinds = sorted({r["kind"] for r in rows})
    lines = [f"median rotation-unexplained flow (px at {FLOW_SIZE}), per clip: min / median / max", "",
             "| kind | clips | predicted rotation | true rotation |", "|---|---|---|---|"]
    for k in kinds:
        a = np.array([r["residual_pred_rotation_px"] for r in rows if r["kind"] == k])
        b = np.array([r["residual_true_rotation_px"] for r in rows if r["kind"] == k])
        lines.append(f"| {k} | {len(a)} | {a.min():.2f} / {np.median(a):.2f} / {a.max():.2f} | {b.min():.2f} / {np.median(b):.2f} / {b.max():.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "clips": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
