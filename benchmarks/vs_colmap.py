"""pensieve-cameras (optical-flow tracks + pycolmap) against COLMAP's own pipeline (pycolmap SIFT, exhaustive
matching, incremental mapping: what a user would run instead) and the identity baseline, on the same frames, in
the same process.

Clips (cameras are never given to a solver; ground truth only scores):
  re10k     ``../shared/data/re10k_sample``: 5 real RealEstate10K test clips, 16 frames at 384x256 (non-square
            pixels: the focal error is the mean of the fx and fy errors).
  chair     ``../shared/data/chair_orbit`` every ``--chair-step``-th frame (50 frames at 128 px).
  generated ``--generated N`` clips of each kind (orbit, arc, walk, pan), heldout split, seeds ``--seed`` +
            k, ``--frames`` frames at ``--size`` px.
  desk      ``--desk``: ``../shared/data/desk_val`` (VALIDATION: choices were made on it; never a result).

Per clip and method: registered frames; Racc/Tacc at 5 and 15 degrees and AUC@30 (of max(rotation, translation
error)) over all frame pairs, a frame a method did not register counting as a failed pair; the focal error; wall
seconds and their ratio to COLMAP's on the same clip; whether the solver flagged its result. Translation is not
scored on pans (the true camera does not move).

    python benchmarks/vs_colmap.py --out benchmarks/results/vs_colmap/NAME [--generated 3 --seed 70000]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.cameras import opengl_to_opencv_c2w  # noqa: E402
from pensieve_ns.eval.poses import pose_auc, relative_pose_errors  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _nerfstudio_clip(folder: Path, name: str, step: int = 1) -> Dict:
    from PIL import Image

    meta = json.loads((folder / "transforms.json").read_text())
    frames = meta["frames"][::step]
    images = np.stack([np.asarray(Image.open(folder / f["file_path"]).convert("RGB")) for f in frames])
    c2w = np.stack([opengl_to_opencv_c2w(np.array(f["transform_matrix"], dtype=np.float64)) for f in frames])
    return {"name": name, "group": name.split("_")[0], "images": images, "c2w": c2w,
            "fx": float(meta["fl_x"]), "fy": float(meta["fl_y"]), "pan": False}


def re10k_clips() -> List[Dict]:
    from pensieve_ns.data.sources import find_clips

    out = []
    for clip in find_clips(SHARED / "re10k_sample" / "test"):
        images = np.stack(clip.read(list(range(clip.num_frames))))
        K = clip.gt.K[0]
        out.append({"name": f"re10k_{clip.name}", "group": "re10k", "images": images, "c2w": clip.gt.c2w_opencv,
                    "fx": float(K[0, 0]), "fy": float(K[1, 1]), "pan": False})
    return out


def generated_clips(n: int, seed: int, frames: int, size: int) -> List[Dict]:
    from pensieve_ns.data.synthetic import generate_clip

    out = []
    for k in range(n):
        for j, kind in enumerate(("orbit", "arc", "walk", "pan")):
            s = seed + 4 * k + j
            c = generate_clip(s, frames, size, "heldout", path_kind=kind)
            out.append({"name": f"gen_{s}_{kind}", "group": "generated", "images": c.frames, "c2w": c.c2w_opencv,
                        "fx": float(c.K[0, 0]), "fy": float(c.K[1, 1]), "pan": kind == "pan"})
    return out


def run_colmap(images: np.ndarray) -> Dict:
    """COLMAP's pipeline through pycolmap: SIFT, exhaustive matching, incremental mapping, one shared camera."""
    import pycolmap
    from PIL import Image

    pycolmap.logging.minloglevel = 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img).save(tmp / "images" / f"{i:04d}.png")
        db = tmp / "database.db"
        pycolmap.extract_features(db, tmp / "images", camera_mode=pycolmap.CameraMode.SINGLE, device=pycolmap.Device.cpu)
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
        (tmp / "sparse").mkdir()
        recs = pycolmap.incremental_mapping(db, tmp / "images", tmp / "sparse")
    poses: List[Optional[np.ndarray]] = [None] * len(images)
    fx = fy = None
    if recs:
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        for image in rec.images.values():
            if image.has_pose:
                w2c = np.eye(4)
                w2c[:3] = image.cam_from_world().matrix()
                poses[int(Path(image.name).stem)] = np.linalg.inv(w2c)
        cam = next(iter(rec.cameras.values()))
        fx, fy = float(cam.focal_length_x), float(cam.focal_length_y)
    return {"c2w": poses, "fx": fx, "fy": fy, "seconds": time.perf_counter() - t0, "warnings": []}


def run_pensieve(images: np.ndarray, camera_model: str) -> Dict:
    from dataclasses import replace

    from pensieve_ns.sfm import SolverConfig, solve_cameras

    cfg = SolverConfig()
    cfg = replace(cfg, mapper=replace(cfg.mapper, camera_model=camera_model))
    t0 = time.perf_counter()
    r = solve_cameras(images, cfg)
    seconds = time.perf_counter() - t0
    poses = [r.c2w_opencv.get(k) for k in range(len(images))]
    return {"c2w": poses, "fx": float(r.K[0, 0]), "fy": float(r.K[1, 1]), "seconds": seconds, "warnings": r.warnings,
            "model": r.model, "focal_source": r.focal_source, "stage_seconds": r.seconds}


