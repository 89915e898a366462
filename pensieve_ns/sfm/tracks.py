"""The optical-flow front end of the camera solver: keypoint tracks carried through a clip by dense DIS optical
flow, and the matches between nearby frames that share a track.

Why flow and not descriptors: on video, consecutive frames are close, so dense flow follows every textured pixel,
including the low-contrast, repeated and blurred texture where SIFT finds few distinctive points; the
forward-backward check drops what flow cannot follow. COLMAP's geometric verification and mapper then do the
geometry (``mapper``).

Per frame, in time order (``flow_tracks``):
  1. Flow i -> i+1 and back (DIS, OpenCV). (Starting it from the previous pair's flow, constant velocity, as the
     old solver did for repeated textures, never won on the validation clips, so it is not done.)
  2. Every keypoint of frame i moves along the flow into frame i+1 and keeps its track where the backward flow
     returns within ``fb_tolerance`` and the target is inside the frame; at most one keypoint per ``cell``
     (the older track wins).
  3. Empty cells of frame i+1 with texture get a new track at their most textured pixel.
  4. Snapping: direct flow i -> i+g (g in ``snap_gaps``, started from the chained adjacent flows); where it lands
     within ``snap_radius`` of a keypoint of another track, the two keypoints are matched too.
Matches (``Tracks.pair_matches``): every pair at most ``match_window`` frames apart gets the keypoints that share
a track, plus the snapped ones.

Conventions: frames are [L, H, W, 3] uint8 RGB; keypoints are image coordinates with pixel centres at (x + 0.5,
y + 0.5) (COLMAP's; the array's pixel (i, j) covers [j, j + 1] x [i, i + 1]); flows are [H * up, W * up, 2] in
array coordinates of the upsampled grey frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from jaxtyping import Float, Int, UInt8

from pensieve_ns.data.frames import grey
from pensieve_ns.sfm.config import TrackConfig

Pair = Tuple[int, int]


def texture(image_grey: UInt8[np.ndarray, "H W"]) -> Float[np.ndarray, "H W"]:
    """Smallest eigenvalue of the 5x5 structure tensor of a grey frame in [0, 1]: how well flow is measured there."""
    return cv2.cornerMinEigenVal(image_grey.astype(np.float32) / 255.0, blockSize=5)


def flow_upsampling(hw: Tuple[int, int], short_side: int) -> int:
    """Integer factor that brings the short side of an H x W frame to at least about ``short_side`` (1: none)."""
    return max(1, short_side // min(hw))


def sample_field(field_: Float[np.ndarray, "h w C"], points: Float[np.ndarray, "N 2"]) -> Float[np.ndarray, "N C"]:
    """Bilinear lookup of a field at array coordinates [N, 2] (x, y); NaN outside."""
    if len(points) == 0:  # remap refuses an empty map
        return np.zeros((0, field_.shape[2]), np.float32)
    m = points.astype(np.float32)[:, None]
    out = cv2.remap(field_, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return out.reshape(len(points), field_.shape[2])


def compose_flow(f_ab: Float[np.ndarray, "h w 2"], f_bc: Float[np.ndarray, "h w 2"]) -> Float[np.ndarray, "h w 2"]:
    """Flow a -> c from flows a -> b and b -> c (edge values where a's target leaves b)."""
    h, w = f_ab.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    step = cv2.remap(f_bc, xs + f_ab[..., 0], ys + f_ab[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(f_ab + step, np.float32)


def follow(points: Float[np.ndarray, "N 2"], f_ab, f_ba, up: int, hw: Tuple[int, int], tolerance: float):
    """Where keypoints of frame a (image coordinates) land in frame b by the flow a -> b. Returns (kept [N] bool:
    inside b and the flow b -> a returns within ``tolerance`` working pixels, targets [N, 2] image coordinates)."""
    p = points * up - 0.5  # image coordinates -> array coordinates of the upsampled frame
    t = p + sample_field(f_ab, p)
    back = np.linalg.norm(t + sample_field(f_ba, t) - p, axis=1) / up
    target = (t + 0.5) / up
    H, W = hw
    with np.errstate(invalid="ignore"):
        kept = (back < tolerance) & (target[:, 0] > 0) & (target[:, 0] < W) & (target[:, 1] > 0) & (target[:, 1] < H)
    return kept, target


@dataclass
class Tracks:
    """Keypoint tracks of one clip, in the working frames' image coordinates."""

    hw: Tuple[int, int]
    keypoints: List[Float[np.ndarray, "N 2"]] = field(default_factory=list)
    """Per frame: keypoint positions (pixel centres at +0.5)."""
    track_ids: List[Int[np.ndarray, "N"]] = field(default_factory=list)
    """Per frame: the track of each keypoint, ascending."""
    snapped: Dict[Pair, Int[np.ndarray, "M 2"]] = field(default_factory=dict)
    """(a, b) -> keypoint index pairs matched by direct flow across tracks."""
    motion: List[float] = field(default_factory=list)
    """Per frame k >= 1: median displacement (working pixels) of the tracks continued from frame k - 1."""
    flow_up: int = 1

    def pair_matches(self, a: int, b: int) -> Int[np.ndarray, "M 2"]:
        """Keypoint index pairs (in a, in b) of the tracks both frames see, plus snapped matches; unique."""
        _, ia, ib = np.intersect1d(self.track_ids[a], self.track_ids[b], assume_unique=True, return_indices=True)
        m = np.stack([ia, ib], 1)
        if (a, b) in self.snapped:
            m = np.unique(np.concatenate([m, self.snapped[(a, b)]]), axis=0)
        return m.astype(np.int64)

    def pairs(self, window: int, frames: Optional[List[int]] = None) -> List[Pair]:
        """Pairs (a, b), a < b, of ``frames`` (default all) at most ``window`` positions apart in that list."""
        frames = list(range(len(self.keypoints))) if frames is None else frames
        return [(frames[i], frames[j]) for i in range(len(frames)) for j in range(i + 1, min(i + window + 1, len(frames)))]


class _Flow:
    """DIS optical flow (OpenCV's MEDIUM preset), started from zero or from a given flow."""

    def __init__(self):
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def calc(self, a, b, start=None):
        return self.dis.calc(a, b, None if start is None else np.ascontiguousarray(start, np.float32))


def _new_keypoints(tex: Float[np.ndarray, "H W"], taken: Float[np.ndarray, "N 2"], cfg: TrackConfig) -> Float[np.ndarray, "M 2"]:
    """The most textured pixel of every cell that holds no keypoint yet and has texture above ``min_texture``."""
    H, W = tex.shape
    c = cfg.cell
    gh, gw = H // c, W // c
    if gh == 0 or gw == 0:
        return np.zeros((0, 2))
    blocks = tex[: gh * c, : gw * c].reshape(gh, c, gw, c).transpose(0, 2, 1, 3).reshape(gh, gw, c * c)
    best = blocks.argmax(-1)
    ok = blocks.max(-1) > cfg.min_texture
    cells = np.floor(taken / c).astype(int) if len(taken) else np.zeros((0, 2), int)
    inside = (cells[:, 0] < gw) & (cells[:, 1] < gh)
    ok[cells[inside, 1], cells[inside, 0]] = False
    gy, gx = np.nonzero(ok)
    b = best[gy, gx]
    return np.stack([gx * c + b % c, gy * c + b // c], 1).astype(np.float64) + 0.5


def _one_per_cell(points: Float[np.ndarray, "N 2"], ids: Int[np.ndarray, "N"], cell: int):
    """Keep the oldest track (lowest id) of each cell; returns the kept positions and ids, ids ascending."""
    if len(points) == 0:
        return points, ids
    cells = np.floor(points / cell).astype(np.int64)
    key = cells[:, 1] * 1_000_003 + cells[:, 0]
    order = np.lexsort((ids, key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = np.sort(order[first])  # ids arrive ascending, so sorting indices keeps them ascending
    return points[keep], ids[keep]


def flow_tracks(frames: UInt8[np.ndarray, "L H W 3"], cfg: TrackConfig = TrackConfig()) -> Tracks:
    """Keypoint tracks of a clip in time order (module docstring). Memory: the grey frames and flows of the last
    ``max(snap_gaps)`` frames only, so long videos stream."""
    L, H, W = frames.shape[:3]
    up = flow_upsampling((H, W), cfg.flow_short_side)
    flow = _Flow()
    tracks = Tracks((H, W), flow_up=up)
    G = max(cfg.snap_gaps, default=1)
    greys: Dict[int, np.ndarray] = {}
    flows: Dict[Pair, np.ndarray] = {}  # flows between the last G + 1 frames
    first = grey(frames[0])
    pts = _new_keypoints(texture(first), np.zeros((0, 2)), cfg)
    tracks.keypoints.append(pts)
    tracks.track_ids.append(np.arange(len(pts)))
    next_id = len(pts)
    greys[0] = grey(frames[0], up)
    for j in range(1, L):
        g = grey(frames[j])
        greys[j] = g if up == 1 else grey(frames[j], up)
        i = j - 1
        f, b = flow.calc(greys[i], greys[j]), flow.calc(greys[j], greys[i])
        flows[(i, j)], flows[(j, i)] = f, b
        kept, target = follow(tracks.keypoints[i], f, b, up, (H, W), cfg.fb_tolerance)
        moved = np.linalg.norm(target[kept] - tracks.keypoints[i][kept], axis=1)
        tracks.motion.append(float(np.median(moved)) if len(moved) else float("nan"))
        pts, ids = _one_per_cell(target[kept], tracks.track_ids[i][kept], cfg.cell)
        new = _new_keypoints(texture(g), pts, cfg)
        tracks.keypoints.append(np.concatenate([pts, new]))
        tracks.track_ids.append(np.concatenate([ids, np.arange(next_id, next_id + len(new))]))
        next_id += len(new)
        for gap in sorted(cfg.snap_gaps):
            a = j - gap
            if a < 0:
                continue
            fa = flow.calc(greys[a], greys[j], compose_flow(flows[(a, j - 1)], flows[(j - 1, j)]))
            fb = flow.calc(greys[j], greys[a], compose_flow(flows[(j, j - 1)], flows[(j - 1, a)]))
            flows[(a, j)], flows[(j, a)] = fa, fb
            _snap(tracks, a, j, fa, fb, up, cfg)
        for key in [k for k in flows if min(k) <= j - G]:
            del flows[key]
        greys.pop(j - G, None)
    return tracks


def _snap(tracks: Tracks, a: int, b: int, f_ab, f_ba, up: int, cfg: TrackConfig) -> None:
    """Match keypoints of a to keypoints of b of another track where direct flow lands within snap_radius."""
    from scipy.spatial import cKDTree

    pa, pb = tracks.keypoints[a], tracks.keypoints[b]
    if len(pa) == 0 or len(pb) == 0:
        return
    kept, target = follow(pa, f_ab, f_ba, up, tracks.hw, cfg.fb_tolerance)
    ia = np.flatnonzero(kept)
    dist, ib = cKDTree(pb).query(target[ia], distance_upper_bound=cfg.snap_radius)
    near = np.isfinite(dist)
    ia, ib = ia[near], ib[near]
    other = tracks.track_ids[a][ia] != tracks.track_ids[b][ib]
    if other.any():
        tracks.snapped[(a, b)] = np.stack([ia[other], ib[other]], 1)
