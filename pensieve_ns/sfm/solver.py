"""Cameras for one clip: optical-flow tracks (``tracks``) handed to COLMAP's library (``mapper``), with the focal
length started from the rotation-only model (``calibration``) and a rotation-only solve for pans.

    solve_cameras(frames, SolverConfig()) -> SolverResult

Steps, for working frames [L, H, W, 3] in time order:
  1. ``flow_tracks``: keypoint tracks by dense optical flow, forward-backward checked.
  2. Frames to solve: every frame, unless ``min_motion`` > 0 (then a frame whose tracks moved less than that since
     the last solved frame takes that frame's camera). A clip whose tracks never move is refused (static video).
  3. ``rotation_focal``: the focal length that makes the flow homographies rotations. Where they are rotations
     (residual up to ``max_pan_residual``) and explain the matches, the clip is a pan: ``rotation_only_cameras``.
  4. Otherwise pycolmap maps the tracks with the focal length started there and refined by its bundle
     adjustment, with its incremental and its global mapper (``compare_mappers``); the incremental solve is kept
     unless the global one registers more frames or reprojects its points clearly better (on ambiguous clips a
     wrong solve sits in a worse optimum: its residuals are larger).
  5. When that solve's focal length leaves the plausible range or moves more than ``max_focal_change`` from a
     start that the rotation-only model trusts (residual up to ``max_trusted_residual``), self-calibration was
     ill-posed (little parallax): the clip is mapped again with the focal length fixed at the start.
  6. A clip the mapper leaves partly unregistered, whose flow the rotation-only model explains (residual up to
     ``max_trusted_residual``, matches within ``max_rotation_error``), is solved rotation-only too: a near-pan.
  7. ``check_warnings``: self-checks without truth.

Conventions: working-frame pixels, pixel centres at +0.5 (COLMAP's); cameras are OpenCV camera-to-world.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from jaxtyping import Float, UInt8

from pensieve_ns.sfm.calibration import rotation_focal, rotation_only_cameras
from pensieve_ns.sfm.checks import check_warnings
from pensieve_ns.sfm.config import SolverConfig
from pensieve_ns.sfm.mapper import MapResult, TrackDatabase
from pensieve_ns.sfm.tracks import Tracks, flow_tracks


class SolveError(ValueError):
    """The clip cannot be solved (no motion, no texture, no reconstruction); the message says why."""


@dataclass
class SolverResult:
    c2w_opencv: Dict[int, Float[np.ndarray, "4 4"]]
    """Frame -> OpenCV camera-to-world, for every frame that got a camera (solved, or skipped for lack of motion)."""
    K: Float[np.ndarray, "3 3"]
    """Intrinsics in working pixels (pixel centres at +0.5)."""
    hw: tuple
    points: Float[np.ndarray, "P 3"]
    colors: UInt8[np.ndarray, "P 3"]
    solved: List[int]
    """Frames given to the geometry; the others took a solved frame's camera (``took_camera_of``)."""
    took_camera_of: Dict[int, int] = field(default_factory=dict)
    unregistered: List[int] = field(default_factory=list)
    """Solved frames the geometry could not place: they have no camera."""
    model: str = "incremental"
    """How the cameras were solved: incremental / global (COLMAP's mappers), or rotation-only (a pan)."""
    focal_source: str = ""
    """given, self-calibrated (bundle adjustment from the rotation-only start), or rotation-only (kept fixed)."""
    checks: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    notes: Dict = field(default_factory=dict)
    """What the solver tried: the rotation-only focal length, restarts, the fixed-focal fallback."""

    @property
    def reliable(self) -> bool:
        return not self.warnings


def frames_to_solve(tracks: Tracks, min_motion: float) -> Dict[int, int]:
    """Frame -> the solved frame whose camera it takes (itself when solved): a frame is solved once its tracks
    have moved at least min_motion working pixels (summed medians) since the last solved frame."""
    owner, last, moved = {0: 0}, 0, 0.0
    for k, step in enumerate(tracks.motion, start=1):
        moved += step if np.isfinite(step) else np.inf
        if moved >= min_motion or k == len(tracks.motion):
            last, moved = k, 0.0
        owner[k] = last
    return owner


