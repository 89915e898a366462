"""``make demo``: what the project does well, on built-in data, on a CPU, in a few minutes.

1. ``pensieve-cameras`` solves the cameras of a built-in clip (generated, 160 px, with known cameras), compared
   with the truth and with identity cameras.
2. ``pensieve-eval`` runs the shipped feed-forward model (``PRETRAINED/stage1-flow64``) on held-out clips: its
   cameras against identity, its renders of held-out frames against blending the context frames.
3. ``ns-train pensieve-stage2-flow64`` trains stage 2 starting from the shipped stage 1 (so its cameras are real),
   then ``pensieve-eval``, ``ns-export gaussian-splat`` and ``pensieve-reconstruct`` read that run.
``--from-scratch`` also trains the tiny stage 1 and stage 2 from random weights (``ns-train pensieve-stage1``): on a
CPU in minutes its cameras collapse to the identity and its renders stay below blending; it shows the training
path runs, not that it learns.

The shipped weights are files of the repository, so the repository's folder is given (``--pretrained``): the
package never looks for them itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from pensieve_ns.errors import PensieveInputError, exit_with_error

PROG = "pensieve-demo"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


def run(*cmd, quiet: bool = False) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL if quiet else None)


def ensure_data(out: Path) -> dict:
    """Built-in generated clips with known cameras and depth (reused when present): ``train`` (stage-2 training),
    ``heldout`` (64 px evaluation; textures and paths training never produced) and ``camera_clip`` (160 px)."""
    from pensieve_ns.data.synthetic import write_dataset

    sets = {"train": (8, 16, 64, 0, "train"), "heldout": (6, 24, 64, 900_000, "heldout"),
            "camera_clip": (1, 24, 160, 900_100, "heldout")}
    paths = {}
    for name, (clips, frames, size, seed, split) in sets.items():
        paths[name] = out / name
        if not (paths[name] / "clip_0000" / "transforms.json").is_file():
            write_dataset(paths[name], clips, frames, size, seed=seed, split=split)
    return paths


def solve_cameras(clip: Path, out: Path) -> dict:
    """``pensieve-cameras`` on one clip; its cameras against the clip's known ones (and identity cameras)."""
    from pensieve_ns.cameras import opengl_to_opencv_c2w
    from pensieve_ns.data.sources import nerfstudio_clip
    from pensieve_ns.eval.poses import accuracy, focal_error, relative_pose_errors

    shutil.rmtree(out, ignore_errors=True)
    run(tool("pensieve-cameras"), "--input", clip, "--output-dir", out)
    meta = json.loads((out / "transforms.json").read_text())
    gt = nerfstudio_clip(clip).gt
    ids = [f["source_frame"] for f in meta["frames"]]
    pred = np.stack([opengl_to_opencv_c2w(np.asarray(f["transform_matrix"])) for f in meta["frames"]])
    errors = relative_pose_errors(pred, gt.c2w_opencv[ids]).rot_err
    identity = relative_pose_errors(np.tile(np.eye(4), (len(ids), 1, 1)), gt.c2w_opencv[ids]).rot_err
    return {"registered": len(ids), "frames": gt.c2w_opencv.shape[0], "Racc@5": accuracy(errors)["@5"],
            "identity_Racc@5": accuracy(identity)["@5"], "focal_err": focal_error(meta["fl_x"], float(gt.K[0, 0, 0]))}


def evaluate(config: Path, data: Path, out: Path) -> dict:
    """``pensieve-eval`` (target-aware) of a run on held-out clips; returns its summary."""
    run(tool("pensieve-eval"), "--load-config", config, "--data", data, "--output", out, "--no-lpips", quiet=True)
    return json.loads(out.read_text())["summary"]


