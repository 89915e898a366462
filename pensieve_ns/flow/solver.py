"""A test-time camera solver for one clip from dense optical flow and bundle adjustment: intrinsics (one focal
length) and a camera-to-world per frame, with no learned weights and no cameras given (``pensieve-cameras``).

Why: the learned cameras (stage 1's pair head) carry a prior from generated clips that does not transfer to
object orbits, and per-frame-depth photometric refinement (``pensieve_ns.refine``) drifts away from the truth on
such clips (LEARNING.md, TTO exp 5). Sparse SIFT (COLMAP) registers few frames at 128 px; dense flow gives
thousands of correspondences per frame pair, and reprojection error has its minimum at the truth.

The pipeline, for L frames in temporal order (steps 1-3 in ``correspondences``, 4-7 in ``reconstruction``, 8 in
``checks``, the rest here):
  1. ``frame_samples``: up to points_per_frame textured pixels per frame (structure-tensor minimum eigenvalue).
  2. ``dense_flows``: DIS optical flow (OpenCV) both ways between frames i and i+g, g = 1..max_gap, on frames
     upsampled by flow_upsample; adjacent frames start from SIFT matches interpolated over the frame
     (``sift_matches``, ``interpolated_flow``) or, with velocity_init, only an anchor pair does and the others
     start from their neighbour's flow (constant velocity, ``velocity_chain``: repeated textures); longer gaps
     start from the composition of shorter flows.
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
  7. A final bundle adjustment of all frames, the focal length included; with reject_threshold, observations
     that still disagree by more than that are dropped and it is rerun (``FlowBundle.reject_outliers``).
  8. ``self_checks``, with no truth: does the flow fit one rigid scene, do the cameras explain it, did the focal
     length run away; failed checks become ``FlowCamerasResult.warnings`` (TTO exp 9: on 12 held-out clips the
     flow check flags the one outright failure and none of the 10 right clips; it misses the partly wrong one).
  9. ``recover_focal``, only when check 2 or 3 fails and no focal length was given: steps 5-7 again with the focal
     length fixed at each candidate; the one whose cameras explain the most observations is kept, then its focal
     length freed (TTO exp 10: development orbit 30006 went from Racc@5 0.09, focal 74 % off, to 1.00 and 3 %).
 10. The flow fallback, only when the result is still flagged or explains less than flow_fallback_share of its
     observations: steps 1-9 again with the other adjacent-frame flow start (velocity_init flipped: per-pair SIFT
     starts instead of constant-velocity carrying, or the reverse), keeping the solve that explains the larger share
     of its own observations (TTO exp 12: on repeated textures either flow can land a tile off, and the whole
     solve's share is what tells them apart; a per-pair epipolar share cannot).

Output depths (``measured_depths``): a sample keeps its depth only where two cameras that explain it see its point at
min_triangulation_angle or more (the final adjustment can run depths that parallax no longer constrains to 1e9,
TTO exp 13) and at least min_depth_views other frames explain it (depths that one other frame explains are the
ones far off, and they shift the scale of all the others; TTO exp 14).

Measured (LEARNING.md, TTO exps 6-14): ``chair_orbit`` every 4th frame at 128 px, the one pre-declared run of these
defaults: Racc@5 0.98 for pairs within 10 frames (COLMAP 0.06; exp 7's settings, velocity_init False, max_gap 3,
reject_threshold 0: 0.91), focal error 0.01 %, 31 min on this 2-core CPU. Generated room orbits and arcs (tiled textures, a big
central object), 8 held-out clips, these defaults (exp 8): Racc@5 1.00 on 6, 0.69 and 0.00 on the others (exp 7:
mean 0.59), focal error median 0.8 %, depth AbsRel at the samples median 0.05; 8-19 min per 20-frame clip. All 26
held-out clips with steps 9-10 where they ran (exps 12-13): Racc@5 mean 0.92, 21 at 1.00, focal error median 1.0 %.

Conventions: images are [L, H, W, 3] uint8 RGB; pixel (x, y) of the array has its centre at (x + 0.5, y + 0.5),
as in ``cameras.intrinsics_matrix`` (cx = W / 2). Cameras out are OpenCV camera-to-world [L, 4, 4] (x right,
y down, z forward); frame 0 is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from pensieve_ns.cameras import intrinsics_matrix
from pensieve_ns.flow.bundle import FlowBundle, _rays
from pensieve_ns.flow.checks import check_warnings, epipolar_inlier_share, needs_focal_recovery, self_checks
from pensieve_ns.flow.correspondences import clip_observations
from pensieve_ns.flow.reconstruction import estimate_focal, final_adjustment, reconstruct


@dataclass
class FlowCamerasConfig:
    max_gap: int = 1
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
    reject_threshold: float = 1.5
    """After the final bundle adjustment, observations with a reprojection error above this many pixels are dropped
    and the adjustment rerun, twice (0: off). The Cauchy loss still pulls with most of its strength at 2-5 px,
    where wrong flow at occlusion boundaries and on repeated textures lands."""
    velocity_init: bool = True
    """Adjacent-frame flow i -> i+1 (i > 0) starts from the flow i -> i-1 negated (constant velocity) and the back
    flow from the inverse of the forward one; only the first pair starts from SIFT matches."""
    seed: int = 0
    min_epipolar_inliers: float = 0.9
    """Self-check (no truth): below this mean share of adjacent-frame flow matches within ransac_threshold of a
    fundamental matrix (MAGSAC), the flow is not that of one rigid scene and the result is flagged unreliable.
    Development clips: 0.93-0.99 where the flow was right, 0.80-0.83 where it was 22-28 px wrong (orbit 30003)."""
    min_consistent_share: float = 0.6
    """Self-check: below this share of observations that the final cameras and depths reproject within
    consistency_pixels, the result is flagged unreliable (whole solves: 0.82-0.96 on the chair and 4 right held-out
    clips; development orbits 30003 and 30006, failed: 0.33 and 0.475; orbit 30004, partly right: 0.72)."""
    consistency_pixels: float = 1.5
    max_focal_change: float = 2.0
    """Self-check: a final bundle adjustment that moves the focal length by more than this factor from the
    incremental one is flagged (held-out gen_01_arc: 4.8x -> 41x the truth, a runaway)."""
    recover_focal: bool = True
    """When self-check 2 or 3 fails and no focal length was given, ``recover_focal`` solves again at each fixed
    focal candidate (5 more solves: the clip takes about 2-3x as long) and keeps the one that explains most."""
    min_depth_views: int = 2
    """Output depths (``measured_depths``): a sample keeps its depth only if at least this many other frames'
    observations of it are explained within consistency_pixels, besides the parallax rule (TTO exp 14: depths seen
    consistently from one other frame only are the ones far off; development orbit 30000: AbsRel 0.207 -> 0.116)."""
    flow_fallback_share: float = 0.8
    """Step 10: a solve that is flagged, or whose cameras explain less than this share of the observations, is redone
    with the other adjacent-frame flow (velocity_init flipped) and the larger share wins (0: off). Development
    orbits (TTO exp 12): partly wrong solves explained 0.66-0.72, right ones 0.83-0.89; orbit 30019 went from
    Racc@5 0.61 (0.67) to 1.00 (0.89), orbit 30014 kept its first solve (0.66 against 0.45)."""


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
    sample_pixels: List[np.ndarray] = field(default_factory=list)
    """Per frame [N_i, 2]: the pixel centres (x + 0.5, y + 0.5) whose depth the solver estimated."""
    sample_depth: List[np.ndarray] = field(default_factory=list)
    """Per frame [N_i]: z-depth of those pixels in the scale of c2w_opencv (unknown metric scale); NaN where a
    sample never got a depth (too little parallax, or no consistent match) or lost it (``measured_depths``)."""
    unconstrained_depths: int = 0
    """Samples whose depth ``measured_depths`` dropped from sample_depth: no two cameras see it at an angle any more,
    or fewer than min_depth_views other frames explain it."""
    checks: Dict[str, float] = field(default_factory=dict)
    """Self-checks computed without any truth (``self_checks``): epipolar_inliers, consistent_share,
    depth_coverage, focal_change."""
    warnings: List[str] = field(default_factory=list)
    """Why the result is unreliable, one line per failed self-check; empty: every check passed."""
    recovery: Dict = field(default_factory=dict)
    """Filled when ``recover_focal`` ran (the first solve failed self-check 2 or 3): the consistent share of each
    fixed focal candidate, the chosen one, whether its focal length was freed, and the first solve's checks."""
    fallback: Dict = field(default_factory=dict)
    """Filled when the flow fallback ran (``solve_cameras``, step 10): velocity_init and the consistent share of the
    first and the other flow's solve, which was kept (0 first, 1 other), and the dropped solve's checks."""
    dropped_solve: Optional["FlowCamerasResult"] = None
    """Where the flow fallback ran: the solve it did not keep (cameras, focal length, checks)."""

    @property
    def reliable(self) -> bool:
        return not self.warnings

    def world_points(self, frames: np.ndarray):
        """The samples that have a depth as a coloured point cloud in the world of c2w_opencv (frame 0's camera):
        xyz [N, 3] float64 and rgb [N, 3] uint8, read from frames [L, H, W, 3] uint8 at the sample pixels."""
        focal, W, H = float(self.K[0, 0]), 2 * float(self.K[0, 2]), 2 * float(self.K[1, 2])  # centred, as solved
        xyz, rgb = [np.zeros((0, 3))], [np.zeros((0, 3), np.uint8)]
        for frame, c2w, pix, z in zip(frames, self.c2w_opencv, self.sample_pixels, self.sample_depth):
            ok = np.isfinite(z)
            ray = _rays(pix[ok], focal, W, H) * z[ok, None]
            xyz.append(ray @ c2w[:3, :3].T + c2w[:3, 3])
            rgb.append(frame[pix[ok, 1].astype(int), pix[ok, 0].astype(int)])
        return np.concatenate(xyz), np.concatenate(rgb)


