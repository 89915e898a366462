"""Fixtures that build tiny samples of every clip source: synthetic scenes, mp4/mkv, image folders, chunks."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHAIR = SHARED / "data" / "chair_orbit"

warnings.filterwarnings("ignore", category=FutureWarning)


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Encode uint8 RGB frames [N, H, W, 3] with PyAV, as pensieve-reconstruct writes its fly-through."""
    from pensieve_ns.reconstruct import write_video as encode

    encode(path, frames, fps)
    return path


def moving_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A textured pattern sliding right one pixel per frame: [n, h, w, 3] uint8."""
    import cv2

    rng = np.random.default_rng(seed)  # smooth (upsampled) noise: survives chroma subsampling and JPEG
    coarse = rng.uniform(0, 255, (h // 6 + 2, (w + n) // 6 + 2, 3)).astype(np.float32)
    base = np.clip(cv2.resize(coarse, (w + n, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)
    return np.stack([base[:, i : i + w] for i in range(n)])


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Four generated 10-frame 32 px training clips (nerfstudio scenes with GT cameras and depth)."""
    from pensieve_ns.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, num_clips=4, num_frames=10, size=32, seed=0)
    return out


@pytest.fixture(scope="session")
def mp4_path(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "walk.mp4", moving_frames(24))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images") / "clip"
    folder.mkdir()
    for i, frame in enumerate(moving_frames(12, seed=1)):
        Image.fromarray(frame).save(folder / f"frame_{i}.png")  # natural order: frame_2 before frame_10
    return folder


def make_chunk(folder: Path, num_scenes: int = 2, frames: int = 9, h: int = 36, w: int = 64) -> Path:
    """A pixelSplat-layout chunk: a list of scene dicts with JPEG bytes and 18-float cameras, plus index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes, index = [], {}
    for s in range(num_scenes):
        images = []
        for frame in moving_frames(frames, h, w, seed=10 + s):
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=95)
            images.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
        cams = torch.zeros(frames, 18)
        cams[:, 0], cams[:, 1], cams[:, 2], cams[:, 3] = 0.8, 0.8 * w / h, 0.5, 0.5
        for i in range(frames):
            w2c = torch.eye(4)[:3]
            w2c[0, 3] = -0.1 * i  # camera centre moves along +x
            cams[i, 6:] = w2c.reshape(-1)
        key = f"scene{s:03d}"
        scenes.append({"key": key, "url": "", "timestamps": torch.arange(frames), "cameras": cams, "images": images})
        index[key] = "000000.torch"
    torch.save(scenes, folder / "000000.torch")
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="session")
def chunk_dir(tmp_path_factory) -> Path:
    return make_chunk(tmp_path_factory.mktemp("re10k") / "test")
