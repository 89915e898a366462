"""Readers on all four sources, chair_orbit, and every kind of bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CHAIR, make_chunk, moving_frames, write_video
from pensieve_ns.data.sources import find_clips
from pensieve_ns.errors import DataWarning, PensieveInputError


def test_nerfstudio_synthetic(synth_dir):
    clips = find_clips(synth_dir)
    assert [c.name for c in clips] == [f"clip_{k:04d}" for k in range(4)]
    clip = clips[0]
    assert (clip.reader, clip.num_frames, clip.native_hw) == ("nerfstudio", 10, (32, 32))
    assert clip.gt.c2w_opencv.shape == (10, 4, 4) and clip.gt.K.shape == (10, 3, 3)
    assert len(clip.gt.depth_paths) == 10
    frames = clip.read([0, 9])
    assert frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    assert find_clips(synth_dir / "clip_0001" / "transforms.json")[0].name == "clip_0001"


def test_video_file_and_folder(mp4_path):
    (clip,) = find_clips(mp4_path)
    assert (clip.reader, clip.num_frames, clip.native_hw, clip.gt) == ("video", 24, (48, 64), None)
    frames = clip.read([0, 23])
    expected = moving_frames(24)
    assert np.abs(frames[1].astype(int) - expected[23]).mean() < 20  # lossy codec, right frame
    (strided,) = find_clips(mp4_path, stride=3, max_frames=5)
    assert strided.num_frames == 5
    assert np.abs(strided.read([2])[0].astype(int) - expected[6]).mean() < 20
    assert [c.reader for c in find_clips(mp4_path.parent)] == ["video"]


def test_image_folders_natural_order(image_folder, tmp_path):
    (clip,) = find_clips(image_folder)
    assert (clip.reader, clip.num_frames, clip.native_hw) == ("images", 12, (48, 64))
    np.testing.assert_array_equal(clip.read([2])[0], moving_frames(12, seed=1)[2])  # frame_2, not frame_10
    shutil.copytree(image_folder, tmp_path / "a")
    shutil.copytree(image_folder, tmp_path / "b")
    assert [c.name for c in find_clips(tmp_path)] == ["a", "b"]


def test_chunks(chunk_dir):
    clips = find_clips(chunk_dir)
    assert [c.name for c in clips] == ["scene000", "scene001"]
    clip = clips[1]
    assert (clip.reader, clip.num_frames, clip.native_hw) == ("chunks", 9, (36, 64))
    np.testing.assert_allclose(clip.gt.K[0, 0, 0], 0.8 * 64)
    np.testing.assert_allclose(clip.gt.c2w_opencv[3, :3, 3], [0.3, 0, 0], atol=1e-6)
    assert np.abs(clip.read([4])[0].astype(int) - moving_frames(9, 36, 64, seed=11)[4]).mean() < 10
    assert len(find_clips(chunk_dir / "000000.torch")) == 2


@pytest.mark.skipif(not CHAIR.is_dir(), reason="shared/data/chair_orbit not present")
def test_chair_orbit():
    (clip,) = find_clips(CHAIR)
    assert (clip.reader, clip.num_frames, clip.native_hw) == ("nerfstudio", 200, (128, 128))
    assert clip.gt is not None and clip.gt.depth_paths is None
    # Blender's orbit: every camera looks at the object near the origin.
    fwd = clip.gt.c2w_opencv[:, :3, 2]
    to_origin = -clip.gt.c2w_opencv[:, :3, 3]
    cos = (fwd * to_origin).sum(1) / np.linalg.norm(to_origin, axis=1)
    assert cos.min() > 0.95


# ------------------------------------------------------------------------------------------ bad input
def test_missing_and_empty(tmp_path):
    with pytest.raises(PensieveInputError, match="does not exist"):
        find_clips(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PensieveInputError, match="folder is empty"):
        find_clips(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(PensieveInputError, match="found no clips"):
        find_clips(tmp_path / "junk")
    with pytest.raises(PensieveInputError, match="notes.txt: is not a video"):
        find_clips(tmp_path / "junk" / "notes.txt")


def test_not_a_video(tmp_path):
    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(PensieveInputError, match="fake.mp4: not a readable video"):
        find_clips(tmp_path / "fake.mp4")


def test_truncated_and_corrupt_video(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    data = write_video(tmp_path / "full.mkv", frames).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(DataWarning, match="cut.mkv: looks truncated"):
        (clip,) = find_clips(tmp_path / "cut.mkv")
    assert 0 < clip.num_frames < 30
    mp4 = write_video(tmp_path / "full.mp4", frames).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(mp4[: len(mp4) // 2])  # mp4 index at the end: nothing decodable
    with pytest.raises(PensieveInputError, match="cut.mp4: not a readable video"):
        find_clips(tmp_path / "cut.mp4")
    broken = bytearray(mp4)
    broken[len(broken) // 3 : len(broken) // 3 + 400] = b"\xff" * 400
    (tmp_path / "broken.mp4").write_bytes(bytes(broken))
    with pytest.warns(DataWarning, match="broken.mp4: .* corrupt packet"):
        (clip,) = find_clips(tmp_path / "broken.mp4")
    assert 0 < clip.num_frames <= 30


def test_mixed_sizes_and_modes_warn(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = moving_frames(4, seed=2)
    Image.fromarray(frames[0]).save(folder / "0.png")
    Image.fromarray(frames[1][:, :, 0]).save(folder / "1.png")  # grayscale
    Image.fromarray(np.concatenate([frames[2], np.full((48, 64, 1), 255, np.uint8)], -1)).save(folder / "2.png")
    Image.fromarray(frames[3][:40, :50]).save(folder / "3.png")  # other size
    with pytest.warns(DataWarning) as record:
        (clip,) = find_clips(folder)
    messages = " | ".join(str(r.message) for r in record)
    assert "differ in size" in messages and "3.png" in messages
    assert "grayscale" in messages and "RGBA" in messages
    assert all(f.shape == (48, 64, 3) for f in clip.read(range(4)))


def test_bad_transforms_json(tmp_path, synth_dir):
    scene = tmp_path / "scene"
    shutil.copytree(synth_dir / "clip_0000", scene)
    tf = scene / "transforms.json"
    meta = json.loads(tf.read_text())
    tf.write_text("{ not json")
    with pytest.raises(PensieveInputError, match="transforms.json: not valid JSON"):
        find_clips(scene)
    broken = dict(meta, frames=[{"file_path": "images/frame_00000.png"}])
    tf.write_text(json.dumps(broken))
    with pytest.raises(PensieveInputError, match="lacks 'file_path' or 'transform_matrix'"):
        find_clips(scene)
    no_focal = {k: v for k, v in meta.items() if k != "fl_x"}
    tf.write_text(json.dumps(no_focal))
    with pytest.raises(PensieveInputError, match="has no fl_x"):
        find_clips(scene)
    missing_image = dict(meta, frames=[dict(meta["frames"][0], file_path="images/nope.png")])
    tf.write_text(json.dumps(missing_image))
    with pytest.raises(PensieveInputError, match="nope.png: listed in transforms.json"):
        find_clips(scene)


def test_bad_chunk(tmp_path):
    folder = make_chunk(tmp_path / "chunks", num_scenes=1)
    (folder / "000000.torch").write_bytes(b"garbage")
    with pytest.raises(PensieveInputError, match="000000.torch: chunk file does not load"):
        find_clips(folder)
    torch.save({"not": "a list"}, folder / "000000.torch")
    with pytest.raises(PensieveInputError, match="not a list of scene dicts"):
        find_clips(folder)
