"""The flow camera head (``pensieve_ns.model.flow_pose``): classical flow in, cameras out, as the model uses it."""

import numpy as np
import pytest
import torch

from pensieve_ns.cameras import invert_rigid
from pensieve_ns.data.synthetic import generate_clip
from pensieve_ns.model.flow_pose import FLOW_SCALE, GRID, FlowCameraHead, clip_flows, square_frames


@pytest.fixture(scope="module")
def pan():
    clip = generate_clip(3, 4, 64, split="train", path_kind="pan")
    return clip, torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float()[None] / 255


def _trained_stand_in(seed=0, width=8):
    torch.manual_seed(seed)
    head = FlowCameraHead(width=width)
    with torch.no_grad():
        head.net.head[-1].weight.normal_(0, 0.05)
    return head


def test_flow_follows_a_pan_and_inputs_are_what_the_network_was_trained_on(pan):
    """The flow of a camera turning right moves the image left, and 64 px frames pass through square_frames
    unchanged (the training inputs came straight from the generator's uint8 frames)."""
    clip, images = pan
    frames = square_frames(images[0])
    assert np.array_equal(frames, clip.frames)
    flows, grey = clip_flows(frames, [(0, 1)])
    assert grey.shape == (4, GRID, GRID) and flows[(0, 1)].shape == (GRID, GRID, 2)
    turn = np.rad2deg(np.arccos(np.clip((np.trace(np.linalg.inv(clip.c2w_opencv[0]) @ clip.c2w_opencv[1]) - 2) / 2, -1, 1)))
    expected = clip.K[0, 0] * np.tan(np.deg2rad(turn))  # pixels at the centre for a pure turn of this angle
    mean = flows[(0, 1)][..., 0].mean()
    assert turn > 1 and abs(abs(mean) - expected) < 0.35 * expected
    assert np.sign(flows[(1, 0)][..., 0].mean()) == -np.sign(mean) and abs(mean) / FLOW_SCALE < 2


def test_untrained_head_gives_identity_and_reversed_order_inverts_the_poses(pan):
    _, images = pan
    c2w, K, raw = FlowCameraHead(width=8)(images)
    assert torch.allclose(c2w, torch.eye(4).expand(1, 4, 4, 4), atol=1e-6)
    assert torch.allclose(K[0, 0], torch.tensor([[64.0, 0, 32], [0, 64, 32], [0, 0, 1]]))  # focal 1 side at zero
    head = _trained_stand_in()
    c2w, _, _ = head(images)
    assert not torch.allclose(c2w[:, 1], torch.eye(4), atol=1e-3)
    # The same frames handed over in reverse batch order but with their frame numbers: the same cameras.
    rev, _, _ = head(images.flip(1), frame_index=torch.arange(4).flip(0)[None])
    rel = invert_rigid(c2w[0, :1]) @ c2w[0]
    rel_rev = invert_rigid(rev[0, -1:]) @ rev[0].flip(0)
    assert torch.allclose(rel[..., :3, :3], rel_rev[..., :3, :3], atol=1e-5)


def test_non_square_frames_get_intrinsics_of_the_input(pan):
    _, images = pan
    wide = torch.nn.functional.pad(images[0], (16, 16, 0, 0), mode="replicate")[None]  # 64 x 96
    c2w, K, _ = _trained_stand_in()(wide)
    assert c2w.shape == (1, 4, 4, 4) and torch.isfinite(c2w).all()
    assert K[0, 0, 0, 2] == 48 and K[0, 0, 1, 2] == 32 and K[0, 0, 0, 0] == K[0, 0, 1, 1]


def test_gradients_reach_the_network_and_weights_of_another_head_are_refused(tmp_path, pan):
    from pensieve_ns.errors import PensieveInputError
    from pensieve_ns.model.flow_depth import FlowDepthHead
    from pensieve_ns.model.flow_pose import FlowCameraHeadConfig

    _, images = pan
    head = _trained_stand_in()
    c2w, K, _ = head(images)
    (c2w[..., :3, :].sum() + K.sum()).backward()
    assert head.net.head[-1].weight.grad.abs().sum() > 0
    torch.save(head.state_dict(), tmp_path / "flow.pt")
    # Through its config, as the model builds it: weights loaded, frozen on request.
    torch.save(_trained_stand_in(width=64).state_dict(), tmp_path / "flow64.pt")
    head2 = FlowCameraHeadConfig(weights=tmp_path / "flow64.pt", freeze=True).setup()
    assert all(torch.equal(a, b) for a, b in zip(head2.state_dict().values(), torch.load(tmp_path / "flow64.pt").values()))
    assert not any(p.requires_grad for p in head2.parameters())
    torch.save(FlowDepthHead(width=8).state_dict(), tmp_path / "depth.pt")
    with pytest.raises(PensieveInputError, match="not for a FlowCameraHead"):
        FlowCameraHeadConfig(weights=tmp_path / "depth.pt").setup()
    with pytest.raises(PensieveInputError, match="camera head weights not found"):
        FlowCameraHeadConfig(weights=tmp_path / "missing.pt").setup()


def test_flow_pose_camera_head_in_the_model(pan):
    from pensieve_ns.model.flow_pose import FlowCameraHeadConfig
    from pensieve_ns.model.pensieve import PensieveModelConfig
    from pensieve_ns.model.vit import ViTSize

    _, images = pan
    size = ViTSize(dim=32, depth=2, heads=2, mlp_hidden=64, hook=0)
    model = PensieveModelConfig(
        patch=8, lpips_weight=0.0, frame_vit=size, camera_vit=size, context_vit=size, lvsm_vit=size, camera_head=FlowCameraHeadConfig(),
    ).setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    batch = {"images": images[:, :3], "context": torch.tensor([[0, 2]]), "loss_weights": torch.tensor([[0.1, 1.0, 0.1]])}
    out = model(batch)
    assert torch.allclose(out["c2w_opencv"], torch.eye(4).expand(1, 3, 4, 4), atol=1e-6)
    assert torch.isfinite(model.get_loss_dict(out, batch)["l2"])
