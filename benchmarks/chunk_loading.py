"""Loading training clips from pixelSplat chunks: the streaming loader against the eager reader, same run.

Builds a RealEstate10K-shaped set from the generator: ``--scenes`` distinct generated scenes of ``--frames`` frames
(rendered at 180 px square and resized to 360x640, JPEG quality 90: the size of RE10K frames), written as ``--chunks``
chunk files of ``--per-chunk`` scenes each (scenes repeat across chunks under new keys: the loader's cost does not
depend on what the pixels show). Then, each in a fresh process at the paper's shapes (256x256 out, batch 2, 7-frame windows
with gaps up to 8, as the stage-2 warm-up starts):
  eager   today's reader (``--pipeline.datamanager.stream-chunks False``): every chunk read at start-up, frames
          decoded into a bounded cache, batches from a batch sampler;
  stream  ``chunk_stream.ChunkStream``: chunk files listed at start-up, one chunk per worker, JPEGs decoded in
          the workers.
Reported: start-up (constructing the DataManager-side reader until it can draw), clips/s over ``--batches``
batches with 0 and 2 workers, and peak RSS of the process and its workers. The stream is also started on a set of
``--many`` chunk names (symlinks to the same files), and the eager reader on ``--many-eager``, to show how start-up
and memory grow with the chunk count.

    python benchmarks/chunk_loading.py --out benchmarks/results/chunk_loading
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pensieve_ns.data.sampler import ClipSamplerConfig  # noqa: E402

SAMPLER = ClipSamplerConfig(window_frames=7, min_views=2, max_context=6, min_gap=4, max_gap=8, eval_views=5)
OUT_HW = (256, 256)


def build(folder: Path, scenes: int, frames: int, chunks: int, many: int, per_chunk: int) -> None:
    """The chunk set (skipped when present) and a folder of ``many`` chunk names linking to its files."""
    from PIL import Image

    from pensieve_ns.data.synthetic import generate_clip

    if (folder / "index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    encoded = []
    for s in range(scenes):
        clip = generate_clip(80_000 + s, frames, 180, split="train")  # rendered small, upscaled: loader cost only
        jpegs = []
        for frame in clip.frames:
            buf = io.BytesIO()
            Image.fromarray(frame).resize((640, 360), Image.BILINEAR).save(buf, format="JPEG", quality=90)
            jpegs.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
        cams = torch.zeros(frames, 18)
        cams[:, :4] = torch.tensor([0.5, 0.9, 0.5, 0.5])
        cams[:, 6:] = torch.eye(4)[:3].reshape(-1)
        encoded.append((jpegs, cams))
    index = {}
    for c in range(chunks):
        data = []
        for k in range(per_chunk):
            jpegs, cams = encoded[(per_chunk * c + k) % scenes]
            key = f"c{c:05d}s{k}"
            data.append({"key": key, "url": "", "timestamps": torch.arange(frames), "cameras": cams, "images": jpegs})
            index[key] = f"{c:06d}.torch"
        torch.save(data, folder / f"{c:06d}.torch")
    (folder / "index.json").write_text(json.dumps(index))
    big = folder.parent / f"{folder.name}_many"
    big.mkdir(exist_ok=True)
    names = {}
    for c in range(many):
        link = big / f"{c:06d}.torch"
        if not link.exists():
            link.symlink_to(folder / f"{c % chunks:06d}.torch")
        names[f"m{c}"] = link.name
    (big / "index.json").write_text(json.dumps(names))


class PeakRSS:
    """Peak resident memory of this process and its children (DataLoader workers), sampled every 50 ms."""

    def __init__(self):
        import threading

        import psutil

        self.me, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            try:
                procs = [self.me] + self.me.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except Exception:  # noqa: BLE001  a worker exiting between listing and reading
                pass
            time.sleep(0.05)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.peak / (1 << 30)


def run_one(mode: str, folder: Path, workers: int, batches: int) -> dict:
    """One configuration, in this process: start-up, then ``batches`` batches of 2 clips."""
    from pensieve_ns.data.chunk_stream import ChunkStream, chunk_files
    from pensieve_ns.data.dataset import ClipFrames, ClipSampleDataset
    from pensieve_ns.data.sampler import TrainBatchSampler
    from pensieve_ns.data.sources import find_clips

    torch.set_num_threads(1)
    memory = PeakRSS()
    start = time.perf_counter()
    if mode == "stream":
        loader = torch.utils.data.DataLoader(ChunkStream(chunk_files(folder), OUT_HW, 2, SAMPLER), batch_size=None,
                                             num_workers=workers)
    else:
        clips = find_clips(folder, "chunks")
        frames = ClipFrames(clips, OUT_HW, 2 << 30)
        loader = torch.utils.data.DataLoader(
            ClipSampleDataset(frames), num_workers=workers,
            batch_sampler=TrainBatchSampler([c.num_frames for c in clips], 2, SAMPLER, seed=0),
        )
    startup = time.perf_counter() - start
    it = iter(loader)
    first = next(it)
    t = time.perf_counter()
    clips_seen = first["images"].shape[0]
    for _ in range(batches - 1):
        clips_seen += next(it)["images"].shape[0]
    seconds = time.perf_counter() - t
    rss = memory.stop()
    return {"mode": mode, "folder": folder.name, "workers": workers, "startup_s": startup,
            "first_batch_s": t - start, "clips_per_s": (clips_seen - first["images"].shape[0]) / seconds,
            "peak_rss_gb": rss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("/tmp/chunk_loading_set"))
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--frames", type=int, default=56)
    p.add_argument("--chunks", type=int, default=40)
    p.add_argument("--per-chunk", type=int, default=8, help="scenes per chunk (RE10K chunks hold several)")
    p.add_argument("--many", type=int, default=5000)
    p.add_argument("--many-eager", type=int, default=200, help="chunk names the eager reader is also started on")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--one", nargs=3, metavar=("MODE", "FOLDER", "WORKERS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]), int(args.one[2]), args.batches)))
        return
    t = time.perf_counter()
    build(args.data / "train", args.scenes, args.frames, args.chunks, args.many, args.per_chunk)
    size = sum(p.stat().st_size for p in (args.data / "train").glob("*.torch")) / (1 << 20)
    print(f"set: {args.chunks} chunks x {args.per_chunk} scenes x {args.frames} frames of 360x640 JPEG, {size:.0f} MB "
          f"({time.perf_counter() - t:.0f} s)")
    few = args.data / "train_eager_many"
    if not few.exists():  # the eager reader on more chunk names: its start-up reads every one
        few.mkdir()
        names = {}
        for c in range(args.many_eager):
            (few / f"{c:06d}.torch").symlink_to(args.data / "train" / f"{c % args.chunks:06d}.torch")
            names[f"e{c}"] = f"{c:06d}.torch"
        (few / "index.json").write_text(json.dumps(names))
    rows = []
    runs = [("eager", "train", 0), ("eager", "train", 2), ("stream", "train", 0), ("stream", "train", 2),
            ("eager", "train_eager_many", 2), ("stream", "train_many", 2)]
    for mode, name, workers in runs:
        cmd = [sys.executable, __file__, "--out", str(args.out), "--batches", str(args.batches), "--one", mode,
               str(args.data / name), str(workers)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = {r["workers"]: r for r in rows if r["mode"] == "eager" and r["folder"] == "train"}
    lines = [f"Chunk loading, {args.chunks} chunks of {args.per_chunk} scenes x {args.frames} frames ({size:.0f} MB; "
             f"the last two rows: {args.many_eager} and {args.many} chunk names linking to them), 2 clips a batch, "
             f"{args.batches} batches, 256x256 out, 2-core CPU.", "",
             "| reader | chunks | workers | start-up s | clips/s | ratio to eager | peak RSS GB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        count = {"train": args.chunks, "train_many": args.many, "train_eager_many": args.many_eager}[r["folder"]]
        ratio = r["clips_per_s"] / base[r["workers"]]["clips_per_s"] if r["workers"] in base else float("nan")
        lines.append(f"| {r['mode']} | {count} | {r['workers']} | {r['startup_s']:.2f} | {r['clips_per_s']:.1f} | "
                     f"{ratio:.2f} | {r['peak_rss_gb']:.2f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
