"""``pensieve-cameras``: a video or image folder -> a camera per frame and the intrinsics, as a nerfstudio scene at
the input's full resolution. Optical-flow tracks (ours) and COLMAP's library (pycolmap: verification, mapping,
bundle adjustment; no COLMAP binary needed); no learned weights.

    pensieve-cameras --input VIDEO_OR_FOLDER --output-dir OUT [--stride S] [--max-frames N] [--max-size PX]

Writes into OUT (built in a temporary sibling folder and moved into place, so OUT is never half-written):
  images/           the frames that got a camera, at full resolution (image inputs: copies, or links with
                    --link-images; videos: decoded PNGs);
  transforms.json   nerfstudio format: intrinsics of the full-resolution frames, one camera-to-world per frame
                    (OpenGL, as nerfstudio reads it), the solver's self-checks and warnings under "pensieve";
  sparse_pc.ply     the reconstruction's points, coloured, in the cameras' world (``ply_file_path``), so
                    ``ns-train splatfacto --data OUT`` starts its Gaussians from them;
  cameras.png       the trajectory seen from above.
Every frame is used unless --stride or --max-frames say otherwise; the solve runs on working frames whose short
side is at most --max-size pixels, and the intrinsics are scaled back to the full frames.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from pensieve_ns.errors import PensieveInputError, exit_with_error
from pensieve_ns.sfm.config import CameraModel, SolverConfig
from pensieve_ns.sfm.solver import SolveError, SolverResult, solve_cameras

PROG = "pensieve-cameras"


@dataclass
class CamerasConfig:
    input: Path
    """A video, an image folder or a nerfstudio scene (its cameras are not read)."""
    output_dir: Path
    """Created; must not exist or be empty."""
    stride: int = 1
    """Use every S-th frame."""
    max_frames: Optional[int] = None
    """Use at most N frames, evenly spaced (None: all)."""
    max_size: int = 384
    """Short side, in pixels, of the working frames the cameras are solved on (larger inputs are downscaled)."""
    focal: Optional[float] = None
    """Known focal length in pixels of the full-resolution frames (None: estimated)."""
    camera_model: CameraModel = "SIMPLE_PINHOLE"
    """SIMPLE_PINHOLE (one focal length) or PINHOLE (fx and fy: non-square pixels, e.g. resized video)."""
    min_motion: float = 0.0
    """Frames whose tracks moved less than this many working pixels since the last solved frame take its camera
    instead of being solved (long videos of a slow camera); 0: every frame is solved."""
    link_images: bool = False
    """Link to the input's image files instead of copying them."""
    solver: SolverConfig = field(default_factory=SolverConfig)
    """Advanced solver settings (the options above override theirs)."""


