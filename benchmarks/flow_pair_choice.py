"""Development diagnostics of the adjacent-frame flow, pair by pair, on DEVELOPMENT generated clips (seeds 30000+;
never reported). Per clip (60 frames at 128 px, every 3rd kept, as ``flow_cameras.py``), for each adjacent pair
(k, k+1), each flow's median error against the truth (px, at the forward-backward consistent samples) and its
epipolar inlier share (check 1 for that pair alone, no truth):
  - the SIFT-started flows (``adjacent_flows``, velocity_init False);
  - the flows carried by constant velocity (``carry_from``) from EVERY possible anchor, with how many SIFT-started
    pairs each chain agrees with (a consensus anchor: tried and rejected in TTO exp 12), and which anchor the
    shipped ``velocity_chain`` picks.
Why: a pooled median over all observations hides wrong pairs (tracks from right pairs outnumber them).

    python benchmarks/flow_pair_choice.py --seeds 30000 30014 --kinds orbit
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.flow import FlowCamerasConfig  # noqa: E402
from pensieve_ns.flow.bundle import _rays  # noqa: E402
from pensieve_ns.flow.checks import epipolar_inlier_share  # noqa: E402
from pensieve_ns.flow.correspondences import (_grey, adjacent_flows, flow_observations, frame_samples,  # noqa: E402
                                              sift_features, carry_from, velocity_disagreement)


def true_targets(pts: np.ndarray, depth_a: np.ndarray, c2w_a: np.ndarray, c2w_b: np.ndarray, focal: float, W: int, H: int):
    """Where frame a's pixels [N, 2] (centres) land in frame b by the true depth and OpenCV c2w cameras [N, 2]."""
    d = depth_a[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    X = (c2w_a[:3, :3] @ (_rays(pts, focal, W, H) * d[:, None]).T).T + c2w_a[:3, 3]
    Xb = (X - c2w_b[:3, 3]) @ c2w_b[:3, :3]
    return focal * Xb[:, :2] / Xb[:, 2:] + [W / 2, H / 2]


def pair_figures(flows, k, samples, c2w, dmaps, focal, cfg: FlowCamerasConfig):
    """Pair (k, k+1) of ``flows``: median error against the truth, share beyond 3 px, epipolar share, matches."""
    H, W = dmaps.shape[1:3]
    ia, in_b = flow_observations(flows[(k, k + 1)], flows[(k + 1, k)], samples[k], H, W, cfg)
    ib, in_a = flow_observations(flows[(k + 1, k)], flows[(k, k + 1)], samples[k + 1], H, W, cfg)
    share = epipolar_inlier_share({(k, k + 1): (np.concatenate([samples[k][ia], in_a]),
                                                np.concatenate([in_b, samples[k + 1][ib]]))}, cfg.ransac_threshold)
    err = np.linalg.norm(true_targets(samples[k][ia], dmaps[k], c2w[k], c2w[k + 1], focal, W, H) - in_b, axis=1)
    return {"err_med": round(float(np.median(err)), 2) if len(err) else 99.0,
            "beyond3": round(float((err > 3).mean()), 3) if len(err) else 1.0,
            "share": round(share, 3), "n": int(len(ia) + len(ib))}


def agreement(a, b, grey, up: int, min_texture: float) -> float:
    """Share of frame k's textured pixels where two flows k -> k+1 agree within up pixels (1 px at frame scale)."""
    textured = cv2.cornerMinEigenVal(grey.astype(np.float32) / 255.0, blockSize=5 * up) > min_texture
    return float((np.linalg.norm(a - b, axis=2)[textured] < up).mean())


def clip_rows(frames, c2w, dmaps, focal, cfg: FlowCamerasConfig):
    L = len(frames)
    up = cfg.flow_upsample
    grey = [_grey(f, up) for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    started = adjacent_flows(grey, [sift_features(g) for g in grey], dis, cfg)
    rng = np.random.default_rng(cfg.seed)
    samples = [frame_samples(f, cfg, rng) for f in frames]
    disagree = velocity_disagreement(grey, started, up, cfg.min_texture)
    sift = [pair_figures(started, k, samples, c2w, dmaps, focal, cfg) for k in range(L - 1)]
    anchors = []
    for m in range(L - 2):
        chain = carry_from(grey, started, dis, m)
        agree = [agreement(chain[(k, k + 1)], started[(k, k + 1)], grey[k], up, cfg.min_texture) for k in range(L - 1)]
        figs = [pair_figures(chain, k, samples, c2w, dmaps, focal, cfg) for k in range(L - 1)]
        anchors.append({"anchor": m, "disagree": round(disagree[m], 3),
                        "agree": [round(a, 2) for a in agree],
                        "agree_pairs": int(sum(a > 0.5 for a in agree)), "agree_mean": round(float(np.mean(agree)), 3),
                        "share_mean": round(float(np.mean([f["share"] for f in figs])), 3),
                        "bad_pairs": int(sum(f["err_med"] > 3 for f in figs)),
                        "err_med_of_pairs": round(float(np.median([f["err_med"] for f in figs])), 2)})
    return {"sift_bad_pairs": int(sum(f["err_med"] > 3 for f in sift)),
            "sift_err": [f["err_med"] for f in sift], "shipped_anchor": int(np.argmin(disagree)), "anchors": anchors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[30000])
    ap.add_argument("--kinds", nargs="+", default=["orbit", "arc"])
    args = ap.parse_args()
    cv2.setNumThreads(1)
    from pensieve_ns.data.synthetic import generate_clip

    cfg = FlowCamerasConfig()
    for seed in args.seeds:
        for kind in args.kinds:
            assert seed < 40_000, "diagnostics run on development seeds only"
            c = generate_clip(seed, 60, 128, "heldout", path_kind=kind)
            rows = clip_rows(c.frames[::3], c.c2w_opencv[::3], c.depth[::3], float(c.K[0, 0]), cfg)
            print(json.dumps({"clip": f"{seed}_{kind}", **rows}), flush=True)


if __name__ == "__main__":
    main()
