"""The flow depth head (``pensieve_ns.model.flow_depth``): closed-form two-view depth, the network around it, and
its use as stage 2's Gaussian depth."""

import numpy as np
import pytest
import torch

from pensieve_ns.cameras import invert_rigid
from pensieve_ns.data.synthetic import generate_clip
from pensieve_ns.model.flow_depth import FlowDepthHead, flow_inverse_depth
from pensieve_ns.model.flow_pose import GRID


def _exact_flow(depth: np.ndarray, b_in_a: np.ndarray, focal: float, side: int) -> np.ndarray:
    """The flow a -> b of cell centres with this z-depth in a, for b's camera ``b_in_a`` (OpenCV c2w)."""
    c = (np.arange(GRID) + 0.5) * side / GRID
    u, v = np.meshgrid(c, c)
    pts = np.stack([(u - side / 2) / focal * depth, (v - side / 2) / focal * depth, depth], -1)
    T = np.linalg.inv(b_in_a)
    q = pts @ T[:3, :3].T + T[:3, 3]
    return np.stack([q[..., 0] / q[..., 2] * focal + side / 2 - u, q[..., 1] / q[..., 2] * focal + side / 2 - v], -1)


def test_closed_form_inverse_depth_is_exact_and_pure_rotation_has_no_parallax():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.5, 6.0, (GRID, GRID))
    angle = np.deg2rad(4.0)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    T[:3, 3] = [0.3, -0.05, 0.1]
    flow = torch.from_numpy(_exact_flow(depth, T, 60.0, 64))
    rho, parallax = flow_inverse_depth(flow, torch.from_numpy(T), 60.0)
    assert torch.allclose(rho, torch.from_numpy(1 / depth), rtol=1e-6)
    # Twice the translation: the same flow means half the inverse depth (rho is in units of |t|).
    T2 = T.copy()
    T2[:3, 3] *= 2
    assert torch.allclose(flow_inverse_depth(flow, torch.from_numpy(T2), 60.0)[0], torch.from_numpy(0.5 / depth), rtol=1e-6)
    assert (parallax > 0).all()
    T[:3, 3] = 0  # a pan: the flow does not depend on depth, and the parallax says so
    assert flow_inverse_depth(torch.from_numpy(_exact_flow(depth, T, 60.0, 64)), torch.from_numpy(T), 60.0)[1].max() < 1e-9


@pytest.fixture(scope="module")
def orbit():
    clip = generate_clip(5, 3, 64, split="train", path_kind="orbit")
    return clip, torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float()[None] / 255


def test_depth_head_output_and_input_order(orbit):
    clip, images = orbit
    head = FlowDepthHead(width=8)
    c2w, K = torch.from_numpy(clip.c2w_opencv).float()[None], torch.from_numpy(clip.K).float().expand(1, 3, 3, 3)
    depth = head(images, c2w, K)
    assert depth.shape == (1, 3, 1, 64, 64) and torch.isfinite(depth).all() and (depth > 0).all()
    with torch.no_grad():
        head.net.out.weight.normal_(0, 0.05)
    depth = head(images, c2w, K)
    # The frames handed over in reverse batch order with their frame numbers: the same depth per frame.
    rev = head(images.flip(1), c2w.flip(1), K, frame_index=torch.arange(3).flip(0)[None])
    assert torch.allclose(rev.flip(1), depth, rtol=1e-4)
    wide = torch.nn.functional.pad(images[0], (8, 8, 0, 0), mode="replicate")[None]  # 64 x 80
    K_wide = K.clone()
    K_wide[..., 0, 2] += 8
    assert head(wide, c2w, K_wide).shape == (1, 3, 1, 64, 80)


def test_weights_round_trip_and_camera_head_weights_are_refused(tmp_path, orbit):
    from pensieve_ns.checkpoints import load_head_weights
    from pensieve_ns.errors import PensieveInputError
    from pensieve_ns.model.flow_pose import FlowCameraHead

    torch.save(FlowDepthHead(width=8).state_dict(), tmp_path / "depth.pt")
    assert set(load_head_weights(tmp_path / "depth.pt", FlowDepthHead(width=8), "depth head")) == set(FlowDepthHead(width=8).state_dict())
    torch.save(FlowCameraHead(width=8).state_dict(), tmp_path / "camera.pt")
    with pytest.raises(PensieveInputError, match="not for a FlowDepthHead"):
        load_head_weights(tmp_path / "camera.pt", FlowDepthHead(width=8), "depth head")
    with pytest.raises(PensieveInputError, match="depth head weights not found"):
        load_head_weights(tmp_path / "missing.pt", what="depth head")


