"""Clips per second for sampling 7-frame 256x256 clips from mp4 files and from image folders, cached and uncached.

    python benchmarks/data_loading.py [--clips 4] [--frames 90] [--batches 12] [--workers 0]

Source clips are 360x640 (RealEstate10K's native size), a camera panning over photos shipped with
scikit-image, written as H.264 mp4 and as PNG folders. Each measurement runs the real path: the
TrainBatchSampler (paper gaps 12-48 scaled to the clip length), ClipFrames (decode, resize 360x640 ->
256x455, centre crop 256x256), ClipSampleDataset and a torch DataLoader. "uncached" decodes every sample from
the files; "cached" first decodes every clip once (time reported separately) and then samples from memory.
Prints a table and writes benchmarks/results/data_loading.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.data.dataset import ClipFrames, ClipSampleDataset  # noqa: E402
from pensieve_ns.data.sampler import ClipSamplerConfig, TrainBatchSampler  # noqa: E402
from pensieve_ns.data.sources import find_clips  # noqa: E402

OUT_HW = (256, 256)


def pan_frames(seed: int, n: int, hw=(360, 640)) -> np.ndarray:
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    strip = np.concatenate([cv2.resize(p, (720, 720)) for p in photos[seed % 4 :] + photos[: seed % 4]], axis=1)
    step = (strip.shape[1] - hw[1]) / n
    return np.stack([strip[100 : 100 + hw[0], int(i * step) : int(i * step) + hw[1]] for i in range(n)])


def write_sources(root: Path, clips: int, frames: int) -> tuple[Path, Path]:
    import av

    videos, images = root / "videos", root / "images"
    videos.mkdir()
    images.mkdir()
    for c in range(clips):
        data = pan_frames(c, frames)
        with av.open(str(videos / f"clip{c}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
            for frame in data:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        folder = images / f"clip{c}"
        folder.mkdir()
        for i, frame in enumerate(data):
            cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return videos, images


def measure(path: Path, cached: bool, batches: int, batch_size: int, workers: int, frames: int) -> dict:
    clips = find_clips(path)
    store = ClipFrames(clips, OUT_HW, cache_bytes=(8 << 30) if cached else 0)
    preload_s = 0.0
    if cached:
        start = time.perf_counter()
        store.preload()
        preload_s = time.perf_counter() - start
    max_gap = max(1, min(48, (frames - 1) // 6))
    sampler = TrainBatchSampler(
        [c.num_frames for c in clips], batch_size, ClipSamplerConfig(window_frames=7, min_views=7, min_gap=min(12, max_gap), max_gap=max_gap)
    )
    loader = torch.utils.data.DataLoader(ClipSampleDataset(store), batch_sampler=sampler, num_workers=workers)
    it = iter(loader)
    next(it)  # warm-up: worker start, first decode
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    elapsed = time.perf_counter() - start
    assert batch["images"].shape == (batch_size, 7, 3, *OUT_HW)
    return {"clips_per_s": batches * batch_size / elapsed, "seconds": elapsed, "preload_s": preload_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_loading.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos, images = write_sources(Path(tmp), args.clips, args.frames)
        for name, path in (("mp4", videos), ("png folder", images)):
            for cached in (False, True):
                r = measure(path, cached, args.batches, args.batch_size, args.workers, args.frames)
                rows.append({"source": name, "cached": cached, **r})
    for name in ("mp4", "png folder"):
        unc, cac = (next(r for r in rows if r["source"] == name and r["cached"] == c) for c in (False, True))
        cac["speedup_vs_uncached"] = cac["clips_per_s"] / unc["clips_per_s"]
    print(f"\nSampling 7-frame {OUT_HW[0]}x{OUT_HW[1]} clips from {args.clips} clips of {args.frames} frames at 360x640 "
          f"(batch {args.batch_size}, workers {args.workers}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads)")
    print(f"{'source':<12}{'cache':<10}{'clips/s':>10}{'vs uncached':>13}{'preload s':>11}")
    for r in rows:
        ratio = f"{r['speedup_vs_uncached']:.1f}x" if "speedup_vs_uncached" in r else "1.0x"
        print(f"{r['source']:<12}{'cached' if r['cached'] else 'uncached':<10}{r['clips_per_s']:>10.2f}{ratio:>13}{r['preload_s']:>11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
