"""``pensieve-cameras``: one video or image folder -> intrinsics and a camera per frame, by optical flow and bundle
adjustment at test time (``pensieve_ns.flow``): no learned weights, no cameras given, no COLMAP.

    pensieve-cameras --input VIDEO_OR_FOLDER --output-dir OUT [--num-frames N] [--stride S] [--size H W] [--focal F]

Writes into OUT (built in a temporary sibling folder and moved into place, so OUT is never half-written):
  images/frame_XXXX.png   the frames used, at --size;
  transforms.json         nerfstudio format: one focal length, one camera-to-world per frame (OpenGL, as
                          nerfstudio reads it): ``ns-train splatfacto --data OUT`` trains on it;
  sparse_pc.ply           the solved sample points whose depth two other frames confirm with parallax, coloured,
                          in the cameras' world; named in transforms.json (``ply_file_path``), so splatfacto
                          starts its Gaussians from them;
  cameras.png             the trajectory (and, where the input has ground truth, the aligned truth).
Frames: every S-th frame of the input, then N of those chosen evenly, in order; consecutive frames should overlap
(an object orbit of 50 frames 14 deg apart works; cuts between shots do not). Cost: half a minute to a minute per frame
at 128 px on a 2-core CPU. What it measured: LEARNING.md, TTO exps 7-14 (``chair_orbit`` with the defaults: Racc@5 0.98,
focal 0.01 %, 31 min; 26 held-out generated clips: Racc@5 mean 0.92, focal median 1.0 %).
Self-checks (no truth; in transforms.json as ``self_checks`` and ``warnings``, and printed as warnings): whether the
flow fits one rigid scene, whether the cameras explain it, and whether the focal length ran away. When the last
two fail and --focal is not given, the solve is redone at fixed focal lengths and the one that explains most of the
flow is kept (``focal_recovery`` in transforms.json; it takes about 3x as long). When the result is still flagged or
explains less than 80 % of the observations, the whole solve is redone with the other flow start (constant-velocity
carrying or per-pair SIFT starts) and the one that explains more is kept (``flow_fallback``; about 2x as long).
Limits: one focal length, principal point at the centre, no lens distortion, no loop closure; needs texture
(white backgrounds are ignored, a clip with none fails with a message).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from pensieve_ns.errors import PensieveInputError, exit_with_error
from pensieve_ns.flow.solver import FlowCamerasConfig, solve_cameras

PROG = "pensieve-cameras"


@dataclass
class CamerasConfig:
    input: Path
    """A video, an image folder or a nerfstudio scene (the first clip found is used; its cameras are not read)."""
    output_dir: Path
    """Created; must not exist or be empty."""
    num_frames: int = 30
    stride: int = 1
    size: Tuple[int, int] = (128, 128)
    """(H, W) the frames are resized and centre-cropped to before solving."""
    focal: Optional[float] = None
    """Known focal length in pixels of the frames at --size (e.g. from the lens and sensor); None: estimated."""
    solver: FlowCamerasConfig = field(default_factory=FlowCamerasConfig)
    threads: int = 2


def solve_input(cfg: CamerasConfig) -> dict:
    """Read the frames, solve the cameras, write OUT. Returns a summary (frames, focal, timings)."""
    from pensieve_ns.reconstruct import (check_output_folder, plot_cameras, read_frames, staged_folder,
                                         write_point_cloud, write_scene)

    out = Path(cfg.output_dir)
    check_output_folder(out)
    if min(cfg.size) < 16:
        raise PensieveInputError(None, f"--size {cfg.size} is too small (at least 16 x 16 pixels)")
    if cfg.focal is not None and not cfg.focal > 0:
        raise PensieveInputError(None, f"--focal {cfg.focal}: a focal length in pixels must be positive")
    if cfg.num_frames < 3:
        raise PensieveInputError(None, f"--num-frames {cfg.num_frames}: the solver needs at least 3 frames")
    torch.set_num_threads(max(cfg.threads, 1))
    t = time.perf_counter()
    images, ids, clip = read_frames(cfg, tuple(cfg.size))
    if len(images) < 3:
        raise PensieveInputError(cfg.input, f"needs at least 3 frames after --stride {cfg.stride} (has {len(images)})")
    frames = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    try:
        result = solve_cameras(frames, cfg.solver, focal=cfg.focal)
    except ValueError as err:
        raise PensieveInputError(cfg.input, str(err)) from None
    seconds = time.perf_counter() - t
    c2w, K = torch.from_numpy(result.c2w_opencv), torch.from_numpy(result.K)
    xyz, rgb = result.world_points(frames)
    with staged_folder(out) as tmp:
        if len(xyz):  # splatfacto starts its Gaussians from these points instead of random ones
            write_point_cloud(tmp / "sparse_pc.ply", xyz, rgb)
        write_scene(tmp, images, ids, c2w, K, {"method": "pensieve-cameras (optical flow + bundle adjustment)",
                                               "input": str(cfg.input), "median_reprojection_error_px": result.ba_median_error,
                                               "self_checks": result.checks, "warnings": result.warnings,
                                               "focal_recovery": result.recovery, "flow_fallback": result.fallback,
                                               "points": len(xyz), "unconstrained_depths_dropped": result.unconstrained_depths},
                    ply_file_path="sparse_pc.ply" if len(xyz) else None)
        gt = clip.gt.c2w_opencv[ids] if clip.gt is not None else None
        plot_cameras(tmp / "cameras.png", result.c2w_opencv, gt)
    return {"frames": len(images), "focal": float(K[0, 0]), "seconds": seconds, "error": result.ba_median_error,
            "points": len(xyz),
            "warnings": result.warnings, "recovery": result.recovery, "fallback": result.fallback}


def main(cfg: CamerasConfig) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        s = solve_input(cfg)
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    points = f", sparse_pc.ply ({s['points']} points)" if s.get("points") else ""
    print(f"{PROG}: {s['frames']} frames, focal {s['focal']:.1f} px, median reprojection error {s['error']:.2f} px, "
          f"{s['seconds']:.0f} s\n  {cfg.output_dir}/: transforms.json, images/, cameras.png{points}\n"
          f"  train on it: ns-train splatfacto --data {cfg.output_dir}", file=sys.stdout)
    if s["recovery"]:  # the first solve failed a check: it was redone at fixed focal lengths (recover_focal)
        r = s["recovery"]
        print(f"{PROG}: the first solve failed its self-checks; re-solved at {len(r['candidates'])} fixed focal "
              f"lengths and kept {r['chosen']}x the sweep's ({r['fixed_consistent_share']:.0%} of observations "
              f"explained{', focal length then refined' if r['focal_freed'] else ''})", file=sys.stderr)
    if s["fallback"]:  # the first solve was flagged or explained too little: redone with the other flow
        f = s["fallback"]
        print(f"{PROG}: the first solve explained {f['consistent_share'][0]:.0%} of its observations; re-solved with "
              f"the other flow start ({f['consistent_share'][1]:.0%}) and kept the "
              f"{'second' if f['kept'] else 'first'}", file=sys.stderr)
    for line in s["warnings"]:  # the solver's own checks (no truth): the cameras are likely wrong
        print(f"{PROG}: WARNING: unreliable cameras: {line}", file=sys.stderr)


def entrypoint() -> None:
    import tyro

    main(tyro.cli(CamerasConfig, description=__doc__.split("\n")[0]))


if __name__ == "__main__":
    entrypoint()
