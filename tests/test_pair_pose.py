"""The correlation pair-pose network (issue 5): the flow it makes explicit, and its identity start."""

import pytest
import torch

from pensieve_ns.model.camera_head import PairCameraHead
from pensieve_ns.model.pair_pose import CorrelationPoseNet, cell_coords, correlation_volume, soft_argmax_displacement


def test_soft_argmax_displacement_recovers_a_shift():
    g = 8
    features = torch.eye(g * g).view(1, g * g, g, g)  # one-hot: every cell matches exactly one cell
    shifted = torch.roll(features, shifts=(1, 2), dims=(2, 3))  # b = a moved 2 cells right, 1 down
    flow = soft_argmax_displacement(correlation_volume(features, shifted, temperature=0.01))
    step = 2.0 / (g - 1)
    inner = flow[0, :, 1:-1, 1:-3]  # cells whose match did not wrap around
    assert torch.allclose(inner[0], torch.full_like(inner[0], 2 * step), atol=1e-4)
    assert torch.allclose(inner[1], torch.full_like(inner[1], 1 * step), atol=1e-4)
    assert torch.allclose(inner[2], torch.ones_like(inner[2]), atol=1e-4)  # sharp matches
    assert cell_coords(g)[0, 0, -1] == 1 and cell_coords(g)[1, -1, 0] == 1  # x along columns, y along rows


def test_pair_pose_net_starts_at_zero_and_trains():
    torch.manual_seed(0)
    net = CorrelationPoseNet(out_dim=7, width=8, grid=8, hidden=16)
    a, b = torch.rand(3, 3, 24, 24), torch.rand(3, 3, 24, 24)  # resampled to 16 px
    out = net(a, b)
    assert out.shape == (3, 7) and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert net.head[-1].weight.grad.abs().sum() > 0


def _model(tmp_path=None, weights=None):
    from pensieve_ns.model.pensieve import PensieveModelConfig
    from pensieve_ns.model.vit import ViTSize

    size = ViTSize(dim=32, depth=2, heads=2, mlp_hidden=64, hook=0)
    return PensieveModelConfig(
        patch=8, lpips_weight=0.0, frame_vit=size, camera_vit=size, context_vit=size, lvsm_vit=size,
        camera_head="pair_flow", pair_grid=8, camera_head_weights=weights,
    ).setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")


def test_pair_flow_camera_head_in_the_model_and_its_weights(tmp_path):
    """camera_head='pair_flow': identity cameras at the start, gradients reach the pair network through the image
    loss, and pre-trained weights load (a bad file is one clear error)."""
    from pensieve_ns.errors import PensieveInputError

    torch.manual_seed(0)
    model = _model()
    images = torch.rand(2, 3, 3, 32, 32)
    batch = {"images": images, "context": torch.tensor([[0, 2], [0, 2]]), "loss_weights": torch.tensor([[0.1, 1.0, 0.1]] * 2)}
    out = model(batch)
    assert torch.allclose(out["c2w_opencv"], torch.eye(4).expand(2, 3, 4, 4))
    model.get_loss_dict(out, batch)["l2"].backward()
    assert model.camera_head.net.head[-1].weight.grad.abs().sum() > 0

    with torch.no_grad():
        model.camera_head.net.head[-1].weight.normal_(0, 0.5)  # a trained head stand-in: non-identity cameras
    path = tmp_path / "pair_camera_head.pt"
    torch.save(model.camera_head.state_dict(), path)
    loaded = _model(weights=path)
    assert torch.equal(loaded.camera_head.net.head[-1].weight, model.camera_head.net.head[-1].weight)
    assert not torch.allclose(loaded(batch)["c2w_opencv"][:, 1], torch.eye(4))

    for bad, message in ((tmp_path / "missing.pt", "not found"), (tmp_path / "junk.pt", "unreadable")):
        if bad.name == "junk.pt":
            bad.write_bytes(b"not a checkpoint")
        with pytest.raises(PensieveInputError, match=message):
            _model(weights=bad)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(PensieveInputError, match="not a camera head state dict"):
        _model(weights=tmp_path / "other.pt")


