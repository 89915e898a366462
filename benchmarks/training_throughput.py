"""Training throughput: clips per second and peak memory of one training step, stage 1 and stage 2.

A step is what ``ns-train`` does per iteration: get_outputs, get_loss_dict, backward, AdamW step, on a batch of
the preset's shape (batch size, ``window_frames`` views, 2 context frames, image size), random images with
identity ground-truth cameras (the step's cost does not depend on the pixels). Median of ``--repeats`` steps
after a warm-up; stage 2 as a ratio to stage 1 in the same process. Peak memory: each stage again in a fresh
process over one step (CPU: peak growth of the resident set; CUDA: growth of max_memory_allocated).

    python benchmarks/training_throughput.py --out benchmarks/results/training_throughput          # tiny, CPU
    python benchmarks/training_throughput.py --preset re10k --device cuda --out ...                 # paper, GPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_timing import build_model, measure_peak, peak_memory_in_subprocess, time_call  # noqa: E402


def training_step(preset: str, stage: int, device: str, batch_size: int = 0):
    """(one-step callable, batch shape) for a fresh model of the preset."""
    model, cfg = build_model(preset, stage, device)
    model.train()
    dm = cfg.pipeline.datamanager
    B = batch_size or dm.batch_size
    L, (H, W) = dm.sampler.window_frames, dm.image_size
    weights = torch.full((B, L), 1.0, device=device)
    weights[:, [0, L - 1]] = 0.1
    batch = {
        "images": torch.rand(B, L, 3, H, W, device=device),
        "context": torch.tensor([[0, L - 1]] * B, device=device),
        "loss_weights": weights,
        "gt_c2w_opencv": torch.eye(4, device=device).expand(B, L, 4, 4).clone(),
        "gt_K": torch.eye(3, device=device).expand(B, L, 3, 3).clone(),
    }
    opt = torch.optim.AdamW(model.get_param_groups()["model"], lr=1e-4, betas=(0.9, 0.95))

    def step():
        outputs = model.get_outputs(batch)
        loss = sum(model.get_loss_dict(outputs, batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, {"batch": B, "views": L, "height": H, "width": W}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=0, help="0: the preset's")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--measure-memory", type=int, choices=(1, 2), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.measure_memory:  # child: one step of one stage after a warm-up step (optimizer state allocated)
        step, _ = training_step(args.preset, args.measure_memory, args.device, args.batch_size)
        step()
        print(json.dumps(measure_peak(step, args.device)))
        return
    if args.out is None:
        p.error("--out is required")
    rows = []
    for stage in (1, 2):
        step, shape = training_step(args.preset, stage, args.device, args.batch_size)
        row = {"stage": stage, **shape, **time_call(step, args.device, args.repeats, warmup=2)}
        row["clips_per_s"] = shape["batch"] / row["median_s"]
        if not args.no_memory:
            child = ["--preset", args.preset, "--device", args.device, "--batch-size", str(args.batch_size)]
            child += ["--threads", str(args.threads)] if args.threads else []
            row.update(peak_memory_in_subprocess(Path(__file__), [str(stage), *child]))
        row["time_ratio_to_stage1"] = row["median_s"] / rows[0]["median_s"] if rows else 1.0
        rows.append(row)
        print(f"stage {stage}: {row['median_s']:.3f} s/step, {row['clips_per_s']:.2f} clips/s, "
              f"peak {row.get('peak_mib', float('nan')):.0f} MiB", flush=True)
    lines = [f"Training step, preset {args.preset}, {args.device}, {torch.get_num_threads()} threads, batch "
             f"{rows[0]['batch']} x {rows[0]['views']} views of {rows[0]['height']}x{rows[0]['width']}", "",
             "| stage | s / step (median) | clips / s | time vs stage 1 | peak memory MiB |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['median_s']:.3f} | {r['clips_per_s']:.2f} | {r['time_ratio_to_stage1']:.2f} | "
                     f"{r.get('peak_mib', float('nan')):.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"preset": args.preset, "device": args.device, "threads": torch.get_num_threads(), "repeats": args.repeats,
            "memory_kind": rows[0].get("kind")}
    (args.out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
