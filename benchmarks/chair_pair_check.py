"""The pair camera head on ``chair_orbit`` (every 4th frame, windows of 4 frames, all pairs) against identity.

    python benchmarks/chair_pair_check.py WEIGHTS.pt

WEIGHTS: a ``PairCameraHead`` state dict (``camera_probe.py --variants flow_pair --save``). Prints Racc@5/15/30, the
median rotation error, the mean predicted and true pair angles and the focal length over the width, for the
asymmetric and the symmetric head. A diagnostic of transfer (LEARNING.md exps 24, 28): no training on the chair.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vs_colmap import chair_clip  # noqa: E402
from pensieve_ns.checkpoints import load_camera_head_weights  # noqa: E402
from pensieve_ns.eval.poses import relative_pose_errors, summarise  # noqa: E402
from pensieve_ns.model.camera_head import PairCameraHead  # noqa: E402

WINDOW = 4


def main() -> None:
    torch.set_num_threads(1)
    clip = chair_clip(4)  # frames [50, 128, 128, 3] uint8, OpenCV c2w [50, 4, 4]
    images = torch.from_numpy(clip["images"]).permute(0, 3, 1, 2).float() / 255
    c2w, W = clip["c2w"], images.shape[-1]
    state = load_camera_head_weights(Path(sys.argv[1]))
    windows = [list(range(s, s + WINDOW)) for s in range(0, len(images) - WINDOW + 1, WINDOW - 1)]
    identity = summarise([relative_pose_errors(np.tile(np.eye(4), (WINDOW, 1, 1)), c2w[w]) for w in windows])
    for symmetric in (False, True):
        head = PairCameraHead(symmetric=symmetric).eval()
        head.load_state_dict(state)
        errors, focal = [], []
        with torch.no_grad():
            for w in windows:
                pred, K, _ = head(images[w][None])
                errors.append(relative_pose_errors(pred[0].double().numpy(), c2w[w]))
                focal.append(float(K[0, 0, 0, 0]) / W)
        s = summarise(errors)
        print(f"symmetric={symmetric}: Racc@5/15/30 {s['Racc@5']:.2f}/{s['Racc@15']:.2f}/{s['Racc@30']:.2f} "
              f"(identity {identity['Racc@5']:.2f}/{identity['Racc@15']:.2f}/{identity['Racc@30']:.2f}); "
              f"rot err median {s['rot_err_median']:.1f} (identity {identity['rot_err_median']:.1f}); "
              f"pair angle {s['pred_pair_angle_mean']:.1f} / {s['true_pair_angle_mean']:.1f}; "
              f"focal/W {np.mean(focal):.2f} (true {clip['fx'] / W:.2f})")


if __name__ == "__main__":
    main()
