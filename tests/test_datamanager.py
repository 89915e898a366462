"""PensieveDataManager against nerfstudio's contract, on every source."""

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras

from conftest import CHAIR
from pensieve_ns.data.datamanager import PensieveDataManagerConfig, split_clips
from pensieve_ns.data.sampler import ClipSamplerConfig

SMALL = ClipSamplerConfig(window_frames=4, min_gap=1, max_gap=2, eval_views=4)


def make(data, **kw):
    kw.setdefault("image_size", (32, 32))
    kw.setdefault("batch_size", 3)
    kw.setdefault("sampler", SMALL)
    return PensieveDataManagerConfig(data=data, **kw).setup(device="cpu")


def test_train_batch_contract(synth_dir):
    dm = make(synth_dir)
    cams, batch = dm.next_train(0)
    B, L = batch["images"].shape[:2]
    assert B == 3 and 2 <= L <= 4
    assert isinstance(cams, Cameras) and cams.shape == (B, L)
    assert batch["images"].shape == (B, L, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert 0.0 <= batch["images"].min() and batch["images"].max() <= 1.0
    G = batch["context"].shape[1]
    assert 1 <= G < L
    w = batch["loss_weights"]
    for b in range(B):
        ctx = set(batch["context"][b].tolist())
        assert all(w[b, i] == (0.1 if i in ctx else 1.0) for i in range(L))
    assert batch["has_gt"].all() and batch["gt_K"].shape == (B, L, 3, 3)
    # GT intrinsics follow the frames (32 px synthetic clips are already 32 px: unchanged).
    clip = dm.train_frames.clips[int(batch["clip_index"][0])]
    np.testing.assert_allclose(batch["gt_K"][0, 0].numpy(), clip.gt.K[0], rtol=1e-6)
    assert dm.get_train_rays_per_batch() == 3 * 4 * 32 * 32
    # nerfstudio's Model setup and viewer read these:
    assert len(dm.train_dataset) > 0 and dm.train_dataset[0]["image"].shape == (32, 32, 3)
    assert dm.train_dataset.cameras.shape == (len(dm.train_dataset),)


def test_held_out_clips_and_fixed_eval(synth_dir):
    dm = make(synth_dir, eval_fraction=0.25)
    train_names = {c.name for c in dm.train_frames.clips}
    eval_names = {c.name for c in dm.eval_frames.clips}
    assert eval_names and not train_names & eval_names
    _, a = dm.next_eval(0)
    fixed = dm.fixed_indices_eval_dataloader
    assert len(fixed) == len(dm.eval_samples)
    torch.testing.assert_close(fixed[0][1]["images"], a["images"])
    assert a["context"][0].tolist() == [0, 3]  # [ctx0, targets..., ctx1]


def test_eval_data_option_and_workers(synth_dir, image_folder):
    dm = make(image_folder, eval_data=synth_dir, num_workers=1)
    _, batch = dm.next_train(0)
    assert not batch["has_gt"].any()
    _, ev = dm.next_eval_image(0)
    assert ev["has_gt"].all()


@pytest.mark.parametrize("source", ["mp4_path", "image_folder", "chunk_dir"])
def test_every_source_trains(source, request):
    dm = make(request.getfixturevalue(source), image_size=(32, 48))
    _, batch = dm.next_train(5)
    assert batch["images"].shape[-2:] == (32, 48)
    # video and images: one clip, so eval frames come from it (warned); chunks: 2 scenes, 1 held out


def test_gap_warmup_follows_step(synth_dir):
    sampler = ClipSamplerConfig(window_frames=3, min_gap=3, max_gap=4, gap_warmup_start=1, gap_warmup_steps=100)
    dm = make(synth_dir, sampler=sampler, batch_size=8)
    _, early = dm.next_train(0)
    frames = early["frame_index"].sort(dim=1).values
    assert (frames.diff(dim=1) == 1).all()  # all gaps are 1 at step 0


@pytest.mark.skipif(not CHAIR.is_dir(), reason="shared/data/chair_orbit not present")
def test_chair_orbit_crop_intrinsics():
    dm = make(CHAIR, image_size=(64, 64), sampler=ClipSamplerConfig(window_frames=5, min_gap=4, max_gap=4))
    _, batch = dm.next_train(0)
    clip = dm.train_frames.clips[0]
    np.testing.assert_allclose(batch["gt_K"][0, 0, 0, 0].item(), clip.gt.K[0, 0, 0] / 2, rtol=1e-5)


def test_bad_data_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make(tmp_path / "missing")
    assert exit_info.value.code == 2
    assert "missing: does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make(None)


def test_split_clips_deterministic():
    clips = list(range(10))
    train, held = split_clips(clips, 0.2)  # type: ignore[arg-type]
    assert held == [4, 9] and len(train) == 8
    assert split_clips([1], 0.5) == ([1], [])  # type: ignore[arg-type]