def _result(bundle: FlowBundle, epipolar: float, solved, scores, cfg: FlowCamerasConfig):
    """A checked FlowCamerasResult from ``reconstruct``'s output (epipolar: the clip's epipolar inlier share);
    returns (result, depth)."""
    c2w, depth, focal, c2w_incremental, focal_incremental, err = solved
    W, H = bundle.W, bundle.H
    result = FlowCamerasResult(c2w, intrinsics_matrix(focal, focal, W / 2, H / 2), scores, c2w_incremental,
                               focal_incremental, err)
    self_checks(result, bundle, epipolar, depth, cfg)
    return result, depth


def recover_focal(bundle: FlowBundle, matches, epipolar: float, sweep_focal: float, scores, cfg: FlowCamerasConfig):
    """The whole solve again with the focal length FIXED at each focal_candidates multiple of the sweep's; the one
    whose cameras explain the most observations (self-check 2's share, comparable across solves because it counts
    every observation) is kept, and its focal length is then freed in one more final adjustment, kept only if the
    share does not fall and the focal length moves less than max_focal_change. Why: a wrong start focal length is
    the failure seen (development orbit 30006: the share peaks at 0.853 at the candidate that gives Racc@5 1.00;
    TTO exp 10 in LEARNING.md). Returns (result, depth) with result.recovery filled."""
    tried, best = {}, None
    for m in cfg.focal_candidates:
        result, depth = _result(bundle, epipolar, reconstruct(bundle, matches, sweep_focal * m, (1.0,), False, cfg),
                                scores, cfg)
        tried[m] = result.checks["consistent_share"]
        if best is None or tried[m] > best[0].checks["consistent_share"]:
            best = (result, depth, bundle.inlier.copy(), m)
    result, depth, bundle.inlier, chosen = best
    fixed_focal, share = float(result.K[0, 0]), result.checks["consistent_share"]
    c2w, freed_depth, f, err = final_adjustment(bundle, result.c2w_opencv, depth, fixed_focal, cfg.optimise_focal, cfg)
    freed, freed_depth = _result(bundle, epipolar, (c2w, freed_depth, f, result.c2w_incremental, fixed_focal, err),
                                 scores, cfg)
    keep_freed = cfg.optimise_focal and freed.checks["consistent_share"] >= share and \
        not check_warnings({"focal_change": freed.checks["focal_change"]}, cfg)
    if keep_freed:
        result, depth = freed, freed_depth
    result.recovery = {"candidates": {float(k): round(v, 4) for k, v in tried.items()}, "chosen": float(chosen),
                       "fixed_focal": fixed_focal, "fixed_consistent_share": share, "focal_freed": bool(keep_freed)}
    return result, depth


