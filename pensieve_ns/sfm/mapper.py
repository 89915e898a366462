"""The geometry back end of the camera solver: our flow tracks go into a COLMAP database, and pycolmap (COLMAP's
library; no COLMAP binary) verifies each pair's two-view geometry and builds the reconstruction with its
incremental (or global) mapper and Ceres bundle adjustment.

Conventions: keypoints arrive in the working frames' image coordinates, pixel centres at +0.5, which is COLMAP's
own convention, so they are written as they are. COLMAP returns world-to-camera poses in OpenCV axes; ``MapResult``
holds OpenCV camera-to-world, the one convention of this package.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from jaxtyping import Float, UInt8

from pensieve_ns.sfm.config import MapperConfig
from pensieve_ns.sfm.tracks import Tracks


@dataclass
class MapResult:
    """One reconstruction of the solved frames (indices into the frames given to ``map_tracks``)."""

    c2w_opencv: Dict[int, Float[np.ndarray, "4 4"]]
    """Registered frame -> OpenCV camera-to-world."""
    params: Dict[str, float]
    """The camera: fx, fy, cx, cy (working pixels, pixel centres at +0.5) and k1 where the model has it."""
    points: Float[np.ndarray, "P 3"]
    colors: UInt8[np.ndarray, "P 3"]
    point_errors: Float[np.ndarray, "P"]
    """Mean reprojection error of each point, working pixels."""
    triangulation_angle: float
    """Median over points of the largest angle (degrees) between two of its rays: the parallax the solve had."""
    observations: int
    """Keypoint observations the points explain."""
    verified: Dict[str, float] = field(default_factory=dict)
    """Two-view verification: inlier share of adjacent pairs' matches (mean), and of all pairs' (mean)."""
    models: int = 1
    seconds: Dict[str, float] = field(default_factory=dict)
    mapping: str = "incremental"
    """Which of COLMAP's mappers made it."""

    @property
    def median_error(self) -> float:
        """Median reprojection error of the points (working pixels); infinite without points."""
        return float(np.median(self.point_errors)) if len(self.point_errors) else float("inf")


def _write_database(db_path: Path, image_dir: Path, frames, tracks: Tracks, solved: List[int], window: int,
                    cfg: MapperConfig) -> Dict[int, int]:
    """Images, one camera, keypoints and matches of the solved frames; returns frame -> image id."""
    import pycolmap
    from PIL import Image

    names = [f"{k:06d}.jpg" for k in solved]
    for k, name in zip(solved, names):
        Image.fromarray(frames[k]).save(image_dir / name, quality=95)
    pycolmap.Database.open(db_path).close()
    options = pycolmap.ImageReaderOptions()
    options.camera_model = cfg.camera_model
    pycolmap.import_images(db_path, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, image_names=names,
                           options=options)
    db = pycolmap.Database.open(db_path)
    try:
        ids = {int(Path(im.name).stem): im.image_id for im in db.read_all_images()}
        for k in solved:  # columns x, y, scale, orientation
            kp = tracks.keypoints[k]
            db.write_keypoints(ids[k], np.concatenate([kp, np.ones((len(kp), 1)), np.zeros((len(kp), 1))], 1).astype(np.float32))
        for a, b in tracks.pairs(window, solved):
            m = tracks.pair_matches(a, b)
            if len(m):
                db.write_matches(ids[a], ids[b], m.astype(np.uint32))
    finally:
        db.close()
    return ids


def _verified(db_path: Path, ids: Dict[int, int], solved: List[int]) -> Dict[str, float]:
    """Mean share of each pair's matches that two-view geometry verified: adjacent solved frames, and all pairs."""
    import pycolmap

    db = pycolmap.Database.open(db_path)
    try:
        pos = {image_id: n for n, image_id in enumerate(ids[k] for k in solved)}
        adjacent, every = [], []
        pair_ids, matches = db.read_all_matches()
        for pair_id, m in zip(pair_ids, matches):
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            share = db.read_two_view_geometry(a, b).inlier_matches.shape[0] / max(len(m), 1) \
                if db.exists_two_view_geometry(a, b) else 0.0
            every.append(share)
            if abs(pos[a] - pos[b]) == 1:
                adjacent.append(share)
    finally:
        db.close()
    return {"adjacent_inliers": float(np.mean(adjacent)) if adjacent else 0.0,
            "all_inliers": float(np.mean(every)) if every else 0.0}


