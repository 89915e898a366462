"""The splat renderer: tiled CPU output against a dense reference, projection by hand, finite-difference gradients,
and (where a GPU is present) agreement with gsplat."""

from __future__ import annotations


import pytest
import torch

from pensieve_ns.cameras import invert_rigid
from pensieve_ns.render import render
from pensieve_ns.render.dense_reference import render_dense
from pensieve_ns.render.torch_tiled import project_gaussians, quat_scale_to_covar, render_torch


def look_at_w2c(eye, target, dtype):
    eye, target = torch.tensor(eye, dtype=dtype), torch.tensor(target, dtype=dtype)
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 1.0, 0.0], dtype=dtype))  # OpenCV: y down
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=dtype)
    c2w[:3, :3] = torch.stack([x, y, z], 1)
    c2w[:3, 3] = eye
    return invert_rigid(c2w)


def scene(n=200, dtype=torch.float32, seed=0, width=48, height=40):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.6
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.12 + 0.02
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    viewmats = torch.stack([look_at_w2c((0.3, -0.2, -3.0), (0, 0, 0), dtype), look_at_w2c((2.0, 0.5, -2.2), (0, 0.1, 0), dtype)])
    f = torch.tensor([[52.0, 50.0], [40.0, 44.0]], dtype=dtype)
    Ks = torch.zeros(2, 3, 3, dtype=dtype)
    Ks[:, 0, 0], Ks[:, 1, 1], Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 2, 2] = f[:, 0], f[:, 1], width / 2, height / 2, 1
    return [means, quats, scales, opacities, colors, viewmats, Ks], width, height


@pytest.mark.parametrize("tile", [8, 16])
def test_tiled_equals_dense(tile):
    args, W, H = scene()
    rgb, alpha, depth = render_torch(*args, W, H, tile_size=tile)
    ref_rgb, ref_alpha, ref_depth = render_dense(*args, W, H)
    top = render_dense(*args, W, H, rows=(0, 7))  # a band of rows, as the benchmark renders big images
    torch.testing.assert_close(top[0], ref_rgb[..., :7, :])
    assert rgb.shape == (2, 3, H, W) and alpha.shape == depth.shape == (2, 1, H, W)
    assert alpha.max() > 0.5 and alpha.min() < 0.1  # the scene covers part of each image, not nothing or all
    torch.testing.assert_close(rgb, ref_rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-4, rtol=0)
    torch.testing.assert_close(depth, ref_depth, atol=1e-4, rtol=0)


