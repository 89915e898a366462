"""Stage 2: the Gaussian head, the depth losses, the stage-2 model, and ``ns-train pensieve-stage2`` chained
to a stage-1 run (with every start-up refusal)."""

import pytest
import torch

from conftest import ns_train
from pensieve_ns.model.camera_head import CameraHeadConfig
from pensieve_ns.cameras import invert_rigid
from pensieve_ns.losses import depth_projection_loss, disparity_smoothness_loss
from pensieve_ns.model.flow_pose import FlowCameraHeadConfig
from pensieve_ns.model.gaussian_head import GaussianHead, GaussianHeadConfig
from pensieve_ns.model.pensieve import PensieveStage2ModelConfig
from pensieve_ns.model.vit import ViTSize

TINY = ViTSize(dim=32, depth=2, heads=4, mlp_hidden=64, hook=0)


def cameras(B, L, S, dtype=torch.float32):
    c2w = torch.eye(4, dtype=dtype).repeat(B, L, 1, 1)
    c2w[..., 0, 3] = torch.linspace(0, 0.2, L, dtype=dtype)
    K = torch.tensor([[1.2 * S, 0, S / 2], [0, 1.1 * S, S / 2], [0, 0, 1]], dtype=dtype).repeat(B, L, 1, 1)
    return c2w, K


@pytest.mark.parametrize("stride", [1, 2])
def test_gaussian_head_places_gaussians_on_the_pixel_rays(stride):
    torch.manual_seed(0)
    B, G, S = 2, 2, 16
    head = GaussianHead(21, 16, stride)
    c2w, K = cameras(B, G, S)
    c2w, K = c2w.requires_grad_(True), K.requires_grad_(True)
    images = torch.rand(B, G, 3, S, S)
    gs = head(torch.randn(B, G, 21, S, S), images, c2w, K)
    h = S // stride
    N = G * h * h
    assert gs.means.shape == (B, N, 3) and gs.quats.shape == (B, N, 4) and gs.scales.shape == (B, N, 3)
    assert gs.depth.shape == (B, G, 1, h, h) and ((gs.depth >= 1) & (gs.depth <= 100)).all()
    assert ((gs.opacities > 0) & (gs.opacities < 1)).all()
    torch.testing.assert_close(gs.quats.norm(dim=-1), torch.ones(B, N))
    # Project each frame's Gaussians back with its own camera: the block centres, at the predicted depth.
    w2c = invert_rigid(c2w.detach())
    means = gs.means.detach().view(B, G, h * h, 3)
    cam = torch.einsum("bgij,bgnj->bgni", w2c[..., :3, :3], means) + w2c[..., None, :3, 3]
    uv = torch.einsum("bgij,bgnj->bgni", K.detach(), cam)
    uv = uv[..., :2] / uv[..., 2:]
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(h) + 0.5, indexing="ij")
    expected = torch.stack([u, v], -1).reshape(-1, 2) * stride
    torch.testing.assert_close(uv, expected.expand_as(uv), atol=1e-3, rtol=0)
    torch.testing.assert_close(cam[..., 2], gs.depth.detach().view(B, G, -1), atol=1e-4, rtol=1e-4)
    # Colour is a residual on the (pooled) input pixel; the camera gets gradients through the positions.
    gs.means.sum().backward()
    assert c2w.grad.abs().sum() > 0 and K.grad[..., 0, 0].abs().sum() > 0


def test_depth_projection_loss_prefers_true_geometry():
    """On a generated clip, true depth and cameras warp neighbours onto each frame far better than wrong ones."""
    from pensieve_ns.data.synthetic import generate_clip

    clip = generate_clip(seed=4, num_frames=6, size=32)  # a translating path (under pure rotation depth is moot)
    images = torch.from_numpy(clip.frames).float().permute(0, 3, 1, 2)[None] / 255
    depth = torch.from_numpy(clip.depth).float()[None, :, None]
    c2w = torch.from_numpy(clip.c2w_opencv).float()[None]
    K = torch.from_numpy(clip.K).float().expand(1, 6, 3, 3)
    every = torch.arange(6)[None]
    s, n = depth_projection_loss(images, depth, every, c2w, K)
    true = s / n
    assert n == 2 * (5 + 4 + 3)  # every (frame, neighbour within 3) pair
    for wrong_depth, wrong_c2w in [
        (depth * 0 + depth.mean(), c2w),  # flat depth
        (depth * 3, c2w),  # wrong scale
        (depth, c2w[:, torch.tensor([0, 3, 1, 5, 2, 4])]),  # cameras of the wrong frames
        (depth, torch.eye(4).expand(1, 6, 4, 4)),  # the collapsed solution: one pose for all
    ]:
        s_wrong, _ = depth_projection_loss(images, wrong_depth, every, wrong_c2w, K)
        assert true < 0.5 * s_wrong / n
    # Depth <= 0 is masked out entirely.
    s_zero, _ = depth_projection_loss(images, torch.zeros_like(depth), every, c2w, K)
    assert s_zero == 0


def test_disparity_smoothness():
    img = torch.rand(2, 3, 16, 16)
    flat = disparity_smoothness_loss(torch.full((2, 1, 16, 16), 4.0), img)
    noisy = disparity_smoothness_loss(torch.rand(2, 1, 16, 16) * 5 + 1, img)
    assert flat == 0 and noisy > 0.1


