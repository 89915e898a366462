"""Calibration where motion alone does not pin it down: the rotation-only model of a clip.

A camera that turns without moving maps frame a onto frame b by the homography H = K R K^-1, so the focal length is
the one that makes K^-1 H K a rotation (a camera turning about its centre calibrates itself; Hartley 1994). Video
is close to that whenever the scene is far compared with how far the camera moves: pans, and handheld clips with
little parallax, exactly where self-calibration from parallax (COLMAP's bundle adjustment) is ill-posed and runs
away. So the solver (``solver``) starts every solve from ``rotation_focal``'s focal length, and a clip whose flow
homographies explain (a pan) gets ``rotation_only_cameras``: a rotation per frame, no translation.

Conventions: keypoints in image coordinates (pixel centres at +0.5), principal point at the frame centre; cameras
out are OpenCV camera-to-world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from jaxtyping import Float

from pensieve_ns.sfm.tracks import Pair, Tracks


@dataclass
class RotationFit:
    """The rotation-only model's view of a clip."""

    focal: Optional[float]
    """Focal length (working pixels) that makes the homographies closest to rotations; None: no usable pair."""
    homography_inliers: float
    """Mean share of pair matches within 1 pixel of one homography: near 1 for a pan, lower with parallax."""
    rotation_deg: float
    """Largest rotation (degrees) between two frames of a pair, at that focal length."""
    residual: float
    """Mean over pairs of ||M M^T - I||^2 at that focal length (M = K^-1 H K, det 1): how well turning in place
    explains the flow. Validation: pans <= 0.002, the handheld desk clip 0.007-0.008 (its rotation-only focal
    length 2-4 % off), walks 0.04-0.05 and orbits or arcs 0.2-3 (8-54 % off)."""
    homographies: Dict[Pair, Float[np.ndarray, "3 3"]]
    """Pair -> homography between centred coordinates."""


def pair_homographies(tracks: Tracks, pairs: List[Pair], min_matches: int = 30) -> Tuple[Dict[Pair, np.ndarray], List[float]]:
    """A RANSAC homography (1-pixel threshold) per pair, in coordinates centred on the principal point, and the
    share of the pair's matches it explains."""
    H, W = tracks.hw
    centre = np.array([W / 2, H / 2])
    out, shares = {}, []
    for a, b in pairs:
        m = tracks.pair_matches(a, b)
        if len(m) < min_matches:
            continue
        pa, pb = tracks.keypoints[a][m[:, 0]] - centre, tracks.keypoints[b][m[:, 1]] - centre
        hom, mask = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, 1.0, maxIters=2000, confidence=0.999)
        if hom is None:
            continue
        out[(a, b)] = hom
        shares.append(float(mask.mean()))
    return out, shares


def _rotation_residual(focal: float, homographies: Float[np.ndarray, "P 3 3"]) -> float:
    """How far K^-1 H K is from a (scaled) rotation, summed over pairs: ||M M^T - I||^2 with det M = 1 (a
    reflection, det <= 0, costs 3)."""
    K, Ki = np.diag([focal, focal, 1.0]), np.diag([1 / focal, 1 / focal, 1.0])
    M = Ki @ homographies @ K
    det = np.linalg.det(M)
    ok = det > 0
    M = M[ok] / np.cbrt(det[ok])[:, None, None]
    return float((np.linalg.norm(M @ np.swapaxes(M, 1, 2) - np.eye(3), axis=(1, 2)) ** 2).sum() + 3.0 * (~ok).sum())


