"""Similarity transforms between camera sets (torch): the target-aligned protocol (``similarity_from_cameras``)
and the chaining of reconstruction windows (``similarity_to``).

Cameras are OpenCV camera-to-world [N, 4, 4]. A similarity x -> s R x + t moves a camera by turning its
orientation (R @ R_c2w) and mapping its centre (s R c + t).
"""

from __future__ import annotations

from typing import Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.cameras import matrix_to_quaternion, quaternion_to_matrix

Similarity = Tuple[Tensor, Float[Tensor, "3 3"], Float[Tensor, "3"]]


def markley_mean(quats: Float[Tensor, "N 4"]) -> Float[Tensor, "4"]:
    """Average rotation of unit quaternions (w, x, y, z) (Markley et al. 2007): the eigenvector of the largest
    eigenvalue of sum q q^T, which ignores the sign ambiguity of each q."""
    M = quats.T @ quats
    _, vecs = torch.linalg.eigh(M)
    q = vecs[:, -1]
    return q if q[0] >= 0 else -q


def similarity_from_cameras(src: Float[Tensor, "N 4 4"], dst: Float[Tensor, "N 4 4"]) -> Similarity:
    """(s, R, t) taking the cameras ``src`` onto ``dst`` (docs/method.md §3.3): R is the Markley mean of the per-camera
    rotations R_dst R_src^T; s the ratio of the mean distances of the centres to their centroid (dst / src; 1 when
    the src centres coincide); t matches the centroids."""
    R = quaternion_to_matrix(markley_mean(matrix_to_quaternion(dst[:, :3, :3] @ src[:, :3, :3].transpose(-1, -2))))
    cs, cd = src[:, :3, 3], dst[:, :3, 3]
    spread_s = (cs - cs.mean(0)).norm(dim=-1).mean()
    spread_d = (cd - cd.mean(0)).norm(dim=-1).mean()
    s = spread_d / spread_s if spread_s > 1e-9 else torch.ones((), dtype=src.dtype, device=src.device)
    t = cd.mean(0) - s * R @ cs.mean(0)
    return s, R, t


def similarity_to(P_a: Float[Tensor, "4 4"], P_b: Float[Tensor, "4 4"], Q_a: Float[Tensor, "4 4"], Q_b: Float[Tensor, "4 4"]):
    """(s, R, t) with x -> s R x + t mapping the world of cameras Q onto that of P: Q_a lands exactly on P_a, and
    s is the ratio of the distances between the two cameras' centres (1 where Q's are too close to measure)."""
    R = P_a[:3, :3] @ Q_a[:3, :3].T
    dq = (Q_b[:3, 3] - Q_a[:3, 3]).norm()
    s = (P_b[:3, 3] - P_a[:3, 3]).norm() / dq if dq > 1e-6 else torch.ones((), dtype=P_a.dtype)
    t = P_a[:3, 3] - s * R @ Q_a[:3, 3]
    return s, R, t


def apply_similarity(c2w: Float[Tensor, "N 4 4"], s, R: Float[Tensor, "3 3"], t: Float[Tensor, "3"]) -> Float[Tensor, "N 4 4"]:
    """Cameras (camera-to-world [N, 4, 4]) moved by x -> s R x + t (rotations turn, centres scale and move)."""
    out = c2w.clone()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ R.T + t
    return out