def stage2_model(camera_head=None):
    cfg = PensieveStage2ModelConfig(
        patch=8, camera_head=camera_head or CameraHeadConfig(hidden=16), lpips_weight=0.0, frame_vit=TINY,
        camera_vit=TINY, context_vit=TINY, lvsm_vit=TINY, gaussian_head=GaussianHeadConfig(hidden=16, stride=2, footprint=(0.1, 1.5)),
        tile_size=8, depth_projection_weight=1.0, depth_projection_max_step=10, depth_smooth_weight=0.01)
    return cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")


def test_stage2_model_losses_reach_cameras_and_gaussians():
    torch.manual_seed(0)
    model = stage2_model()
    batch = {"images": torch.rand(2, 4, 3, 16, 16), "context": torch.tensor([[0, 2], [1, 3]]),
             "loss_weights": torch.tensor([[0.1, 1, 0.1, 1], [1, 0.1, 1, 0.1]])}
    out = model(batch)
    assert out["rgb_gs"].shape == (2, 4, 3, 16, 16) and out["depth_gs"].shape == (2, 4, 1, 16, 16)
    losses = model.get_loss_dict(out, batch)
    assert set(losses) == {"l2", "depth_projection", "depth_smooth"}
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for prefix in ("gaussian_head.", "camera_head.", "encoder.", "lvsm."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    # A frozen camera head (the flow head, freeze=True) is left out of the optimizer and gets no gradient; the rest
    # trains.
    frozen = stage2_model(FlowCameraHeadConfig(freeze=True))
    sum(frozen.get_loss_dict(frozen(batch), batch).values()).backward()
    group = {id(p) for p in frozen.get_param_groups()["model"]}
    for n, p in frozen.named_parameters():
        assert (id(p) in group) != n.startswith("camera_head."), n
        assert p.grad is None or not n.startswith("camera_head."), n
    # The depth projection loss decays linearly and is gone at its max step.
    model.step = 10
    assert "depth_projection" not in model.get_loss_dict(model(batch), batch)
    model.eval()
    with torch.no_grad():
        metrics, images = model.get_image_metrics_and_images(model(batch), batch)
    assert {"psnr", "psnr_gs", "ssim_gs", "psnr_blend_context"} <= set(metrics)  # the per-step evaluation image
    assert images["depth_gs"].shape == (16, 64, 3)


@pytest.mark.slow
def test_stage2_trains_from_stage1_and_resumes(synth_dir, stage1_run, tmp_path):
    run = ns_train("pensieve-stage2", synth_dir, tmp_path / "a", "--stage1-checkpoint", stage1_run,
                   "--max-num-iterations", 3, "--steps-per-save", 2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Stage 2 initialised from" in run.stdout and "tensors of encoder, camera_head, lvsm)" in run.stdout
    ckpt = sorted((tmp_path / "a").rglob("step-*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu")["pipeline"]
    assert any(k.startswith("_model.gaussian_head.") for k in state)
    # Resume: --load-dir wins over --stage1-checkpoint.
    resumed = ns_train("pensieve-stage2", synth_dir, tmp_path / "b", "--stage1-checkpoint", stage1_run,
                       "--max-num-iterations", 4, "--load-dir", ckpt.parent)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Done loading Nerfstudio checkpoint" in resumed.stdout and "Stage 2 initialised" not in resumed.stdout


@pytest.mark.slow
def test_stage2_refuses_bad_stage1_checkpoints(synth_dir, stage1_run, tmp_path):
    def refused(path, *extra):
        args = ["--max-num-iterations", 1, *extra] if path is None else ["--stage1-checkpoint", path, "--max-num-iterations", 1, *extra]
        run = ns_train("pensieve-stage2", synth_dir, tmp_path / "o", *args)
        assert run.returncode == 2, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
        return run.stderr.strip().splitlines()[-1]

    assert "starts from a stage-1 run" in refused(None)
    # Another preset: stage 1 at width 32, stage 2 at width 48.
    assert "another preset" in refused(stage1_run, "--pipeline.model.frame-vit.dim", 48)
    # The other refusals come from the same loader, before it touches the model: checked in this process (each
    # ns-train start costs about 13 s of imports on 2 cores).
    from pensieve_ns.checkpoints import load_stage1_weights
    from pensieve_ns.errors import PensieveInputError

    def refused_here(path):
        with pytest.raises(PensieveInputError) as err:
            load_stage1_weights(torch.nn.Linear(1, 1), path)
        return str(err.value)

    assert "checkpoint not found" in refused_here(tmp_path / "nowhere")
    # Another method: same checkpoint, but the run says splatfacto.
    other = tmp_path / "splatfacto_run"
    (other / "nerfstudio_models").mkdir(parents=True)
    ckpt = sorted((stage1_run / "nerfstudio_models").glob("*.ckpt"))[-1]
    (other / "nerfstudio_models" / ckpt.name).write_bytes(ckpt.read_bytes())
    (other / "config.yml").write_text("method_name: splatfacto\n")
    assert "method 'splatfacto'" in refused_here(other)
    # A file that is not a checkpoint.
    bad = tmp_path / "step-000000001.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert "cannot read the checkpoint" in refused_here(bad)