def test_chunked_tiles_match_and_backprop():
    args, W, H = scene()
    args = [a.clone().requires_grad_(True) for a in args]
    full = render_torch(*args, W, H, tile_size=8)
    chunked = render_torch(*args, W, H, tile_size=8, tiles_per_chunk=5)
    for a, b in zip(full, chunked):
        torch.testing.assert_close(a, b)
    g_full = torch.autograd.grad(sum(x.sum() for x in full), args)
    g_chunk = torch.autograd.grad(sum(x.sum() for x in chunked), args)
    for a, b in zip(g_full, g_chunk):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_projection_by_hand():
    """An isotropic Gaussian of std s at depth z straight ahead: centre at the principal point, 2D variance
    (f s / z)^2 + 0.3, and its centre projects like a pinhole point off-axis too."""
    s, z, f = 0.05, 2.0, 60.0
    means = torch.tensor([[0.0, 0.0, z], [0.4, -0.2, z]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.full((2, 3), s)
    K = torch.tensor([[[f, 0, 32.0], [0, f, 24.0], [0, 0, 1]]])
    proj = project_gaussians(means, quat_scale_to_covar(quats, scales), torch.ones(2), torch.eye(4)[None], K, 64, 48)
    torch.testing.assert_close(proj.means2d[0, 0], torch.tensor([32.0, 24.0]))
    torch.testing.assert_close(proj.means2d[0, 1], torch.tensor([32.0 + f * 0.2, 24.0 - f * 0.1]))
    var = (f * s / z) ** 2 + 0.3
    torch.testing.assert_close(proj.conics[0, 0], torch.tensor([1 / var, 0.0, 1 / var]))
    assert proj.depths[0, 0] == z
    behind = project_gaussians(-means, quat_scale_to_covar(quats, scales), torch.ones(2), torch.eye(4)[None], K, 64, 48)
    assert (behind.radii == 0).all()


def test_opaque_splat_background_and_depth():
    """A big opaque Gaussian in front of a coloured background: its colour and depth at the centre, the background
    where nothing is."""
    means = torch.tensor([[0.0, 0.0, 3.0]])
    K = torch.tensor([[[40.0, 0, 16.0], [0, 40.0, 16.0], [0, 0, 1]]])
    bg = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    rgb, alpha, depth = render(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.5), torch.tensor([0.99]),
                               torch.tensor([[1.0, 0.0, 0.0]]), torch.eye(4)[None], K, 32, 32, background=bg)
    assert alpha[0, 0, 16, 16] > 0.95 and abs(depth[0, 0, 16, 16] - 3.0) < 1e-4
    assert rgb[0, 0, 16, 16] > 0.95 and rgb[0, 2, 0, 0] > 0.99 and alpha[0, 0, 0, 0] < 0.01


def _rotation(axis_angle):
    theta = axis_angle.norm()
    k = axis_angle / theta
    Kx = torch.zeros(3, 3, dtype=axis_angle.dtype)
    Kx[0, 1], Kx[0, 2], Kx[1, 2] = -k[2], k[1], -k[0]
    Kx = Kx - Kx.T
    return torch.eye(3, dtype=axis_angle.dtype) + torch.sin(theta) * Kx + (1 - torch.cos(theta)) * Kx @ Kx


def test_gradients_match_finite_differences():
    """d(loss)/d(every input) by autograd equals central differences, including R (as a rotation perturbation of
    the view), t, fx and fy."""
    torch.manual_seed(0)
    args, W, H = scene(n=40, dtype=torch.float64, width=24, height=20)
    means, quats, scales, opacities, colors, viewmats, Ks = args
    omega = torch.full((3,), 1e-3, dtype=torch.float64, requires_grad=True)  # small rotation applied to camera 0
    t = viewmats[:, :3, 3].clone().requires_grad_(True)
    f = torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1).clone().requires_grad_(True)
    attrs = [x.clone().requires_grad_(True) for x in (means, quats, scales, opacities, colors)]
    wr, wa, wd = (torch.rand(2, k, H, W, dtype=torch.float64) for k in (3, 1, 1))

    def loss(omega, t, f, *attrs):
        vm = viewmats.clone()
        vm = torch.cat([torch.cat([vm[:, :3, :3], t[:, :, None]], 2), vm[:, 3:]], 1)
        R0 = _rotation(omega) @ vm[0, :3, :3]
        vm = torch.cat([torch.cat([torch.cat([R0, vm[0, :3, 3:]], 1), vm[0, 3:]], 0)[None], vm[1:]], 0)
        K = Ks.clone()
        K = K + torch.diag_embed(torch.cat([f - torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1), torch.zeros(2, 1, dtype=f.dtype)], -1))
        rgb, alpha, depth = render(*attrs, vm, K, W, H, backend="torch", tile_size=8)
        return (rgb * wr).sum() + (alpha * wa).sum() + 0.1 * (depth * wd).sum()

    inputs = [omega, t, f, *attrs]
    grads = torch.autograd.grad(loss(*inputs), inputs)
    names = ["R", "t", "f", "means", "quats", "scales", "opacities", "colors"]
    gen = torch.Generator().manual_seed(1)
    for i, (name, x, g) in enumerate(zip(names, inputs, grads)):
        assert g.abs().sum() > 0, name
        flat = torch.randperm(x.numel(), generator=gen)[:6]
        for j in flat:
            eps = 1e-6
            plus = [y.detach().clone() for y in inputs]
            minus = [y.detach().clone() for y in inputs]
            plus[i].view(-1)[j] += eps
            minus[i].view(-1)[j] -= eps
            fd = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert abs(fd - g.reshape(-1)[j]) <= 1e-5 + 1e-4 * abs(fd), (name, int(j), float(fd), float(g.reshape(-1)[j]))


def test_empty_and_culled_scenes():
    args, W, H = scene(n=5)
    args[5] = torch.eye(4)[None].repeat(2, 1, 1)
    args[0] = -args[0].abs() - 1  # all behind the cameras (z < 0)
    rgb, alpha, depth = render(*args, W, H, background=torch.full((2, 3, 1, 1), 0.25))
    assert torch.all(alpha == 0) and torch.all(depth == 0) and torch.allclose(rgb, torch.full_like(rgb, 0.25))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for gsplat")
def test_gsplat_matches_torch_and_gives_focal_gradients():
    args, W, H = scene(n=300)
    args = [a.cuda() for a in args]
    ref = render(*args, W, H, backend="torch")
    out = render(*[a.clone().requires_grad_(True) for a in args], W, H, backend="gsplat")
    for a, b in zip(ref, out):
        assert (a - b).abs().mean() < 2e-3
    Ks = args[6].clone().requires_grad_(True)
    viewmats = args[5].clone().requires_grad_(True)
    rgb, _, _ = render(*args[:5], viewmats, Ks, W, H, backend="gsplat")
    gK, gV = torch.autograd.grad(rgb.sum(), [Ks, viewmats])
    gK_ref, gV_ref = torch.autograd.grad(render(*args[:5], viewmats, Ks, W, H, backend="torch")[0].sum(), [Ks, viewmats])
    assert gK[:, 0, 0].abs().min() > 0 and gK[:, 1, 1].abs().min() > 0
    torch.testing.assert_close(gK[:, :2, :2], gK_ref[:, :2, :2], rtol=0.05, atol=1e-2 * gK_ref.abs().max().item())
