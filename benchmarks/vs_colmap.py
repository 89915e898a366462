"""COLMAP (pycolmap incremental SfM) against pensieve-ns's feed-forward cameras, on the same frames.

Clips: held-out generated clips (other textures and seeds than training; ``--generated N``, rendered at
``--size``) and ``../shared/data/chair_orbit`` (every ``--chair-step``-th frame at 128 px). For each clip:

  colmap     SIFT features, exhaustive matching, incremental mapping (pycolmap, CPU, one shared pinhole camera);
             the largest model's registered frames. A frame COLMAP did not register counts as a failed pose
             (error 180 deg) in the "all pairs" accuracies; the "registered pairs" columns use only its own frames.
  pensieve   one feed-forward pass of a pensieve-ns run (``--load-config``) over all the clip's frames, resized
             to the run's image size; context = first and last frames.
  identity   every camera the same: the trivial baseline.

Pose metrics (``eval.poses``): rotation accuracy Racc@5/15 over the frame pairs at most ``--max-pair-gap``
frames apart, the focal-length error, and the wall time on this CPU, as a ratio to COLMAP's.

    python benchmarks/vs_colmap.py --load-config outputs/demo/runs/.../config.yml --generated 8 \\
        --out benchmarks/results/vs_colmap
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.cameras import opengl_to_opencv_c2w  # noqa: E402
from pensieve_ns.eval.poses import focal_error, relative_pose_errors  # noqa: E402

CHAIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "chair_orbit"


def chair_clip(step: int):
    meta = json.loads((CHAIR / "transforms.json").read_text())
    from PIL import Image

    frames = meta["frames"][::step]
    images = np.stack([np.asarray(Image.open(CHAIR / f["file_path"]).convert("RGB")) for f in frames])
    c2w = np.stack([opengl_to_opencv_c2w(np.array(f["transform_matrix"], dtype=np.float64)) for f in frames])
    return {"name": f"chair_orbit_every{step}", "images": images, "c2w": c2w, "fx": float(meta["fl_x"])}


def generated_clips(n: int, frames: int, size: int) -> List[Dict]:
    from pensieve_ns.data.synthetic import generate_clip

    out = []
    for k in range(n):
        c = generate_clip(20_000 + k, frames, size, "heldout")
        out.append({"name": f"heldout_{k:02d}_{c.info['path']}", "images": c.frames, "c2w": c.c2w_opencv, "fx": float(c.K[0, 0])})
    return out


def run_colmap(images: np.ndarray) -> Dict:
    """Incremental SfM; returns c2w [N, 4, 4] (None rows for unregistered frames), fx, time."""
    import pycolmap
    from PIL import Image

    pycolmap.logging.minloglevel = 2  # warnings and errors only (its INFO log is thousands of lines)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img).save(tmp / "images" / f"{i:04d}.png")
        db = tmp / "database.db"
        pycolmap.extract_features(db, tmp / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                                  device=pycolmap.Device.cpu)
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
        (tmp / "sparse").mkdir()
        recs = pycolmap.incremental_mapping(db, tmp / "images", tmp / "sparse")
    poses: List[Optional[np.ndarray]] = [None] * len(images)
    fx = None
    if recs:
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        for image in rec.images.values():
            if image.has_pose:
                w2c = np.eye(4)
                w2c[:3] = image.cam_from_world().matrix()
                poses[int(Path(image.name).stem)] = np.linalg.inv(w2c)
        cam = next(iter(rec.cameras.values()))
        fx = float(cam.focal_length_x)
    return {"c2w": poses, "fx": fx, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def run_pensieve(model, hw, images: np.ndarray) -> Dict:
    from pensieve_ns.data.frames import resize_center_crop

    t0 = time.perf_counter()
    frames = torch.from_numpy(np.stack([resize_center_crop(f, hw) for f in images])).permute(0, 3, 1, 2).float() / 255
    out = model.get_outputs({"images": frames[None], "context": torch.tensor([[0, len(frames) - 1]])})
    seconds = time.perf_counter() - t0
    fx = float(out["K"][0, 0, 0, 0]) * images.shape[2] / hw[1]  # in the clip's pixels
    return {"c2w": list(out["c2w_opencv"][0].double().numpy()), "fx": fx, "seconds": seconds}


def score(poses: List[Optional[np.ndarray]], gt: np.ndarray, max_gap: int) -> Dict:
    """Racc over pairs at most max_gap apart: all pairs (unregistered = 180 deg) and registered pairs only."""
    n = len(gt)
    ok = np.array([p is not None for p in poses])
    filled = np.stack([p if p is not None else np.eye(4) for p in poses])
    e = relative_pose_errors(filled, gt)
    i, j = np.triu_indices(n, k=1)
    near = (j - i) <= max_gap
    both = ok[i] & ok[j]
    rot_all = np.where(both, e.rot_err, 180.0)[near]
    rot_reg = e.rot_err[near & both]
    out = {"registered": int(ok.sum()), "frames": n, "pairs": int(near.sum())}
    for t in (5, 15):
        out[f"Racc@{t}"] = float((rot_all < t).mean())
        out[f"Racc@{t}_registered_pairs"] = float((rot_reg < t).mean()) if len(rot_reg) else None
    out["true_pair_angle"] = float(e.true_angle[near].mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load-config", type=Path, help="a pensieve-stage1/2 run; without it only COLMAP and identity run")
    p.add_argument("--generated", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--chair-step", type=int, default=4, help="every k-th chair_orbit frame (0: skip chair)")
    p.add_argument("--max-pair-gap", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = hw = None
    if args.load_config:
        from pensieve_ns.checkpoints import load_run

        model, cfg, _ = load_run(args.load_config, ("pensieve-stage1", "pensieve-stage2"), "vs_colmap")
        hw = tuple(cfg.pipeline.datamanager.image_size)
    clips = generated_clips(args.generated, args.frames, args.size)
    if args.chair_step:
        clips.append(chair_clip(args.chair_step))
    if model is not None:
        run_pensieve(model, hw, clips[0]["images"])  # warm-up (allocator, kernels): not timed
    rows = []
    for clip in clips:
        gt, n = clip["c2w"], len(clip["images"])
        methods = {"colmap": run_colmap(clip["images"]), "identity": {"c2w": [np.eye(4)] * n, "fx": None, "seconds": 0.0}}
        if model is not None:
            methods["pensieve"] = run_pensieve(model, hw, clip["images"])
        for name, m in methods.items():
            row = {"clip": clip["name"], "method": name, "seconds": m["seconds"], **score(m["c2w"], gt, args.max_pair_gap)}
            row["focal_err"] = focal_error(m["fx"], clip["fx"]) if m["fx"] else None
            rows.append(row)
            print(f"{clip['name']:>28} {name:>9}: registered {row['registered']}/{n}, Racc@5 {row['Racc@5']:.2f}, "
                  f"Racc@15 {row['Racc@15']:.2f}, {row['seconds']:.2f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    groups = {"generated": [r for r in rows if not r["clip"].startswith("chair")], "chair_orbit": [r for r in rows if r["clip"].startswith("chair")]}
    summary = {}
    lines = ["| clips | method | registered | Racc@5 (all pairs) | Racc@15 (all pairs) | Racc@5 (registered pairs) | focal err | seconds per clip | time / COLMAP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for gname, grows in groups.items():
        if not grows:
            continue
        colmap_s = np.mean([r["seconds"] for r in grows if r["method"] == "colmap"])
        for method in ("colmap", "pensieve", "identity"):
            rs = [r for r in grows if r["method"] == method]
            if not rs:
                continue
            mean = lambda k: (float(np.mean([r[k] for r in rs if r[k] is not None])) if any(r[k] is not None for r in rs) else None)  # noqa: E731
            s = {k: mean(k) for k in ("Racc@5", "Racc@15", "Racc@5_registered_pairs", "focal_err", "seconds")}
            s["registered"] = f"{sum(r['registered'] for r in rs)}/{sum(r['frames'] for r in rs)}"
            summary[f"{gname}/{method}"] = s
            f = lambda v, fmt="{:.2f}": "-" if v is None else fmt.format(v)  # noqa: E731
            lines.append(f"| {gname} ({len(rs)}) | {method} | {s['registered']} | {f(s['Racc@5'])} | {f(s['Racc@15'])} | "
                         f"{f(s['Racc@5_registered_pairs'])} | {f(s['focal_err'])} | {f(s['seconds'], '{:.2f}')} | "
                         f"{f(s['seconds'] / colmap_s if colmap_s > 0 else None, '{:.3f}')} |")
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads()}
    (args.out / "results.json").write_text(json.dumps({**meta, "summary": summary, "rows": rows}, indent=1))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
