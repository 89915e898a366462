"""Steps 4-7 of the flow-geometry camera solver (``pensieve_ns.flow.solver``): the focal sweep, two-view starts,
incremental registration and the final bundle adjustment, from one clip's flow observations (a ``FlowBundle``).

Conventions as in the solver: pixel (x, y) has its centre at (x + 0.5, y + 0.5), the principal point is the image
centre, cameras are OpenCV camera-to-world [L, 4, 4] (x right, y down, z forward) with frame 0 the identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

import cv2
import numpy as np

from pensieve_ns.cameras import intrinsics_matrix
from pensieve_ns.eval.poses import rotation_angle_deg
from pensieve_ns.flow.bundle import FlowBundle

if TYPE_CHECKING:
    from pensieve_ns.flow.solver import FlowCamerasConfig


def sampson_distance(E: np.ndarray, K: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """First-order geometric distance (pixels) of matches [N, 2] to the epipolar geometry of E [3, 3] under K."""
    Kinv = np.linalg.inv(K)
    F = Kinv.T @ E @ Kinv
    xa = np.concatenate([pa, np.ones((len(pa), 1))], 1)
    xb = np.concatenate([pb, np.ones((len(pb), 1))], 1)
    Fa, Ftb = xa @ F.T, xb @ F
    num = (xb * Fa).sum(1) ** 2
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12))


def _essential(pa: np.ndarray, pb: np.ndarray, K: np.ndarray, cfg: FlowCamerasConfig):
    E, mask = cv2.findEssentialMat(pa, pb, K, method=cv2.USAC_ACCURATE, prob=0.999, threshold=cfg.ransac_threshold)
    if E is None or E.shape != (3, 3):  # degenerate, or several solutions stacked: keep the first
        E = None if E is None else E[:3]
    return E, mask


def estimate_focal(matches: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]], W: int, H: int, cfg: FlowCamerasConfig):
    """One focal length (pixels) for the clip from the adjacent pairs' matches; returns (focal, {focal: score})."""
    lo, hi, ratio = cfg.focal_sweep
    focals = W * np.exp(np.arange(np.log(lo), np.log(hi) + 1e-9, np.log(ratio)))
    adjacent = [m for (i, j), m in matches.items() if j == i + 1 and len(m[0]) >= 8]
    scores = {}
    for f in focals:
        K, total = intrinsics_matrix(float(f), float(f), W / 2, H / 2), 0.0
        for pa, pb in adjacent:
            E, _ = _essential(pa, pb, K, cfg)
            d = np.full(len(pa), 3.0 * cfg.ransac_threshold) if E is None else sampson_distance(E, K, pa, pb)
            total += float(np.minimum(d, 3.0 * cfg.ransac_threshold).mean())
        scores[float(f)] = total / max(len(adjacent), 1)
    best = min(scores, key=scores.get)
    return best, scores

def register_incrementally(bundle: FlowBundle, c2w: np.ndarray, focal: float, cfg: FlowCamerasConfig, until: int):
    """Grow a reconstruction: c2w [L, 4, 4] has the starting cameras (NaN rows: not yet registered). Each frame
    below ``until`` that has no camera, in order, is placed by PnP (RANSAC) on the world points that registered
    frames see in it; then the samples that can be are triangulated and the last cfg.window frames adjusted.
    Returns (c2w, depth per sample, median reprojection error of the last adjustment)."""
    L = bundle.L
    c2w = c2w.copy()
    registered = np.isfinite(c2w[:, 0, 0])
    depth = bundle.triangulate(registered, c2w, np.full(len(bundle.pix), np.nan), focal, cfg.min_triangulation_angle)
    c2w, depth, _, err = bundle.adjust(c2w, depth, focal, registered, cfg.window_iterations, False)
    K = intrinsics_matrix(focal, focal, bundle.W / 2, bundle.H / 2)
    for k in range(until):
        if registered[k]:
            continue
        X, x = [np.zeros((0, 3))], [np.zeros((0, 2))]
        for o in bundle.observations:
            if o[1] == k and registered[o[0]]:
                Xo, xo = bundle.world_points(o, c2w, depth, focal)
                X.append(Xo)
                x.append(xo)
        X, x = np.concatenate(X), np.concatenate(x)
        ok = False
        if len(X) >= 6:
            ok, rvec, tvec, _ = cv2.solvePnPRansac(X, x, K, None, iterationsCount=300,
                                                   reprojectionError=2 * cfg.ransac_threshold, flags=cv2.SOLVEPNP_EPNP)
        nearest = np.flatnonzero(registered)[np.argmin(np.abs(np.flatnonzero(registered) - k))]
        c2w[k] = c2w[nearest]  # where PnP fails, start from the nearest camera and let the adjustment move it
        if ok:
            w2c = np.eye(4)
            w2c[:3, :3], w2c[:3, 3] = cv2.Rodrigues(rvec)[0], tvec[:, 0]
            c2w[k] = np.linalg.inv(w2c)
        registered[k] = True
        depth = bundle.triangulate(registered, c2w, depth, focal, cfg.min_triangulation_angle)
        window = registered & (np.arange(L) > max(0, k - cfg.window)) & (np.arange(L) > 0)
        c2w, depth, _, err = bundle.adjust(c2w, depth, focal, window, cfg.window_iterations, False)
    return c2w, depth, err


