"""Forward + backward time and peak memory of the splat renderers: tiled CPU vs the dense reference (and gsplat
on a GPU when there is one).

    python benchmarks/renderer.py [--sizes 64 128 256] [--footprint 0.8] [--repeats 3] [--dense-bands 8]

Scene: a generated clip (held-out split) at each size; one Gaussian per pixel of 2 context frames (frames 0 and
2), placed along the true rays at the true depth with the pixel's colour, opacity 0.6, the Gaussian head's
flat scales at footprint ``--footprint`` (0.8 = the middle of the tiny preset's range), rendered into the middle
frame's camera. Loss = weighted sum of colour, alpha and depth; backward reaches every Gaussian attribute, R, t,
fx and fy.

The dense reference compares every pixel with every Gaussian, so it is rendered in bands of rows (memory
pixels x Gaussians per band). Where rendering all bands would take too long (256^2: 65,536 pixels x 131,072
Gaussians), ``--dense-bands`` evenly spread bands are timed and the total is extrapolated by the band count
(its cost is linear in pixels); the table says when. Each measurement runs in a fresh subprocess so its peak RSS
above the scene's own memory is its own. Prints a table, writes benchmarks/results/renderer.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pensieve_ns.cameras import invert_rigid, matrix_to_quaternion, unproject_depth  # noqa: E402

BAND_ELEMENTS = 1 << 25  # dense: pixels x Gaussians per band


def scene(size: int, footprint: float, device: str):
    from pensieve_ns.data.synthetic import generate_clip

    clip = generate_clip(seed=11, num_frames=3, size=size, split="heldout", path_kind="walk")
    t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    K, c2w, depth = t(clip.K), t(clip.c2w_opencv), t(clip.depth)
    rgb = t(clip.frames) / 255.0
    means, quats, colors, scales = [], [], [], []
    for i in (0, 2):
        d = depth[i]
        means.append(unproject_depth(d, K, c2w[i]).reshape(-1, 3))
        quats.append(matrix_to_quaternion(c2w[i, :3, :3]).expand(size * size, 4))
        sxy = footprint * d.reshape(-1, 1) / size
        scales.append(torch.cat([sxy, sxy, 1e-3 * sxy], -1))
        colors.append(rgb[i].reshape(-1, 3))
    n = 2 * size * size
    args = [torch.cat(means), torch.cat(quats), torch.cat(scales), torch.full((n,), 0.6, device=device), torch.cat(colors),
            invert_rigid(c2w[1:2]), K[None]]
    return args, size


def loss_of(out, weights):
    return sum((o * w).sum() for o, w in zip(out, weights))


def measure(method: str, size: int, footprint: float, repeats: int, dense_bands: int, tile: int) -> dict:
    device = "cuda" if method == "gsplat" else "cpu"
    args, S = scene(size, footprint, device)
    torch.manual_seed(0)
    weights = [torch.rand(1, k, S, S, device=device) for k in (3, 1, 1)]
    base_rss = _rss_mb()
    leaves = [a.clone().requires_grad_(True) for a in args]
    row = {"method": method, "size": size, "gaussians": int(args[0].shape[0]), "tile": tile if method == "tiled" else None}
    times = []
    for r in range(repeats + 1):  # first run warms up
        for x in leaves:
            x.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if method == "tiled":
            from pensieve_ns.render.torch_tiled import render_torch

            loss_of(render_torch(*leaves, S, S, tile_size=tile), weights).backward()
            fraction = 1.0
        elif method == "gsplat":
            from pensieve_ns.render.gsplat_cuda import render_gsplat

            loss_of(render_gsplat(*leaves, S, S), weights).backward()
            torch.cuda.synchronize()
            fraction = 1.0
        else:
            from pensieve_ns.render.dense_reference import render_dense

            band = max(1, BAND_ELEMENTS // (S * args[0].shape[0]))
            starts = list(range(0, S, band))
            if dense_bands and len(starts) > dense_bands:
                starts = [starts[round(i * (len(starts) - 1) / (dense_bands - 1))] for i in range(dense_bands)]
            for s in starts:
                e = min(s + band, S)
                out = render_dense(*leaves, S, S, rows=(s, e))
                loss_of(out, [w[..., s:e, :] for w in weights]).backward()
            fraction = sum(min(s + band, S) - s for s in starts) / S
        elapsed = (time.perf_counter() - t0) / fraction
        if r > 0:
            times.append(elapsed)
        if method == "dense" and fraction < 1:
            break  # extrapolated runs take minutes: time once
    row.update(seconds=min(times) if times else elapsed, extrapolated_from_fraction=None if fraction == 1 else round(fraction, 4))
    row["peak_extra_mb"] = round(_peak_mb() - base_rss, 1) if device == "cpu" else round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--footprint", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-bands", type=int, default=8, help="time at most this many row bands of the dense reference")
    ap.add_argument("--tile", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "renderer.json")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(measure(a.child[0], int(a.child[1]), a.footprint, a.repeats, a.dense_bands, a.tile)))
        return
    methods = ["tiled", "dense"] + (["gsplat"] if torch.cuda.is_available() else [])
    rows = []
    for size in a.sizes:
        for method in methods:
            cmd = [sys.executable, __file__, "--child", method, str(size), "--footprint", str(a.footprint),
                   "--repeats", str(a.repeats), "--dense-bands", str(a.dense_bands), "--tile", str(a.tile),
                   "--threads", str(a.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{method} at {size} failed")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    for r in rows:
        tiled = next(x for x in rows if x["size"] == r["size"] and x["method"] == "tiled")
        r["speedup_of_tiled"] = round(r["seconds"] / tiled["seconds"], 1)
    print(f"\nforward+backward, 2 context frames x one Gaussian per pixel, 1 target camera, {a.threads} threads\n")
    print("| size | Gaussians | method | s | tiled speed-up | peak extra MB | note |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        note = f"extrapolated from {r['extrapolated_from_fraction']:.0%} of rows" if r["extrapolated_from_fraction"] else ""
        print(f"| {r['size']}² | {r['gaussians']} | {r['method']} | {r['seconds']:.3f} | "
              f"{r['speedup_of_tiled']:.1f}x | {r['peak_extra_mb']} | {note} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"footprint": a.footprint, "threads": a.threads, "tile": a.tile, "machine": platform.platform(),
                                 "cpu_count": __import__("os").cpu_count(), "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
