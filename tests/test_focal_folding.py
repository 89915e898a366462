"""The focal-folding trick of ``render/gsplat_cuda.py``, checked on the CPU with the tiled PyTorch renderer.

Each camera is rendered in its own camera space with A = diag(fx / f0, fy / f0, 1) folded into the Gaussians
(mu' = A mu_cam, Sigma' = A Sigma_cam A^T), through a fixed K0 (f0 = fx detached) and an identity view. The image
and the gradients w.r.t. fx, fy, R, t and every Gaussian attribute must equal those of the direct render.

Two paths are checked: a folding written here (``fold``) and ``render_gsplat`` itself, with gsplat's
``rasterization`` replaced by a CPU stand-in built on ``render_torch`` (so the folding code of gsplat_cuda.py runs
as shipped, only the rasteriser differs).
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import pytest
import torch

from pensieve_ns.cameras import axis_angle_to_matrix
from pensieve_ns.render import torch_tiled
from pensieve_ns.render.torch_tiled import quat_scale_to_covar, render_torch

DTYPE = torch.float64
W, H = 40, 32


@contextmanager
def precomputed_covars(covars):
    """Make ``render_torch`` use ``covars`` instead of building them from quats/scales (the projection,
    tiling and compositing code stays the module's own)."""
    original = torch_tiled.quat_scale_to_covar
    torch_tiled.quat_scale_to_covar = lambda quats, scales: covars
    try:
        yield
    finally:
        torch_tiled.quat_scale_to_covar = original


def render_covars(means, covars, opacities, colors, viewmats, Ks, width, height):
    n = means.shape[0]
    dummy_q, dummy_s = means.new_zeros(n, 4), means.new_zeros(n, 3)
    with precomputed_covars(covars):
        return render_torch(means, dummy_q, dummy_s, opacities, colors, viewmats, Ks, width, height)


def fold(means, covars, R, t, K, identity_a: bool = False):
    """Camera-space Gaussians with the focal lengths folded in, and the fixed K0 to render them through."""
    f0 = K[0, 0].detach()
    A = torch.stack([K[0, 0] / f0, K[1, 1] / f0, torch.ones_like(f0)])
    if identity_a:  # the wrong folding: must NOT reproduce the image when fx != fy
        A = torch.ones_like(A)
    means_f = (means @ R.T + t) * A
    covars_f = A[:, None] * (R @ covars @ R.T) * A[None, :]
    K0 = torch.zeros(3, 3, dtype=K.dtype)
    K0[0, 0], K0[1, 1], K0[0, 2], K0[1, 2], K0[2, 2] = f0, f0, K[0, 2].detach(), K[1, 2].detach(), 1.0
    return means_f, covars_f, K0


def render_folded(means, quats, scales, opacities, colors, viewmats, Ks, width, height, identity_a=False):
    covars = quat_scale_to_covar(quats, scales)
    eye = torch.eye(4, dtype=means.dtype)[None]
    outs = []
    for c in range(viewmats.shape[0]):
        m, cov, K0 = fold(means, covars, viewmats[c, :3, :3], viewmats[c, :3, 3], Ks[c], identity_a)
        outs.append(render_covars(m, cov, opacities, colors, eye, K0[None], width, height))
    return tuple(torch.cat(x) for x in zip(*outs))


def fake_gsplat_module():
    """A stand-in for ``gsplat`` with ``rasterization`` implemented by ``render_torch`` (covars path only)."""

    def rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=0.01,
                      eps2d=0.3, tile_size=16, render_mode="RGB", covars=None, packed=True, **kwargs):
        assert quats is None and scales is None and covars is not None and render_mode == "RGB+ED"
        assert near_plane == torch_tiled.NEAR_PLANE and eps2d == torch_tiled.EPS2D
        rgb, alpha, depth_sum = render_covars(means, covars, opacities, colors, viewmats, Ks, width, height)
        expected = depth_sum / alpha.clamp_min(1e-10)
        out = torch.cat([rgb, expected], 1).permute(0, 2, 3, 1)  # [C, H, W, 4]
        return out, alpha.permute(0, 2, 3, 1), {}

    return types.SimpleNamespace(rasterization=rasterization)


