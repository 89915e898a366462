"""Settings of the test-time camera solver (``pensieve-cameras``): one dataclass per stage, gathered in
``SolverConfig``. Every figure quoted beside a default was measured on validation clips (``docs/results.md``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple

CameraModel = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL"]


@dataclass
class TrackConfig:
    """The optical-flow front end (``tracks.flow_tracks``)."""

    flow_short_side: int = 384
    """Frames whose short side is below this are upsampled by an integer factor for optical flow (DIS's 8-pixel
    patches are coarse on small frames); keypoints are written in the working frame's pixels."""
    cell: int = 6
    """At most one keypoint per cell of this many working pixels: new tracks start in empty textured cells."""
    min_texture: float = 5e-5
    """Smallest structure-tensor eigenvalue (grey in [0, 1], 5x5 window) of a pixel where a track may start:
    flow on flat colours and white backgrounds is interpolated, not measured."""
    fb_tolerance: float = 1.0
    """A track continues only where the backward flow returns within this many working pixels."""
    snap_gaps: Tuple[int, ...] = (2, 3)
    """Direct flow to frames this far ahead; a keypoint whose direct target lands within snap_radius of another
    track's keypoint is matched to it too (closes the small loops that broken tracks leave open)."""
    snap_radius: float = 1.0
    match_window: int = 12
    """Pairs of frames at most this far apart that share tracks get those matches written."""


@dataclass
class MapperConfig:
    """The geometry back end: pycolmap's geometric verification and mapping (``mapper.map_tracks``)."""

    camera_model: CameraModel = "SIMPLE_PINHOLE"
    """One camera for the clip. SIMPLE_PINHOLE: one focal length; PINHOLE: fx and fy (non-square pixels);
    SIMPLE_RADIAL: one focal length and one radial distortion term. The principal point stays at the centre."""
    mapping: Literal["incremental", "global"] = "incremental"
    """COLMAP's incremental mapper, or its global one (GLOMAP: rotation averaging, then positions)."""
    compare_mappers: bool = True
    """Also map with the other mapper, and take its solve where it registers more frames or its points reproject
    clearly better (validation walk 60208: incremental gave a self-consistent wrong solve, median error 0.41 px, the
    global mapper the right one, 0.23 px)."""
    switch_margin: float = 0.8
    """The other mapper's solve is taken when its median reprojection error is below this times the configured
    one's (validation: 0.57 where it was right and incremental wrong; 0.89-0.97 where both were right)."""
    init_min_tri_angle: float = 4.0
    """Degrees of parallax the first two frames need (COLMAP's default 16 suits photo collections; video frames
    close in time rarely have it)."""
    min_tri_angle: float = 0.5
    """Degrees of parallax a point needs to be kept (COLMAP: 1.5). Handheld video often has less: the desk
    validation clip's points see 0.6-1.0 degrees between frames 12 apart."""
    max_reprojection_error: float = 4.0
    """Observations further than this many working pixels from their point are dropped by the mapper."""
    min_inliers: int = 30
    """Pairs with fewer geometrically verified matches are ignored."""
    threads: int = -1
    seed: int = 0


@dataclass
class CalibrationConfig:
    """When the rotation-only model (``calibration``) calibrates the clip, and when it solves it."""

    max_pan_residual: float = 0.004
    """A clip whose flow homographies are rotations up to this residual (``RotationFit.residual``), and explain at
    least min_pan_inliers of the matches, is a pan: solved rotation-only (validation: pans <= 0.002, the handheld
    desk clip 0.007)."""
    min_pan_inliers: float = 0.9
    max_trusted_residual: float = 0.02
    """Up to this residual the rotation-only focal length is trusted over a self-calibration that ran away from it
    (validation: desk 0.007-0.008, its focal length 2-4 % off; walks 0.04-0.05 and orbits 0.2-3, 8-54 % off), and
    a clip the mapper registers only partly may be solved rotation-only."""
    max_rotation_error: float = 1.0
    """Median reprojection error (working pixels) up to which rotation-only cameras replace a partial mapping."""


@dataclass
class CheckConfig:
    """Self-checks computed without any truth (``checks.self_checks``)."""

    min_registered: float = 1.0
    """Share of solved frames that must be registered."""
    min_epipolar_inliers: float = 0.8
    """Mean share of adjacent-frame matches that fit one rigid scene (two-view geometry inliers)."""
    min_explained: float = 0.4
    """Share of track observations in registered frames that the final points explain (validation: right solves
    0.48-0.99, wrong ones 0.21-0.29)."""
    focal_range: Tuple[float, float] = (0.25, 4.0)
    """Plausible focal lengths, times the long side of the frame (about 14 to 127 degrees of field of view)."""
    min_parallax: float = 1.0
    """Median parallax (degrees) of the points below which translation directions are flagged as uncertain."""


@dataclass
class SolverConfig:
    min_motion: float = 0.0
    """Frames whose tracks moved less than this many working pixels (median) since the last solved frame take
    that frame's camera instead of being solved (0: every frame is solved)."""
    focal: Optional[float] = None
    """Known focal length in pixels of the working frames (None: estimated)."""
    restarts: int = 1
    """Mappings from different random seeds per mapper; the one that registers most, then reprojects best, is kept
    (validation: 2 gave the same cameras as 1 at twice the time once the focal length starts at the rotation-only
    estimate)."""
    max_focal_change: float = 1.5
    """A self-calibrated focal length further than this factor from the rotation-only start is not trusted: the
    clip is mapped again with the focal length fixed at the start."""
    tracks: TrackConfig = field(default_factory=TrackConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    checks: CheckConfig = field(default_factory=CheckConfig)