def test_flow_depth_becomes_the_gaussian_depth_in_the_model(orbit):
    from pensieve_ns.model.flow_depth import FlowDepthHeadConfig
    from pensieve_ns.model.flow_pose import FlowCameraHeadConfig
    from pensieve_ns.model.gaussian_head import GaussianHeadConfig
    from pensieve_ns.model.pensieve import PensieveStage2ModelConfig
    from pensieve_ns.model.vit import ViTSize

    _, images = orbit
    size = ViTSize(dim=32, depth=2, heads=2, mlp_hidden=64, hook=0)
    kw = dict(patch=8, lpips_weight=0.0, frame_vit=size, camera_vit=size, context_vit=size, lvsm_vit=size,
              gaussian_head=GaussianHeadConfig(hidden=8, stride=2, footprint=(0.1, 1.5)), tile_size=8, renderer="torch",
              camera_head=FlowCameraHeadConfig())
    model = PensieveStage2ModelConfig(depth_head=FlowDepthHeadConfig(), **kw).setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    with torch.no_grad():
        torch.manual_seed(0)
        model.camera_head.net.head[-1].weight.normal_(0, 0.05)  # some rotation and a step
        model.depth_head.net.out.weight.normal_(0, 0.05)
    batch = {"images": images, "context": torch.tensor([[0, 2]]), "loss_weights": torch.tensor([[0.1, 1.0, 0.1]])}
    out = model(batch)
    # The Gaussians sit at the flow head's depth: in the normalised cameras' scale, block-averaged in inverse depth.
    c2w_head, K, _ = model.camera_head(images)
    scale = c2w_head[0, :, :3, 3].norm(dim=-1).max()
    assert scale > 0.5 and torch.isclose(out["c2w_opencv"][0, :, :3, 3].norm(dim=-1).max(), torch.tensor(1.0))
    expected = 1 / torch.nn.functional.avg_pool2d(1 / model.depth_head(images, c2w_head, K)[0, [0, 2]], 2) / scale
    assert torch.allclose(out["depth_pred"][0], expected, rtol=1e-4)
    losses = model.get_loss_dict(out, batch)
    sum(losses.values()).backward()
    assert model.depth_head.net.out.weight.grad.abs().sum() > 0


def test_unmeasured_windows_get_one_constant_depth(orbit):
    """``neighbour_disagreement``: 0 where both neighbours' closed-form inverse depths agree, 2 where they are
    opposite; a real orbit under its true cameras measures depth (below exp 42's 0.6). A window above the head's
    threshold gets one depth everywhere, the median of the net's; below it the net's map is kept."""
    from pensieve_ns.model.flow_depth import neighbour_disagreement

    x = torch.rand(5, 9, GRID, GRID) + 0.1
    x[:, 7] = x[:, 3]
    assert neighbour_disagreement(x) == 0.0
    x[:, 7] = -x[:, 3]
    assert neighbour_disagreement(x) == pytest.approx(2.0)
    assert neighbour_disagreement(x[:2]) == float("inf")  # no frame has two neighbours

    clip, images = orbit
    c2w, K = torch.from_numpy(clip.c2w_opencv).float()[None], torch.from_numpy(clip.K).float().expand(1, 3, 3, 3)
    torch.manual_seed(0)
    head = FlowDepthHead(width=8)
    with torch.no_grad():
        head.net.out.weight.normal_(0, 0.05)
    free = head(images, c2w, K)
    assert free.std() > 0
    head.unmeasured_threshold = 0.6
    assert torch.equal(head(images, c2w, K), free)  # the orbit's flow measures depth: not gated
    head.unmeasured_threshold = -1.0  # every window counts as unmeasured
    flat = head(images, c2w, K)
    assert flat.std() < 1e-5 * flat.mean() and torch.allclose(flat.median(), free.median(), rtol=0.05)