def _solve_flow(frames: np.ndarray, cfg: FlowCamerasConfig, focal: float = None) -> FlowCamerasResult:
    """Steps 1-9 with one flow setting (cfg.velocity_init): the solve of ``solve_cameras`` before any fallback."""
    H, W = frames.shape[1:3]
    samples, observations, matches = clip_observations(frames, cfg)
    if sum(len(o[2]) for o in observations) == 0:
        raise ValueError("no textured point could be followed between frames (flat or featureless frames?)")
    scores, estimated = {}, focal is None
    if estimated:
        focal, scores = estimate_focal(matches, W, H, cfg)
    bundle = FlowBundle(samples, observations, W, H)
    solved = reconstruct(bundle, matches, focal, cfg.focal_candidates if estimated else (1.0,),
                          cfg.optimise_focal and estimated, cfg)  # a given focal length stays
    epipolar = epipolar_inlier_share(matches, cfg.ransac_threshold)
    result, depth = _result(bundle, epipolar, solved, scores, cfg)
    if estimated and cfg.recover_focal and needs_focal_recovery(result.checks, cfg):
        first = {"checks": result.checks, "warnings": result.warnings, "focal": float(result.K[0, 0])}
        result, depth = recover_focal(bundle, matches, epipolar, focal, scores, cfg)
        result.recovery["first_solve"] = first
    depth, result.unconstrained_depths = measured_depths(bundle, result, depth, cfg)
    result.sample_pixels = samples
    result.sample_depth = [depth[a:b] for a, b in zip(bundle.offsets[:-1], bundle.offsets[1:])]
    return result