def _explained_share(tracks: Tracks, result: MapResult, solved: List[int]) -> float:
    """Observations the points explain over the keypoints of registered frames whose track reaches another solved
    frame (what the mapper was given to explain)."""
    ids = np.concatenate([tracks.track_ids[k] for k in solved])
    uniq, counts = np.unique(ids, return_counts=True)
    shared = set(uniq[counts >= 2].tolist())
    total = sum(int(np.isin(tracks.track_ids[k], list(shared)).sum()) for k in result.c2w_opencv)
    return result.observations / max(total, 1)


def _better(a: Optional[MapResult], b: Optional[MapResult], margin: float = 1.0) -> bool:
    """Whether solve a beats b: more frames registered, or as many and points that reproject better, by the margin
    (a's median error below margin x b's)."""
    if a is None:
        return False
    if b is None or len(a.c2w_opencv) != len(b.c2w_opencv):
        return b is None or len(a.c2w_opencv) > len(b.c2w_opencv)
    return a.median_error < margin * b.median_error


def _best_map(database: TrackDatabase, cfg: SolverConfig, focal: float, fixed: bool) -> Optional[MapResult]:
    """The configured mapper's best solve over ``restarts`` seeds, replaced by the other mapper's (with
    ``compare_mappers``) where that registers more frames, or as many with points that reproject clearly better
    (``switch_margin``). Solves with the same freedom minimise the same error, so a clearly lower one is the better
    optimum: a self-consistent wrong solve sits in a worse one. The margin keeps the configured mapper where the two
    are close (validation: both right, global 0.89-0.97x incremental's error, its focal length no better)."""
    best = {}
    mappings = [cfg.mapper.mapping]
    if cfg.mapper.compare_mappers:
        mappings.append("global" if cfg.mapper.mapping == "incremental" else "incremental")
    for mapping in mappings:
        for seed in range(cfg.restarts):
            result = database.map(focal, fix_focal=fixed, seed=seed, mapping=mapping)
            if _better(result, best.get(mapping)):
                best[mapping] = result
    primary = best.get(mappings[0])
    other = best.get(mappings[-1]) if len(mappings) > 1 else None
    return other if _better(other, primary, cfg.mapper.switch_margin) else primary


def _suspect_focal(focal: float, start: float, long_side: int, cfg: SolverConfig) -> bool:
    """A self-calibrated focal length outside the plausible range, or far from where it started."""
    lo, hi = cfg.checks.focal_range
    return not (1 / cfg.max_focal_change <= focal / start <= cfg.max_focal_change and lo <= focal / long_side <= hi)


def _map_clip(database: TrackDatabase, cfg: SolverConfig, focal: float, trusted: bool, long_side: int,
              notes: dict) -> Optional[MapResult]:
    """Steps 4-5: map with the focal length started at ``focal`` (kept when given); when self-calibration moved it
    suspiciously far from a trusted rotation-only focal length, map again with that one fixed and keep it."""
    mapped = _best_map(database, cfg, focal, fixed=cfg.focal is not None)
    if mapped is None or cfg.focal is not None or not trusted or \
            not _suspect_focal(mapped.params["fx"], focal, long_side, cfg):
        return mapped
    # Little parallax leaves self-calibration ill-posed (desk validation clip: it ran to 1.6-1.8x the truth with
    # wrong translations) where the rotation-only model, which fits such clips, calibrates them to 2-4 %.
    notes["self_calibrated_focal"] = mapped.params["fx"]
    fixed = _best_map(database, cfg, focal, fixed=True)
    if fixed is not None and len(fixed.c2w_opencv) >= len(mapped.c2w_opencv):
        notes["kept_rotation_focal"] = True
        return fixed
    return mapped


