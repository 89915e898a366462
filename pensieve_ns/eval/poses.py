"""Pose metrics: relative rotation / translation-direction errors over frame pairs, accuracies, similarity alignment.

All cameras are OpenCV camera-to-world [N, 4, 4] (torch or numpy). Relative poses are invariant to the
arbitrary world frame the model picks, so pair metrics need no alignment; ATE does (Umeyama similarity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

THRESHOLDS = (5.0, 15.0, 30.0)
AUC_THRESHOLDS = (5.0, 10.0, 20.0)


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Geodesic angle of rotation matrices [..., 3, 3] in degrees."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cos = (a * b).sum(-1) / np.maximum(na * nb, 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pair_indices(n: int) -> Tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, k=1)
    return i, j


@dataclass
class PairErrors:
    """Per-pair quantities for one clip: errors and the magnitudes of predicted and true relative rotations."""

    rot_err: np.ndarray
    trans_err: np.ndarray
    pred_angle: np.ndarray
    true_angle: np.ndarray


def relative_pose_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> PairErrors:
    """For every pair i < j: angle between predicted and true relative rotations R_i^T R_j, and angle between
    predicted and true translation directions R_i^T (c_j - c_i) (undefined directions of zero length count 90 deg)."""
    pred, gt = np.asarray(pred_c2w, np.float64), np.asarray(gt_c2w, np.float64)
    i, j = pair_indices(len(gt))
    rel = lambda T: np.swapaxes(T[i, :3, :3], -1, -2) @ T[j, :3, :3]  # noqa: E731
    tdir = lambda T: (np.swapaxes(T[i, :3, :3], -1, -2) @ (T[j, :3, 3] - T[i, :3, 3])[..., None])[..., 0]  # noqa: E731
    rp, rg = rel(pred), rel(gt)
    rot_err = rotation_angle_deg(np.swapaxes(rp, -1, -2) @ rg)
    tp, tg = tdir(pred), tdir(gt)
    trans_err = np.where(np.linalg.norm(tp, axis=-1) < 1e-9, 90.0, _angle_between(tp, tg))
    return PairErrors(rot_err, trans_err, rotation_angle_deg(rp), rotation_angle_deg(rg))


def accuracy(errors: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> Dict[str, float]:
    return {f"@{t:g}": float((errors < t).mean()) for t in thresholds}


def pose_auc(errors: np.ndarray, thresholds: Sequence[float] = AUC_THRESHOLDS) -> Dict[str, float]:
    """Area under the accuracy-vs-threshold curve up to T, divided by T, for each T (as in PoseDiffusion/VGGSfM,
    where the error of a pair is max(rotation error, translation-direction error)). Computed exactly:
    (1/T) * integral_0^T [err < t] dt = mean(max(0, 1 - err / T))."""
    e = np.asarray(errors, np.float64)
    return {f"@{t:g}": float(np.clip(1.0 - e / t, 0.0, 1.0).mean()) for t in thresholds}


def absolute_trajectory_error(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> Dict[str, Optional[float]]:
    """ATE: RMSE of the camera centres after the similarity (Umeyama) that best maps the predicted centres onto the
    true ones, in the ground truth's units and divided by the true trajectory's extent (largest distance of a
    centre from the centroid; None where the cameras do not move, as in a pan)."""
    pc, gc = np.asarray(pred_c2w, np.float64)[:, :3, 3], np.asarray(gt_c2w, np.float64)[:, :3, 3]
    s, R, t = umeyama(pc, gc)
    rmse = float(np.sqrt((((s * pc @ R.T + t) - gc) ** 2).sum(-1).mean()))
    extent = float(np.linalg.norm(gc - gc.mean(0), axis=-1).max())
    return {"ate": rmse, "ate_rel": rmse / extent if extent > 1e-9 else None}


def summarise(pairs: Sequence[PairErrors]) -> Dict[str, float]:
    """Racc/Tacc at 5/15/30 deg, AUC at 5/10/20 deg, median errors, mean predicted vs true pair angle and their
    correlation."""
    rot = np.concatenate([p.rot_err for p in pairs])
    trans = np.concatenate([p.trans_err for p in pairs])
    pred = np.concatenate([p.pred_angle for p in pairs])
    true = np.concatenate([p.true_angle for p in pairs])
    out = {f"Racc{k}": v for k, v in accuracy(rot).items()}
    out.update({f"Tacc{k}": v for k, v in accuracy(trans).items()})
    out.update({f"AUC{k}": v for k, v in pose_auc(np.maximum(rot, trans)).items()})
    out.update(
        rot_err_median=float(np.median(rot)),
        trans_err_median=float(np.median(trans)),
        pred_pair_angle_mean=float(pred.mean()),
        true_pair_angle_mean=float(true.mean()),
        angle_correlation=float(np.corrcoef(pred, true)[0, 1]) if pred.std() > 1e-9 and true.std() > 1e-9 else 0.0,
        pairs=int(len(rot)),
    )
    return out


def umeyama(src: np.ndarray, dst: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising ||dst - (s R src + t)||² over points [N, 3] (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var) if var > 1e-12 else 1.0
    return s, R, mu_d - s * R @ mu_s


def focal_error(pred_fx: float, gt_fx: float) -> float:
    """Relative focal-length error |f_pred - f_gt| / f_gt."""
    return abs(pred_fx - gt_fx) / gt_fx
