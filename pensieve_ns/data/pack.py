"""Pack clips (videos, image folders, nerfstudio scenes, chunks) into pixelSplat chunks, to train at scale.

    pensieve-data pack SRC OUT [--chunk-mb 100] [--max-size 360] [--quality 95] [--split train]

Writes ``OUT/SPLIT/000000.torch, 000001.torch, ...`` and ``OUT/SPLIT/index.json`` (scene key -> chunk file), the
layout pixelSplat / MVSplat store RE10K and DL3DV in and ``sources.chunk_clips`` reads. Each chunk is a
``torch.save``d list of scene dicts:

* ``key`` (str, unique in the split), ``url`` (the source path), ``timestamps`` (int64 [N]: frame positions in the
  clip; the readers give no capture times),
* ``cameras`` (float32 [N, 18]: fx/W, fy/H, cx/W, cy/H, two zeros, then the row-major 3x4 world-to-camera in
  OpenCV axes), zeros where the source has no cameras,
* ``images`` (N uint8 tensors, each the bytes of one JPEG), ``cameras_known`` (bool; an extra key pixelSplat's
  loaders ignore, so camera-less scenes are not mistaken for scenes with cameras).

Every frame of every clip is packed; a clip that cannot be read stops the command and nothing is written.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from pensieve_ns.cameras import opencv_to_pixelsplat_camera
from pensieve_ns.data.sources import Clip, find_clips, stream_frames
from pensieve_ns.errors import PensieveInputError
from pensieve_ns.scene_io import check_output_folder, staged_folder

CHUNK_NAME = "{:06d}.torch"


@dataclass
class PackSummary:
    """What one split holds once packed (printed as one line)."""

    split: str
    folder: Path
    clips: int = 0
    frames: int = 0
    chunks: int = 0
    bytes: int = 0
    with_cameras: int = 0

    def line(self) -> str:
        return (f"{self.split}: {self.clips} clip(s), {self.frames} frame(s), {self.chunks} chunk(s), "
                f"{self.bytes} bytes, {self.with_cameras} of {self.clips} clip(s) with cameras -> {self.folder}")


def packed_hw(hw: Tuple[int, int], max_size: int) -> Tuple[int, int]:
    """(H, W) with the short side brought down to ``max_size`` (never up), aspect kept to the nearest pixel."""
    h, w = hw
    scale = min(1.0, max_size / min(h, w))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def encode_jpeg(frame: np.ndarray, hw: Tuple[int, int], quality: int) -> torch.Tensor:
    """RGB uint8 frame -> JPEG bytes as a uint8 tensor, resized to ``hw`` first (area filter: no aliasing)."""
    if frame.shape[:2] != tuple(hw):
        frame = cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {hw[1]}x{hw[0]} JPEG")
    return torch.from_numpy(buf.reshape(-1).copy())


def pack_clip(clip: Clip, key: str, max_size: int, quality: int) -> dict:
    """One clip -> one pixelSplat scene dict holding every frame (re-encoded) and its cameras where known."""
    hw = packed_hw(clip.native_hw, max_size)
    images: List[torch.Tensor] = []
    # stream_frames decodes a video in one pass, one frame in memory, and only warns where decoding breaks off:
    # record those warnings so a short read becomes this command's one error line instead of a silent drop.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _, frame in stream_frames(clip, range(clip.num_frames)):
            images.append(encode_jpeg(frame, hw, quality))
    if len(images) != clip.num_frames:
        why = f": {caught[-1].message}" if caught else ""
        raise PensieveInputError(clip.path, f"only {len(images)} of {clip.num_frames} frame(s) could be read{why}")
    for w in caught:  # a complete read: pass the reader's notes on to the user
        warnings.warn(w.message, w.category, stacklevel=2)
    known = clip.gt is not None
    if known:
        if len(clip.gt.c2w_opencv) != clip.num_frames or len(clip.gt.K) != clip.num_frames:
            raise PensieveInputError(clip.path, f"has {len(clip.gt.c2w_opencv)} cameras for {clip.num_frames} frames")
        # K belongs to each frame file's own size where sizes differ (the reader resizes them to native_hw).
        sizes = clip.sizes if clip.sizes and len(clip.sizes) == clip.num_frames else [clip.native_hw] * clip.num_frames
        cameras = opencv_to_pixelsplat_camera(clip.gt.c2w_opencv, clip.gt.K, sizes)
    else:
        cameras = np.zeros((clip.num_frames, 18), dtype=np.float32)
    return {
        "key": key,
        "url": str(clip.path),
        "timestamps": torch.arange(clip.num_frames, dtype=torch.int64),
        "cameras": torch.from_numpy(cameras),
        "images": images,
        "cameras_known": known,
    }


def unique_keys(clips: Sequence[Clip]) -> List[str]:
    """Clip names as scene keys, made unique (two folders may both hold a ``clip``): index.json maps key -> chunk
    and the chunk reader looks a scene up by key, so a repeated key would hide a scene."""
    used: set = set()
    suffix: Dict[str, int] = {}
    keys = []
    for clip in clips:
        key = clip.name
        while key in used:
            suffix[clip.name] = suffix.get(clip.name, 0) + 1
            key = f"{clip.name}-{suffix[clip.name]}"
        used.add(key)
        keys.append(key)
    return keys


def write_split(clips: Sequence[Clip], folder: Path, chunk_mb: float, max_size: int, quality: int) -> PackSummary:
    """Pack ``clips`` into chunks of about ``chunk_mb`` MB in ``folder``; only one chunk is held in memory."""
    folder.mkdir(parents=True)
    summary = PackSummary(folder.name, folder)
    limit = chunk_mb * 1e6
    index: Dict[str, str] = {}
    chunk: List[dict] = []
    size = 0

    def flush() -> None:
        name = CHUNK_NAME.format(summary.chunks)
        torch.save(chunk, folder / name)
        index.update({scene["key"]: name for scene in chunk})
        summary.chunks += 1
        summary.bytes += (folder / name).stat().st_size

    for clip, key in zip(clips, unique_keys(clips)):
        scene = pack_clip(clip, key, max_size, quality)
        scene_bytes = sum(im.numel() for im in scene["images"]) + scene["cameras"].numel() * 4
        # Close the chunk before it would pass the target; a scene bigger than the target gets a chunk of its own.
        if chunk and size + scene_bytes > limit:
            flush()
            chunk, size = [], 0
        chunk.append(scene)
        size += scene_bytes
        summary.clips += 1
        summary.frames += len(scene["images"])
        summary.with_cameras += int(scene["cameras_known"])
    if chunk:
        flush()
    (folder / "index.json").write_text(json.dumps(index, indent=1))
    summary.bytes += (folder / "index.json").stat().st_size
    return summary


def pack(src: Path, out: Path, split: str = "train", chunk_mb: float = 100.0, max_size: int = 360,
         quality: int = 95) -> PackSummary:
    """Every clip ``find_clips(src)`` finds -> ``out/split``; ``out`` appears only once everything is written."""
    src, out = Path(src), Path(out)
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise PensieveInputError(None, f"--split must be a plain folder name (got {split!r})")
    if not chunk_mb > 0 or max_size < 8 or not 1 <= quality <= 100:
        raise PensieveInputError(None, f"need --chunk-mb > 0, --max-size >= 8, --quality in 1..100 "
                                       f"(got {chunk_mb}, {max_size}, {quality})")
    check_output_folder(out)
    clips = find_clips(src)  # raises for a missing path, an empty folder or no clips
    with staged_folder(out) as tmp:
        summary = write_split(clips, tmp / split, chunk_mb, max_size, quality)
    summary.folder = out / split
    return summary
