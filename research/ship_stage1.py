"""Turn a stage-1 state saved by ``stage1_learning.py`` into a nerfstudio run that the ``pensieve-*`` tools load.

    python benchmarks/ship_stage1.py STATE.pt --preset prior32 --out pretrained/stage1-prior32 [--step 400]
    python benchmarks/ship_stage1.py pretrained/stage1-prior32/nerfstudio_models/step-000000400.ckpt --preset flow64 \
        --camera-head-weights benchmarks/results/flow_pose_probe/exp38_flow_pose_net/flow_camera_head.pt --out pretrained/stage1-flow64

Writes ``OUT/config.yml`` (the ``pensieve-stage1`` trainer config of the preset, as ``ns-train`` writes it) and
``OUT/nerfstudio_models/step-XXXXXXXXX.ckpt`` (the weights under nerfstudio's ``pipeline`` key). Refuses a state
whose tensors do not match the preset's model exactly (another size or head). STATE may also be a shipped run's
checkpoint; ``--camera-head-weights`` swaps its camera head for pre-trained head weights (the ViTs have no
positional embeddings, so a decoder trained at 32 px runs at 64 px: LEARNING.md, stage 2 alignment exp 5). The run needs no training data:
``pensieve-eval --load-config OUT/config.yml --data HELD_OUT`` evaluates it; ``ns-train pensieve-stage2
--stage1-checkpoint OUT`` starts stage 2 from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.checkpoints import load_camera_head_weights, load_model_state  # noqa: E402
from pensieve_ns.method_configs import stage1_config  # noqa: E402


def ship(state_path: Path, preset: str, out: Path, step: int, camera_head_weights: Optional[Path] = None) -> Path:
    if state_path.suffix == ".ckpt":  # a shipped run's nerfstudio checkpoint
        state = load_model_state(state_path)
    else:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    if camera_head_weights is not None:
        state = {k: v for k, v in state.items() if not k.startswith("camera_head.")}
        state.update({f"camera_head.{k}": v for k, v in load_camera_head_weights(camera_head_weights).items()})
    config = stage1_config(preset)
    config.output_dir, config.experiment_name, config.timestamp = out.parent, out.name, ""
    config.pipeline.datamanager.data = None  # no training data travels with it
    model = config.pipeline.model.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    model.load_state_dict(state, strict=True)  # exactly the preset's model, or a clear error here
    (out / "nerfstudio_models").mkdir(parents=True, exist_ok=True)
    (out / "config.yml").write_text(yaml.dump(config), encoding="utf8")
    ckpt = out / "nerfstudio_models" / f"step-{step:09d}.ckpt"
    tmp = ckpt.with_suffix(".tmp")
    torch.save({"step": step, "pipeline": {f"_model.{k}": v for k, v in model.state_dict().items()},
                "optimizers": {}, "schedulers": {}, "scalers": {}}, tmp)
    tmp.replace(ckpt)
    return ckpt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("state", type=Path)
    p.add_argument("--preset", default="prior32")
    p.add_argument("--out", type=Path, default=Path("pretrained") / "stage1-prior32")
    p.add_argument("--step", type=int, default=400)
    p.add_argument("--camera-head-weights", type=Path, default=None, help="replace the state's camera head with these")
    args = p.parse_args()
    ckpt = ship(args.state, args.preset, args.out, args.step, args.camera_head_weights)
    print(f"wrote {args.out / 'config.yml'} and {ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
