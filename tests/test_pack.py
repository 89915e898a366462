"""``pensieve-data pack``: videos and scenes -> pixelSplat chunks that the readers and ``pensieve-eval`` read back."""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import moving_frames, write_video
from pensieve_ns.data.sources import find_clips

BIN = Path(sys.executable).parent
SHIPPED_FLOW = Path(__file__).resolve().parents[1] / "pretrained" / "stage1-flow64" / "config.yml"


def run(*args, exe="pensieve-data"):
    return subprocess.run([str(BIN / exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def by_name(path: Path) -> dict:
    return {clip.name: clip for clip in find_clips(path)}


def resized(frame: np.ndarray, hw) -> np.ndarray:
    return cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA).astype(np.float64)


def load_split(folder: Path) -> list:
    """Every scene dict of a packed split, checking the chunk names and that index.json names each scene's chunk."""
    index = json.loads((folder / "index.json").read_text())
    names = sorted(p.name for p in folder.glob("*.torch"))
    assert names == [f"{k:06d}.torch" for k in range(len(names))] and set(index.values()) == set(names)
    scenes = []
    for name in names:
        chunk = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert isinstance(chunk, list) and chunk
        scenes += chunk
        assert all(index[s["key"]] == name for s in chunk)
    assert sorted(index) == sorted(s["key"] for s in scenes)
    for s in scenes:  # the pixelSplat layout, as the RE10K sample in shared/ stores it
        n = len(s["images"])
        assert isinstance(s["key"], str) and isinstance(s["url"], str)
        assert s["timestamps"].dtype == torch.int64 and s["timestamps"].shape == (n,)
        assert s["cameras"].dtype == torch.float32 and s["cameras"].shape == (n, 18)
        assert (s["cameras"][:, 4:6] == 0).all()
        assert all(im.dtype == torch.uint8 and im.ndim == 1 and im[:2].tolist() == [0xFF, 0xD8] for im in s["images"])
    return scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from pensieve_ns.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("pack_src")
    write_dataset(root, num_clips=2, num_frames=10, size=64, seed=3)
    return root


def test_scenes_round_trip_with_cameras(scenes, tmp_path):
    out = tmp_path / "packed"
    done = run("pack", scenes, out, "--max-size", 48)
    assert done.returncode == 0, done.stderr
    summary = r"train: 2 clip\(s\), 20 frame\(s\), 1 chunk\(s\), \d+ bytes, 2 of 2 clip\(s\) with cameras"
    assert re.search(summary, done.stdout), done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["train"]
    packed = load_split(out / "train")
    assert all(s["cameras_known"] is True for s in packed)

    records = json.loads(run("inspect", out / "train", "--json").stdout)
    assert sorted((r["name"], r["frames"], r["width"], r["height"], r["gt_cameras"]) for r in records) == [
        ("clip_0000", 10, 48, 48, True), ("clip_0001", 10, 48, 48, True)]

    source, back = by_name(scenes), by_name(out / "train")
    for name, clip in source.items():
        got = back[name]
        np.testing.assert_allclose(got.gt.c2w_opencv, clip.gt.c2w_opencv, atol=1e-4)
        K = clip.gt.K.copy()
        K[:, :2] *= 48 / 64  # 64 -> 48 px: focal lengths and principal point scale with the image plane
        np.testing.assert_allclose(got.gt.K, K, rtol=1e-3)
        for a, b in zip(clip.read(range(10)), got.read(range(10))):
            assert b.shape == (48, 48, 3) and np.abs(resized(a, (48, 48)) - b).mean() < 8


def test_videos_without_cameras_pack_and_are_flagged(tmp_path):
    frames = moving_frames(12)  # 64x48
    for sub in ("a", "b"):  # two videos with one name: keys must still be unique
        (tmp_path / "videos" / sub).mkdir(parents=True)
        write_video(tmp_path / "videos" / sub / "walk.mp4", frames)
    out = tmp_path / "packed"
    done = run("pack", tmp_path / "videos", out, "--max-size", 36, "--split", "test")
    assert done.returncode == 0, done.stderr
    assert "test: 2 clip(s), 24 frame(s)" in done.stdout and "0 of 2 clip(s) with cameras" in done.stdout
    packed = load_split(out / "test")
    assert sorted(s["key"] for s in packed) == ["walk", "walk-1"]
    for s in packed:
        assert s["cameras_known"] is False and (s["cameras"] == 0).all()

    decoded = find_clips(tmp_path / "videos" / "a")[0].read(range(12))
    for clip in find_clips(out / "test"):
        assert (clip.num_frames, clip.native_hw) == (12, (36, 48))
        assert clip.gt is None  # the readers do not take the zeros for cameras
        for a, b in zip(decoded, clip.read(range(12))):
            # Compare luma: JPEG's 4:2:0 chroma (as in RE10K) costs ~9 levels of RGB on this saturated 2-pixel-grain
            # noise at 48x36, while luma is kept to under 1 level.
            luma = lambda im: cv2.cvtColor(im.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float64)  # noqa: E731
            assert np.abs(luma(resized(a, (36, 48)).round()) - luma(b)).mean() < 3


def test_eval_reads_packed_chunks(scenes, tmp_path):
    out = tmp_path / "packed"
    done = run("pack", scenes, out, "--chunk-mb", 0.01)  # ~10 kB: one scene per chunk, so eval reads two chunks
    assert done.returncode == 0, done.stderr
    assert len(list((out / "train").glob("*.torch"))) == 2
    result = tmp_path / "eval.json"
    ev = run("--load-config", SHIPPED_FLOW, "--data", out / "train", "--output", result, "--no-lpips",
             exe="pensieve-eval")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(result.read_text())["summary"]["scenes"] == 2


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, scenes, capsys, monkeypatch):
    from pensieve_ns.cli.data import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() installs its own; restore it after
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no clips here")
    broken = tmp_path / "broken"  # a frame whose header reads but whose pixels do not: fails only when packed
    broken.mkdir()
    for i, frame in enumerate(moving_frames(3)):
        Image.fromarray(frame).save(broken / f"f{i}.png")
    data = (broken / "f1.png").read_bytes()
    (broken / "f1.png").write_bytes(data[: len(data) // 2])
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases = [
        ((tmp_path / "missing", tmp_path / "o1"), "does not exist"),
        ((tmp_path / "empty", tmp_path / "o2"), "folder is empty"),
        ((tmp_path / "notes", tmp_path / "o3"), "found no clips"),
        ((broken, tmp_path / "o4"), "not a readable image"),
        ((scenes, full), "not empty"),
        ((scenes, tmp_path / "o5", "--quality", 0), "--quality"),
        ((scenes, tmp_path / "o6", "--split", "../x"), "--split"),
    ]
    done = run("pack", *cases[3][0])  # the console script itself, once (each start costs seconds)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and cases[3][1] in done.stderr, done.stderr
    for args, needle in cases:  # every case in-process: same main(), same exit
        with pytest.raises(SystemExit) as exit_:
            main(["pack", *map(str, args)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(lines) == 1, (args, lines)
        assert lines[0].startswith("pensieve-data: error:") and needle in lines[0], lines
    assert not any((tmp_path / f"o{k}").exists() for k in range(1, 7))
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and (full / "keep.txt").read_text() == "mine"


def test_a_packed_dataset_root_trains_a_step(scenes, tmp_path):
    """pack (train and test splits) -> the DataManager streams train/ and evaluates test/ -> one training step of
    the tiny model with finite loss and gradients."""
    from pensieve_ns.method_configs import stage1_config

    root = tmp_path / "root"
    root.mkdir()
    for split in ("train", "test"):  # OUT must be new: pack each split apart, then gather them under one root
        done = run("pack", scenes, tmp_path / split, "--split", split)
        assert done.returncode == 0, done.stderr
        (tmp_path / split / split).rename(root / split)
    config = stage1_config("tiny").pipeline
    config.datamanager.data, config.datamanager.image_size, config.datamanager.batch_size = root, (32, 32), 2
    config.datamanager.sampler.window_frames, config.datamanager.sampler.max_gap = 3, 2
    dm = config.datamanager.setup(device="cpu")
    assert dm.train_stream is not None and {c.name for c in dm.eval_frames.clips}
    _, batch = dm.next_train(0)
    model = config.model.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    loss = sum(model.get_loss_dict(model(batch), batch).values())
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