def measured_depths(bundle: FlowBundle, result: FlowCamerasResult, depth: np.ndarray, cfg: FlowCamerasConfig):
    """The output depths: a sample keeps its depth [samples] only if two cameras whose observations of it the
    result explains (within consistency_pixels) see its point at min_triangulation_angle or more, the rule that gave
    it a first depth, and the result explains it in at least min_depth_views other frames. Why: the final
    adjustment can push a depth that parallax no longer constrains anywhere along its ray at almost no cost
    (held-out gen_10_arc, right cameras: a few depths ran to 1e9 and depth AbsRel to 1.7e9, TTO exp 13), and depths
    that one other frame explains are the ones far off (TTO exp 14). The cameras and the checks are unchanged.
    Returns (depth with NaN where dropped, how many dropped)."""
    focal = float(result.K[0, 0])
    explained = bundle.residuals(result.c2w_opencv, depth, focal) <= cfg.consistency_pixels
    keep = bundle.parallax(result.c2w_opencv, depth, focal, explained) >= cfg.min_triangulation_angle  # NaN: False
    keep &= np.bincount(bundle.S[explained], minlength=len(depth)) >= cfg.min_depth_views
    return np.where(keep, depth, np.nan), int((np.isfinite(depth) & ~keep).sum())


def solve_cameras(frames: np.ndarray, cfg: FlowCamerasConfig = FlowCamerasConfig(), focal: float = None) -> FlowCamerasResult:
    """Cameras for one clip. frames: [L, H, W, 3] uint8 RGB in temporal order, L >= 2. focal: known focal length in
    pixels (None: estimated, and recovered by ``recover_focal`` if the checks say the solve failed). Returns OpenCV
    c2w [L, 4, 4] and K [3, 3].

    Step 10, the flow fallback (``flow_fallback_share``): when the solve is flagged or explains less than that share
    of its observations, the whole solve is redone with the other adjacent-frame flow (velocity_init flipped), and
    the result whose cameras explain the larger share of their own observations is kept; ``result.fallback``
    records both shares and ``result.dropped_solve`` the other solve."""
    result = _solve_flow(frames, cfg, focal)
    if cfg.flow_fallback_share <= 0 or (result.reliable and result.checks["consistent_share"] >= cfg.flow_fallback_share):
        return result
    try:
        other = _solve_flow(frames, replace(cfg, velocity_init=not cfg.velocity_init), focal)
    except ValueError:  # the other flow gives no start: the first solve stands
        return result
    keep_other = other.checks["consistent_share"] > result.checks["consistent_share"]
    kept, dropped = (other, result) if keep_other else (result, other)
    kept.fallback = {"velocity_init": [cfg.velocity_init, not cfg.velocity_init],
                     "consistent_share": [result.checks["consistent_share"], other.checks["consistent_share"]],
                     "kept": int(keep_other), "dropped_checks": dropped.checks}
    kept.dropped_solve = dropped
    return kept
