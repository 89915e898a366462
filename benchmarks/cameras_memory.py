"""Peak memory and wall time of ``pensieve-cameras`` on a long 720p video (300 frames by default).

The video: a generated held-out walk (seed ``--seed``), rendered at 256 px and resized to 1280x720, encoded as
H.264 (PyAV). The command runs as a subprocess, as a user runs it; its peak resident memory is the child's
``ru_maxrss``. Accuracy is not the point here (the frames are stretched); the figures are what a long HD video
costs: the frames are streamed from the decoder, the full-resolution ones go straight to disk, and only the
working frames (short side 384 px) stay in memory.

    python benchmarks/cameras_memory.py --out benchmarks/results/cameras_memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.data.synthetic import generate_clip  # noqa: E402
from pensieve_ns.scene_io import write_video  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--seed", type=int, default=70100)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = generate_clip(args.seed, args.frames, 256, "heldout", path_kind="walk")
        frames = np.stack([cv2.resize(f, (1280, 720), interpolation=cv2.INTER_CUBIC) for f in clip.frames])
        video = tmp / "walk_720p.mp4"
        write_video(video, frames, fps=30)
        del frames
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pensieve_ns.sfm.cli", "--input", str(video), "--output-dir",
                              str(tmp / "out")], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        transforms = json.loads((tmp / "out" / "transforms.json").read_text()) if run.returncode == 0 else {}
        disk_mb = sum(f.stat().st_size for f in (tmp / "out").rglob("*") if f.is_file()) / 2**20 if run.returncode == 0 else 0
    result = {"command": " ".join(sys.argv), "frames": args.frames, "size": "1280x720", "returncode": run.returncode,
              "seconds": seconds, "peak_rss_mb": peak_mb, "output_mb": disk_mb,
              "registered": transforms.get("pensieve", {}).get("registered"),
              "stage_seconds": transforms.get("pensieve", {}).get("seconds"), "stdout": run.stdout, "stderr": run.stderr[-2000:]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    table = ["| video | frames | registered | wall s | peak RSS (MB) | output on disk (MB) |", "|---|---|---|---|---|---|",
             f"| 1280x720 H.264 | {args.frames} | {result['registered']} | {seconds:.0f} | {peak_mb:.0f} | {disk_mb:.0f} |"]
    (args.out / "table.md").write_text("\n".join(table) + "\n")
    print(run.stdout + run.stderr[-1000:])
    print("\n".join(table))


if __name__ == "__main__":
    main()