def essential_candidates(pa: np.ndarray, pb: np.ndarray, K: np.ndarray, cfg: FlowCamerasConfig) -> List[np.ndarray]:
    """Relative poses [4, 4] (camera b in camera a, OpenCV c2w, unit baseline) of the distinct essential matrices
    that three robust estimators find for matches [N, 2] (an orbit around a fixated object is close to the
    bas-relief ambiguity, and one estimator's choice is not reliably the true one)."""
    poses: List[np.ndarray] = []
    if len(pa) < max(cfg.min_inliers, 8):
        return poses
    for method in (cv2.USAC_ACCURATE, cv2.RANSAC, cv2.LMEDS):
        E, mask = cv2.findEssentialMat(pa, pb, K, method=method, prob=0.999, threshold=cfg.ransac_threshold)
        if E is None:
            continue
        for k in range(len(E) // 3):
            n, R, t, _ = cv2.recoverPose(E[3 * k : 3 * k + 3], pa, pb, K, mask=None if mask is None else mask.copy())
            if n < cfg.min_inliers:
                continue
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R.T, -R.T @ t[:, 0] / max(np.linalg.norm(t), 1e-12)
            if all(rotation_angle_deg(P[:3, :3].T @ T[:3, :3]) > 0.5 for P in poses):
                poses.append(T)
    return poses

def reconstruct(bundle: FlowBundle, matches, focal: float, multipliers, free_focal: bool, cfg: FlowCamerasConfig):
    """Steps 5-7 from one focal length (pixels): the start at each focal*multiplier, incremental registration and
    the final adjustment; the focal length moves only if free_focal. Resets the bundle's outlier marks first.
    Returns (c2w [L, 4, 4] OpenCV, depth [samples], focal, incremental c2w, incremental focal, median error)."""
    L = bundle.L
    bundle.inlier[:] = True
    # Start: every two-view candidate between frame 0 and a later frame (below init_frames), at every focal
    # candidate, seeds a reconstruction of the first init_frames frames, adjusted together; the lowest
    # reprojection error goes on. A wrong focal length makes an orbit's rotations wrong by a constant fraction,
    # and the sweep alone was off by up to 2x.
    first = min(cfg.init_frames, L)
    best = None
    for f0 in [float(focal) * m for m in multipliers]:
        K = intrinsics_matrix(f0, f0, bundle.W / 2, bundle.H / 2)
        for g in sorted(j for (i, j) in matches if i == 0 and j < first):
            for T in essential_candidates(*matches[(0, g)], K, cfg):
                start = np.full((L, 4, 4), np.nan)
                start[0], start[g] = np.eye(4), T
                c2w, depth, _ = register_incrementally(bundle, start, f0, cfg, first)
                c2w, depth, f, err = bundle.adjust(c2w, depth, f0, np.ones(L, bool), cfg.window_iterations, free_focal)
                if best is None or err < best[2]:
                    best = (c2w, depth, err, float(f))
    if best is None:
        raise ValueError(f"no two of the first {first} frames share enough consistent matches to start "
                         f"(at least {cfg.min_inliers}): too little texture, too little overlap, or a cut")
    focal = best[3]
    c2w, depth, err = register_incrementally(bundle, best[0], focal, cfg, L)
    c2w_incremental = c2w.copy()
    if cfg.ba_iterations > 0:
        c2w, depth, focal, err = final_adjustment(bundle, c2w, depth, focal, free_focal, cfg)
    return c2w, depth, focal, c2w_incremental, best[3], err


def final_adjustment(bundle: FlowBundle, c2w, depth, focal: float, free_focal: bool, cfg: FlowCamerasConfig):
    """Step 7: every frame but the first adjusted together, with outlier rejection; samples whose observations
    were all rejected lose their depth. Returns (c2w, depth, focal, median error)."""
    free = np.arange(bundle.L) > 0
    c2w, depth, focal, err = bundle.adjust(c2w, depth, focal, free, cfg.ba_iterations, free_focal)
    for _ in range(2 if cfg.reject_threshold > 0 else 0):
        bundle.reject_outliers(c2w, depth, focal, cfg.reject_threshold)
        c2w, depth, focal, err = bundle.adjust(c2w, depth, focal, free, cfg.ba_iterations, free_focal)
    supported = np.zeros(len(depth), bool)
    supported[bundle.S[bundle.inlier]] = True
    return c2w, np.where(supported, depth, np.nan), focal, err
