"""``pensieve-data``: look at what the readers find in a path, pack clips into chunks, write synthetic clips.

    pensieve-data inspect PATH [--json] [--reader auto|video|images|nerfstudio|chunks]
    pensieve-data synth OUT --num-clips N --frames F --size S --seed K [--split train|heldout]
    pensieve-data pack SRC OUT [--chunk-mb 100] [--max-size 360] [--quality 95] [--split train]

Bad input prints one line naming the file and the problem and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import List, Optional

from pensieve_ns.errors import PensieveInputError, exit_with_error

PROG = "pensieve-data"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def inspect_path(path: Path, reader: str = "auto", stride: int = 1, max_frames: Optional[int] = None) -> List[dict]:
    """One record per clip: name, reader, frames, native size, whether ground-truth cameras exist, path."""
    from pensieve_ns.data.sources import find_clips

    return [
        {
            "name": clip.name,
            "reader": clip.reader,
            "frames": clip.num_frames,
            "height": clip.native_hw[0],
            "width": clip.native_hw[1],
            "gt_cameras": clip.gt is not None,
            "gt_depth": bool(clip.gt is not None and clip.gt.depth_paths),
            "path": str(clip.path),
        }
        for clip in find_clips(path, reader, stride, max_frames)
    ]


def _print_table(path: Path, records: List[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{path}: {len(records)} clip(s), {sum(r['frames'] for r in records)} frame(s)")
    for col in ("clip", "reader", "frames", "size (WxH)", "GT cameras", "GT depth"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r["name"], r["reader"], str(r["frames"]), f"{r['width']}x{r['height']}",
            "yes" if r["gt_cameras"] else "no", "yes" if r["gt_depth"] else "no",
        )
    Console().print(table)


def synth(out: Path, num_clips: int, frames: int, size: int, seed: int, split: str, overwrite: bool) -> None:
    """Write clips into a temporary folder beside ``out``, then move it into place (never half-written)."""
    from pensieve_ns.data.synthetic import write_dataset

    if num_clips < 1 or frames < 2 or size < 8:
        raise PensieveInputError(out, f"need --num-clips >= 1, --frames >= 2, --size >= 8 (got {num_clips}, {frames}, {size})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise PensieveInputError(out, "exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_dataset(tmp, num_clips, frames, size, seed, split)  # type: ignore[arg-type]
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="list the clips a path holds")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--reader", default="auto", choices=["auto", "video", "images", "nerfstudio", "chunks"])
    p.add_argument("--stride", type=int, default=1, help="keep every n-th video frame")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per video")
    s = sub.add_parser("synth", help="write built-in synthetic clips (nerfstudio scenes with GT cameras and depth)")
    s.add_argument("out", type=Path)
    s.add_argument("--num-clips", type=int, default=8)
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", default="train", choices=["train", "heldout"])
    s.add_argument("--overwrite", action="store_true")
    k = sub.add_parser("pack", help="pack videos, image folders or scenes into pixelSplat chunks (OUT/SPLIT/*.torch)")
    k.add_argument("src", type=Path, help="anything inspect lists clips in")
    k.add_argument("out", type=Path, help="a new or empty folder; gets SPLIT/000000.torch ... and SPLIT/index.json")
    k.add_argument("--chunk-mb", type=float, default=100.0, help="about this many MB of scenes per chunk file")
    k.add_argument("--max-size", type=int, default=360, help="shrink frames so the short side is at most this")
    k.add_argument("--quality", type=int, default=95, help="JPEG quality of the re-encoded frames")
    k.add_argument("--split", default="train", help="sub-folder of OUT to write (e.g. train, test)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        if args.command == "inspect":
            records = inspect_path(args.path, args.reader, args.stride, args.max_frames)
            if args.json:
                print(json.dumps(records, indent=1))
            else:
                _print_table(args.path, records)
        elif args.command == "pack":
            from pensieve_ns.data.pack import pack

            summary = pack(args.src, args.out, args.split, args.chunk_mb, args.max_size, args.quality)
            print(summary.line())
        else:
            synth(args.out, args.num_clips, args.frames, args.size, args.seed, args.split, args.overwrite)
            print(f"wrote {args.num_clips} {args.split} clip(s) of {args.frames} frames at {args.size}px to {args.out}")
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