def rotation_focal(tracks: Tracks, pairs: List[Pair], focal_range: Tuple[float, float]) -> RotationFit:
    """The rotation-only focal length of a clip (module docstring): a log-spaced search over focal_range (times
    the long side), refined by golden section."""
    H, W = tracks.hw
    homs, shares = pair_homographies(tracks, pairs)
    if not homs:
        return RotationFit(None, 0.0, 0.0, float("inf"), {})
    values = np.stack(list(homs.values()))
    grid = np.exp(np.linspace(np.log(focal_range[0] * max(H, W)), np.log(focal_range[1] * max(H, W)), 120))
    costs = [_rotation_residual(f, values) for f in grid]
    k = int(np.argmin(costs))
    lo, hi = np.log(grid[max(k - 1, 0)]), np.log(grid[min(k + 1, len(grid) - 1)])
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        m1, m2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if _rotation_residual(np.exp(m1), values) < _rotation_residual(np.exp(m2), values):
            hi = m2
        else:
            lo = m1
    focal = float(np.exp((lo + hi) / 2))
    K, Ki = np.diag([focal, focal, 1.0]), np.diag([1 / focal, 1 / focal, 1.0])
    angles = [np.degrees(np.arccos(np.clip((np.trace(_nearest_rotation(Ki @ h @ K)) - 1) / 2, -1, 1))) for h in values]
    edge = k in (0, len(grid) - 1)  # the minimum sits on the search's edge: no focal length makes them rotations
    residual = _rotation_residual(focal, values) / len(values)
    return RotationFit(None if edge else focal, float(np.mean(shares)), float(max(angles)),
                       float("inf") if edge else residual, homs)


def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    return R if np.linalg.det(R) > 0 else U @ np.diag([1, 1, -1]) @ Vt


def rotation_only_cameras(tracks: Tracks, frames: List[int], focal: float, pairs: List[Pair]) -> Tuple[Dict[int, np.ndarray], float, float]:
    """Cameras of a pan: one rotation per frame and the focal length, adjusted together (robust least squares)
    so that K R_b R_a^T K^-1 maps every pair's matches onto each other; no translation. Starts from the adjacent
    homographies chained. Returns (frame -> OpenCV camera-to-world, focal length, median residual in pixels)."""
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix
    from scipy.spatial.transform import Rotation

    H, W = tracks.hw
    centre = np.array([W / 2, H / 2])
    index = {k: n for n, k in enumerate(frames)}
    K, Ki = np.diag([focal, focal, 1.0]), np.diag([1 / focal, 1 / focal, 1.0])
    start = [np.eye(3)]  # world-to-camera rotations, frame 0 the identity
    for a, b in zip(frames[:-1], frames[1:]):
        m = tracks.pair_matches(a, b)
        pa, pb = tracks.keypoints[a][m[:, 0]] - centre, tracks.keypoints[b][m[:, 1]] - centre
        hom = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, 1.0)[0] if len(m) >= 8 else None
        step = np.eye(3) if hom is None else _nearest_rotation(Ki @ hom @ K)
        start.append(step @ start[-1])
    obs = []  # (position of a, position of b, ray in a [3], pixel in b [2])
    for a, b in pairs:
        m = tracks.pair_matches(a, b)
        if len(m):
            obs.append((index[a], index[b], tracks.keypoints[a][m[:, 0]] - centre, tracks.keypoints[b][m[:, 1]] - centre))
    n = len(frames)

    def residuals(x):
        f = np.exp(x[0])
        R = Rotation.from_rotvec(x[1:].reshape(n, 3)).as_matrix()
        out = []
        for ia, ib, pa, pb in obs:
            rays = np.concatenate([pa / f, np.ones((len(pa), 1))], 1) @ (R[ib] @ R[ia].T).T
            out.append((f * rays[:, :2] / rays[:, 2:3] - pb).ravel())
        return np.concatenate(out)

    sparsity = lil_matrix((sum(2 * len(o[2]) for o in obs), 1 + 3 * n), dtype=int)
    row = 0
    for ia, ib, pa, _ in obs:
        rows = slice(row, row + 2 * len(pa))
        sparsity[rows, 0] = 1
        sparsity[rows, 1 + 3 * ia: 4 + 3 * ia] = 1
        sparsity[rows, 1 + 3 * ib: 4 + 3 * ib] = 1
        row += 2 * len(pa)
    x0 = np.concatenate([[np.log(focal)], Rotation.from_matrix(np.stack(start)).as_rotvec().ravel()])
    fit = least_squares(residuals, x0, jac_sparsity=sparsity, loss="soft_l1", f_scale=1.0, x_scale="jac", max_nfev=100)
    R = Rotation.from_rotvec(fit.x[1:].reshape(n, 3)).as_matrix()
    R = R @ R[0].T  # frame 0 the identity
    c2w = {}
    for k, Rk in zip(frames, R):
        pose = np.eye(4)
        pose[:3, :3] = Rk.T
        c2w[k] = pose
    err = np.linalg.norm(fit.fun.reshape(-1, 2), axis=1)
    return c2w, float(np.exp(fit.x[0])), float(np.median(err))
