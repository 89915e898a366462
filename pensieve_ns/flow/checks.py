"""The flow-geometry camera solver's self-checks (``pensieve_ns.flow.solver``, step 8): figures computed without
any truth that say whether a clip's cameras can be trusted, the warnings they give, and whether the focal recovery
(step 9) should run. TTO exp 9 in LEARNING.md has their development evidence and held-out scoring."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

import cv2
import numpy as np

if TYPE_CHECKING:
    from pensieve_ns.flow.bundle import FlowBundle
    from pensieve_ns.flow.solver import FlowCamerasConfig, FlowCamerasResult


def epipolar_inlier_share(matches: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]], threshold: float) -> float:
    """Mean over adjacent pairs (i, i+1) of the share of flow matches within threshold pixels of the fundamental
    matrix MAGSAC fits to them: near 1 when the flow is one rigid scene's, lower where it landed on a repeated
    texture or a wrong surface (no calibration needed, so a wrong focal length does not lower it)."""
    shares = []
    for (i, j), (pa, pb) in matches.items():
        if j != i + 1:
            continue
        if len(pa) < 15:
            shares.append(0.0)
            continue
        try:
            _, mask = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, threshold, 0.999)
        except cv2.error:  # MAGSAC asserts on degenerate matches (seen on a wrong flow chain): no rigid fit
            mask = None
        shares.append(0.0 if mask is None else float(mask.mean()))
    return float(np.mean(shares)) if shares else 0.0


def check_warnings(checks: Dict[str, float], cfg: FlowCamerasConfig) -> List[str]:
    """One line per failed self-check among those present in checks (see ``self_checks``); empty: all pass."""
    out = []
    if checks.get("epipolar_inliers", 1.0) < cfg.min_epipolar_inliers:
        out.append(f"only {checks['epipolar_inliers']:.0%} of adjacent-frame flow matches fit one rigid scene "
                   f"(expected >= {cfg.min_epipolar_inliers:.0%}): flow is wrong on repeated textures, large motions "
                   "or moving objects")
    if checks.get("consistent_share", 1.0) < cfg.min_consistent_share:
        out.append(f"the cameras explain only {checks['consistent_share']:.0%} of the observations within "
                   f"{cfg.consistency_pixels} px (expected >= {cfg.min_consistent_share:.0%})")
    if not 1 / cfg.max_focal_change <= checks.get("focal_change", 1.0) <= cfg.max_focal_change:
        out.append(f"the final bundle adjustment moved the focal length {checks['focal_change']:.2f}x "
                   "(a runaway: the reconstruction is degenerate)")
    return out


def needs_focal_recovery(checks: Dict[str, float], cfg: FlowCamerasConfig) -> bool:
    """Self-check 2 or 3 failed: the cameras do not explain the flow, or the focal length ran away. (A failed check
    1 alone, flow that fits no rigid scene, is not something another focal length can fix.)"""
    return bool(check_warnings({k: checks[k] for k in ("consistent_share", "focal_change")}, cfg))


def self_checks(result: FlowCamerasResult, bundle: FlowBundle, epipolar_inliers: float, depth: np.ndarray,
                cfg: FlowCamerasConfig):
    """Fill result.checks and result.warnings from what the solver has, never from truth: is the flow rigid
    (epipolar_inliers, from ``epipolar_inlier_share``: it depends on the flow only, so a clip computes it once for
    all its solves), do the cameras explain it (consistent_share: observations reprojected within
    consistency_pixels, depthless samples' observations counted as unexplained), how many samples got a depth,
    and did the final adjustment move the focal length far (a runaway)."""
    focal = float(result.K[0, 0])
    err = bundle.residuals(result.c2w_opencv, depth, focal)
    c = {"epipolar_inliers": epipolar_inliers,
         "consistent_share": float(np.mean(err <= cfg.consistency_pixels)),
         "depth_coverage": float(np.isfinite(depth).mean()),
         "focal_change": focal / result.focal_incremental}
    result.checks, result.warnings = c, check_warnings(c, cfg)
