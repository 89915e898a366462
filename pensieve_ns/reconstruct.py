"""``pensieve-reconstruct``: one video or image folder -> cameras, Gaussians and a fly-through, feed-forward.

    pensieve-reconstruct --load-config RUN/config.yml --input VIDEO_OR_FOLDER --output-dir OUT [--stride S] [--max-frames N]

Writes into OUT (built in a temporary sibling folder and moved into place, so OUT is never half-written):
  images/frame_XXXX.png   the frames used, at the model's resolution;
  transforms.json         nerfstudio format: shared intrinsics, one camera-to-world per frame (OpenGL, as
                          nerfstudio reads it): ``ns-train splatfacto --data OUT`` can refine the scene;
  splat.ply               standard 3DGS PLY of the Gaussians predicted from the context frames;
  novel_views.mp4, preview.png   a fly-through along the predicted cameras, extrapolated 15 % at both ends;
  cameras.png             the predicted trajectory (and, where the input has ground truth, the aligned truth).
A stage-1 run (no Gaussian head, e.g. the shipped ``pretrained/stage1-flow64``) writes the cameras only:
images/, transforms.json and cameras.png.
Frames: every frame of the input by default; every S-th with ``--stride``, and at most N of those, chosen evenly,
with ``--max-frames`` (both said in the summary). Up to ``--window`` frames go through the
model in one pass, with ``--context`` of them (evenly spaced) as context frames whose pixels become Gaussians.
Longer selections are cut into windows that overlap by two frames; each window is predicted on its own and
chained to the previous one by the similarity that maps its first overlapping camera onto the chained one,
with the scale from the distance between the two overlapping cameras (``chain_windows``). Limits: errors
accumulate along the chain (no loop closure), and where the two overlapping cameras sit at the same place
(pure rotation) the scale cannot be measured and is kept.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pensieve_ns.checkpoints import load_run
from pensieve_ns.errors import PensieveInputError, exit_with_error
from pensieve_ns.eval.align import apply_similarity, similarity_to
from pensieve_ns.scene_io import check_output_folder, plot_cameras, staged_folder, write_transforms, write_video

PROG = "pensieve-reconstruct"


@dataclass
class ReconstructConfig:
    load_config: Path
    """config.yml of a pensieve-stage2 run, or of a pensieve-stage1 run (cameras only: no Gaussians, no
    fly-through), e.g. the shipped ``pretrained/stage1-flow64/config.yml``."""
    input: Path
    """A video, an image folder or a nerfstudio scene (the first clip found is used)."""
    output_dir: Path
    """Created; must not exist or be empty."""
    stride: int = 1
    """Use every S-th frame of the input (1: every frame)."""
    max_frames: Optional[int] = None
    """At most this many of those, chosen evenly (None: all of them)."""
    context: int = 2
    """Context frames per window (their pixels become Gaussians)."""
    window: int = 8
    """Most frames per model pass; longer selections are chained windows overlapping by 2 frames."""
    novel_view_frames: int = 30
    cameras: Optional[Path] = None
    """A ``transforms.json`` that ``pensieve-cameras`` wrote for the same input: its cameras and intrinsics are given
    to the model instead of the ones it predicts (a run whose depth head reads its own cameras cannot take them)."""


def read_frames(cfg: ReconstructConfig, hw):
    """Frames [L, 3, H, W] in [0, 1], their indices in the clip, and the clip."""
    from pensieve_ns.data.frames import resize_center_crop
    from pensieve_ns.data.sources import find_clips

    clips = find_clips(cfg.input, stride=1)
    clip = clips[0]
    usable = np.arange(0, clip.num_frames, cfg.stride)
    if len(usable) < 2:
        raise PensieveInputError(cfg.input, f"needs at least 2 frames after --stride {cfg.stride} (has {len(usable)})")
    if cfg.max_frames is not None and cfg.max_frames < 2:
        raise PensieveInputError(None, f"--max-frames must be at least 2 (got {cfg.max_frames})")
    keep = len(usable) if cfg.max_frames is None else min(cfg.max_frames, len(usable))
    ids = usable[np.unique(np.linspace(0, len(usable) - 1, keep).round().astype(int))]
    frames = [resize_center_crop(f, hw) for f in clip.read([int(i) for i in ids])]
    images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
    return images, ids, clip


def given_cameras(path: Path, ids, native_hw, hw):
    """Cameras of the selected frames from a pensieve-cameras ``transforms.json`` (OpenGL, full-resolution
    intrinsics) -> (OpenCV camera-to-world [L, 4, 4], intrinsics [3, 3] of the model's resized and cropped frames)."""
    import json

    from pensieve_ns.cameras import intrinsics_matrix, opengl_to_opencv_c2w
    from pensieve_ns.data.frames import fit_matrix

    try:
        meta = json.loads(Path(path).read_text())
        frames = {int(f["source_frame"]): f["transform_matrix"] for f in meta["frames"]}
        K = intrinsics_matrix(meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"])
        size = (int(meta["h"]), int(meta["w"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PensieveInputError(path, f"not a pensieve-cameras transforms.json ({type(err).__name__}: {err})") from None
    if size != tuple(native_hw):
        raise PensieveInputError(path, f"is for {size[1]}x{size[0]} frames; the input's are {native_hw[1]}x{native_hw[0]}")
    missing = [int(i) for i in ids if int(i) not in frames]
    if missing:
        raise PensieveInputError(path, f"has no camera for frame(s) {missing[:5]} of the input (not registered); "
                                 "choose other frames with --stride / --max-frames")
    c2w = np.stack([opengl_to_opencv_c2w(np.asarray(frames[int(i)], np.float64)) for i in ids])
    return torch.from_numpy(c2w).float(), torch.from_numpy(fit_matrix(native_hw, hw) @ K).float()


def window_starts(num: int, window: int, overlap: int = 2) -> list:
    """Start indices of windows of ``window`` frames covering ``num`` frames, consecutive ones sharing ``overlap``."""
    if num <= window:
        return [0]
    starts = list(range(0, num - window, window - overlap)) + [num - window]
    return sorted(set(starts))


def chain_windows(windows: list, starts: list) -> torch.Tensor:
    """One trajectory [num, 4, 4] from per-window cameras (window k covers frames starts[k]...), each window
    chained onto the frames already placed through its first two frames (which the previous window covered)."""
    chained = list(windows[0])
    for c2w, start in zip(windows[1:], starts[1:]):
        s, R, t = similarity_to(chained[start], chained[start + 1], c2w[0], c2w[1])
        moved = apply_similarity(c2w, s, R, t)
        chained.extend(moved[len(chained) - start:])
    return torch.stack(chained)


def write_ply(path: Path, model) -> None:
    """The model's current scene as a 3DGS PLY: x y z nx ny nz f_dc_0..2 opacity (logit) scale_0..2 (log) rot_0..3
    (w x y z), the parametrisation its scene buffers already hold (``SceneMixin.set_scene``)."""
    from plyfile import PlyData, PlyElement

    means, sh0, quats = model.means, model.shs_0, model.quats
    columns = {
        **{k: means[:, i] for i, k in enumerate("xyz")}, **{k: torch.zeros_like(means[:, 0]) for k in ("nx", "ny", "nz")},
        **{f"f_dc_{i}": sh0[:, i] for i in range(3)}, "opacity": model.opacities[:, 0],
        **{f"scale_{i}": model.scales[:, i] for i in range(3)}, **{f"rot_{i}": quats[:, i] for i in range(4)},
    }
    data = np.empty(len(means), dtype=[(k, "f4") for k in columns])
    for k, v in columns.items():
        data[k] = v.detach().cpu().numpy()
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))


def write_scene(folder: Path, images: torch.Tensor, ids, c2w_opencv: torch.Tensor, K: torch.Tensor, about: dict) -> None:
    """Write images/frame_XXXX.png and a nerfstudio transforms.json into folder. images: [L, 3, H, W] in [0, 1];
    ids: their frame numbers in the input; c2w_opencv: [L, 4, 4] OpenCV camera-to-world; K: [3, 3] shared
    intrinsics in pixels; about: kept under the "pensieve" key."""
    from PIL import Image

    (folder / "images").mkdir()
    frames = []
    for i, (image, idx) in enumerate(zip(images, ids)):
        name = f"images/frame_{i:04d}.png"
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / name)
        frames.append({"file_path": name, "source_frame": int(idx), "c2w_opencv": c2w_opencv[i].double().numpy()})
    intrinsics = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
    write_transforms(folder, frames, {k: float(v) for k, v in intrinsics.items()}, images.shape[-2:], about)


def fly_through(c2w: torch.Tensor, count: int) -> torch.Tensor:
    """Camera-to-world [count, 4, 4] interpolated along the predicted cameras (piecewise slerp and lerp),
    extrapolated 15 % beyond the first and last."""
    from pensieve_ns.cameras import matrix_to_quaternion, quaternion_to_matrix

    L = len(c2w)
    quats = matrix_to_quaternion(c2w[:, :3, :3])
    for i in range(1, L):  # the same hemisphere as the previous one, so interpolation takes the short way
        if (quats[i] * quats[i - 1]).sum() < 0:
            quats[i] = -quats[i]
    s = torch.linspace(-0.15 * (L - 1), 1.15 * (L - 1), count)
    i0 = s.floor().clamp(0, L - 2).long()
    w = (s - i0)[:, None]  # outside [0, 1] at the ends: linear extrapolation of the last segment
    q = torch.nn.functional.normalize((1 - w) * quats[i0] + w * quats[i0 + 1], dim=-1)
    out = torch.eye(4).repeat(count, 1, 1)
    out[:, :3, :3] = quaternion_to_matrix(q)
    out[:, :3, 3] = (1 - w) * c2w[i0, :3, 3] + w * c2w[i0 + 1, :3, 3]
    return out


@torch.no_grad()
def reconstruct(cfg: ReconstructConfig) -> dict:
    """Write everything into a temporary folder next to OUT, then move it into place, with a progress bar.
    Returns counts and timings."""
    out = Path(cfg.output_dir)
    check_output_folder(out)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        return _reconstruct(cfg, out, progress)


def _reconstruct(cfg: ReconstructConfig, out: Path, progress) -> dict:
    from PIL import Image

    task = progress.add_task("loading the model and the frames", total=None)
    times = {}
    t = time.perf_counter()
    model, trainer_config, ckpt = load_run(Path(cfg.load_config), ("pensieve-stage2", "pensieve-stage1"), "pensieve-reconstruct")
    has_gaussians = model.gaussian_head is not None  # a stage-1 run gives cameras only
    hw = tuple(trainer_config.pipeline.datamanager.image_size)
    images, ids, clip = read_frames(cfg, hw)
    given = None
    if cfg.cameras is not None:
        from pensieve_ns.model.flow_depth import FlowDepthHead

        if isinstance(model.depth_head, FlowDepthHead):
            raise PensieveInputError(cfg.cameras, "this run's flow depth head reads the cameras it predicts itself; "
                                     "--cameras needs a run without it")
        given = given_cameras(cfg.cameras, ids, clip.native_hw, hw)
    times["load"] = time.perf_counter() - t
    L, (H, W) = len(images), hw
    t = time.perf_counter()
    window = max(cfg.window, 3)
    starts = window_starts(L, window)
    progress.update(task, description="cameras and Gaussians" if has_gaussians else "cameras", total=len(starts) + 2, completed=0)
    cams, Ks, splats, context = [], [], [], []
    for start in starts:
        progress.advance(task)
        n = min(window, L)
        ctx = torch.from_numpy(np.unique(np.linspace(0, n - 1, min(max(cfg.context, 1), n)).round().astype(int)))
        batch = {"images": images[None, start:start + n], "context": ctx[None]}
        if given is not None:
            batch.update(given_c2w_opencv=given[0][None, start:start + n], given_K=given[1].expand(1, n, 3, 3))
        pred = model(batch)
        cams.append(pred["c2w_opencv"][0])
        Ks.append(pred["K"][0, 0])
        splats.append(pred.get("gaussians"))
        context.extend((ctx + start).tolist())
    times["feed_forward"] = time.perf_counter() - t
    c2w, K = chain_windows(cams, starts), torch.stack(Ks).mean(0)
    # Every window's Gaussians, moved into the chained world by the same similarity as its cameras.
    from pensieve_ns.cameras import matrix_to_quaternion, quaternion_multiply

    parts = {"means": [], "quats": [], "scales": [], "opacities": [], "colors": []}
    for cam, start, gs in zip(cams, starts, splats) if has_gaussians else ():
        s, R, t_ = similarity_to(c2w[start], c2w[start + 1], cam[0], cam[1]) if start > 0 else (1.0, torch.eye(3), torch.zeros(3))
        parts["means"].append(s * gs.means[0] @ R.T + t_)
        parts["quats"].append(quaternion_multiply(matrix_to_quaternion(R)[None].expand(gs.quats.shape[1], 4), gs.quats[0]))
        parts["scales"].append(s * gs.scales[0])
        parts["opacities"].append(gs.opacities[0])
        parts["colors"].append(gs.colors[0])
    merged = {k: torch.cat(v) for k, v in parts.items()} if has_gaussians else None
    with staged_folder(out) as tmp:
        t = time.perf_counter()
        write_scene(tmp, images, ids, c2w, K, {"checkpoint": str(ckpt), "method": trainer_config.method_name,
                                               "input": str(cfg.input), "context_frames": context, "window_starts": starts,
                                               "cameras": str(cfg.cameras) if given is not None else "predicted",
                                               "labelled_synthetic_prior": model.config.labelled_prior or None})
        if has_gaussians:
            model.set_scene(merged["means"], merged["quats"], merged["scales"], merged["opacities"], merged["colors"], c2w,
                            K.expand(L, 3, 3), images)
            write_ply(tmp / "splat.ply", model)
            progress.update(task, description="rendering the fly-through", advance=1)
            path = fly_through(c2w, cfg.novel_view_frames)
            rgb = torch.cat([model.render_scene(path[k:k + 8], K.expand(len(path[k:k + 8]), 3, 3), W, H)["rgb"]
                             for k in range(0, len(path), 8)])
            video = (rgb.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            write_video(tmp / "novel_views.mp4", video)
            Image.fromarray(np.concatenate([video[0], video[len(video) // 2], video[-1]], axis=1)).save(tmp / "preview.png")
        gt = clip.gt.c2w_opencv[ids] if clip.gt is not None else None
        plot_cameras(tmp / "cameras.png", c2w.double().numpy(), gt)
        progress.update(task, description="done", advance=1)
        times["write"] = time.perf_counter() - t
    return {"frames": L, "frames_read": clip.num_frames, "context": sorted(set(context)), "windows": len(starts), "times": times,
            "gaussians": int(merged["means"].shape[0]) if has_gaussians else 0}


def main(cfg: ReconstructConfig) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        summary = reconstruct(cfg)
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    t = summary["times"]
    files = "splat.ply, novel_views.mp4, preview.png, cameras.png" if summary["gaussians"] else "cameras.png (a stage-1 run: cameras only)"
    used = f"{summary['frames']} of {summary['frames_read']} frames"
    if summary["frames"] < summary["frames_read"]:
        used += f" (--stride {cfg.stride}" + (f", --max-frames {cfg.max_frames})" if cfg.max_frames is not None else ")")
    print(f"{PROG}: {used} in {summary['windows']} window(s) (context frames {summary['context']}), "
          f"{summary['gaussians']} Gaussians\n"
          f"  load {t['load']:.1f} s, feed-forward {t['feed_forward']:.2f} s, write {t['write']:.1f} s\n"
          f"  {cfg.output_dir}/: transforms.json, images/, {files}\n"
          f"  refine on a GPU: ns-train splatfacto --data {cfg.output_dir}", file=sys.stdout)


def entrypoint() -> None:
    import tyro

    main(tyro.cli(ReconstructConfig, description=__doc__.split("\n")[0]))


if __name__ == "__main__":
    entrypoint()
