"""Fixtures that build tiny samples of every clip source: synthetic scenes, mp4/mkv, image folders, chunks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
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
    from pensieve_ns.scene_io import write_video as encode

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


NS_TRAIN = Path(sys.executable).parent / "ns-train"


def ns_train(method, data, out, *extra):
    """Run ``ns-train METHOD`` on the CPU at 32 px (tiny preset); returns the CompletedProcess."""
    cmd = [
        str(NS_TRAIN), method, "--data", str(data), "--output-dir", str(out),
        "--machine.device-type", "cpu", "--viewer.quit-on-train-completion", "True",
        "--pipeline.datamanager.image-size", "32", "32", "--steps-per-eval-image", "2",
        "--steps-per-eval-all-images", "1000", *map(str, extra),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def stage1_run(synth_dir, tmp_path_factory) -> Path:
    """One 2-step stage-1 run on ``synth_dir``, shared by every test that needs a stage-1 checkpoint."""
    out = tmp_path_factory.mktemp("s1")
    run = ns_train("pensieve-stage1", synth_dir, out, "--max-num-iterations", 2, "--steps-per-save", 1)
    assert run.returncode == 0, run.stderr[-3000:]
    return next(out.rglob("config.yml")).parent


@pytest.fixture(scope="session")
def stage2_run(synth_dir, stage1_run, tmp_path_factory) -> Path:
    """One 2-step stage-2 run chained to ``stage1_run`` (export, viewer, reconstruct and eval tests read it)."""
    out = tmp_path_factory.mktemp("s2")
    run = ns_train("pensieve-stage2", synth_dir, out, "--stage1-checkpoint", stage1_run, "--max-num-iterations", 2)
    assert run.returncode == 0, run.stderr[-3000:]
    return next(out.rglob("config.yml")).parent