def make_scene(seed: int = 0):
    """30 Gaussians in front of 2 cameras with fx != fy; leaves: Gaussian attributes, axis-angle r, t, fx, fy."""
    g = torch.Generator().manual_seed(seed)
    n = 30
    means = torch.randn(n, 3, generator=g, dtype=DTYPE) * 0.5 + torch.tensor([0.0, 0.0, 3.0], dtype=DTYPE)
    quats = torch.randn(n, 4, generator=g, dtype=DTYPE)
    scales = torch.rand(n, 3, generator=g, dtype=DTYPE) * 0.15 + 0.03
    opacities = torch.rand(n, generator=g, dtype=DTYPE) * 0.8 + 0.1
    colors = torch.rand(n, 3, generator=g, dtype=DTYPE)
    rotvec = torch.tensor([[0.02, -0.03, 0.01], [0.08, 0.15, -0.05]], dtype=DTYPE)
    trans = torch.tensor([[0.05, -0.02, 0.1], [-0.4, 0.1, 0.3]], dtype=DTYPE)
    fx = torch.tensor([38.0, 30.0], dtype=DTYPE)
    fy = torch.tensor([29.0, 44.0], dtype=DTYPE)
    leaves = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, rotvec=rotvec,
                  trans=trans, fx=fx, fy=fy)
    return {k: v.clone().requires_grad_(True) for k, v in leaves.items()}


def cameras(p):
    C = p["fx"].shape[0]
    viewmats = torch.zeros(C, 4, 4, dtype=DTYPE)
    viewmats = viewmats.index_put((torch.arange(C), torch.tensor(3).expand(C), torch.tensor(3).expand(C)),
                                  torch.ones(C, dtype=DTYPE))
    top = torch.cat([axis_angle_to_matrix(p["rotvec"]), p["trans"][:, :, None]], dim=2)  # [C, 3, 4]
    viewmats = torch.cat([top, viewmats[:, 3:]], dim=1)
    Ks = torch.zeros(C, 3, 3, dtype=DTYPE)
    Ks = Ks + torch.diag_embed(torch.stack([p["fx"], p["fy"], torch.ones_like(p["fx"])], -1))
    Ks = Ks.clone()
    Ks[:, 0, 2], Ks[:, 1, 2] = W / 2, H / 2
    return viewmats, Ks


def loss_of(out, seed=1):
    g = torch.Generator().manual_seed(seed)
    rgb, alpha, depth = out
    return sum((x * torch.rand(x.shape, generator=g, dtype=DTYPE)).sum() for x in (rgb, alpha, depth))


def run(path, seed=0, **kwargs):
    p = make_scene(seed)
    viewmats, Ks = cameras(p)
    out = path(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], viewmats, Ks, W, H, **kwargs)
    loss_of(out).backward()
    return out, {k: v.grad.clone() if v.grad is not None else torch.zeros_like(v) for k, v in p.items()}


def direct(means, quats, scales, opacities, colors, viewmats, Ks, width, height):
    return render_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height)


def assert_same(out_a, grads_a, out_b, grads_b):
    for a, b, name in zip(out_a, out_b, ("rgb", "alpha", "depth")):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
    for k in grads_a:
        assert grads_a[k].abs().max() > 0 or k in ("quats",), f"no gradient reaches {k}"
        torch.testing.assert_close(grads_a[k], grads_b[k], atol=1e-6, rtol=1e-6, msg=lambda m: f"d/d{k}: {m}")


def test_scene_covers_both_cameras():
    out, _ = run(direct)
    alpha = out[1]
    assert (alpha.flatten(1) > 0.1).float().mean(1).min() > 0.2  # both images have real content


def test_folding_matches_direct_render_and_gradients():
    out_d, grads_d = run(direct)
    out_f, grads_f = run(render_folded)
    assert grads_d["fx"].abs().min() > 0 and grads_d["fy"].abs().min() > 0
    assert_same(out_d, grads_d, out_f, grads_f)


def test_wrong_folding_differs():
    out_d, grads_d = run(direct)
    out_w, grads_w = run(render_folded, identity_a=True)
    assert (out_d[0] - out_w[0]).abs().max() > 1e-2
    # with A = I nothing depends on fx, fy (K0 holds them detached)
    assert grads_w["fx"].abs().max() == 0 and grads_w["fy"].abs().max() == 0


def test_render_gsplat_folding_formula(monkeypatch):
    """``render_gsplat`` as shipped (its folding, K0, depth handling), with a CPU rasteriser under it."""
    monkeypatch.setitem(sys.modules, "gsplat", fake_gsplat_module())
    from pensieve_ns.render.gsplat_cuda import render_gsplat

    out_d, grads_d = run(direct)
    out_g, grads_g = run(render_gsplat)
    assert_same(out_d, grads_d, out_g, grads_g)


@pytest.mark.parametrize("seed", [3, 4])
def test_folding_other_scenes(seed):
    out_d, grads_d = run(direct, seed=seed)
    out_f, grads_f = run(render_folded, seed=seed)
    assert_same(out_d, grads_d, out_f, grads_f)