def score(poses: List[Optional[np.ndarray]], clip: Dict) -> Dict:
    gt, n = clip["c2w"], len(clip["c2w"])
    ok = np.array([p is not None for p in poses])
    e = relative_pose_errors(np.stack([p if p is not None else np.eye(4) for p in poses]), gt)
    i, j = np.triu_indices(n, k=1)
    both = ok[i] & ok[j]
    rot = np.where(both, e.rot_err, 180.0)
    trans = np.where(both, e.trans_err, 180.0)
    row = {"registered": int(ok.sum()), "frames": n}
    for t in (5, 15):
        row[f"Racc@{t}"] = float((rot < t).mean())
        row[f"Tacc@{t}"] = None if clip["pan"] else float((trans < t).mean())
    row["AUC@30"] = float(pose_auc(rot if clip["pan"] else np.maximum(rot, trans), (30.0,))["@30"])
    return row


def focal_err(m: Dict, clip: Dict) -> Optional[float]:
    if m["fx"] is None:
        return None
    return float((abs(m["fx"] - clip["fx"]) / clip["fx"] + abs(m["fy"] - clip["fy"]) / clip["fy"]) / 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--re10k", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--chair-step", type=int, default=4, help="every k-th chair_orbit frame (0: skip the chair)")
    p.add_argument("--generated", type=int, default=3, help="clips of each kind (orbit, arc, walk, pan)")
    p.add_argument("--seed", type=int, default=70000, help="first seed of the generated block (heldout split)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--desk", action="store_true", help="also the desk VALIDATION clip")
    p.add_argument("--camera-model", default="SIMPLE_PINHOLE")
    args = p.parse_args()
    clips = re10k_clips() if args.re10k else []
    if args.chair_step:
        clips.append(_nerfstudio_clip(SHARED / "chair_orbit", f"chair_every{args.chair_step}", args.chair_step))
    clips += generated_clips(args.generated, args.seed, args.frames, args.size)
    if args.desk:
        clips.append(_nerfstudio_clip(SHARED / "desk_val", "desk_val"))
    rows = []
    for clip in clips:
        n = len(clip["images"])
        methods = {"pensieve": run_pensieve(clip["images"], args.camera_model), "colmap": run_colmap(clip["images"]),
                   "identity": {"c2w": [np.eye(4)] * n, "fx": None, "fy": None, "seconds": 0.0, "warnings": []}}
        colmap_s = methods["colmap"]["seconds"]
        for name, m in methods.items():
            row = {"clip": clip["name"], "group": clip["group"], "method": name, **score(m["c2w"], clip),
                   "focal_err": focal_err(m, clip), "seconds": m["seconds"], "time_vs_colmap": m["seconds"] / colmap_s,
                   "flagged": bool(m["warnings"]), "warnings": m["warnings"],
                   **{k: m[k] for k in ("model", "focal_source", "stage_seconds") if k in m}}
            rows.append(row)
            f = lambda v, fmt="{:.2f}": "-" if v is None else fmt.format(v)  # noqa: E731
            print(f"{clip['name']:>26} {name:>9}: reg {row['registered']}/{n} Racc@5 {row['Racc@5']:.2f} "
                  f"Tacc@5 {f(row['Tacc@5'])} AUC@30 {row['AUC@30']:.2f} focal {f(row['focal_err'], '{:.3f}')} "
                  f"{row['seconds']:.1f} s{' FLAGGED' if row['flagged'] else ''}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = table_lines(rows)
    meta = {"command": " ".join(sys.argv), "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (args.out / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


def table_lines(rows: List[Dict]) -> List[str]:
    """Per clip, then a mean per group; time ratios against COLMAP measured on the same clip."""
    f = lambda v, fmt="{:.2f}": "-" if v is None else fmt.format(v)  # noqa: E731
    mean = lambda rs, k: (float(np.mean([r[k] for r in rs if r[k] is not None]))  # noqa: E731
                          if any(r[k] is not None for r in rs) else None)
    lines = ["| clip | method | registered | Racc@5 | Racc@15 | Tacc@5 | Tacc@15 | AUC@30 | focal err | seconds | time / COLMAP | flagged |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = sorted({r["group"] for r in rows}, key=lambda g: [r["group"] for r in rows].index(g))
    for group in groups:
        clips = sorted({r["clip"] for r in rows if r["group"] == group}, key=lambda c: [r["clip"] for r in rows].index(c))
        for method in ("pensieve", "colmap", "identity"):
            rs = [r for r in rows if r["group"] == group and r["method"] == method]
            entries = [(c, [r for r in rs if r["clip"] == c]) for c in clips] if len(clips) > 1 else []
            entries.append((f"**{group} mean ({len(clips)})**" if len(clips) > 1 else clips[0], rs))
            for label, sel in entries:
                reg = f"{sum(r['registered'] for r in sel)}/{sum(r['frames'] for r in sel)}"
                lines.append(f"| {label} | {method} | {reg} | {f(mean(sel, 'Racc@5'))} | {f(mean(sel, 'Racc@15'))} | "
                             f"{f(mean(sel, 'Tacc@5'))} | {f(mean(sel, 'Tacc@15'))} | {f(mean(sel, 'AUC@30'))} | "
                             f"{f(mean(sel, 'focal_err'), '{:.3f}')} | {f(mean(sel, 'seconds'), '{:.1f}')} | "
                             f"{f(mean(sel, 'time_vs_colmap'), '{:.2f}')} | {sum(r['flagged'] for r in sel)}/{len(sel)} |")
    return lines


if __name__ == "__main__":
    main()
