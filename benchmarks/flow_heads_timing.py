"""What the flow heads cost per training step (issue 5: FlowCameraHead, exp 38; FlowDepthHead, exp 39).

Both heads run OpenCV DIS optical flow between temporal neighbours on the CPU in every forward pass. This times one
stage-2 training step (get_outputs, get_loss_dict, backward, AdamW step) of the preset's model with its own camera
head and Gaussian depth, then with ``camera_head=flow_pose``, then with ``depth_head=flow`` as well, in the same
process, at each image size; the ratio to the first is the heads' cost. Random images (DIS's cost barely depends on
them), the preset's batch shape, median of ``--repeats`` steps after warm-up.

    python benchmarks/flow_heads_timing.py --out benchmarks/results/flow_heads_timing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_timing import time_call  # noqa: E402

from pensieve_ns.method_configs import stage2_config  # noqa: E402
from pensieve_ns.model.camera_head import CameraHeadConfig  # noqa: E402
from pensieve_ns.model.flow_depth import FlowDepthHeadConfig  # noqa: E402
from pensieve_ns.model.flow_pose import FlowCameraHeadConfig  # noqa: E402
from pensieve_ns.model.gaussian_head import DepthHeadConfig  # noqa: E402

VARIANTS = {"paper heads": {"camera_head": CameraHeadConfig(hidden=128), "depth_head": DepthHeadConfig()},
            "flow camera head": {"camera_head": FlowCameraHeadConfig(), "depth_head": DepthHeadConfig()},
            "flow camera + depth heads": {"camera_head": FlowCameraHeadConfig(), "depth_head": FlowDepthHeadConfig()}}


def step_fn(preset: str, size: int, batch_size: int, overrides: dict):
    cfg = stage2_config(preset)
    for key, value in overrides.items():
        setattr(cfg.pipeline.model, key, value)
    cfg.pipeline.model.renderer = "torch"
    model = cfg.pipeline.model.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    model.train()
    B, L = batch_size or cfg.pipeline.datamanager.batch_size, cfg.pipeline.datamanager.sampler.window_frames
    weights = torch.ones(B, L)
    weights[:, [0, L - 1]] = 0.1
    batch = {"images": torch.rand(B, L, 3, size, size), "context": torch.tensor([[0, L - 1]] * B), "loss_weights": weights}
    opt = torch.optim.AdamW([p for p in model.get_param_groups()["model"] if p.requires_grad], lr=1e-4)

    def step():
        loss = sum(model.get_loss_dict(model.get_outputs(batch), batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, B, L


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="flow64")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--batch-size", type=int, default=0, help="0: the preset's")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for size in args.sizes:
        base = None
        for name, overrides in VARIANTS.items():
            step, B, L = step_fn(args.preset, size, args.batch_size, overrides)
            row = {"size": size, "variant": name, "batch": B, "views": L, **time_call(step, "cpu", args.repeats, warmup=1)}
            base = base or row["median_s"]
            row["ratio"] = row["median_s"] / base
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"Stage-2 training step, preset {args.preset}, CPU, {args.threads} threads, batch {rows[0]['batch']} x {rows[0]['views']} views, "
             f"median of {args.repeats}.", "", "| size | heads | s / step | ratio to the preset's heads |", "|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['variant']} | {r['median_s']:.3f} | {r['ratio']:.2f} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