def working_size(hw: Tuple[int, int], max_size: int) -> Tuple[int, int]:
    """(H, W) of the working frames: the short side brought down to max_size, never up."""
    scale = min(1.0, max_size / min(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def select_frames(num: int, stride: int, max_frames: Optional[int]) -> Tuple[List[int], str]:
    """Frame indices to use and a sentence saying which (every frame unless stride or max_frames say otherwise)."""
    ids = list(range(0, num, stride))
    note = f"every frame ({num})" if stride == 1 else f"every {stride}th frame ({len(ids)} of {num})"
    if max_frames is not None and len(ids) > max_frames:
        ids = [ids[k] for k in np.unique(np.linspace(0, len(ids) - 1, max_frames).round().astype(int))]
        note += f", capped by --max-frames to {len(ids)} evenly spaced"
    return ids, note


def _check_args(cfg: CamerasConfig) -> None:
    if cfg.stride < 1:
        raise PensieveInputError(None, f"--stride {cfg.stride}: must be at least 1")
    if cfg.max_frames is not None and cfg.max_frames < 2:
        raise PensieveInputError(None, f"--max-frames {cfg.max_frames}: at least 2 frames are needed")
    if cfg.max_size < 32:
        raise PensieveInputError(None, f"--max-size {cfg.max_size} is too small (at least 32 pixels)")
    if cfg.focal is not None and not cfg.focal > 0:
        raise PensieveInputError(None, f"--focal {cfg.focal}: a focal length in pixels must be positive")


def read_working_frames(clip, ids: List[int], images: Path, link: bool, max_size: int):
    """Stream the selected frames: each full-resolution frame goes to images/ (its file copied or linked, or a
    decoded video frame written as PNG), its working-size copy is kept. Returns (working frames [L, h, w, 3],
    full (H, W), file names)."""
    if clip.sizes is not None:
        sizes = sorted({clip.sizes[i] for i in ids})
        if len(sizes) > 1:
            odd = next(clip.files[i].name for i in ids if clip.sizes[i] != clip.sizes[ids[0]])
            raise PensieveInputError(clip.path, f"frames differ in size ({', '.join(f'{w}x{h}' for h, w in sizes)}; e.g. "
                                     f"{odd}): one camera needs frames of one size")
    from pensieve_ns.data.sources import stream_frames

    work, names, full = [], [], None
    for n, (i, frame) in enumerate(stream_frames(clip, ids)):
        full = full or frame.shape[:2]
        if frame.shape[:2] != full:
            raise PensieveInputError(clip.path, f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, the first "
                                     f"{full[1]}x{full[0]}: one camera needs frames of one size")
        if clip.files is not None:
            source = clip.files[i]
            name = f"frame_{n:05d}{source.suffix.lower()}"
            if link:
                (images / name).symlink_to(source.resolve())
            else:
                shutil.copyfile(source, images / name)
        else:
            name = f"frame_{n:05d}.png"
            cv2.imwrite(str(images / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        names.append(name)
        h, w = working_size(full, max_size)
        work.append(frame if (h, w) == full else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA))
    if len(work) < len(ids):
        raise PensieveInputError(clip.path, f"only {len(work)} of {len(ids)} frames could be decoded")
    return np.stack(work), full, names


def full_intrinsics(result: SolverResult, full: Tuple[int, int]) -> dict:
    """The working frames' intrinsics scaled to the full frames (per axis; COLMAP's and nerfstudio's pixel
    convention, centres at +0.5, scales exactly)."""
    (h, w), (H, W) = result.hw, full
    sx, sy = W / w, H / h
    K = result.K
    return {"fl_x": K[0, 0] * sx, "fl_y": K[1, 1] * sy, "cx": K[0, 2] * sx, "cy": K[1, 2] * sy}


def solve_input(cfg: CamerasConfig) -> dict:
    """Read, solve, write OUT (module docstring). Returns a summary for the command's report."""
    from pensieve_ns.data.sources import find_clips
    from pensieve_ns.scene_io import check_output_folder, plot_cameras, staged_folder, write_point_cloud, write_transforms

    out = Path(cfg.output_dir)
    check_output_folder(out)
    _check_args(cfg)
    clips = find_clips(cfg.input)
    clip = clips[0]
    ids, selection = select_frames(clip.num_frames, cfg.stride, cfg.max_frames)
    if len(ids) < 2:
        raise PensieveInputError(cfg.input, f"has {clip.num_frames} frame(s) after --stride {cfg.stride}: cameras need "
                                 "at least 2 frames of a moving camera")
    t0 = time.perf_counter()
    with staged_folder(out) as tmp:
        (tmp / "images").mkdir()
        frames, full, names = read_working_frames(clip, ids, tmp / "images", cfg.link_images, cfg.max_size)
        read_s = time.perf_counter() - t0
        scale = frames.shape[2] / full[1]
        solver = replace(cfg.solver, min_motion=cfg.min_motion,
                         focal=None if cfg.focal is None else cfg.focal * scale,
                         mapper=replace(cfg.solver.mapper, camera_model=cfg.camera_model))
        try:
            result = solve_cameras(frames, solver)
        except SolveError as err:
            raise PensieveInputError(cfg.input, str(err)) from None
        dropped = [k for k in range(len(ids)) if k not in result.c2w_opencv]
        for k in dropped:  # the folder holds exactly the frames transforms.json lists
            (tmp / "images" / names[k]).unlink()
        records = [{"file_path": f"images/{names[k]}", "source_frame": int(ids[k]), "c2w_opencv": result.c2w_opencv[k]}
                   for k in sorted(result.c2w_opencv)]
        about = {"method": "pensieve-cameras (optical-flow tracks + pycolmap)", "input": str(cfg.input),
                 "clip": clip.name, "frames_read": len(ids), "selection": selection,
                 "working_size": list(frames.shape[1:3]), "registered": len(records),
                 "dropped": [{"source_frame": int(ids[k]), "why": "not registered by the mapper"} for k in dropped],
                 "took_camera_of": {str(ids[k]): int(ids[v]) for k, v in result.took_camera_of.items()},
                 "model": result.model, "focal_source": result.focal_source, "self_checks": result.checks,
                 "warnings": result.warnings, "solver": result.notes, "seconds": result.seconds,
                 "points": len(result.points)}
        if len(result.points):  # splatfacto starts its Gaussians from these points instead of random ones
            write_point_cloud(tmp / "sparse_pc.ply", result.points, result.colors)
        write_transforms(tmp, records, full_intrinsics(result, full), full, about,
                         ply_file_path="sparse_pc.ply" if len(result.points) else None)
        registered = sorted(result.c2w_opencv)
        gt = clip.gt.c2w_opencv[[ids[k] for k in registered]] if clip.gt is not None else None
        plot_cameras(tmp / "cameras.png", np.stack([result.c2w_opencv[k] for k in registered]), gt)
    return {"clips": len(clips), "clip": clip.name, "selection": selection, "read": len(ids), "full": full,
            "work": frames.shape[1:3], "registered": len(registered), "dropped": len(dropped),
            "took": len(result.took_camera_of), "focal": full_intrinsics(result, full)["fl_x"],
            "focal_source": result.focal_source, "model": result.model, "points": len(result.points),
            "warnings": result.warnings, "seconds": time.perf_counter() - t0, "read_seconds": read_s,
            "solve_seconds": result.seconds}


def main(cfg: CamerasConfig) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        s = solve_input(cfg)
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    (H, W), (h, w) = s["full"], s["work"]
    clips = f" (the first of {s['clips']} clips found)" if s["clips"] > 1 else ""
    took = f"; {s['took']} frame(s) without motion took the previous camera" if s["took"] else ""
    points = f", sparse_pc.ply ({s['points']} points)" if s["points"] else ""
    solve = ", ".join(f"{k} {v:.1f} s" for k, v in s["solve_seconds"].items())
    print(f"{PROG}: read {s['read']} frames of {s['clip']}{clips}: {s['selection']}, {W}x{H}, solved at {w}x{h}\n"
          f"  registered {s['registered']} of {s['read']}, dropped {s['dropped']} (not registered){took}\n"
          f"  {s['model']} solve, focal length {s['focal']:.1f} px ({s['focal_source']}); {s['seconds']:.1f} s "
          f"(reading and writing frames {s['read_seconds']:.1f} s, {solve})\n"
          f"  {cfg.output_dir}/: transforms.json, images/ ({s['registered']}, full resolution), cameras.png{points}\n"
          f"  train on it: ns-train splatfacto --data {cfg.output_dir}", file=sys.stdout)
    for line in s["warnings"]:  # the solver's own checks (no truth): the cameras are likely wrong
        print(f"{PROG}: WARNING: unreliable cameras: {line}", file=sys.stderr)


def entrypoint() -> None:
    import tyro

    main(tyro.cli(CamerasConfig, description=__doc__.split("\n")[0]))


if __name__ == "__main__":
    entrypoint()
