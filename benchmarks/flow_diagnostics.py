"""Development diagnostics of the flow-geometry camera solver (``pensieve_ns.flow``) on DEVELOPMENT generated clips
(held-out split, seeds 30000+: never reported; ``flow_cameras.py`` reports on 40000+ and the chair).

Per clip (60 frames rendered at 128 px, every 3rd kept, as ``flow_cameras.py``):
  - the observations' errors against reference correspondences from the true depth and cameras (median, share
    beyond 3 px, share occluded in the other frame, adjacent pairs whose median error exceeds 3 px);
  - bundle adjustment started from the TRUTH (cameras, depths, focal length): where it drifts to, plain (Cauchy)
    and with outlier rejection rounds (``--reject`` pixels): if it drifts from the truth, no start can be saved
    by a better start;
  - with ``--solve``: the whole solver as configured (``FlowCamerasConfig`` plus ``--set key=value``; with the flow
    fallback, also the dropped solve's accuracy; ``--set flow_fallback_share=0`` solves with one flow only);
  - with ``--fixed-focal M ...``: the whole solver with the focal length fixed at M times the sweep's estimate, and
    the share of observations its cameras explain (self-check 2), to see whether that share ranks focal lengths.

    python benchmarks/flow_diagnostics.py --seeds 30000 30003 --kinds orbit --reject 2.0 --solve
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flow_cameras import pose_row  # noqa: E402
from pensieve_ns.eval.poses import focal_error  # noqa: E402
from pensieve_ns.flow import FlowCamerasConfig, solve_cameras  # noqa: E402
from pensieve_ns.flow.bundle import FlowBundle  # noqa: E402
from pensieve_ns.flow.correspondences import clip_observations  # noqa: E402
from pensieve_ns.flow.checks import epipolar_inlier_share  # noqa: E402
from pensieve_ns.flow.reconstruction import estimate_focal  # noqa: E402


def reference_errors(bundle: FlowBundle, depth_maps: np.ndarray, c2w: np.ndarray, focal: float):
    """Per observation: error (px) against the reprojected true point, and whether that point is hidden in frame j
    (its depth there exceeds the rendered depth by 2 %)."""
    depth = np.concatenate([d[s[:, 1].astype(int), s[:, 0].astype(int)] for d, s in zip(depth_maps, bundle.samples)])
    proj, z = bundle.project(c2w, depth, focal)
    err = np.linalg.norm(proj - bundle.target, axis=1)
    px = np.clip(proj.astype(int), 0, [bundle.W - 1, bundle.H - 1])
    hidden = z > 1.02 * depth_maps[bundle.J, px[:, 1], px[:, 0]]
    return err, hidden


def bad_adjacent_pairs(bundle: FlowBundle, err: np.ndarray, pixels: float = 3.0) -> int:
    """Adjacent pairs (i -> i+1 observations) whose median error exceeds pixels. The median over all observations
    hides them: tracks that start on right pairs outnumber the rest (TTO exp 12, orbit 30014: 0.5 px pooled, 9 of
    19 pairs 6-10 px off)."""
    return int(sum(np.median(err[(bundle.I == i) & (bundle.J == i + 1)]) > pixels
                   for i in range(bundle.L - 1) if ((bundle.I == i) & (bundle.J == i + 1)).any()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[30000])
    ap.add_argument("--kinds", nargs="+", default=["orbit", "arc"])
    ap.add_argument("--reject", type=float, nargs="*", default=[], help="rejection thresholds (px) to try from the truth")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--solve", action="store_true")
    ap.add_argument("--no-truth", action="store_true", help="skip the plain adjustment from the truth")
    ap.add_argument("--set", nargs="*", default=[], help="FlowCamerasConfig overrides, key=value")
    ap.add_argument("--fixed-focal", type=float, nargs="*", default=[],
                    help="also solve with the focal length fixed at these multiples of the sweep's estimate")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pensieve_ns.data.synthetic import generate_clip

    cfg = FlowCamerasConfig(**{k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)})
    for seed in args.seeds:
        for kind in args.kinds:
            assert seed < 40_000, "diagnostics run on development seeds only"
            c = generate_clip(seed, 60, 128, "heldout", path_kind=kind)
            frames, gt, dmaps, f = c.frames[::3], c.c2w_opencv[::3], c.depth[::3], float(c.K[0, 0])
            gt = np.linalg.inv(gt[0]) @ gt
            t0 = time.perf_counter()
            samples, observations, matches = clip_observations(frames, cfg)
            bundle = FlowBundle(samples, observations, 128, 128)
            err, hidden = reference_errors(bundle, dmaps, gt, f)
            row = {"clip": f"{seed}_{kind}", "obs": len(err), "flow_s": round(time.perf_counter() - t0, 1),
                   "err_med": float(np.median(err)), "beyond3": float((err > 3).mean()), "hidden": float(hidden.mean()),
                   "beyond3_visible": float((err[~hidden] > 3).mean()),
                   "bad_pairs": bad_adjacent_pairs(bundle, err),
                   "epipolar_inliers": round(epipolar_inlier_share(matches, cfg.ransac_threshold), 3)}
            depth0 = np.concatenate([d[s[:, 1].astype(int), s[:, 0].astype(int)] for d, s in zip(dmaps, samples)])
            for thr in ([] if args.no_truth else [None]) + list(args.reject):
                b = FlowBundle(samples, observations, 128, 128)
                c2w, depth, focal = gt.copy(), depth0.copy(), f
                free = np.arange(len(gt)) > 0
                c2w, depth, focal, _ = b.adjust(c2w, depth, focal, free, args.iterations, True)
                for _ in range(0 if thr is None else 2):  # reject, re-adjust: twice
                    b.reject_outliers(c2w, depth, focal, thr)
                    c2w, depth, focal, _ = b.adjust(c2w, depth, focal, free, args.iterations, True)
                if thr is not None:
                    row[f"rejected@{thr}"] = round(1 - b.inlier.mean(), 3)
                p = pose_row(c2w, gt, 10)
                row[f"from_truth{'' if thr is None else f'_reject{thr}'}"] = {
                    "Racc@5": round(p["Racc@5"], 2), "rot_med": round(p["rot_err_median"], 2),
                    "focal_err": round(focal_error(focal, f), 3)}
            if args.solve:
                t0 = time.perf_counter()
                res = solve_cameras(frames, cfg)
                p = pose_row(res.c2w_opencv, gt, 10)
                row["solve"] = {"Racc@5": round(p["Racc@5"], 2), "rot_med": round(p["rot_err_median"], 2),
                                "focal_err": round(focal_error(float(res.K[0, 0]), f), 3),
                                "s": round(time.perf_counter() - t0),
                                "checks": {k: round(v, 3) for k, v in res.checks.items()}, "warnings": len(res.warnings)}
                if res.recovery:  # the first solve failed check 2 or 3: what recover_focal chose (TTO exp 10)
                    r = res.recovery
                    row["solve"]["recovery"] = {
                        "candidates": r["candidates"], "chosen": r["chosen"], "focal_freed": r["focal_freed"],
                        "fixed_focal_err": round(focal_error(r["fixed_focal"], f), 3),
                        "first_focal_err": round(focal_error(r["first_solve"]["focal"], f), 3),
                        "first_checks": {k: round(v, 3) for k, v in r["first_solve"]["checks"].items()}}
                if res.fallback:  # flagged or below flow_fallback_share: solved with the other flow too (TTO exp 12)
                    fb, d = res.fallback, res.dropped_solve
                    q = pose_row(d.c2w_opencv, gt, 10)
                    row["solve"]["fallback"] = {
                        "velocity_init": fb["velocity_init"], "consistent_share": [round(v, 3) for v in fb["consistent_share"]],
                        "kept": fb["kept"], "dropped": {"Racc@5": round(q["Racc@5"], 2), "rot_med": round(q["rot_err_median"], 2),
                                                        "focal_err": round(focal_error(float(d.K[0, 0]), f), 3)}}
            if args.fixed_focal:  # does check 2's share rank fixed focal lengths? (TTO exp 9, orbit 30006)
                sweep, _ = estimate_focal(matches, 128, 128, cfg)
                row["fixed_focal"] = []
                for m in args.fixed_focal:
                    t0 = time.perf_counter()
                    res = solve_cameras(frames, cfg, focal=sweep * m)
                    p = pose_row(res.c2w_opencv, gt, 10)
                    row["fixed_focal"].append({"multiplier": m, "focal_err": round(focal_error(sweep * m, f), 3),
                                               "Racc@5": round(p["Racc@5"], 2), "rot_med": round(p["rot_err_median"], 2),
                                               "consistent_share": round(res.checks["consistent_share"], 3),
                                               "s": round(time.perf_counter() - t0)})
            print(json.dumps({"config": {k: v for k, v in dataclasses.asdict(cfg).items() if k in dict(s.split("=", 1) for s in args.set)}, **row}), flush=True)


if __name__ == "__main__":
    main()