class TrackDatabase:
    """A COLMAP database of one clip's tracks, verified once and mapped as often as asked (different focal
    settings, seeds), in a temporary folder removed on ``close`` (use as a context manager)."""

    def __init__(self, frames: UInt8[np.ndarray, "L H W 3"], tracks: Tracks, solved: List[int], window: int,
                 cfg: MapperConfig):
        import pycolmap

        pycolmap.logging.minloglevel = 2  # warnings and errors only (its INFO log is thousands of lines)
        self.cfg, self.solved, self.seconds = cfg, solved, {}
        self._tmp = tempfile.TemporaryDirectory(prefix="pensieve-sfm-")
        self.root = Path(self._tmp.name)
        (self.root / "images").mkdir()
        self.db_path = self.root / "database.db"
        t = time.perf_counter()
        self.ids = _write_database(self.db_path, self.root / "images", frames, tracks, solved, window, cfg)
        self.seconds["database"] = time.perf_counter() - t
        t = time.perf_counter()
        two_view = pycolmap.TwoViewGeometryOptions()
        two_view.min_num_inliers = cfg.min_inliers
        two_view.ransac.max_error = 2.0
        two_view.ransac.random_seed = cfg.seed
        verifier = pycolmap.GeometricVerifierOptions()
        verifier.num_threads = cfg.threads
        pycolmap.geometric_verification(self.db_path, verifier_options=verifier,
                                        pairing_options=pycolmap.ExistingMatchedPairingOptions(),
                                        two_view_geometry_options=two_view)
        self.verified = _verified(self.db_path, self.ids, solved)
        self.seconds["verification"] = time.perf_counter() - t
        self.runs = 0

    def __enter__(self) -> "TrackDatabase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def map(self, focal: Optional[float] = None, fix_focal: bool = False, seed: int = 0,
            mapping: Optional[str] = None) -> Optional[MapResult]:
        """One mapping; None when no reconstruction comes out. focal: the camera's starting focal length in working
        pixels (COLMAP's default 1.2x the long side without it), kept fixed with fix_focal; mapping: incremental or
        global (default: the config's)."""
        import pycolmap

        db = pycolmap.Database.open(self.db_path)
        try:
            camera = db.read_all_cameras()[0]
            if focal is not None:
                camera.params = [focal if i in camera.focal_length_idxs() else p for i, p in enumerate(camera.params)]
            camera.has_prior_focal_length = focal is not None
            db.update_camera(camera)
        finally:
            db.close()
        out = self.root / f"sparse_{self.runs}"
        out.mkdir()
        self.runs += 1
        t = time.perf_counter()
        cfg = replace(self.cfg, seed=self.cfg.seed + seed, mapping=mapping or self.cfg.mapping)
        recs = _map(self.db_path, self.root / "images", out, cfg, fix_focal)
        seconds = {**self.seconds, "mapping": time.perf_counter() - t}
        if not recs:
            return None
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        return _result(rec, {v: k for k, v in self.ids.items()}, self.verified, len(recs), seconds, cfg.mapping)


def _map(db_path: Path, image_dir: Path, out: Path, cfg: MapperConfig, fix_focal: bool):
    import pycolmap

    if cfg.mapping == "global":
        options = pycolmap.GlobalPipelineOptions()
        options.num_threads, options.random_seed = cfg.threads, cfg.seed
        options.mapper.global_positioning.use_gpu = False
        options.mapper.bundle_adjustment.ceres.use_gpu = False
        options.mapper.bundle_adjustment.refine_focal_length = not fix_focal
        return pycolmap.global_mapping(db_path, image_dir, out, options)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads, options.random_seed = cfg.threads, cfg.seed
    options.extract_colors = True
    options.min_model_size = 3
    options.mapper.init_min_tri_angle = cfg.init_min_tri_angle
    options.mapper.init_min_num_inliers = max(cfg.min_inliers, 30)
    options.mapper.filter_max_reproj_error = cfg.max_reprojection_error
    options.mapper.filter_min_tri_angle = cfg.min_tri_angle
    options.mapper.ba_local_min_tri_angle = max(cfg.min_tri_angle, 1.0)
    options.triangulation.min_angle = cfg.min_tri_angle
    options.ba_refine_focal_length = not fix_focal
    options.mapper.abs_pose_refine_focal_length = not fix_focal
    options.ba_refine_principal_point = False
    return pycolmap.incremental_mapping(db_path, image_dir, out, options)


def _result(rec, frame_of_image: Dict[int, int], verified, models: int, seconds, mapping: str) -> MapResult:
    c2w = {}
    for image_id, image in rec.images.items():
        if image.has_pose:
            w2c = np.eye(4)
            w2c[:3] = image.cam_from_world().matrix()
            c2w[frame_of_image[image_id]] = np.linalg.inv(w2c)
    camera = next(iter(rec.cameras.values()))
    fx, fy = (camera.focal_length_x, camera.focal_length_y)
    params = {"fx": float(fx), "fy": float(fy), "cx": float(camera.principal_point_x), "cy": float(camera.principal_point_y)}
    if camera.model_name == "SIMPLE_RADIAL":
        params["k1"] = float(camera.params[3])
    pts = list(rec.points3D.values())
    xyz = np.array([p.xyz for p in pts]).reshape(-1, 3)
    rgb = np.array([p.color for p in pts], np.uint8).reshape(-1, 3)
    err = np.array([p.error for p in pts]).reshape(-1)
    centres = {image_id: im.projection_center() for image_id, im in rec.images.items() if im.has_pose}
    angles = []
    for p in pts[:: max(1, len(pts) // 2000)]:  # a sample of points is enough for a median
        rays = np.array([centres[el.image_id] - p.xyz for el in p.track.elements if el.image_id in centres])
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        cos = np.clip(rays @ rays.T, -1, 1)
        angles.append(np.degrees(np.arccos(cos.min())))
    observations = int(sum(p.track.length() for p in pts))
    return MapResult(c2w, params, xyz, rgb, err, float(np.median(angles)) if angles else 0.0, observations, verified,
                     models, seconds, mapping)
