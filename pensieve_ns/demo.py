"""``make demo``: the main job on the built-in default data.

Today it writes the default synthetic data (training and held-out clips with ground-truth cameras and
depth), prints what the readers find, and draws a training batch and an evaluation sample through the
DataManager. Stage 1, stage 2, export and evaluation join as they land.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--num-clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        start = time.perf_counter()
        train, held = ensure_data(args.out / "data", args.num_clips, args.frames, args.size)
        from pensieve_ns.cli.data import _print_table, inspect_path
        from pensieve_ns.data.datamanager import PensieveDataManagerConfig
        from pensieve_ns.data.sampler import ClipSamplerConfig

        for path in (train, held):
            _print_table(path, inspect_path(path))
        config = PensieveDataManagerConfig(
            data=train,
            eval_data=held,
            image_size=(args.size, args.size),
            batch_size=4,
            sampler=ClipSamplerConfig(window_frames=5, min_gap=1, max_gap=3),
        )
        dm = config.setup(device="cpu")
        _, batch = dm.next_train(0)
        print(
            f"training batch: images {tuple(batch['images'].shape)} (B, L, 3, H, W), "
            f"context {tuple(batch['context'].shape)}, weights {batch['loss_weights'][0].tolist()}"
        )
        _, ev = dm.next_eval(0)
        print(f"evaluation sample: frames {ev['frame_index'][0].tolist()}, context positions {ev['context'][0].tolist()}")
        print(f"data in {args.out / 'data'} ({time.perf_counter() - start:.1f} s). The model is not built yet.")
    except PensieveInputError as err:
        exit_with_error(err, PROG)


if __name__ == "__main__":
    main()