def solve_cameras(frames: UInt8[np.ndarray, "L H W 3"], cfg: SolverConfig = SolverConfig()) -> SolverResult:
    """Cameras and intrinsics for a clip of working frames in time order (module docstring). Raises SolveError."""
    L, H, W = frames.shape[:3]
    seconds = {}
    t = time.perf_counter()
    tracks = flow_tracks(frames, cfg.tracks)
    seconds["tracks"] = time.perf_counter() - t
    motion = np.asarray(tracks.motion)
    if L < 2 or not np.isfinite(motion).any():
        raise SolveError("no textured point could be followed between frames (flat or featureless frames?)")
    if np.nansum(motion) < 2.0:
        raise SolveError(f"the camera does not move: tracked points moved {np.nansum(motion):.1f} pixels over the clip")
    owner = frames_to_solve(tracks, cfg.min_motion)
    solved = sorted(set(owner.values()))
    pairs = tracks.pairs(cfg.tracks.match_window, solved)
    t = time.perf_counter()
    fit = rotation_focal(tracks, pairs, cfg.checks.focal_range)
    seconds["calibration"] = time.perf_counter() - t
    focal = cfg.focal or fit.focal or 1.2 * max(H, W)
    notes = {"rotation_focal": fit.focal, "homography_inliers": fit.homography_inliers,
             "rotation_deg": fit.rotation_deg, "rotation_residual": fit.residual}
    t = time.perf_counter()
    source, mapped = "given" if cfg.focal else "self-calibrated", None
    calib = cfg.calibration
    pan = fit.residual <= calib.max_pan_residual and fit.homography_inliers >= calib.min_pan_inliers
    if not pan:
        with TrackDatabase(frames, tracks, solved, cfg.tracks.match_window, cfg.mapper) as database:
            mapped = _map_clip(database, cfg, focal, fit.residual <= calib.max_trusted_residual, max(H, W), notes)
        source = "rotation-only" if notes.get("kept_rotation_focal") else source
    rotation = None
    if pan or mapped is None or len(mapped.c2w_opencv) < min(len(solved), 2) or \
            (len(mapped.c2w_opencv) < len(solved) and fit.residual <= calib.max_trusted_residual):
        # A pan, or a clip the mapper cannot place (fully) whose flow turning in place explains: one rotation per
        # frame from the rotation-only model, kept where it reprojects the matches within max_rotation_error.
        c2w, f_rot, err = rotation_only_cameras(tracks, solved, focal, pairs)
        notes["rotation_only_error_px"] = err
        if pan or mapped is None or len(mapped.c2w_opencv) < 2 or err <= calib.max_rotation_error:
            rotation = c2w, (cfg.focal or f_rot)
    if rotation is not None:
        c2w, focal = rotation
        model, source = "rotation-only", "given" if cfg.focal else "rotation-only"
        K = np.array([[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1.0]])
        points, colors = np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        checks = {"registered": 1.0, "focal_ratio": focal / max(H, W), "rotation_only": 1.0}
    else:
        c2w, model = mapped.c2w_opencv, mapped.mapping
        p = mapped.params
        K = np.array([[p["fx"], 0, p["cx"]], [0, p["fy"], p["cy"]], [0, 0, 1.0]])
        points, colors = mapped.points, mapped.colors
        notes["map_seconds"] = mapped.seconds
        checks = {"registered": len(c2w) / len(solved), "epipolar_inliers": mapped.verified["adjacent_inliers"],
                  "explained": _explained_share(tracks, mapped, solved), "focal_ratio": p["fx"] / max(H, W),
                  "parallax_deg": mapped.triangulation_angle}
    seconds["geometry"] = time.perf_counter() - t
    cameras = {k: c2w[owner[k]] for k in range(L) if owner[k] in c2w}
    return SolverResult(cameras, K, (H, W), points, colors, solved, {k: v for k, v in owner.items() if k != v},
                        [k for k in solved if k not in c2w], model, source, checks, check_warnings(checks, cfg.checks),
                        seconds, notes)