def test_symmetric_pair_head_inverts_a_swapped_pair_and_cancels_a_constant():
    from pensieve_ns.cameras import invert_rigid

    torch.manual_seed(0)
    head = PairCameraHead(grid=8, width=8, symmetric=True)
    with torch.no_grad():
        for p in head.net.head[-1].parameters():
            p.normal_(0, 0.5)  # a non-trivial (untrained) head
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        fwd, _, _ = head(torch.stack([a, b], dim=1))
        bwd, _, _ = head(torch.stack([b, a], dim=1))
    assert fwd[0, 1, :3, :3].sub(torch.eye(3)).abs().max() > 1e-3  # it does predict a rotation
    assert torch.allclose(bwd[0, 1, :3, :3], fwd[0, 1, :3, :3].T, atol=1e-5)  # exact inverse rotation
    # Centres are inverted to first order in the rotation: t_ba ~ -R^T t_ab.
    assert torch.allclose(invert_rigid(fwd[:, 1:])[0, 0, :3, 3], bwd[0, 1, :3, 3], atol=0.05 * float(fwd[0, 1, :3, 3].norm()) + 1e-5)

    with torch.no_grad():
        head.net.head[-1].weight.zero_()  # an input-independent answer (a bias only) ...
    c2w, _, _ = head(torch.stack([a, b], dim=1))
    assert torch.allclose(c2w[0, 1], torch.eye(4), atol=1e-6)  # ... cancels: no constant pose survives


def test_chained_pair_head_composes_steps_in_temporal_order():
    from pensieve_ns.cameras import invert_rigid

    torch.manual_seed(0)
    head = PairCameraHead(symmetric=True)
    for p in head.parameters():
        p.data.normal_(0, 0.05)  # a head that answers something
    images = torch.rand(2, 4, 3, 32, 32)
    frame_index = torch.tensor([[30, 0, 20, 10], [0, 10, 20, 30]])
    c2w, K, _ = head(images, frame_index, chain=True)
    assert torch.allclose(c2w[:, 0], torch.eye(4).expand(2, 4, 4), atol=1e-6)  # batch frame 0 is the identity
    # Each temporal neighbour pair's relative pose is the head's answer for that pair alone.
    order = frame_index[0].argsort()
    for a, b in zip(order[:-1].tolist(), order[1:].tolist()):
        raw, R = head.relative(images[0, a][None], images[0, b][None])
        step = invert_rigid(c2w[0, a]) @ c2w[0, b]
        assert torch.allclose(step[:3, :3], R[0], atol=1e-5) and torch.allclose(step[:3, 3], raw[0, 3:6], atol=1e-5)
    # Two frames: the chain is the single pair, as without chaining.
    assert torch.allclose(head(images[:, :2], chain=True)[0], head(images[:, :2])[0], atol=1e-6)


@pytest.mark.slow
def test_ns_train_with_the_pre_trained_pair_head(synth_dir, tmp_path):
    """``ns-train pensieve-stage1 --pipeline.model.camera-head pair_flow --pipeline.model.camera-head-weights F``
    trains from F; pensieve-eval then loads the run without F; a missing F is one line."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ns_train

    weights = tmp_path / "head.pt"
    torch.manual_seed(0)
    head = PairCameraHead()
    with torch.no_grad():
        head.net.head[-1].weight.normal_(0, 0.1)
    torch.save(head.state_dict(), weights)
    pair = ("--pipeline.model.camera-head", "pair_flow", "--pipeline.model.camera-head-weights")
    run = ns_train("pensieve-stage1", synth_dir, tmp_path / "out", "--max-num-iterations", 2, *pair, weights)
    assert run.returncode == 0, run.stderr[-3000:]
    config = next((tmp_path / "out").rglob("config.yml"))
    weights.unlink()  # the checkpoint holds the trained head
    evaluate = subprocess.run(
        [str(Path(sys.executable).parent / "pensieve-eval"), "--load-config", str(config), "--data", str(synth_dir),
         "--no-lpips", "--max-scenes", "1", "--output", str(tmp_path / "eval.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    bad = ns_train("pensieve-stage1", synth_dir, tmp_path / "bad", "--max-num-iterations", 1, *pair, tmp_path / "nope.pt")
    assert bad.returncode == 2 and "camera head weights not found" in bad.stderr and "Traceback" not in bad.stderr
