"""EXPERIMENT (LEARNING.md, TTO exp 6; it does not work yet, so it lives here and not in the package): a test-time
camera solver for one clip from dense optical flow and bundle adjustment. No learned weights, no ground truth.

Why it was tried: the learned cameras (stage 1's pair head) carry a prior from generated clips that does not
transfer to object orbits, and per-frame-depth photometric refinement (``pensieve_ns.refine``) drifts away from the
truth on such clips (TTO exp 5). Sparse SIFT (COLMAP) registers few frames at 128 px; dense flow gives thousands of
correspondences per frame pair, and reprojection error has its minimum at the truth where photometric error on
per-frame depth did not.

The pipeline, for L frames in temporal order:
  1. ``frame_samples``: up to points_per_frame textured pixels per frame (structure-tensor minimum eigenvalue).
  2. ``dense_flows``: DIS optical flow (OpenCV) both ways between frames i and i+g, g = 1..max_gap, on frames
     upsampled by flow_upsample; adjacent frames start from SIFT matches interpolated over the frame
     (``sift_matches``, ``interpolated_flow``), longer gaps from the composition of shorter flows.
  3. Observations: where each sample lands in the other frames, forward-backward consistent
     (``flow_observations``): directly for gaps up to max_gap, by tracks chained through adjacent flows up to
     track_length frames (``tracked_observations``).
  4. ``estimate_focal``: one focal length (principal point at the image centre) from a log-spaced sweep, scored
     by the truncated Sampson error of the adjacent pairs' essential matrices.
  5. Start: at each of a few focal lengths around the sweep's (focal_candidates), every essential-matrix candidate
     between frame 0 and a later frame (``essential_candidates``) seeds an incremental reconstruction of the first
     frames, adjusted with the focal length free; the lowest reprojection error goes on.
  6. ``register_incrementally``: each next frame by PnP (RANSAC) on the points registered frames see in it,
     triangulation of new samples (``FlowBundle.triangulate``), robust bundle adjustment of a sliding window
     (``FlowBundle.adjust``: Cauchy loss on reprojection residuals, Levenberg-Marquardt with Schur complement).
  7. A final bundle adjustment of all frames, the focal length included.

What was found (development clips: generated orbits and arcs, seeds 30000-30002; TTO exp 6 in LEARNING.md):
  - with ground-truth correspondences the start recovers the cameras to 0.3 deg; DIS flow at 128 px has a
    0.3-0.5 px median error, and that is enough to make two-view geometry on an orbit pick a wrong
    rotation/translation trade-off (rotations too small by a constant fraction);
  - L-BFGS bundle adjustment could not leave such a reconstruction, nor return from ground truth rotated by
    3 deg per frame; Levenberg-Marquardt with the Schur complement returns from the latter (0.6 deg) but not from
    the former (a real local minimum: 0.80 against 0.41 px median);
  - with the true focal length given, Racc@5 (pairs within 10 frames) is 0.43-0.82 per clip (mean 0.63), against
    0.00-0.35 for the first L-BFGS version; the focal sweep alone is off by up to 2x.
It was not run on chair_orbit: its one pre-declared run waits for a solver that works on the development clips.

Conventions: images are [L, H, W, 3] uint8 RGB; pixel (x, y) of the array has its centre at (x + 0.5, y + 0.5),
as in ``cameras.intrinsics_matrix`` (cx = W / 2). Cameras out are OpenCV camera-to-world [L, 4, 4] (x right,
y down, z forward); frame 0 is the identity.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.cameras import axis_angle_to_matrix, intrinsics_matrix  # noqa: E402
from pensieve_ns.eval.poses import rotation_angle_deg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_correspondences import clip_observations  # noqa: E402


@dataclass
class FlowCamerasConfig:
    max_gap: int = 3
    """Direct flow is computed between frames up to this far apart; their observations come from it."""
    points_per_frame: int = 1500
    """Textured pixels sampled per frame: the points whose flow is followed, and whose depths bundle adjustment
    estimates."""
    flow_upsample: int = 2
    """Frames are upsampled this many times before optical flow (DIS's 8-pixel patches are coarse at 128 px)."""
    fb_tolerance: float = 0.75
    """Forward-backward flow disagreement (pixels) above which a match is dropped."""
    min_texture: float = 2e-4
    """Structure-tensor minimum eigenvalue (grey levels in [0, 1], 5x5 window) below which a pixel is untextured
    (flat colours, white backgrounds: flow there is interpolated, not measured)."""
    ransac_threshold: float = 1.0
    """Epipolar inlier distance in pixels."""
    focal_sweep: Tuple[float, float, float] = (0.4, 3.0, 1.02)
    """Focal lengths tried, times the image width: from, to, ratio between neighbours."""
    min_inliers: int = 60
    """Essential-matrix candidates with fewer inliers (or pairs with fewer matches) do not seed a start."""
    window: int = 5
    """Incremental registration adjusts the last this many frames after each new one."""
    window_iterations: int = 10
    """Levenberg-Marquardt iterations of each sliding-window adjustment."""
    min_triangulation_angle: float = 2.0
    """Degrees between the two rays below which a sample gets no depth yet (too little parallax)."""
    track_length: int = 8
    """Beyond max_gap, and up to this many frames, observations come from tracks chained through adjacent flows."""
    init_frames: int = 7
    """Each starting two-view candidate is grown to this many frames before the best is chosen."""
    ba_iterations: int = 50
    """Levenberg-Marquardt iterations of the final bundle adjustment (0: keep the incremental cameras)."""
    optimise_focal: bool = True
    """Bundle adjustment refines the focal length too."""
    focal_candidates: Tuple[float, ...] = (0.5, 0.7, 1.0, 1.4, 2.0)
    """Starting focal lengths, times the sweep's choice: each seeds the start, and the lowest reprojection error
    after adjusting the first init_frames frames (focal included) wins."""
    sparse_init: bool = True
    """Adjacent-frame flow starts from SIFT matches interpolated over the frame, not from zero: coarse-to-fine DIS
    misses large motions of fine textures (they average out at its coarse levels) and then reports a small,
    forward-backward consistent, wrong flow (development orbit 30003: median error 24 px -> 0.7 px)."""
    seed: int = 0


@dataclass
class FlowCamerasResult:
    c2w_opencv: np.ndarray
    """[L, 4, 4] OpenCV camera-to-world; frame 0 is the identity; mean adjacent step 1."""
    K: np.ndarray
    """[3, 3] pixels of the input frames."""
    focal_scores: Dict[float, float] = field(default_factory=dict)
    """Sweep: focal length (pixels) -> truncated Sampson error of the adjacent pairs."""
    c2w_incremental: np.ndarray = None
    """[L, 4, 4] the incremental registration's cameras, before the final bundle adjustment."""
    focal_incremental: float = float("nan")
    ba_median_error: float = float("nan")
    """Median reprojection error (pixels) after bundle adjustment."""

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


def _rays(pts: np.ndarray, focal: float, W: int, H: int) -> np.ndarray:
    """Pixel positions [N, 2] -> camera rays [N, 3] with z = 1 (OpenCV)."""
    return np.concatenate([(pts - [W / 2, H / 2]) / focal, np.ones((len(pts), 1))], 1)


def triangulate_depth(ray_i, ray_j, c2w_i, c2w_j):
    """Depths along camera-i rays [M, 3] (z = 1) of the points closest to the matching camera-j rays [M, 3], and
    the angle (degrees) between each pair of rays. Cameras: OpenCV c2w [4, 4]."""
    a, b = ray_i @ c2w_i[:3, :3].T, ray_j @ c2w_j[:3, :3].T  # world directions; depth is camera i's z
    w0 = c2w_i[:3, 3] - c2w_j[:3, 3]
    aa, bb, ab = (a * a).sum(1), (b * b).sum(1), (a * b).sum(1)
    d, e = a @ w0, b @ w0
    den = aa * bb - ab**2
    depth = np.where(den > 1e-12, (ab * e - bb * d) / np.maximum(den, 1e-12), np.nan)
    angle = np.degrees(np.arccos(np.clip(ab / np.sqrt(aa * bb), -1.0, 1.0)))
    return depth, angle


class FlowBundle:
    """Flow observations of one clip as flat tensors, and robust bundle adjustment over any subset of its frames.

    samples: per frame [N_i, 2] pixel centres; observations: (i, j, idx [M] into samples[i], positions in frame j
    [M, 2]). Unknowns: OpenCV c2w per frame, one depth per sample (along its ray in its own frame), one focal
    length (principal point at the image centre)."""

    def __init__(self, samples: List[np.ndarray], observations, W: int, H: int):
        self.samples, self.W, self.H, self.L = samples, W, H, len(samples)
        self.offsets = np.cumsum([0] + [len(s) for s in samples])
        self.observations = observations
        self.I = np.concatenate([np.full(len(o[2]), o[0]) for o in observations])
        self.J = np.concatenate([np.full(len(o[2]), o[1]) for o in observations])
        self.S = np.concatenate([self.offsets[o[0]] + o[2] for o in observations])
        self.target = np.concatenate([o[3] for o in observations])
        self.pix = np.concatenate(samples)

    def world_points(self, frame_obs, c2w, depth, focal):
        """For observations (i, j, idx, pos): world points [M, 3] of samples[i][idx] with a depth, and their pos."""
        i, j, idx, pos = frame_obs
        d = depth[self.offsets[i] + idx]
        ok = np.isfinite(d)
        X = (_rays(self.samples[i][idx[ok]], focal, self.W, self.H) * d[ok, None]) @ c2w[i][:3, :3].T + c2w[i][:3, 3]
        return X, pos[ok]

    def triangulate(self, registered: np.ndarray, c2w, depth, focal, min_angle: float) -> np.ndarray:
        """Give a depth to every sample of a registered frame that has none yet, from its observation in the
        nearest registered frame whose rays meet at more than min_angle degrees. Returns the updated depths."""
        depth = depth.copy()
        for i, j, idx, pos in sorted(self.observations, key=lambda o: abs(o[1] - o[0])):
            if not (registered[i] and registered[j]):
                continue
            rows = self.offsets[i] + idx
            todo = ~np.isfinite(depth[rows])
            if not todo.any():
                continue
            d, angle = triangulate_depth(_rays(self.samples[i][idx[todo]], focal, self.W, self.H),
                                         _rays(pos[todo], focal, self.W, self.H), c2w[i], c2w[j])
            ok = np.isfinite(d) & (d > 0) & (angle > min_angle)
            depth[rows[todo][ok]] = d[ok]
        return depth

    def adjust(self, c2w, depth, focal, free: np.ndarray, iterations: int, optimise_focal: bool):
        """Robust bundle adjustment by Levenberg-Marquardt with the depths eliminated (Schur complement): minimise
        sum log(1 + r^2) over the reprojection residuals r (pixels, x and y apart) of every observation between
        registered frames (c2w rows without NaN) by samples with a depth, by iteratively reweighted Gauss-Newton
        steps. Poses of registered frames with free[i] move (frame 0 never), the focal length if optimise_focal,
        and the depths involved always. Unlike first-order methods (L-BFGS, tried first) it follows the long,
        narrow valleys where rotation trades against translation and depth: from ground truth rotated by 3 deg per
        frame, L-BFGS ended at 3.9 deg per adjacent pair, this at 0.6. Jacobians per observation come from
        torch.func. Returns (c2w, depth, focal, median residual norm in pixels)."""
        import scipy.sparse as sp
        from torch.func import jacrev, vmap

        L = self.L
        registered = np.isfinite(c2w[:, 0, 0])
        active = registered[self.I] & registered[self.J] & np.isfinite(depth[self.S])
        if not active.any():  # nothing links the registered frames yet: nothing to adjust
            return c2w, depth, focal, float("nan")
        I, J = self.I[active], self.J[active]
        used = np.unique(self.S[active])
        slot = np.full(len(depth), -1)
        slot[used] = np.arange(len(used))
        Sl = slot[self.S[active]]
        T = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        pix, target = T(self.pix[used][Sl]), T(self.target[active])
        R0 = np.where(registered[:, None, None], c2w[:, :3, :3], np.eye(3))
        c0 = np.where(registered[:, None], c2w[:, :3, 3], 0.0)
        R0i, R0j, c0i, c0j = T(R0[I]), T(R0[J]), T(c0[I]), T(c0[J])
        centre = torch.tensor([self.W / 2, self.H / 2], dtype=torch.float64)
        nP = 6 * L  # per frame [rotation update (3), centre update (3)]; frame 0's columns are dropped

        def one(pi, pj, log_f, log_d, p, tgt, Ri, Rj, ci, cj):
            f = log_f.exp()
            ray = torch.cat([(p - centre) / f, torch.ones(1, dtype=p.dtype)])
            X = axis_angle_to_matrix(pi[:3]) @ Ri @ (ray * log_d.exp()) + ci + pi[3:]
            Xj = (axis_angle_to_matrix(pj[:3]) @ Rj).T @ (X - cj - pj[3:])
            return (f * Xj[:2] / Xj[2].clamp_min(1e-3) + centre - tgt).clamp(-1e4, 1e4)

        def split(x):
            poses = T(x[:nP].reshape(L, 6))
            return poses, torch.tensor(x[nP]), T(x[nP + 1 :])

        def fun(x):
            poses, log_f, log_d = split(x)
            with torch.no_grad():
                r = vmap(one)(poses[I], poses[J], log_f.expand(len(I)), log_d[Sl], pix, target, R0i, R0j, c0i, c0j)
            return r.reshape(-1).numpy()

        jac_one = vmap(jacrev(one, argnums=(0, 1, 2, 3)))
        rows = np.repeat(np.arange(2 * len(I)), 14)

        def jac(x):
            poses, log_f, log_d = split(x)
            Jpi, Jpj, Jf, Jd = jac_one(poses[I], poses[J], log_f.expand(len(I)), log_d[Sl], pix, target, R0i, R0j, c0i, c0j)
            vals = torch.cat([Jpi, Jpj, Jf[..., None], Jd[..., None]], -1).reshape(-1).numpy()  # [2N * 14]
            cols = np.concatenate([6 * I[:, None] + np.arange(6), 6 * J[:, None] + np.arange(6),
                                   np.full((len(I), 1), nP), nP + 1 + Sl[:, None]], 1)  # [N, 14]
            cols = np.repeat(cols, 2, 0).reshape(-1)
            return sp.csr_matrix((vals, (rows, cols)), shape=(2 * len(I), len(x)))

        x = np.concatenate([np.zeros(nP), [np.log(focal)], np.log(depth[used])])
        movable = np.append(np.repeat(free & registered & (np.arange(L) > 0), 6), optimise_focal)
        pose_cols = np.flatnonzero(movable)
        r = fun(x)
        cost = float(np.log1p(r**2).sum())
        lam = 1e-3
        for _ in range(iterations):
            Jm = jac(x)
            w = 1.0 / (1.0 + r**2)  # IRLS weights of the Cauchy loss log(1 + r^2)
            Jp, Jz = Jm[:, pose_cols], Jm[:, nP + 1 :]
            WJp = Jp.multiply(w[:, None]).tocsr()
            A = (Jp.T @ WJp).toarray()
            B = (WJp.T @ Jz).toarray()  # [poses, depths]
            C = np.asarray(Jz.multiply(Jz).multiply(w[:, None]).sum(0)).ravel()
            gp, gz = Jp.T @ (w * r), Jz.T @ (w * r)
            improved = False
            for _ in range(20):  # Levenberg-Marquardt: raise the damping until the step lowers the cost
                Ad = A + lam * np.diag(np.diag(A) + 1e-9)
                Cd = C * (1 + lam) + 1e-12
                BC = B / Cd
                dp = np.linalg.solve(Ad - BC @ B.T, -(gp - BC @ gz))
                dz = np.clip(-(gz + B.T @ dp) / Cd, -2.0, 2.0)  # log-depth: a wild step would overflow exp
                x_new = x.copy()
                x_new[pose_cols] += dp
                x_new[nP + 1 :] += dz
                r_new = fun(x_new)
                cost_new = float(np.log1p(r_new**2).sum())
                if np.isfinite(cost_new) and cost_new < cost:
                    x, r, improved = x_new, r_new, cost - cost_new > 1e-6 * cost
                    cost, lam = cost_new, max(lam / 3, 1e-7)
                    break
                lam *= 5
            if not improved:
                break
        poses, log_f, log_d = split(x)
        out = c2w.copy()
        R = (axis_angle_to_matrix(poses[:, :3]).numpy() @ R0)
        out[registered, :3, :3], out[registered, :3, 3] = R[registered], (c0 + poses[:, 3:].numpy())[registered]
        depth = depth.copy()
        depth[used] = np.exp(x[nP + 1 :])
        err = float(np.median(np.linalg.norm(r.reshape(-1, 2), axis=1))) if len(r) else float("nan")
        return out, depth, float(np.exp(x[nP])), err


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

def solve_cameras(frames: np.ndarray, cfg: FlowCamerasConfig = FlowCamerasConfig(), focal: float = None) -> FlowCamerasResult:
    """Cameras for one clip. frames: [L, H, W, 3] uint8 RGB in temporal order, L >= 2. focal: known focal length in
    pixels (None: estimated). Returns OpenCV c2w [L, 4, 4] and K [3, 3]."""
    L, H, W = frames.shape[:3]
    samples, observations, matches = clip_observations(frames, cfg)
    scores, given_focal = {}, focal
    if focal is None:
        focal, scores = estimate_focal(matches, W, H, cfg)
    bundle = FlowBundle(samples, observations, W, H)
    # Start: every two-view candidate between frame 0 and a later frame (below init_frames), at every focal
    # candidate, seeds a reconstruction of the first init_frames frames, adjusted together (focal included); the
    # lowest reprojection error goes on. A wrong focal length makes an orbit's rotations wrong by a constant
    # fraction, and the sweep alone was off by up to 2x.
    first = min(cfg.init_frames, L)
    best = None
    for f0 in [float(focal) * m for m in (cfg.focal_candidates if given_focal is None else (1.0,))]:
        K = intrinsics_matrix(f0, f0, W / 2, H / 2)
        for g in sorted(j for (i, j) in matches if i == 0 and j < first):
            for T in essential_candidates(*matches[(0, g)], K, cfg):
                start = np.full((L, 4, 4), np.nan)
                start[0], start[g] = np.eye(4), T
                c2w, depth, _ = register_incrementally(bundle, start, f0, cfg, first)
                c2w, depth, f, err = bundle.adjust(c2w, depth, f0, np.ones(L, bool), cfg.window_iterations,
                                                   cfg.optimise_focal and given_focal is None)
                if best is None or err < best[2]:
                    best = (c2w, depth, err, float(f))
    focal = best[3]
    K = intrinsics_matrix(focal, focal, W / 2, H / 2)
    c2w, depth, _ = register_incrementally(bundle, best[0], focal, cfg, L)
    result = FlowCamerasResult(c2w, K, scores, c2w_incremental=c2w.copy(), focal_incremental=focal)
    if cfg.ba_iterations > 0:
        free = np.arange(L) > 0
        c2w, depth, focal, err = bundle.adjust(c2w, depth, focal, free, cfg.ba_iterations, cfg.optimise_focal)
        result.c2w_opencv, result.K, result.ba_median_error = c2w, intrinsics_matrix(focal, focal, W / 2, H / 2), err
    return result