def ns_train(method: str, data: Path, runs: Path, steps: int, *extra) -> Path:
    """``ns-train METHOD`` on the CPU; returns the run's config.yml."""
    name = method.replace("pensieve-", "")
    run(tool("ns-train"), method, "--data", data, "--output-dir", runs, "--experiment-name", "demo", "--timestamp", name,
        "--machine.device-type", "cpu", "--max-num-iterations", steps, "--steps-per-save", max(1, steps // 2),
        "--steps-per-eval-image", steps, "--steps-per-eval-all-images", 100000, "--viewer.quit-on-train-completion",
        "True", "--logging.local-writer.enable", "False", *extra)
    return runs / "demo" / method / name / "config.yml"


def line(label: str, s: dict) -> str:
    gs = f", Gaussians {s['psnr_gs']:.2f} dB" if "psnr_gs" in s else ""
    return (f"  {label}: LVSM {s['psnr_lvsm']:.2f} dB{gs} (blending {s['psnr_blend_context']:.2f}); Racc@5 "
            f"{s['Racc@5']:.2f} (identity {s['identity_Racc@5']:.2f}), focal error {100 * s['focal_err']:.0f} %")


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", type=Path, required=True, help="the repository's pretrained/ folder")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--stage2-steps", type=int, default=150, help="stage-2 steps from the shipped model (CPU)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--from-scratch", action="store_true", help="also train the tiny stage 1 and 2 from scratch")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    start = time.perf_counter()
    shipped = args.pretrained / "stage1-flow64"
    depth_head = args.pretrained / "flow-depth-head" / "flow_depth_head.pt"
    try:
        for path in (shipped / "config.yml", depth_head):
            if not path.is_file():
                raise PensieveInputError(path, "not found: --pretrained must be the repository's pretrained/ folder")
        data = ensure_data(args.out / "data")
        cams = solve_cameras(data["camera_clip"] / "clip_0000", args.out / "cameras")
        s_shipped = evaluate(shipped / "config.yml", data["heldout"], args.out / "eval_shipped.json")
        runs = args.out / "runs"
        config2 = ns_train("pensieve-stage2-flow64", data["train"], runs, args.stage2_steps, "--stage1-checkpoint", shipped,
                           "--pipeline.model.depth-head.weights", depth_head, "--pipeline.datamanager.batch-size", args.batch_size)
        s_stage2 = evaluate(config2, data["heldout"], args.out / "eval_stage2.json")
        run(tool("ns-export"), "gaussian-splat", "--load-config", config2, "--output-dir", args.out / "export", quiet=True)
        shutil.rmtree(args.out / "reconstruct", ignore_errors=True)
        run(tool("pensieve-reconstruct"), "--load-config", config2, "--input", data["heldout"] / "clip_0000",
            "--output-dir", args.out / "reconstruct")
        scratch = None
        if args.from_scratch:
            c1 = ns_train("pensieve-stage1", data["train"], runs, 600)
            c2 = ns_train("pensieve-stage2", data["train"], runs, 100, "--stage1-checkpoint", c1.parent)
            scratch = (evaluate(c1, data["heldout"], args.out / "eval_scratch1.json"),
                       evaluate(c2, data["heldout"], args.out / "eval_scratch2.json"))
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    except subprocess.CalledProcessError as err:
        print(f"{PROG}: error: {Path(err.cmd[0]).name} failed with exit status {err.returncode}", file=sys.stderr)
        raise SystemExit(err.returncode) from None
    out = args.out
    print(
        f"\n{PROG}: done in {time.perf_counter() - start:.0f} s. Built-in generated clips with known cameras.\n"
        f"1. pensieve-cameras, one 160-px clip: {cams['registered']}/{cams['frames']} frames registered, Racc@5 "
        f"{cams['Racc@5']:.2f} (identity {cams['identity_Racc@5']:.2f}), focal error {100 * cams['focal_err']:.1f} %\n"
        f"2. shipped model, feed-forward, {s_shipped['scenes']} held-out clips at 64 px (LABELLED SYNTHETIC PRIOR):\n"
        + line("stage1-flow64", s_shipped) + "\n"
        f"3. stage 2 from it, {args.stage2_steps} CPU steps (a start, not a trained model):\n"
        + line("stage2-flow64", s_stage2) + "\n"
        + ("" if scratch is None else "from scratch (tiny, CPU minutes: cameras collapse; shows the path runs):\n"
           + line("stage 1", scratch[0]) + "\n" + line("stage 2", scratch[1]) + "\n")
        + f"files: {out / 'cameras'}/transforms.json (+ images/, sparse_pc.ply)\n"
        f"       {out}/eval_*.json, {out / 'export'}/splat.ply, {out / 'reconstruct'}/ (splat.ply, novel_views.mp4)\n"
        f"next:  ns-viewer --load-config {config2}\n"
        f"       ns-train splatfacto --data {out / 'cameras'}      (Gaussians on the solved cameras; a GPU)\n"
        f"       pensieve-cameras --input YOUR_VIDEO.mp4 --output-dir cams\n"
        f"       pensieve-reconstruct --load-config {config2} --input YOUR_VIDEO.mp4 --output-dir rec"
    )


if __name__ == "__main__":
    main()
