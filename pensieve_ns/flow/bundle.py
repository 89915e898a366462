"""Robust bundle adjustment of the flow observations of one clip (the flow-geometry camera solver's back end).

Unknowns: an OpenCV camera-to-world [4, 4] per frame (x right, y down, z forward), one depth per sample along its
ray in its own frame, one focal length (principal point at the image centre, pixel centres at x + 0.5 as in
``cameras.intrinsics_matrix``).
"""

from __future__ import annotations

from typing import List

import numpy as np


def _skew(v: np.ndarray) -> np.ndarray:
    """[N, 3] -> cross-product matrices [N, 3, 3]: skew(v) @ u = v x u."""
    z = np.zeros(len(v))
    return np.stack([z, -v[:, 2], v[:, 1], v[:, 2], z, -v[:, 0], -v[:, 1], v[:, 0], z], 1).reshape(-1, 3, 3)


def rotation_and_right_jacobian(w: np.ndarray):
    """Axis-angle [N, 3] -> (R = exp(skew(w)) [N, 3, 3], right Jacobian Jr(w) [N, 3, 3]), so that
    exp(skew(w + d)) ~ R exp(skew(Jr d)) for a small d. Taylor forms below 1e-4 rad (``cameras.axis_angle_to_matrix``
    switches at the same angle)."""
    t2 = (w * w).sum(1)[:, None, None]
    small = t2 < 1e-8
    t = np.sqrt(np.where(small, 1.0, t2))
    a = np.where(small, 1 - t2 / 6, np.sin(t) / t)  # sin t / t
    b = np.where(small, 0.5 - t2 / 24, (1 - np.cos(t)) / t**2)  # (1 - cos t) / t^2
    c = np.where(small, 1 / 6 - t2 / 120, (t - np.sin(t)) / t**3)  # (t - sin t) / t^3
    S = _skew(w)
    S2 = S @ S
    eye = np.eye(3)
    return eye + a * S + b * S2, eye - b * S + c * S2


def reprojection(poses, log_f, log_d, R0, c0, I, J, pix, target, centre, jacobian: bool = False):
    """Reprojection residuals of N observations, and optionally their Jacobian (bundle adjustment's model).

    Observation n: a sample at pixel pix[n] [2] of frame I[n], at depth exp(log_d[n]) along its ray (z = 1, focal
    exp(log_f), principal point centre [2]), is seen by frame J[n]; its residual [2] is where it lands minus
    target[n], in pixels. Cameras are OpenCV c2w: frame k's rotation is exp(skew(poses[k, :3])) @ R0[k] and its
    centre c0[k] + poses[k, 3:], with poses [L, 6] the updates and R0 [L, 3, 3], c0 [L, 3] fixed. The z-depth in
    frame J[n] is clamped at 1e-3 and the residual at +-1e4 px, where the Jacobian is zero as for any clamp.
    Returns residuals [N, 2]; with jacobian, also d residual / d [poses[I] (6), poses[J] (6), log_f, log_d]
    [N, 2, 14]. Rotations are per frame, so the per-observation work is vector arithmetic."""
    E, Jr = rotation_and_right_jacobian(poses[:, :3])
    R = E @ R0  # frame rotations [L, 3, 3]
    f, d = np.exp(log_f), np.exp(log_d)
    ray = np.concatenate([(pix - centre) / f, np.ones((len(pix), 1))], 1) * d[:, None]
    a = (R[I] * ray[:, None, :]).sum(-1)  # camera I's centre to the point, world axes
    v = a + (c0 + poses[:, 3:])[I] - (c0 + poses[:, 3:])[J]  # camera J's centre to the point
    Xj = (R[J] * v[:, :, None]).sum(1)
    zc = np.maximum(Xj[:, 2], 1e-3)
    raw = f * Xj[:, :2] / zc[:, None] + centre - target
    r = np.clip(raw, -1e4, 1e4)
    if not jacobian:
        return r
    n = len(pix)
    P = np.zeros((n, 2, 3))  # d residual / d Xj
    P[:, 0, 0] = P[:, 1, 1] = f / zc
    P[:, :, 2] = np.where(Xj[:, 2] >= 1e-3, 1.0, 0.0)[:, None] * -f * Xj[:, :2] / zc[:, None] ** 2
    PM = P @ np.transpose(R, (0, 2, 1))[J]  # d residual / d X (world point) = P R_J^T
    EJr = E @ Jr  # d (E u) / d w = -E skew(u) Jr(w) = -skew(E u) E Jr(w)
    out = np.empty((n, 2, 14))
    # m^T skew(y) = (m x y)^T, row by row
    out[:, :, 0:3] = -np.cross(PM, a[:, None]) @ EJr[I]
    out[:, :, 3:6] = PM
    # d (E_J^T v) / d w_J = skew(E_J^T v) Jr(w_J), and R0_J^T skew(y) = skew(R0_J^T y) R0_J^T
    out[:, :, 6:9] = np.cross(P, Xj[:, None]) @ (np.transpose(R0, (0, 2, 1)) @ Jr)[J]
    out[:, :, 9:12] = -PM
    dray = np.concatenate([-(pix - centre) / f, np.zeros((n, 1))], 1) * d[:, None]  # d (ray d) / d log_f
    out[:, :, 12] = f * Xj[:, :2] / zc[:, None] + (PM * (R[I] * dray[:, None, :]).sum(-1)[:, None, :]).sum(-1)
    out[:, :, 13] = (PM * a[:, None, :]).sum(-1)
    out *= (np.abs(raw) <= 1e4)[:, :, None]
    return r, out


