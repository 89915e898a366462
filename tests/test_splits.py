"""Dataset roots train on train/ and evaluate on test/; sampler seeds follow the global rank."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pensieve_ns.data.datamanager import PensieveDataManagerConfig, rank_seed
from pensieve_ns.data.sampler import ClipSamplerConfig, TrainBatchSampler
from pensieve_ns.data.synthetic import write_dataset

SMALL = ClipSamplerConfig(window_frames=4, min_gap=1, max_gap=2, eval_views=4)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    write_dataset(root / "train", 3, 8, 32, seed=0, split="train")
    write_dataset(root / "test", 2, 8, 32, seed=1000, split="heldout")
    return root


def test_a_dataset_root_trains_on_train_only_and_evaluates_on_test(dataset_root):
    dm = PensieveDataManagerConfig(data=dataset_root, image_size=(32, 32), batch_size=3, sampler=SMALL).setup(device="cpu")
    train = {str(c.path) for c in dm.train_frames.clips}
    held = {str(c.path) for c in dm.eval_frames.clips}
    assert len(train) == 3 and all("/train/" in p for p in train)
    assert len(held) == 2 and all("/test/" in p for p in held)
    # No test frame reaches a training batch: every frame of 20 batches differs from every test frame.
    test_frames = np.concatenate([dm.eval_frames.frames(k, range(c.num_frames)) for k, c in enumerate(dm.eval_frames.clips)])
    test_frames = torch.from_numpy(test_frames).permute(0, 3, 1, 2).float() / 255.0
    seen = 0
    for step in range(20):
        _, batch = dm.next_train(step)
        frames = batch["images"].flatten(0, 1)
        assert not (frames[:, None] == test_frames[None]).flatten(2).all(-1).any(), step
        seen += frames.shape[0]
    assert seen >= 20 * 3 * 2
    # and evaluation draws only test clips
    _, batch = dm.next_eval(0)
    assert any(torch.equal(batch["images"][0, 0], f) for f in test_frames)


def test_a_root_with_test_but_no_train_is_refused(tmp_path, dataset_root):
    from pensieve_ns.data.datamanager import dataset_splits
    from pensieve_ns.errors import PensieveInputError

    (tmp_path / "only_test").mkdir()
    (tmp_path / "only_test" / "test").symlink_to(dataset_root / "test")
    with pytest.raises(PensieveInputError, match="has test/ but no train/"):  # the DataManager exits 2 with it
        dataset_splits(tmp_path / "only_test")
    assert dataset_splits(dataset_root) == (dataset_root / "train", dataset_root / "test")
    assert dataset_splits(dataset_root / "train") is None


def _draw(rank: int, port: int, out: str) -> None:
    """One process of two, both with local rank 0 (two machines of one GPU each)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    sampler = TrainBatchSampler([10] * 8, batch_size=2, config=SMALL, seed=rank_seed(0, local_rank=0))
    clips = [spec.clip for _ in range(6) for spec in sampler.draw()]
    torch.save(torch.tensor(clips), f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_with_the_same_local_rank_draw_different_clips(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_draw, args=(port, str(tmp_path / "clips")), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"clips.{r}").tolist() for r in (0, 1))
    assert a != b  # with local-rank seeding both machines drew the same sequence
    assert set(a) | set(b) == set(range(8))  # together they cover the data
    assert rank_seed(0, local_rank=3) == 3  # without a process group: the local rank (one machine)
