"""Streaming pixelSplat chunks for training: lazy start-up, rank and worker shares, batches equal to the eager
reader's, bad frames and chunks skipped with a count, and the DataManager on a dataset root."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_chunk
from pensieve_ns.data.chunk_stream import ChunkStream, chunk_files
from pensieve_ns.data.sampler import ClipSamplerConfig
from pensieve_ns.data.sources import chunk_file_clips

SAMPLER = ClipSamplerConfig(window_frames=4, min_gap=1, max_gap=2, eval_views=4)


def chunk_set(folder: Path, chunks: int, scenes: int = 2, frames: int = 9) -> Path:
    """``chunks`` chunk files of ``scenes`` scenes each, every scene key distinct, with index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for c in range(chunks):
        make_chunk(folder / f"tmp{c}", num_scenes=scenes, frames=frames)
        data = torch.load(folder / f"tmp{c}" / "000000.torch", weights_only=True)
        for s, scene in enumerate(data):
            scene["key"] = f"c{c}s{s}"
            index[scene["key"]] = f"{c:06d}.torch"
        torch.save(data, folder / f"{c:06d}.torch")
        for p in (folder / f"tmp{c}").iterdir():
            p.unlink()
        (folder / f"tmp{c}").rmdir()
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_start_up_lists_chunks_without_opening_them(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({f"scene{i}": f"{i // 2:06d}.torch" for i in range(20000)}))
    start = time.perf_counter()
    files = chunk_files(tmp_path)  # 10000 chunk files that do not even exist: nothing is opened
    assert len(files) == 10000 and time.perf_counter() - start < 1.0


def test_ranks_and_workers_share_every_chunk_once_per_epoch(tmp_path):
    files = [tmp_path / f"{i:06d}.torch" for i in range(23)]
    streams = [ChunkStream(files, (32, 32), 2, SAMPLER, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        shares = [s.my_files(epoch, w, 3) for s in streams for w in range(3)]
        flat = [f for share in shares for f in share]
        assert sorted(flat) == sorted(files)  # each chunk once, on exactly one rank and worker
    assert streams[0].my_files(0, 0, 3) != streams[0].my_files(1, 0, 3)  # reshuffled each epoch


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_match_the_eager_reader(tmp_path, workers):
    folder = chunk_set(tmp_path / "train", chunks=3)
    stream = ChunkStream(chunk_files(folder), (32, 48), 2, SAMPLER, seed=0)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    eager = {c.name: c for f in chunk_files(folder) for c in chunk_file_clips(f)}
    batches = [b for _, b in zip(range(6), loader)]
    for batch in batches:
        B, L = batch["images"].shape[:2]
        assert B == 2 and 2 <= L <= 4 and batch["images"].shape[-2:] == (32, 48)
        G = batch["context"].shape[1]
        assert 1 <= G < L and (batch["loss_weights"] == 0.1).sum() == B * G
        # cameras are the eager reader's for the same frames: find the clip by its first frame's camera centre
        for b in range(B):
            frames = batch["frame_index"][b].tolist()
            match = [c for c in eager.values() if np.allclose(c.gt.c2w_opencv[frames], batch["gt_c2w_opencv"][b].numpy(), atol=1e-5)]
            assert match, frames
    assert len({tuple(b["frame_index"][0].tolist()) for b in batches}) > 1


def test_a_corrupt_frame_or_missing_chunk_skips_with_a_count(tmp_path):
    folder = chunk_set(tmp_path / "train", chunks=2, scenes=2, frames=4)
    data = torch.load(folder / "000000.torch", weights_only=True)
    for i in range(4):
        data[0]["images"][i] = torch.frombuffer(bytearray(b"not a jpeg"), dtype=torch.uint8)
    torch.save(data, folder / "000000.torch")
    files = chunk_files(folder) + [folder / "missing.torch"]
    stream = ChunkStream(files, (32, 32), 1, SAMPLER, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [b for _, b in zip(range(8), stream)]
    assert len(batches) == 8 and all(torch.isfinite(b["images"]).all() for b in batches)
    messages = [str(w.message) for w in caught]
    assert any("c0s0: clip skipped" in m for m in messages), messages
    assert any("missing.torch" in m and "skipped so far" in m for m in messages), messages
    assert stream.skipped >= 2


def test_the_datamanager_streams_a_dataset_root(tmp_path):
    from pensieve_ns.data.datamanager import PensieveDataManagerConfig

    chunk_set(tmp_path / "root" / "train", chunks=4)
    make_chunk(tmp_path / "root" / "test", num_scenes=2)
    dm = PensieveDataManagerConfig(data=tmp_path / "root", image_size=(32, 32), batch_size=2, sampler=SAMPLER).setup(device="cpu")
    assert dm.train_stream is not None and len(dm.train_files) == 4
    assert {c.name for c in dm.eval_frames.clips} == {"scene000", "scene001"}  # test/ only
    for step in range(3):
        _, batch = dm.next_train(step)
        assert batch["images"].shape[0] == 2 and batch["gt_K"].shape[-2:] == (3, 3)
    assert dm.train_stream.step.value == 2