def reprojection_autograd(poses, log_f, log_d, R0, c0, I, J, pix, target, centre):
    """``reprojection``'s residuals [N, 2] and Jacobian [N, 2, 14] by torch autograd (``torch.func``) through
    ``cameras.axis_angle_to_matrix``: the reference the analytic Jacobian is tested against, and the way the
    adjustment computed it before (``benchmarks/bundle_jacobian_timing.py`` times both)."""
    import torch
    from torch.func import jacrev, vmap

    from pensieve_ns.cameras import axis_angle_to_matrix

    cen = torch.from_numpy(np.asarray(centre, np.float64))

    def one(pi, pj, lf, ld, p, tgt, Ri, Rj, ci, cj):
        ray = torch.cat([(p - cen) / lf.exp(), torch.ones(1, dtype=p.dtype)])
        X = axis_angle_to_matrix(pi[:3]) @ Ri @ (ray * ld.exp()) + ci + pi[3:]
        Xj = (axis_angle_to_matrix(pj[:3]) @ Rj).T @ (X - cj - pj[3:])
        return (lf.exp() * Xj[:2] / Xj[2].clamp_min(1e-3) + cen - tgt).clamp(-1e4, 1e4)

    T = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
    args = (T(poses[I]), T(poses[J]), torch.full((len(I),), float(log_f), dtype=torch.float64), T(log_d), T(pix),
            T(target), T(R0[I]), T(R0[J]), T(c0[I]), T(c0[J]))
    with torch.no_grad():
        r = vmap(one)(*args)
    Jpi, Jpj, Jf, Jd = vmap(jacrev(one, argnums=(0, 1, 2, 3)))(*args)
    return r.numpy(), torch.cat([Jpi, Jpj, Jf[..., None], Jd[..., None]], -1).numpy()


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
        self.inlier = np.ones(len(self.I), bool)
        """[observations] False: rejected as an outlier (``reject_outliers``), left out of every adjustment."""

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

    def project(self, c2w, depth, focal):
        """Every observation's sample, at its depth [samples], seen from camera j: (pixel [observations, 2],
        z-depth in camera j [observations]). Cameras: OpenCV c2w [L, 4, 4]."""
        ray = _rays(self.pix[self.S], focal, self.W, self.H) * depth[self.S, None]
        X = np.einsum("nab,nb->na", c2w[self.I, :3, :3], ray) + c2w[self.I, :3, 3]
        Xj = np.einsum("nba,nb->na", c2w[self.J, :3, :3], X - c2w[self.J, :3, 3])
        with np.errstate(divide="ignore", invalid="ignore"):
            return focal * Xj[:, :2] / Xj[:, 2:] + [self.W / 2, self.H / 2], Xj[:, 2]

    def parallax(self, c2w, depth, focal, use: np.ndarray) -> np.ndarray:
        """Per sample [samples]: the largest angle (degrees) at its world point between the rays from camera i (its
        own frame) and from camera j, over the observations in use [observations, bool]; 0 where none is in use,
        NaN where the sample has no depth. Cameras: OpenCV c2w [L, 4, 4]. A depth that no pair of cameras sees at
        an angle is not measured: bundle adjustment can move it anywhere along the ray at almost no cost."""
        ray = _rays(self.pix[self.S], focal, self.W, self.H) * depth[self.S, None]
        a = np.einsum("nab,nb->na", c2w[self.I, :3, :3], ray)  # camera i's centre to the point
        b = a + c2w[self.I, :3, 3] - c2w[self.J, :3, 3]  # camera j's centre to the point
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        keep = use & np.isfinite(angle)
        out = np.zeros(len(depth))
        np.maximum.at(out, self.S[keep], angle[keep])
        return np.where(np.isfinite(depth), out, np.nan)

    def residuals(self, c2w, depth, focal) -> np.ndarray:
        """Reprojection error (pixels) of every observation [observations]; NaN where a frame is unregistered or
        the sample has no depth."""
        proj, z = self.project(c2w, depth, focal)
        err = np.linalg.norm(proj - self.target, axis=1)
        return np.where(z <= 0, np.inf, err)  # behind camera j: an outlier; NaN stays NaN

    def reject_outliers(self, c2w, depth, focal, threshold: float) -> float:
        """Mark observations whose reprojection error exceeds threshold pixels as outliers (``inlier`` False), for
        good: the Cauchy loss still pulls with most of its strength at 2-5 px, where wrong flow at occlusion
        boundaries lands. Returns the fraction of evaluated observations rejected."""
        err = self.residuals(c2w, depth, focal)
        evaluated = self.inlier & ~np.isnan(err)
        bad = evaluated & ~(err <= threshold)
        self.inlier &= ~bad
        return float(bad.sum() / max(evaluated.sum(), 1))

    def adjust(self, c2w, depth, focal, free: np.ndarray, iterations: int, optimise_focal: bool):
        """Robust bundle adjustment by Levenberg-Marquardt with the depths eliminated (Schur complement): minimise
        sum log(1 + r^2) over the reprojection residuals r (pixels, x and y apart) of every observation between
        registered frames (c2w rows without NaN) by samples with a depth, by iteratively reweighted Gauss-Newton
        steps. Poses of registered frames with free[i] move (frame 0 never), the focal length if optimise_focal,
        and the depths involved always. Unlike first-order methods (L-BFGS, tried first) it follows the long,
        narrow valleys where rotation trades against translation and depth: from ground truth rotated by 3 deg per
        frame, L-BFGS ended at 3.9 deg per adjacent pair, this at 0.6. Jacobians per observation are analytic
        (``reprojection``). Returns (c2w, depth, focal, median residual norm in pixels)."""
        import scipy.sparse as sp

        L = self.L
        registered = np.isfinite(c2w[:, 0, 0])
        active = self.inlier & registered[self.I] & registered[self.J] & np.isfinite(depth[self.S])
        if not active.any():  # nothing links the registered frames yet: nothing to adjust
            return c2w, depth, focal, float("nan")
        I, J = self.I[active], self.J[active]
        used = np.unique(self.S[active])
        slot = np.full(len(depth), -1)
        slot[used] = np.arange(len(used))
        Sl = slot[self.S[active]]
        R0 = np.where(registered[:, None, None], c2w[:, :3, :3], np.eye(3))
        c0 = np.where(registered[:, None], c2w[:, :3, 3], 0.0)
        fixed = (R0, c0, I, J, self.pix[used][Sl], self.target[active], np.array([self.W / 2, self.H / 2]))
        nP = 6 * L  # per frame [rotation update (3), centre update (3)]; frame 0's columns are dropped

        def split(x):
            return x[:nP].reshape(L, 6), x[nP], x[nP + 1 :]

        def fun(x):
            poses, log_f, log_d = split(x)
            return reprojection(poses, log_f, log_d[Sl], *fixed).reshape(-1)

        # Each residual row involves 13 camera unknowns (the poses of frames I and J, the focal length) and ONE
        # depth, so the Jacobian is sparse with a fixed pattern: built once, its values replaced at each step. The
        # depths' block of the normal equations is diagonal, summed per depth through a one-hot matrix.
        n_rows = 2 * len(I)
        cols = np.concatenate([6 * I[:, None] + np.arange(6), 6 * J[:, None] + np.arange(6), np.full((len(I), 1), nP)], 1)
        pattern = (np.repeat(cols, 2, 0).ravel(), np.arange(n_rows + 1) * 13)  # csr indices, indptr (I != J)
        sparse = lambda values: sp.csr_matrix((values.ravel(), *pattern), shape=(n_rows, nP + 1))  # noqa: E731
        slot_of_row = np.repeat(Sl, 2)
        per_depth = sp.csr_matrix((np.ones(n_rows), (slot_of_row, np.arange(n_rows))), shape=(len(used), n_rows))

        def linearise(x):
            """Residuals [rows], camera Jacobian values [rows, 13] (``pattern``'s columns), depth Jacobian [rows]."""
            poses, log_f, log_d = split(x)
            r, jac = reprojection(poses, log_f, log_d[Sl], *fixed, jacobian=True)
            jac = jac.reshape(n_rows, 14)
            return r.reshape(-1), jac[:, :13], jac[:, 13]

        x = np.concatenate([np.zeros(nP), [np.log(focal)], np.log(depth[used])])
        movable = np.append(np.repeat(free & registered & (np.arange(L) > 0), 6), optimise_focal)
        pose_cols = np.flatnonzero(movable)
        r = fun(x)
        cost = float(np.log1p(r**2).sum())
        lam = 1e-3
        for _ in range(iterations):
            r, jc, jz = linearise(x)
            w = 1.0 / (1.0 + r**2)  # IRLS weights of the Cauchy loss log(1 + r^2)
            WJt = sparse(jc * w[:, None]).T.tocsr()  # [cameras, rows]
            A = (WJt @ sparse(jc)).toarray()[np.ix_(pose_cols, pose_cols)]
            depth_jac = sp.csr_matrix((jz, slot_of_row, np.arange(n_rows + 1)), shape=(n_rows, len(used)))
            B = (WJt @ depth_jac).toarray()[pose_cols]  # [poses, depths]
            C = per_depth @ (w * jz**2)
            gp, gz = (WJt @ r)[pose_cols], per_depth @ (w * jz * r)
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
        R = rotation_and_right_jacobian(poses[:, :3])[0] @ R0
        out[registered, :3, :3], out[registered, :3, 3] = R[registered], (c0 + poses[:, 3:])[registered]
        depth = depth.copy()
        depth[used] = np.exp(x[nP + 1 :])
        err = float(np.median(np.linalg.norm(r.reshape(-1, 2), axis=1))) if len(r) else float("nan")
        return out, depth, float(np.exp(x[nP])), err
