"""Test-time refinement (pensieve_ns/refine.py) and the labelled synthetic camera prior loss."""

import numpy as np
import pytest
import torch

from pensieve_ns.cameras import axis_angle_to_matrix, quaternion_to_matrix
from pensieve_ns.data.synthetic import generate_clip
from pensieve_ns.eval.poses import relative_pose_errors
from pensieve_ns.losses import camera_prior_loss
from pensieve_ns.refine import RefineConfig, chain, orbit_cameras, photometric_error, refine_clip, se3


def test_axis_angle_matches_quaternion_and_has_finite_gradient_at_zero():
    w = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    th = w.norm()
    q = torch.cat([torch.cos(th / 2)[None], torch.sin(th / 2) * w / th])
    assert torch.allclose(axis_angle_to_matrix(w), quaternion_to_matrix(q), atol=1e-12)
    w0 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (axis_angle_to_matrix(w0) * torch.randn(3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(w0.grad).all() and w0.grad.abs().sum() > 0


def test_chain_composes_relative_steps():
    steps = se3(torch.randn(4, 6, dtype=torch.float64) * 0.3)
    first = se3(torch.randn(6, dtype=torch.float64))
    poses = chain(first, steps)
    assert poses.shape == (5, 4, 4)
    for i in range(4):
        assert torch.allclose(torch.linalg.inv(poses[i]) @ poses[i + 1], steps[i], atol=1e-10)


def _clip(kind, frames=6, size=32):
    clip = generate_clip(3, frames * 2, size, split="train", path_kind=kind)
    sel = np.arange(0, frames * 2, 2)
    images = torch.from_numpy(clip.frames[sel]).permute(0, 3, 1, 2).double() / 255
    return clip, sel, images


def test_photometric_error_is_lowest_at_the_true_geometry():
    clip, sel, images = _clip("walk")
    c2w = torch.from_numpy(clip.c2w_opencv[sel])
    K = torch.from_numpy(clip.K)
    depth = torch.from_numpy(clip.depth[sel])
    true = photometric_error(images, depth, c2w, K, radius=2)
    flat = photometric_error(images, torch.full_like(depth, float(depth.mean())), c2w, K, radius=2)
    still = photometric_error(images, depth, torch.eye(4, dtype=torch.float64).expand_as(c2w), K, radius=2)
    assert true < 0.85 * flat and true < 0.6 * still, (true, flat, still)


@pytest.mark.parametrize("known_focal", [True, False])
def test_refinement_recovers_rotations_of_a_pan_from_identity(known_focal):
    torch.manual_seed(0)
    clip, sel, images = _clip("pan")
    cfg = RefineConfig(levels=(2, 1), steps_per_level=(120, 60), depth_cells=8, sweep_steps=40, log_every=20)
    K0 = torch.from_numpy(clip.K) if known_focal else None
    result = refine_clip(images, K_init=K0, config=cfg)
    gt = clip.c2w_opencv[sel]
    pred = relative_pose_errors(result.c2w_opencv.numpy(), gt)
    identity = relative_pose_errors(np.tile(np.eye(4), (len(gt), 1, 1)), gt)
    assert np.median(pred.rot_err) < (0.3 if known_focal else 0.5) * np.median(identity.rot_err)
    assert result.history[-1]["photometric"] < result.history[0]["photometric"]
    assert result.depth.shape == (len(sel), 1, 32, 32) and (result.depth > 0).all()


def test_orbit_cameras_face_their_centre_and_turn_at_the_given_rate():
    c2w = orbit_cameras(5, 12.0, 2.0, dtype=torch.float64)
    assert torch.allclose(c2w[0], torch.eye(4, dtype=torch.float64))
    centre = torch.tensor([0.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    in_cams = torch.linalg.inv(c2w) @ centre  # the centre in each camera: straight ahead, 2 away
    assert torch.allclose(in_cams[:, :3], torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64).expand(5, 3), atol=1e-12)
    rel = relative_pose_errors(c2w.numpy(), c2w.numpy())
    assert np.allclose(rel.true_angle[0], 12.0)  # pair (0, 1)
    assert torch.equal(orbit_cameras(3, 0.0, 1.0), torch.eye(4).expand(3, 4, 4))  # rate 0: the identity start


def test_orbit_sweep_tries_every_rate_and_focal_and_keeps_the_best():
    clip, sel, images = _clip("orbit", frames=4)
    cfg = RefineConfig(levels=(2, 1), steps_per_level=(5, 5), depth_cells=4, sweep_steps=3, sweep_levels=1,
                       focal_sweep=(0.8, 1.2), orbit_sweep=(-6.0, 0.0, 6.0), log_every=100)
    result = refine_clip(images, config=cfg)
    tags = {h["tag"] for h in result.history if h["tag"].startswith("sweep")}
    assert len(tags) == 6 and any("orbit -6 deg" in t for t in tags)
    assert np.isfinite(result.photometric) and result.c2w_opencv.shape == (4, 4, 4)


def test_camera_prior_loss_is_zero_at_the_truth_and_ignores_world_frame_and_scale():
    gt = se3(torch.randn(2, 4, 6, dtype=torch.float64) * 0.3)
    K = torch.tensor([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]], dtype=torch.float64).expand(2, 4, 3, 3)
    world = se3(torch.randn(6, dtype=torch.float64))
    moved = world @ gt
    moved[..., :3, 3] *= 3.0  # another scale
    assert camera_prior_loss(moved, K, gt, K) < 1e-10
    still = torch.eye(4, dtype=torch.float64).expand_as(gt)
    assert camera_prior_loss(still, 1.5 * K, gt, K) > 0.1
    # The weights scale their terms: rotation alone (no centre, same focal) grows linearly with its weight.
    rot_only = camera_prior_loss(still, K, gt, K, rotation_weight=1.0, translation_weight=0.0)
    assert rot_only > 0 and torch.isclose(camera_prior_loss(still, K, gt, K, 10.0, 0.0), 10 * rot_only)
    assert camera_prior_loss(still, K, gt, K, 0.0, 1.0) + rot_only == pytest.approx(float(camera_prior_loss(still, K, gt, K)))


def test_model_camera_prior_reaches_the_camera_head_and_refuses_clips_without_cameras():
    from pensieve_ns.model.pensieve import PensieveModelConfig
    from pensieve_ns.model.vit import ViTSize

    torch.manual_seed(0)
    tiny = ViTSize(dim=32, depth=2, heads=4, mlp_hidden=64, hook=0)
    cfg = PensieveModelConfig(patch=8, camera_hidden=32, lpips_weight=0.0, camera_prior_weight=1.0,
                              frame_vit=tiny, camera_vit=tiny, context_vit=tiny, lvsm_vit=tiny)
    model = cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    gt = se3(torch.randn(2, 3, 6) * 0.2)
    K = torch.tensor([[14.0, 0, 8], [0, 14.0, 8], [0, 0, 1]]).expand(2, 3, 3, 3)
    batch = {"images": torch.rand(2, 3, 3, 16, 16), "context": torch.tensor([[0], [2]]),
             "loss_weights": torch.tensor([[0.1, 1, 1], [1, 1, 0.1]]), "gt_c2w_opencv": gt, "gt_K": K,
             "has_gt": torch.tensor([True, True])}
    losses = model.get_loss_dict(model(batch), batch)
    assert losses["camera_prior"] > 0
    losses["camera_prior"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.camera_head.parameters())
    with pytest.raises(ValueError, match="ground-truth cameras"):
        model.get_loss_dict(model(batch), {**batch, "has_gt": torch.tensor([True, False])})
