"""Correspondences of one clip for the flow-geometry camera solver (``pensieve_ns.flow.solver``):
textured samples per frame, dense optical flow between nearby frames, and where each sample lands in the other
frames (direct flow up to max_gap frames apart, chained tracks beyond). Settings are the solver's
``FlowCamerasConfig``.

Conventions: images are [L, H, W, 3] uint8 RGB; a sample at pixel (x, y) of the array has its centre at
(x + 0.5, y + 0.5); flows are [H * up, W * up, 2] in array coordinates of the upsampled frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

import cv2
import numpy as np

if TYPE_CHECKING:
    from pensieve_ns.flow.solver import FlowCamerasConfig


def _grey(image: np.ndarray, up: int) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return g if up == 1 else cv2.resize(g, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)


def frame_samples(image: np.ndarray, cfg: FlowCamerasConfig, rng: np.random.Generator) -> np.ndarray:
    """Textured pixels of one frame [H, W, 3] uint8 -> their centres [N, 2] (x + 0.5, y + 0.5), N <= points_per_frame.
    Untextured pixels (flat colours, white backgrounds) are left out: flow there is interpolated, not measured."""
    g = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    texture = cv2.cornerMinEigenVal(g, blockSize=5)
    ys, xs = np.nonzero(texture > cfg.min_texture)
    idx = np.arange(len(xs))
    if len(idx) > cfg.points_per_frame:
        idx = np.sort(rng.choice(idx, cfg.points_per_frame, replace=False))
    return np.stack([xs[idx], ys[idx]], 1).astype(np.float64) + 0.5


def _sample(field: np.ndarray, pts_up: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a [H, W, 2] field at points [N, 2] (array coordinates), NaN outside."""
    if len(pts_up) == 0:  # remap refuses an empty map
        return np.zeros((0, field.shape[2]), np.float32)
    m = pts_up.astype(np.float32)[:, None]
    return cv2.remap(field, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)[:, 0]


