"""Pre-trained pair camera heads on VALIDATION clips, read against frame 0 ("direct") and chained in time.

    python benchmarks/pair_head_validation.py WEIGHTS [WEIGHTS ...] [--clips 48] [--frames 24] [--start 7]

Validation clips are the generator's held-out split at seeds 20000+ (other textures and paths than training),
NOT the clips the benchmarks report on (seeds 10000+): choices between heads and modes are made here, so that
the stage-1 figures stay a single look. Samples mimic the stage-1 evaluation: 5 frames at gap 2 from the middle
of a 24-frame clip at 32 px. Per head and mode: mean predicted / true pair angle (target a asks 0.7-1.3), Racc@5
and median rotation error (identity as the baseline), per path kind too. Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.checkpoints import load_camera_head_weights  # noqa: E402
from pensieve_ns.data.synthetic import generate_clip  # noqa: E402
from pensieve_ns.eval.poses import relative_pose_errors, summarise  # noqa: E402
from pensieve_ns.model.camera_head import PairCameraHead  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", type=Path, nargs="+")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--start", type=int, default=7, help="first sampled frame (7: centred in 24, as stage 1)")
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pair_head_validation")
    args = p.parse_args()
    torch.set_num_threads(1)
    idx = args.start + np.arange(5) * 2
    clips = [generate_clip(args.seed + k, args.frames, 32, split="heldout") for k in range(args.clips)]
    rows = []
    identity = summarise([relative_pose_errors(np.tile(np.eye(4), (5, 1, 1)), c.c2w_opencv[idx]) for c in clips])
    for w in args.weights:
        head = PairCameraHead(symmetric=True)
        head.load_state_dict(load_camera_head_weights(w))
        head.eval()
        for chain in (False, True):
            per_kind, pairs = {}, []
            for c in clips:
                images = torch.from_numpy(c.frames[idx]).permute(0, 3, 1, 2).float()[None] / 255
                with torch.no_grad():
                    c2w, _, _ = head(images, chain=chain)
                pe = relative_pose_errors(c2w[0].double().numpy(), c.c2w_opencv[idx])
                pairs.append(pe)
                per_kind.setdefault(c.info["path"], []).append(pe)
            s = summarise(pairs)
            kinds = {k: summarise(v) for k, v in per_kind.items()}
            rows.append({"weights": str(w), "mode": "chained" if chain else "direct", **s,
                         "angle_ratio": s["pred_pair_angle_mean"] / s["true_pair_angle_mean"],
                         "per_kind_angle_ratio": {k: v["pred_pair_angle_mean"] / v["true_pair_angle_mean"] for k, v in kinds.items()}})
    lines = [f"Validation: {args.clips} held-out-split clips at seeds {args.seed}+, frames {idx.tolist()} of {args.frames}, 32 px. "
             f"Identity: Racc@5 {identity['Racc@5']:.2f}, median error {identity['rot_err_median']:.1f} deg.", "",
             "| head | mode | pred / true pair angle | ratio | per kind | Racc@5 | Racc@15 | median rot err |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["per_kind_angle_ratio"].items()))
        lines.append(f"| {Path(r['weights']).parent.name} | {r['mode']} | {r['pred_pair_angle_mean']:.2f} / {r['true_pair_angle_mean']:.2f} | "
                     f"{r['angle_ratio']:.2f} | {kinds} | {r['Racc@5']:.2f} | {r['Racc@15']:.2f} | {r['rot_err_median']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "identity": identity, "rows": rows}, indent=1, default=float))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
