"""Real RealEstate10K clips (``../shared/data/re10k_sample``, a genuine pixelSplat chunk with an evaluation
index) through the chunk reader, the streaming loader and the evaluation index; cameras checked against the
chunk's own numbers, converted here independently."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED

RE10K = SHARED / "data" / "re10k_sample"
pytestmark = pytest.mark.skipif(not (RE10K / "test" / "000000.torch").is_file(),
                                reason=f"{RE10K} not present (the project's shared test data)")


def raw_scenes():
    return {s["key"]: s for s in torch.load(RE10K / "test" / "000000.torch", weights_only=True)}


def test_the_chunk_reader_gives_the_recorded_cameras():
    from pensieve_ns.data.sources import find_clips

    clips = {c.name: c for c in find_clips(RE10K / "test")}
    raw = raw_scenes()
    assert set(clips) == set(raw) == set(json.loads((RE10K / "test" / "index.json").read_text()))
    for key, clip in clips.items():
        assert clip.num_frames == 16 and clip.native_hw == (256, 384) and clip.reader == "chunks"
        cams = raw[key]["cameras"].double().numpy()
        for i in (0, 7, 15):
            w2c = np.eye(4)
            w2c[:3] = cams[i, 6:].reshape(3, 4)
            np.testing.assert_allclose(clip.gt.c2w_opencv[i], np.linalg.inv(w2c), atol=1e-5)
            fx, fy, cx, cy = cams[i, :4] * [384, 256, 384, 256]
            np.testing.assert_allclose(clip.gt.K[i], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], rtol=1e-5)
        R = clip.gt.c2w_opencv[:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-4)
        assert abs(clip.gt.K[0, 0, 0] - clip.gt.K[0, 1, 1]) > 1  # resized 640x360 -> 384x256: non-square pixels
        frame = clip.read([0])[0]
        assert frame.shape == (256, 384, 3) and frame.dtype == np.uint8 and 20 < frame.mean() < 235


def test_the_evaluation_index_chooses_context_and_targets():
    from pensieve_ns.data.sampler import ClipSamplerConfig, eval_specs, load_eval_index
    from pensieve_ns.data.sources import find_clips

    clips = find_clips(RE10K / "test")
    index = load_eval_index(RE10K / "evaluation_index.json")
    specs = eval_specs([c.num_frames for c in clips], ClipSamplerConfig(), [c.name for c in clips], index)
    assert len(specs) == 5
    for spec in specs:
        assert spec.frames == (0, 4, 8, 12, 15) and spec.context == (0, 4)  # [ctx0, targets..., ctx1]


def test_the_streaming_loader_reads_the_real_chunk():
    from pensieve_ns.data.chunk_stream import ChunkStream, chunk_files
    from pensieve_ns.data.sampler import ClipSamplerConfig
    from pensieve_ns.data.sources import find_clips

    clips = {c.name: c for c in find_clips(RE10K / "test")}
    sampler = ClipSamplerConfig(window_frames=5, min_views=5, max_context=2, min_gap=1, max_gap=3)
    batch = next(iter(ChunkStream(chunk_files(RE10K / "test"), (128, 128), 2, sampler, seed=3)))
    assert batch["images"].shape == (2, 5, 3, 128, 128)
    for b in range(2):
        frames = batch["frame_index"][b].numpy()
        match = [c for c in clips.values() if np.allclose(c.gt.c2w_opencv[frames], batch["gt_c2w_opencv"][b].numpy(), atol=1e-5)]
        assert len(match) == 1
        # intrinsics follow the resize to 128 px and the centre crop of the 384x256 frames
        from pensieve_ns.data.frames import fit_matrix

        expected = fit_matrix((256, 384), (128, 128)) @ match[0].gt.K[frames[0]]
        np.testing.assert_allclose(batch["gt_K"][b, 0].numpy(), expected, rtol=1e-5)
