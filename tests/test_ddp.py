"""Data-parallel training is the same computation: 2 gloo processes on half-batches == 1 process on the batch."""

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from pensieve_ns.model.camera_head import CameraHeadConfig
from pensieve_ns.model.pensieve import PensieveModelConfig
from pensieve_ns.model.vit import ViTSize


def tiny_model():
    torch.manual_seed(0)
    size = ViTSize(dim=32, depth=2, heads=4, mlp_hidden=64, hook=0)
    cfg = PensieveModelConfig(patch=8, camera_head=CameraHeadConfig(hidden=16), lpips_weight=0.0, frame_vit=size, camera_vit=size,
                              context_vit=size, lvsm_vit=size)
    return cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")


def fixed_batch():
    g = torch.Generator().manual_seed(1)
    B, L = 4, 3
    context = torch.tensor([[0], [1], [2], [0]])
    weights = torch.ones(B, L)
    weights[torch.arange(B), context[:, 0]] = 0.1  # same L and G per sample: equal weight sums per half
    return {"images": torch.rand(B, L, 3, 16, 16, generator=g), "context": context, "loss_weights": weights}


def one_step(model, batch):
    # Plain SGD: Adam's per-element normalisation would amplify float round-off in near-zero gradients.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    inner = model.module if isinstance(model, DDP) else model
    loss = inner.get_loss_dict(model(batch), batch)["l2"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


def worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    torch.set_num_threads(1)
    batch = {k: v[2 * rank : 2 * rank + 2] for k, v in fixed_batch().items()}
    state = one_step(DDP(tiny_model(), find_unused_parameters=True), batch)
    if rank == 0:
        torch.save(state, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(port, str(out)), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)
    single = one_step(tiny_model(), fixed_batch())
    start = tiny_model().state_dict()
    moved = 0
    for k, v in single.items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(v, start[k]))
    assert moved > 10  # the step changed the weights, so the comparison means something
