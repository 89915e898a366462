"""``make demo``: the main job on the built-in default data.

Writes the default synthetic data (training and held-out clips with ground-truth cameras and depth), trains
stage 1 with ``ns-train pensieve-stage1`` (tiny preset, CPU), evaluates held-out frames of held-out clips against
blending the context frames, and prints where everything is. Stage 2, export and the pose evaluation join as
they land.
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


def ensure_data(out: Path, num_clips: int, frames: int, size: int) -> tuple[Path, Path]:
    """Default data: ``out/train`` and ``out/heldout`` (disjoint textures and seeds); reused when present."""
    from pensieve_ns.cli.data import synth

    train, held = out / "train", out / "heldout"
    if not (train / "clip_0000" / "transforms.json").is_file():
        synth(train, num_clips, frames, size, seed=0, split="train", overwrite=True)
    if not (held / "clip_0000" / "transforms.json").is_file():
        synth(held, max(2, num_clips // 4), frames, size, seed=1000, split="heldout", overwrite=True)
    return train, held


def train_stage1(train: Path, held: Path, runs: Path, steps: int) -> Path:
    """Run ``ns-train pensieve-stage1`` on CPU; returns its config.yml."""
    ns_train = shutil.which("ns-train", path=str(Path(sys.executable).parent)) or "ns-train"
    cmd = [
        ns_train, "pensieve-stage1", "--data", str(train), "--pipeline.datamanager.eval-data", str(held),
        "--output-dir", str(runs), "--experiment-name", "demo", "--timestamp", "stage1",
        "--machine.device-type", "cpu", "--max-num-iterations", str(steps), "--steps-per-save", str(max(1, steps // 4)),
        "--viewer.quit-on-train-completion", "True", "--logging.local-writer.enable", "False",
    ]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return runs / "demo" / "pensieve-stage1" / "stage1" / "config.yml"


def evaluate(config: Path) -> dict:
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, step = eval_setup(config, test_mode="test")
    return {"step": step, **pipeline.get_average_eval_image_metrics(get_std=True)}


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--num-clips", type=int, default=32)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600, help="stage-1 training steps (tiny preset, CPU)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    start = time.perf_counter()
    try:
        train, held = ensure_data(args.out / "data", args.num_clips, args.frames, args.size)
        print(f"data: {train} and {held} ({time.perf_counter() - start:.0f} s)")
        config = train_stage1(train, held, args.out / "runs", args.steps)
        metrics = evaluate(config)
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    except subprocess.CalledProcessError as err:
        print(f"{PROG}: error: ns-train failed with exit status {err.returncode}", file=sys.stderr)
        raise SystemExit(err.returncode) from None
    (args.out / "stage1_metrics.json").write_text(json.dumps(metrics, indent=1))
    print(
        f"\nStage 1 after {metrics['step'] + 1} steps, held-out frames of held-out clips (target-aware):\n"
        f"  PSNR {metrics['psnr']:.2f} dB (blend of context frames: {metrics['psnr_blend_context']:.2f} dB), "
        f"SSIM {metrics['ssim']:.3f}\n"
        f"  config:  {config}\n  metrics: {args.out / 'stage1_metrics.json'}\n"
        f"  total {time.perf_counter() - start:.0f} s. Stage 2, export and pose evaluation are not built yet."
    )


if __name__ == "__main__":
    main()
