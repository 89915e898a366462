"""Files in and out shared by the commands: the output folder (never half-written), nerfstudio scenes
(``transforms.json``), point clouds, videos and camera plots.

Cameras arrive as OpenCV camera-to-world and are written as OpenGL, as nerfstudio reads them (``cameras`` does the
conversion).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pensieve_ns.errors import PensieveInputError


def write_point_cloud(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Points xyz [N, 3] with colours rgb [N, 3] uint8 as a PLY (x y z float, red green blue uchar): the point
    cloud a nerfstudio transforms.json names in ``ply_file_path``, which splatfacto starts its Gaussians from."""
    from plyfile import PlyData, PlyElement

    data = np.empty(len(xyz), dtype=[(k, "f4") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue")])
    for i, k in enumerate("xyz"):
        data[k] = xyz[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        data[k] = rgb[:, i]
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))


def check_output_folder(out: Path) -> None:
    """The user's output folder must not exist, or be an empty folder (nothing of theirs is overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PensieveInputError(out, "output folder exists and is not empty")


@contextmanager
def staged_folder(out: Path):
    """Yield a temporary folder next to ``out`` to write into; moved into place as ``out`` when the block ends
    without an error, removed either way, so ``out`` is never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
        except Exception:  # a PyAV build without x264
            stream = container.add_stream("mpeg4", rate=fps)
        H, W = frames.shape[1:3]
        stream.width, stream.height, stream.pix_fmt = W + W % 2, H + H % 2, "yuv420p"
        for frame in frames:
            frame = np.pad(frame, ((0, H % 2), (0, W % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def plot_cameras(path: Path, c2w: np.ndarray, gt_c2w=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pensieve_ns.eval.poses import umeyama

    fig, ax = plt.subplots(figsize=(5, 5))
    centres = c2w[:, :3, 3]
    if gt_c2w is not None and len(gt_c2w) == len(c2w):
        s, R, t = umeyama(centres, gt_c2w[:, :3, 3])
        centres = (s * (R @ centres.T)).T + t
        ax.plot(gt_c2w[:, 0, 3], gt_c2w[:, 2, 3], "k.-", label="ground truth")
    ax.plot(centres[:, 0], centres[:, 2], "r.-", label="predicted" + (" (similarity-aligned)" if gt_c2w is not None else ""))
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_transforms(folder: Path, frames: List[Dict], intrinsics: Dict[str, float], hw, about: dict,
                     ply_file_path: Optional[str] = None) -> None:
    """A nerfstudio ``transforms.json`` in folder. frames: dicts with ``file_path`` (relative to folder),
    ``c2w_opencv`` [4, 4] (written as the OpenGL ``transform_matrix``) and any other keys to keep (e.g.
    ``source_frame``); intrinsics: fl_x, fl_y, cx, cy (pixels of hw = (H, W), pixel centres at +0.5) and optional
    k1, k2, p1, p2; about: kept under the "pensieve" key; ply_file_path: a point cloud in the cameras' world."""
    from pensieve_ns.cameras import opencv_to_opengl_c2w

    records = []
    for frame in frames:
        record = {k: v for k, v in frame.items() if k != "c2w_opencv"}
        record["transform_matrix"] = opencv_to_opengl_c2w(np.asarray(frame["c2w_opencv"], np.float64)).tolist()
        records.append(record)
    transforms = {"camera_model": "OPENCV", **{k: float(v) for k, v in intrinsics.items()},
                  "w": int(hw[1]), "h": int(hw[0]), "frames": records, "pensieve": about}
    if ply_file_path is not None:
        transforms["ply_file_path"] = ply_file_path
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=1))
