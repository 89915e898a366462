"""nerfstudio's own commands on a stage-2 run: the model's "current scene" and ``ns-export gaussian-splat``."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


NS_EXPORT = Path(sys.executable).parent / "ns-export"


def test_scene_buffers_round_trip_through_load_state_dict():
    from pensieve_ns.model.camera_head import CameraHeadConfig
    from pensieve_ns.model.gaussian_head import GaussianHeadConfig
    from pensieve_ns.model.pensieve import PensieveStage2ModelConfig
    from pensieve_ns.model.vit import ViTSize

    tiny = ViTSize(dim=32, depth=2, heads=4, mlp_hidden=64, hook=0)
    cfg = PensieveStage2ModelConfig(patch=8, camera_head=CameraHeadConfig(hidden=32), lpips_weight=0.0,
                                    gaussian_head=GaussianHeadConfig(hidden=8), frame_vit=tiny, camera_vit=tiny,
                                    context_vit=tiny, lvsm_vit=tiny)
    a = cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    b = cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    assert a.num_points == 0 and a.means.shape == (0, 3)
    N = 5
    a.set_scene(torch.randn(N, 3), torch.randn(N, 4), torch.rand(N, 3) + 0.1, torch.rand(N), torch.rand(N, 3),
                torch.eye(4).expand(2, 4, 4), torch.eye(3).expand(2, 3, 3), torch.rand(2, 3, 16, 16))
    b.load_state_dict(a.state_dict())
    assert b.num_points == N and torch.equal(b.scales, a.scales) and torch.equal(b.opacities, a.opacities)
    assert torch.allclose(b.colors, a.colors) and b.features_rest.shape == (N, 0, 3)
    assert torch.equal(b.scene_images, a.scene_images)


@pytest.mark.slow
def test_ns_export_gaussian_splat_matches_the_models_render(stage2_run, tmp_path):
    from plyfile import PlyData

    from nerfstudio.utils.eval_utils import eval_setup
    from pensieve_ns.cameras import invert_rigid
    from pensieve_ns.render import render

    run = subprocess.run([str(NS_EXPORT), "gaussian-splat", "--load-config", str(stage2_run / "config.yml"),
                          "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ply = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    names = {p.name for p in ply.properties}
    assert {"x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"} <= names
    col = lambda *keys: torch.from_numpy(np.stack([np.asarray(ply[k], dtype=np.float32) for k in keys], -1))  # noqa: E731
    means, sh0 = col("x", "y", "z"), col("f_dc_0", "f_dc_1", "f_dc_2")
    opacities, scales, quats = torch.sigmoid(col("opacity")[:, 0]), torch.exp(col("scale_0", "scale_1", "scale_2")), col("rot_0", "rot_1", "rot_2", "rot_3")
    colors = (0.5 + 0.28209479177387814 * sh0).clamp(0, 1)

    _, pipeline, _, _ = eval_setup(stage2_run / "config.yml", test_mode="inference")
    model = pipeline.model
    assert model.num_points > 0 and len(means) > 0.5 * model.num_points  # only near-transparent rows are dropped
    H, W = (int(v) for v in model.scene_hw)
    c2w, K = model.scene_c2w_opencv[:1], model.scene_K[:1]
    expected = model.render_scene(c2w, K, W, H)["rgb"]
    grey = torch.full((1, 3, 1, 1), 0.5)
    got, _, _ = render(means, quats, scales, opacities, colors, invert_rigid(c2w), K, W, H, background=grey, backend="torch")
    assert torch.allclose(got, expected, atol=2e-3), (got - expected).abs().max()
    assert expected.std() > 1e-3  # not a blank render


@pytest.mark.slow
def test_loaded_run_shows_its_predicted_cameras_and_renders_at_a_viewer_camera(stage2_run):
    from nerfstudio.utils.eval_utils import eval_setup
    from pensieve_ns.cameras import opencv_to_opengl_c2w

    _, pipeline, _, _ = eval_setup(stage2_run / "config.yml", test_mode="test")
    model, frames = pipeline.model, pipeline.datamanager.train_dataset
    assert len(frames) == model.scene_c2w_opencv.shape[0] and frames[0]["image"].shape[-1] == 3
    assert torch.allclose(frames.cameras.camera_to_worlds, opencv_to_opengl_c2w(model.scene_c2w_opencv)[:, :3])
    camera = frames.cameras[0:1]
    model.set_background(torch.tensor([0.0, 0.0, 1.0]))
    out = model.get_outputs_for_camera(camera)
    H, W = (int(v) for v in model.scene_hw)
    assert out["rgb"].shape == (H, W, 3) and out["depth"].shape == (H, W, 1) and out["accumulation"].shape == (H, W, 1)
    expected = model.render_scene(model.scene_c2w_opencv[:1], model.scene_K[:1], W, H)["rgb"][0].permute(1, 2, 0)
    assert torch.allclose(out["rgb"], expected, atol=1e-5)
    assert out["accumulation"].mean() > 0.5


@pytest.mark.slow
def test_ns_render_interpolate_flies_between_the_predicted_cameras(stage2_run, tmp_path):
    import av

    out = tmp_path / "fly.mp4"
    run = subprocess.run([str(Path(sys.executable).parent / "ns-render"), "interpolate", "--load-config",
                          str(stage2_run / "config.yml"), "--output-path", str(out), "--frame-rate", "4",
                          "--interpolation-steps", "2", "--output-format", "video"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 2 and frames[0].std() > 1.0  # the scene, not a flat background


@pytest.mark.slow
def test_ns_render_camera_path_through_the_predicted_cameras(stage2_run, tmp_path):
    import json
    import math

    import av

    from pensieve_ns.cameras import opencv_to_opengl_c2w

    ckpt = sorted((stage2_run / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu")["pipeline"]
    c2w = opencv_to_opengl_c2w(state["_model.scene_c2w_opencv"])  # nerfstudio camera paths are OpenGL c2w
    K, (H, W) = state["_model.scene_K"], (int(v) for v in state["_model.scene_hw"])
    fov = math.degrees(2 * math.atan(H / 2 / float(K[0, 1, 1])))
    path = {"camera_type": "perspective", "render_height": H, "render_width": W, "fps": 2, "seconds": len(c2w) / 2,
            "camera_path": [{"camera_to_world": m.flatten().tolist(), "fov": fov, "aspect": W / H} for m in c2w]}
    (tmp_path / "path.json").write_text(json.dumps(path))
    out = tmp_path / "path.mp4"
    run = subprocess.run([str(Path(sys.executable).parent / "ns-render"), "camera-path", "--load-config",
                          str(stage2_run / "config.yml"), "--camera-path-filename", str(tmp_path / "path.json"),
                          "--output-path", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(c2w) and all(f.std() > 1.0 for f in frames)


@pytest.mark.slow
@pytest.mark.skipif(__import__("browser").CHROMIUM is None, reason="needs Debian's chromium (make sysdeps installs it)")
def test_ns_viewer_shows_the_scene_in_a_headless_browser(stage2_run, tmp_path):
    from PIL import Image

    from browser import free_port, screenshot, wait_for_http

    port = free_port()
    log = open(tmp_path / "viewer.log", "w")
    viewer = subprocess.Popen([str(Path(sys.executable).parent / "ns-viewer"), "--load-config", str(stage2_run / "config.yml"),
                               "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}", 120), (tmp_path / "viewer.log").read_text()[-2000:]
        shot = np.asarray(Image.open(screenshot(f"http://127.0.0.1:{port}", tmp_path / "viewer.png")).convert("RGB"), np.float32)
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)
    canvas = shot[80:420, 60:420]  # the 3D view, left of the control panel (800 x 600 window)
    empty = np.array([38.0, 42.0, 55.0])  # nerfstudio's default viewer background
    scene = (np.abs(canvas - empty).max(-1) > 40).mean()
    assert scene > 0.3, f"only {scene:.0%} of the 3D view differs from the empty background"


RECONSTRUCT = Path(sys.executable).parent / "pensieve-reconstruct"


def reconstruct(config, source, out, *extra):
    return subprocess.run([str(RECONSTRUCT), "--load-config", str(config), "--input", str(source), "--output-dir", str(out),
                           *map(str, extra)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["mp4_path", "image_folder"])
def test_pensieve_reconstruct_writes_what_nerfstudio_and_viewers_load(stage2_run, source, request, tmp_path):
    import av
    from plyfile import PlyData

    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    out = tmp_path / "rec"
    # The video goes through chained windows (10 frames, 4 per pass); the folder through one pass.
    n, extra = (10, ("--window", 4)) if source == "mp4_path" else (6, ("--stride", 2))
    run = reconstruct(stage2_run / "config.yml", request.getfixturevalue(source), out, "--max-frames", n, *extra)
    assert run.returncode == 0, run.stderr[-3000:]
    used = "10 of 24 frames (--stride 1, --max-frames 10) in 4 window" if source == "mp4_path" else "6 of 12 frames (--stride 2, --max-frames 6) in 1 window"
    assert used in run.stdout, run.stdout  # what was read and what was used, said
    assert {p.name for p in out.iterdir()} == {"images", "transforms.json", "splat.ply", "novel_views.mp4", "preview.png", "cameras.png"}
    assert len(PlyData.read(str(out / "splat.ply"))["vertex"]) > 0
    parsed = NerfstudioDataParserConfig(data=out, train_split_fraction=1.0, auto_scale_poses=False, center_method="none",
                                        orientation_method="none").setup().get_dataparser_outputs("train")
    assert len(parsed.image_filenames) == n and all(p.exists() for p in parsed.image_filenames)
    with av.open(str(out / "novel_views.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    # The cameras in transforms.json are the model's OpenGL camera-to-world matrices, frame by frame.
    frames = __import__("json").loads((out / "transforms.json").read_text())["frames"]
    assert torch.allclose(parsed.cameras.camera_to_worlds, torch.tensor([f["transform_matrix"] for f in frames])[:, :3].float(), atol=1e-5)


@pytest.mark.slow
def test_pensieve_reconstruct_refuses_bad_input_without_writing(stage2_run, mp4_path, tmp_path):
    def refused(config, source):
        out = tmp_path / "out"
        run = reconstruct(config, source, out)
        assert run.returncode == 2, run.stderr[-2000:]
        assert "Traceback" not in run.stderr and not out.exists()
        assert not list(tmp_path.glob(".out.*")), "a temporary folder was left behind"
        return run.stderr.strip().splitlines()[-1]

    assert "no such config" in refused(tmp_path / "nowhere" / "config.yml", mp4_path)
    other = tmp_path / "splatfacto"
    other.mkdir()
    (other / "config.yml").write_text("method_name: splatfacto\n")
    assert "method 'splatfacto'" in refused(other / "config.yml", mp4_path)
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yml").write_text((stage2_run / "config.yml").read_text())
    assert "checkpoint" in refused(no_ckpt / "config.yml", mp4_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    assert "pensieve-reconstruct: error:" in refused(stage2_run / "config.yml", empty)


@pytest.mark.slow
def test_pensieve_reconstruct_takes_the_cameras_of_pensieve_cameras(stage2_run, tmp_path):
    """The hand-off: pensieve-cameras solves a clip, pensieve-reconstruct places the model's Gaussians with those
    cameras instead of its own (relative rotations kept exactly; the scale is the model's normalisation)."""
    import json

    import cv2

    from pensieve_ns.data.synthetic import generate_clip
    from pensieve_ns.sfm.cli import CamerasConfig, solve_input

    clip = generate_clip(30002, 12, 128, "heldout", path_kind="arc")
    (tmp_path / "in").mkdir()
    for k, frame in enumerate(clip.frames):
        cv2.imwrite(str(tmp_path / "in" / f"frame_{k:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    solve_input(CamerasConfig(tmp_path / "in", tmp_path / "cams"))
    given = json.loads((tmp_path / "cams" / "transforms.json").read_text())
    ids = sorted(f["source_frame"] for f in given["frames"])[:6]  # frames that have a camera
    assert ids == list(range(6)), ids
    run = reconstruct(stage2_run / "config.yml", tmp_path / "in", tmp_path / "rec", "--max-frames", 6, "--window", 6,
                      "--cameras", tmp_path / "cams" / "transforms.json")
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "rec" / "transforms.json").read_text())
    assert out["pensieve"]["cameras"].endswith("transforms.json")
    R_out = np.array([f["transform_matrix"] for f in out["frames"]])[:, :3, :3]
    by_id = {f["source_frame"]: np.array(f["transform_matrix"])[:3, :3] for f in given["frames"]}
    R_in = np.stack([by_id[f["source_frame"]] for f in out["frames"]])
    assert np.allclose(R_out[0].T @ R_out, R_in[0].T @ R_in, atol=1e-4)  # relative rotations: the given ones
    # A transforms.json for frames of another size is refused with one line, nothing written.
    given["w"] = 64
    (tmp_path / "other.json").write_text(json.dumps(given))
    bad = reconstruct(stage2_run / "config.yml", tmp_path / "in", tmp_path / "rec2", "--cameras", tmp_path / "other.json")
    assert bad.returncode == 2 and "is for 64x128 frames" in bad.stderr and not (tmp_path / "rec2").exists()


def test_chained_windows_recover_a_trajectory_seen_in_other_frames_and_scales():
    from pensieve_ns.eval.align import apply_similarity
    from pensieve_ns.reconstruct import chain_windows, window_starts
    from pensieve_ns.cameras import axis_angle_to_matrix

    torch.manual_seed(0)
    xi = torch.randn(19, 6, dtype=torch.float64) * 0.2
    steps = torch.eye(4, dtype=torch.float64).repeat(19, 1, 1)
    steps[:, :3, :3], steps[:, :3, 3] = axis_angle_to_matrix(xi[:, :3]), xi[:, 3:]
    truth = [torch.eye(4, dtype=torch.float64)]
    for step in steps:
        truth.append(truth[-1] @ step)
    truth = torch.stack(truth)  # 20 cameras
    starts = window_starts(20, 6)
    assert starts[0] == 0 and starts[-1] == 14 and all(b - a <= 4 for a, b in zip(starts, starts[1:]))
    windows = []
    for k, start in enumerate(starts):
        part = truth[start:start + 6]
        if k > 0:  # each later window in its own world: another rotation, translation and scale
            R = axis_angle_to_matrix(torch.randn(3, dtype=torch.float64))
            part = apply_similarity(part, float(torch.rand(1)) * 3 + 0.2, R, torch.randn(3, dtype=torch.float64))
        windows.append(part)
    assert torch.allclose(chain_windows(windows, starts), truth, atol=1e-9)


def test_a_checkpoint_with_numpy_scheduler_state_loads_in_a_fresh_process(tmp_path):
    """Past the warm-up nerfstudio's cosine scheduler stores numpy floats; torch >= 2.6 loads checkpoints with
    weights_only=True. ``pensieve-eval`` / ``pensieve-reconstruct`` import only what they need, so the allow-list
    must come with the checkpoint loader itself (a 150-step demo run once failed here)."""
    import subprocess
    import sys

    import numpy as np

    ckpt = tmp_path / "nerfstudio_models" / "step-000000150.ckpt"
    ckpt.parent.mkdir()
    torch.save({"step": 150, "pipeline": {"_model.w": torch.ones(2)},
                "schedulers": {"model": {"_last_lr": [np.float64(1e-4)], "base_lrs": [np.float32(3e-4)]}}}, ckpt)
    code = f"from pensieve_ns.checkpoints import load_model_state; print(sorted(load_model_state(__import__('pathlib').Path('{ckpt}'))))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "['w']" in run.stdout, run.stderr[-2000:]
