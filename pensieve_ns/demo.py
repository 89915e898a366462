"""``make demo``: the main job on the built-in default data.

Writes the default synthetic data (training and held-out clips with ground-truth cameras and depth), trains
stage 1 with ``ns-train pensieve-stage1`` and then stage 2 from it with ``ns-train pensieve-stage2`` (tiny preset,
CPU), evaluates both runs on the held-out clips with ``pensieve-eval`` (target-aware: held-out frames, LVSM and
Gaussian branches, against blending the context frames; pose metrics against the ground-truth cameras), exports the
Gaussians with ``ns-export``, reconstructs one held-out clip with ``pensieve-reconstruct``, and prints where
everything is. Before training it evaluates the shipped stage-1 model (``pretrained/stage1-prior32``) on the same
held-out clips, and ``pretrained/stage1-flow64`` (the same decoder at 64 px with the flow camera head): that part
needs no training.
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

from pensieve_ns.errors import PensieveInputError, exit_with_error

PROG = "pensieve-demo"
SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "stage1-prior32" / "config.yml"
"""The shipped stage-1 model (LEARNING.md exp 37; its camera head carries the labelled synthetic prior)."""
SHIPPED_FLOW = SHIPPED.parents[1] / "stage1-flow64" / "config.yml"
"""The same decoder at 64 px with the flow camera head (issue 5, exp 38 weights; the labelled synthetic prior)."""


def ensure_data(out: Path, num_clips: int, frames: int, size: int) -> tuple[Path, Path]:
    """Default data: ``out/train`` and ``out/heldout`` (disjoint textures and seeds); reused when present."""
    from pensieve_ns.cli.data import synth

    train, held = out / "train", out / "heldout"
    if not (train / "clip_0000" / "transforms.json").is_file():
        synth(train, num_clips, frames, size, seed=0, split="train", overwrite=True)
    if not (held / "clip_0000" / "transforms.json").is_file():
        synth(held, max(2, num_clips // 4), frames, size, seed=1000, split="heldout", overwrite=True)
    return train, held


def run_ns_train(stage: int, train: Path, held: Path, runs: Path, steps: int, *extra: str) -> Path:
    """Run ``ns-train pensieve-stage{stage}`` on CPU; returns its config.yml."""
    ns_train = shutil.which("ns-train", path=str(Path(sys.executable).parent)) or "ns-train"
    cmd = [
        ns_train, f"pensieve-stage{stage}", "--data", str(train), "--pipeline.datamanager.eval-data", str(held),
        "--output-dir", str(runs), "--experiment-name", "demo", "--timestamp", f"stage{stage}",
        "--machine.device-type", "cpu", "--max-num-iterations", str(steps), "--steps-per-save", str(max(1, steps // 4)),
        "--viewer.quit-on-train-completion", "True", "--logging.local-writer.enable", "False", *extra,
    ]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return runs / "demo" / f"pensieve-stage{stage}" / f"stage{stage}" / "config.yml"


def export_splat(config: Path, out: Path) -> Path:
    """``ns-export gaussian-splat`` of the stage-2 run's current scene (one held-out clip's Gaussians)."""
    cmd = [str(Path(sys.executable).parent / "ns-export"), "gaussian-splat", "--load-config", str(config), "--output-dir", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "splat.ply"


def reconstruct_clip(config: Path, clip: Path, out: Path) -> Path:
    """``pensieve-reconstruct`` of one held-out clip (replaces an earlier demo's output)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "pensieve-reconstruct"), "--load-config", str(config), "--input", str(clip),
           "--output-dir", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def evaluate(config: Path, held: Path, out: Path) -> dict:
    """``pensieve-eval`` (target-aware) of a run on the held-out clips; returns its JSON."""
    cmd = [str(Path(sys.executable).parent / "pensieve-eval"), "--load-config", str(config), "--data", str(held),
           "--output", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--num-clips", type=int, default=32)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600, help="stage-1 training steps (tiny preset, CPU)")
    parser.add_argument("--stage2-steps", type=int, default=100, help="stage-2 training steps (tiny preset, CPU)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    start = time.perf_counter()
    try:
        train, held = ensure_data(args.out / "data", args.num_clips, args.frames, args.size)
        print(f"data: {train} and {held} ({time.perf_counter() - start:.0f} s)")
        shipped = evaluate(SHIPPED, held, args.out / "eval_shipped.json")["summary"]  # no training needed
        shipped_flow = evaluate(SHIPPED_FLOW, held, args.out / "eval_shipped_flow64.json")["summary"]
        config1 = run_ns_train(1, train, held, args.out / "runs", args.steps)
        config2 = run_ns_train(2, train, held, args.out / "runs", args.stage2_steps, "--stage1-checkpoint", str(config1.parent))
        metrics = {"stage1": evaluate(config1, held, args.out / "eval_stage1.json"),
                   "stage2": evaluate(config2, held, args.out / "eval_stage2.json")}
        ply = export_splat(config2, args.out / "export")
        recon = reconstruct_clip(config2, held / "clip_0000", args.out / "reconstruct")
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    except subprocess.CalledProcessError as err:
        print(f"{PROG}: error: {Path(err.cmd[0]).name} failed with exit status {err.returncode}", file=sys.stderr)
        raise SystemExit(err.returncode) from None
    m1, m2 = metrics["stage1"]["summary"], metrics["stage2"]["summary"]
    print(
        f"\nHeld-out frames of {m1['scenes']} held-out clips (pensieve-eval, target-aware); blending the context frames "
        f"gives {m1['psnr_blend_context']:.2f} dB:\n"
        f"  stage 1: LVSM PSNR {m1['psnr_lvsm']:.2f} dB, SSIM {m1['ssim_lvsm']:.3f}; "
        f"Racc@5/15 {m1['Racc@5']:.2f}/{m1['Racc@15']:.2f} (identity {m1['identity_Racc@5']:.2f}/"
        f"{m1['identity_Racc@15']:.2f}), focal error {m1['focal_err']:.2f}\n"
        f"  stage 2: LVSM PSNR {m2['psnr_lvsm']:.2f} dB, Gaussians PSNR {m2['psnr_gs']:.2f} dB, SSIM {m2['ssim_gs']:.3f}; "
        f"Racc@5/15 {m2['Racc@5']:.2f}/{m2['Racc@15']:.2f} (identity {m2['identity_Racc@5']:.2f}/"
        f"{m2['identity_Racc@15']:.2f}), focal error {m2['focal_err']:.2f}\n"
        f"  (tiny CPU runs: the cameras are not expected to be right; see README, 'Cameras: what works')\n"
        f"  shipped stage-1 model, no training here ({SHIPPED.parent.name}, 32 px; camera head pre-trained with the "
        f"LABELLED synthetic camera prior): LVSM PSNR {shipped['psnr_lvsm']:.2f} dB; Racc@5/15 {shipped['Racc@5']:.2f}/"
        f"{shipped['Racc@15']:.2f} (identity {shipped['identity_Racc@5']:.2f}/{shipped['identity_Racc@15']:.2f}), "
        f"pair angle {shipped['pred_pair_angle_mean']:.1f} / {shipped['true_pair_angle_mean']:.1f} deg, "
        f"focal error {shipped['focal_err']:.2f}\n"
        f"  shipped {SHIPPED_FLOW.parent.name} (64 px, flow camera head, same labelled prior): LVSM PSNR "
        f"{shipped_flow['psnr_lvsm']:.2f} dB (blend {shipped_flow['psnr_blend_context']:.2f}); Racc@5/15 "
        f"{shipped_flow['Racc@5']:.2f}/{shipped_flow['Racc@15']:.2f}, focal error {shipped_flow['focal_err']:.2f}\n"
        f"  configs: {config1}\n           {config2}\n"
        f"  evaluation: {args.out / 'eval_stage1.json'}, {args.out / 'eval_stage2.json'}, {args.out / 'eval_shipped.json'}, "
        f"{args.out / 'eval_shipped_flow64.json'} (+ *_images/)\n"
        f"  Gaussians of one held-out clip: {ply} (view: ns-viewer --load-config {config2})\n"
        f"  one held-out clip reconstructed (cameras, Gaussians, fly-through): {recon}\n"
        f"  total {time.perf_counter() - start:.0f} s."
    )


if __name__ == "__main__":
    main()
