"""Feed-forward latency and peak memory against the number of frames and the image size.

One forward pass of a preset's model (stage 2 by default: encoder, cameras, LVSM renders of every frame and the
Gaussians splatted into every frame) on a clip of L frames of S x S pixels, context = first and last frame. Two
sweeps: L in ``--frames`` at ``--size``, and S in ``--sizes`` at ``--base-frames``. Latency: median of
``--repeats`` passes after a warm-up, in one process, as a ratio to the first configuration. Peak memory: each
configuration again in a fresh process, over the forward pass alone (CPU: peak growth of the resident set,
sampled every 2 ms; CUDA: growth of max_memory_allocated).

    python benchmarks/inference_scaling.py --out benchmarks/results/inference_scaling            # tiny, CPU
    python benchmarks/inference_scaling.py --preset re10k --device cuda --sizes 256 --out ...      # paper size, GPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_timing import build_model, measure_peak, peak_memory_in_subprocess, time_call  # noqa: E402


def forward(model, frames: int, size: int, device: str):
    images = torch.rand(1, frames, 3, size, size, device=device)
    batch = {"images": images, "context": torch.tensor([[0, frames - 1]], device=device)}

    def run():
        with torch.no_grad():
            return model.get_outputs(batch)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--stage", type=int, default=2, choices=(1, 2))
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--base-frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--measure-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.measure_memory:  # child: one configuration (--frames L --size S), print the peak as JSON
        model, _ = build_model(args.preset, args.stage, args.device)
        model.eval()
        print(json.dumps(measure_peak(forward(model, args.frames[0], args.size, args.device), args.device)))
        return
    if args.out is None:
        p.error("--out is required")
    model, _ = build_model(args.preset, args.stage, args.device)
    model.eval()
    configs = [(L, args.size) for L in args.frames] + [(args.base_frames, s) for s in args.sizes if s != args.size]
    rows = []
    for L, S in configs:
        t = time_call(forward(model, L, S, args.device), args.device, args.repeats)
        row = {"frames": L, "size": S, **t}
        if not args.no_memory:
            child = ["--preset", args.preset, "--stage", str(args.stage), "--device", args.device, "--frames", str(L),
                     "--size", str(S)] + (["--threads", str(args.threads)] if args.threads else [])
            row.update(peak_memory_in_subprocess(Path(__file__), child))
        row["latency_ratio"] = row["median_s"] / rows[0]["median_s"] if rows else 1.0
        rows.append(row)
        mem = f"{row['peak_mib']:.0f} MiB" if "peak_mib" in row else row.get("error", "-")
        print(f"L={L:3d} S={S:4d}: {row['median_s'] * 1000:9.1f} ms (x{row['latency_ratio']:.2f}), peak {mem}", flush=True)
    lines = [f"Feed-forward pass, preset {args.preset}, stage {args.stage}, {args.device}, {torch.get_num_threads()} threads",
             "", "| frames | size | median latency ms | ratio to first | per frame ms | peak memory MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['frames']} | {r['size']} | {r['median_s'] * 1000:.1f} | {r['latency_ratio']:.2f} | "
                     f"{r['median_s'] * 1000 / r['frames']:.1f} | {r.get('peak_mib', float('nan')):.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"preset": args.preset, "stage": args.stage, "device": args.device, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "memory_kind": rows[0].get("kind")}
    (args.out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
