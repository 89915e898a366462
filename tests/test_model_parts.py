"""Stage-1 building blocks: converters, Plücker rays, camera-head init, ViT/encoder/LVSM shapes."""

import math

import pytest
import torch

from pensieve_ns.cameras import plucker_rays, quaternion_to_matrix
from pensieve_ns.model.camera_head import CameraHeadConfig, CameraHead, focal_from_raw
from pensieve_ns.model.encoder import PensieveEncoder
from pensieve_ns.model.lvsm_head import LVSMHead
from pensieve_ns.model.vit import ViT, ViTSize

TINY = ViTSize(dim=32, depth=2, heads=4, mlp_hidden=64, hook=0)


def test_quaternion_to_matrix_normalises_and_matches_axis_angle():
    angle = 0.7
    q = torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]) * 3.0  # not unit on purpose
    R = quaternion_to_matrix(q)
    expected = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1.0]])
    torch.testing.assert_close(R, expected)
    Rs = quaternion_to_matrix(torch.randn(10, 4, dtype=torch.float64))
    torch.testing.assert_close(Rs @ Rs.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(10, 3, 3))
    assert torch.allclose(torch.det(Rs), torch.ones(10, dtype=torch.float64))


def test_focal_range_and_init():
    W = 64
    assert focal_from_raw(torch.tensor(0.0), W).item() == pytest.approx(1.55 * W)
    assert focal_from_raw(torch.tensor(-1e4), W).item() == pytest.approx(0.1 * W)
    assert focal_from_raw(torch.tensor(1e4), W).item() == pytest.approx(3.0 * W)


def test_camera_head_init_identity_and_shared_intrinsics():
    head = CameraHead(21, 16)
    feats = torch.randn(2, 3, 21, 16, 24).abs() + 0.1  # positive pooled features: w > 0
    c2w, K, raw = head(feats)
    torch.testing.assert_close(c2w, torch.eye(4).expand(2, 3, 4, 4))
    torch.testing.assert_close(K[..., 0, 0], torch.full((2, 3), 1.55 * 24))
    torch.testing.assert_close(K[..., 1, 1], torch.full((2, 3), 1.55 * 16))
    torch.testing.assert_close(K[..., :2, 2], torch.tensor([12.0, 8.0]).expand(2, 3, 2))
    # Intrinsics are averaged over the clip: perturb the focal raw of one frame only.
    with torch.no_grad():
        head.linear.weight[7] = 0.0
        head.linear.weight[7, 0] = 1.0
    feats = torch.zeros(1, 2, 21, 4, 4)
    c2w, K, raw = head(feats)
    expected = (focal_from_raw(raw[0, 0, 7], 4) + focal_from_raw(raw[0, 1, 7], 4)) / 2
    torch.testing.assert_close(K[0, :, 0, 0], expected.expand(2))


def test_plucker_by_hand():
    """One pixel of a camera at t = (1, 2, 3), rotated 90 deg about y, computed by hand."""
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    K = torch.tensor([[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1.0]])
    rays = plucker_rays(c2w, K, 2, 2)  # [6, 2, 2]
    # pixel (row 1, col 1): centre (1.5, 1.5) -> camera dir (0.25, 0.25, 1) / norm
    cam = torch.tensor([0.25, 0.25, 1.0]) / math.sqrt(0.25**2 * 2 + 1)
    d = torch.tensor([cam[2], cam[1], -cam[0]])  # R @ cam
    m = torch.linalg.cross(torch.tensor([1.0, 2.0, 3.0]), d)
    torch.testing.assert_close(rays[:3, 1, 1], d)
    torch.testing.assert_close(rays[3:, 1, 1], m)
    assert torch.allclose(rays[:3].norm(dim=0), torch.ones(2, 2))


def test_vit_shapes_non_square_and_bad_size():
    vit = ViT(5, 7, TINY, patch=8)
    assert vit(torch.randn(2, 3, 5, 16, 40)).shape == (2, 3, 7, 16, 40)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        vit(torch.randn(1, 1, 5, 20, 16))


def test_encoder_and_lvsm_shapes_and_gradients():
    enc, head, lvsm = PensieveEncoder(TINY, TINY, TINY, patch=8), CameraHead(21, 16), LVSMHead(TINY, patch=8)
    images = torch.rand(2, 4, 3, 16, 24)
    context = torch.tensor([[0, 2], [1, 3]])
    f_cam, f_ctx = enc(images, context)
    assert f_cam.shape == (2, 4, 21, 16, 24) and f_ctx.shape == (2, 2, 21, 16, 24)
    c2w, K, _ = head(f_cam)
    rays = plucker_rays(c2w, K, 16, 24)
    ctx_rays = torch.gather(rays, 1, context[:, :, None, None, None].expand(-1, -1, 6, 16, 24))
    out = lvsm(f_ctx, ctx_rays, rays)
    assert out.shape == (2, 4, 3, 16, 24) and 0 <= out.min() and out.max() <= 1
    out.mean().backward()
    assert head.conv.weight.grad is None or torch.isfinite(head.conv.weight.grad).all()
    assert head.linear.weight.grad.abs().sum() > 0  # the camera gets a gradient through the rays


def test_bf16_autocast_option_keeps_float32_outputs():
    from pensieve_ns.model.pensieve import PensieveModelConfig

    outs = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        cfg = PensieveModelConfig(patch=8, camera_head=CameraHeadConfig(hidden=16), lpips_weight=0.0, frame_vit=TINY, camera_vit=TINY,
                                  context_vit=TINY, lvsm_vit=TINY, autocast_bf16=bf16)
        model = cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
        batch = {"images": torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                 "context": torch.tensor([[0]])}
        outs.append(model(batch))
    assert outs[1]["rgb"].dtype == torch.float32 and outs[1]["c2w_opencv"].dtype == torch.float32
    assert (outs[0]["rgb"] - outs[1]["rgb"]).abs().max() < 0.05  # same model, bf16 rounding only


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        vit = ViT(5, 3, TINY, patch=8, checkpointing=ckpt).train()
        x = torch.randn(2, 2, 5, 16, 16, generator=torch.Generator().manual_seed(1))
        vit(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in vit.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