def compose_flow(f_ab: np.ndarray, f_bc: np.ndarray) -> np.ndarray:
    """Flow a -> c [H, W, 2] from flows a -> b and b -> c (array coordinates; zero where a's target leaves b)."""
    H, W = f_ab.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    step = cv2.remap(f_bc, xs + f_ab[..., 0], ys + f_ab[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (f_ab + step).astype(np.float32)


def inverse_flow(f_ab: np.ndarray) -> np.ndarray:
    """Approximate flow b -> a [H, W, 2] of a flow a -> b: -f_ab at the point of a that lands there (two
    fixed-point steps)."""
    H, W = f_ab.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    inv = -f_ab
    for _ in range(2):
        inv = -cv2.remap(f_ab, xs + inv[..., 0], ys + inv[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(inv, np.float32)


def sift_features(grey: np.ndarray):
    """SIFT keypoints of one grey image: (positions [K, 2] float32 in array coordinates, descriptors [K, 128] or
    None). Computed once per frame, then matched against each neighbour."""
    keypoints, descriptors = cv2.SIFT_create(nfeatures=4000, contrastThreshold=0.01).detectAndCompute(grey, None)
    return np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors


def sift_matches(features_a, features_b, ratio: float = 0.8, threshold: float = 2.0):
    """Mutual nearest-neighbour SIFT matches (Lowe's ratio test) between two frames' ``sift_features`` that fit one
    fundamental matrix (MAGSAC, threshold in pixels). Returns positions [M, 2] in a and in b (array coordinates)."""
    (ka, da), (kb, db) = features_a, features_b
    empty = np.zeros((0, 2), np.float32)
    if da is None or db is None or len(ka) < 8 or len(kb) < 8:
        return empty, empty
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    back = {m.queryIdx: m.trainIdx for m in matcher.match(db, da)}
    good = [m[0] for m in matcher.knnMatch(da, db, k=2)
            if len(m) == 2 and m[0].distance < ratio * m[1].distance and back.get(m[0].trainIdx) == m[0].queryIdx]
    pa = ka[[m.queryIdx for m in good]].reshape(-1, 2)
    pb = kb[[m.trainIdx for m in good]].reshape(-1, 2)
    if len(pa) < 8:
        return empty, empty
    F, mask = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, threshold, 0.999)
    if F is None:
        return empty, empty
    keep = mask[:, 0].astype(bool)
    return pa[keep], pb[keep]


def interpolated_flow(pa: np.ndarray, pb: np.ndarray, H: int, W: int) -> np.ndarray:
    """Dense flow [H, W, 2] from sparse matches [M, 2] -> [M, 2]: piecewise linear inside their convex hull,
    nearest match outside (a starting guess for DIS, which refines it)."""
    return interpolate_scattered(pa, pb - pa, H, W).astype(np.float32)


def interpolate_scattered(points: np.ndarray, values: np.ndarray, H: int, W: int) -> np.ndarray:
    """Values [M, C] known at points [M, 2] (x, y on the pixel grid: pixel (i, j) is at x = j, y = i) -> [H, W, C]:
    piecewise linear inside the points' convex hull, the nearest point's value outside."""
    from scipy.interpolate import griddata

    ys, xs = np.mgrid[0:H, 0:W]
    out = np.zeros((H, W, values.shape[1]))
    for k in range(values.shape[1]):
        linear = griddata(points, values[:, k], (xs, ys), method="linear")
        nearest = griddata(points, values[:, k], (xs, ys), method="nearest")
        out[..., k] = np.where(np.isfinite(linear), linear, nearest)
    return out


def adjacent_flows(grey, features, dis, cfg: FlowCamerasConfig) -> Dict[Tuple[int, int], np.ndarray]:
    """DIS flow both ways between adjacent frames, started from SIFT matches interpolated over the frame
    (``sparse_init``) or from zero; with ``velocity_init``, only an anchor is: see ``velocity_chain``."""
    flows: Dict[Tuple[int, int], np.ndarray] = {}
    for i in range(len(grey) - 1):
        for a, b in ((i, i + 1), (i + 1, i)):
            init = None
            if cfg.sparse_init:
                pa, pb = sift_matches(features[a], features[b])
                if len(pa) >= 12:
                    init = interpolated_flow(pa, pb, *grey[a].shape)
            flows[(a, b)] = dis.calc(grey[a], grey[b], init)
    return flows


def velocity_chain(grey, started: Dict[Tuple[int, int], np.ndarray], dis, up: int, min_texture: float) -> Dict[Tuple[int, int], np.ndarray]:
    """Adjacent flows by constant velocity from an anchor: a camera moving smoothly moves the image smoothly, so
    the flow k -> k+1 starts from the flow k -> k-1 negated (and backwards alike), each back flow from the inverse
    of its forward flow. Why: the generated rooms tile their textures, and a flow started from SIFT matches
    (which repeated tiles leave ambiguous) lands one tile off on whole walls and floors for blocks of frames
    (development orbit 30000: median error 14-25 px on 11 of 19 pairs); carried from a right pair, it stays
    right (0.3-0.8 px median on all 19). The anchor: the two consecutive pairs of ``started`` (SIFT-started flows) that
    agree best with constant velocity (fewest textured pixels of frame k+1 where flow k+1 -> k+2 and the
    negated k+1 -> k differ by over 4 px): one tile off comes and goes between pairs, so agreement marks right ones."""
    if len(grey) < 3:
        return started
    return carry_from(grey, started, dis, int(np.argmin(velocity_disagreement(grey, started, up, min_texture))))


def velocity_disagreement(grey, started: Dict[Tuple[int, int], np.ndarray], up: int, min_texture: float) -> List[float]:
    """Per k in 0..L-3: the share of frame k+1's textured pixels where the flows k+1 -> k+2 and k+1 -> k (negated)
    differ by over 4 px: how far pairs (k, k+1) and (k+1, k+2) are from constant velocity."""
    disagree = []
    for k in range(len(grey) - 2):
        textured = cv2.cornerMinEigenVal(grey[k + 1].astype(np.float32) / 255.0, blockSize=5 * up) > min_texture
        gap = np.linalg.norm(started[(k + 1, k + 2)] + started[(k + 1, k)], axis=2)[textured]
        disagree.append(float((gap > 4 * up).mean()) if len(gap) else 1.0)
    return disagree


def carry_from(grey, started: Dict[Tuple[int, int], np.ndarray], dis, m: int) -> Dict[Tuple[int, int], np.ndarray]:
    """Adjacent flows carried by constant velocity from the anchor pairs (m, m+1) and (m+1, m+2) of ``started``."""
    L = len(grey)
    flows = {key: started[key] for key in ((m, m + 1), (m + 1, m), (m + 1, m + 2), (m + 2, m + 1))}
    for k in range(m + 2, L - 1):  # forwards
        flows[(k, k + 1)] = dis.calc(grey[k], grey[k + 1], np.ascontiguousarray(-flows[(k, k - 1)]))
        flows[(k + 1, k)] = dis.calc(grey[k + 1], grey[k], inverse_flow(flows[(k, k + 1)]))
    for k in range(m - 1, -1, -1):  # backwards
        flows[(k + 1, k)] = dis.calc(grey[k + 1], grey[k], np.ascontiguousarray(-flows[(k + 1, k + 2)]))
        flows[(k, k + 1)] = dis.calc(grey[k], grey[k + 1], inverse_flow(flows[(k + 1, k)]))
    return flows


def dense_flows(frames: np.ndarray, cfg: FlowCamerasConfig) -> Dict[Tuple[int, int], np.ndarray]:
    """DIS optical flow [H*up, W*up, 2] between frames i and i + g, both ways, for g = 1..max_gap, on frames
    upsampled by cfg.flow_upsample. Adjacent frames: ``adjacent_flows`` (and ``velocity_chain``). Longer gaps start
    from the composition of shorter ones (i -> i+g-1 -> i+g), so a large motion is found as a refinement of
    chained small ones rather than searched from zero."""
    up = cfg.flow_upsample
    grey = [_grey(f, up) for f in frames]
    features = [sift_features(g) for g in grey] if cfg.sparse_init else None
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flows = adjacent_flows(grey, features, dis, cfg)
    if cfg.velocity_init:
        flows = velocity_chain(grey, flows, dis, up, cfg.min_texture)
    for g in range(2, cfg.max_gap + 1):
        for i in range(len(frames) - g):
            for a, b, mid in ((i, i + g, i + g - 1), (i + g, i, i + 1)):
                # DIS refines a flow passed in with the right size and type instead of starting from zero.
                flows[(a, b)] = dis.calc(grey[a], grey[b], compose_flow(flows[(a, mid)], flows[(mid, b)]))
    return flows


def flow_observations(f_ab: np.ndarray, f_ba: np.ndarray, pts_a: np.ndarray, H: int, W: int, cfg: FlowCamerasConfig):
    """Where frame a's samples [N, 2] land in frame b, by the flow a -> b; kept where the flow b -> a at the target
    returns within cfg.fb_tolerance pixels and the target lies inside the image. Returns (indices [M], positions
    in b [M, 2])."""
    up = cfg.flow_upsample
    p_up = pts_a * up - 0.5
    t_up = p_up + _sample(f_ab, p_up)
    fb = np.linalg.norm(t_up + _sample(f_ba, t_up) - p_up, axis=1) / up
    target = (t_up + 0.5) / up
    ok = np.isfinite(fb) & (fb < cfg.fb_tolerance)
    ok &= (target[:, 0] > 0) & (target[:, 0] < W) & (target[:, 1] > 0) & (target[:, 1] < H)
    return np.flatnonzero(ok), target[ok]


def tracked_observations(flows, pts: np.ndarray, i: int, step: int, L: int, H: int, W: int, cfg: FlowCamerasConfig):
    """Follow frame i's samples [N, 2] through the adjacent-frame flows (step = +1 forwards, -1 backwards) for up
    to cfg.track_length frames, each step kept only while forward-backward consistent. A long track sees the point
    from far-apart views: that parallax is what separates rotation from translation on orbits, where views a few
    degrees apart leave them nearly ambiguous. Returns [(j, indices [M], positions in frame j [M, 2])]."""
    out = []
    alive = np.arange(len(pts))
    pos = pts.copy()
    for k in range(1, cfg.track_length + 1):
        a, b = i + (k - 1) * step, i + k * step
        if not 0 <= b < L:
            break
        idx, target = flow_observations(flows[(a, b)], flows[(b, a)], pos, H, W, cfg)
        alive, pos = alive[idx], target
        if len(alive) == 0:
            break
        out.append((b, alive, pos))
    return out


def clip_observations(frames: np.ndarray, cfg: FlowCamerasConfig):
    """Samples, observations and matches of a clip [L, H, W, 3] uint8: samples [N_i, 2] per frame; observations
    (i, j, indices into samples[i] [M], positions in frame j [M, 2]) from direct flow (gaps up to cfg.max_gap) and
    from tracks (longer gaps); matches {(i, j): (positions in i [M, 2], in j [M, 2])} for two-view geometry."""
    L, H, W = frames.shape[:3]
    rng = np.random.default_rng(cfg.seed)
    samples = [frame_samples(f, cfg, rng) for f in frames]
    flows = dense_flows(frames, cfg)
    observations, matches = [], {}
    for g in range(1, cfg.max_gap + 1):
        for i in range(L - g):
            j = i + g
            ia, in_b = flow_observations(flows[(i, j)], flows[(j, i)], samples[i], H, W, cfg)
            ib, in_a = flow_observations(flows[(j, i)], flows[(i, j)], samples[j], H, W, cfg)
            observations += [(i, j, ia, in_b), (j, i, ib, in_a)]
            matches[(i, j)] = (np.concatenate([samples[i][ia], in_a]), np.concatenate([in_b, samples[j][ib]]))
    if cfg.track_length > 0:
        for i in range(L):
            for step in (1, -1):
                for j, idx, pos in tracked_observations(flows, samples[i], i, step, L, H, W, cfg):
                    if abs(j - i) > cfg.max_gap:
                        observations.append((i, j, idx, pos))
                        if i == 0:  # wide-baseline starting pairs: better conditioned than adjacent ones
                            matches[(0, j)] = (samples[0][idx], pos)
    return samples, observations, matches
