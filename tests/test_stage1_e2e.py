"""``ns-train pensieve-stage1`` end to end on tiny synthetic data, resume, and a short overfit."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pensieve_ns.model.camera_head import CameraHeadConfig
from pensieve_ns.data.datamanager import PensieveDataManagerConfig
from pensieve_ns.data.sampler import ClipSamplerConfig
from pensieve_ns.model.pensieve import PensieveModelConfig
from pensieve_ns.model.vit import ViTSize

NS_TRAIN = Path(sys.executable).parent / "ns-train"


def ns_train(data, out, *extra):
    cmd = [
        str(NS_TRAIN), "pensieve-stage1", "--data", str(data), "--output-dir", str(out),
        "--machine.device-type", "cpu", "--viewer.quit-on-train-completion", "True",
        "--pipeline.datamanager.image-size", "32", "32", "--steps-per-eval-image", "2", *map(str, extra),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ns_train_checkpoints_and_resumes(synth_dir, tmp_path):
    first = ns_train(synth_dir, tmp_path / "a", "--max-num-iterations", 4, "--steps-per-save", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = sorted((tmp_path / "a").rglob("step-*.ckpt"))
    assert ckpts and ckpts[-1].name == "step-000000003.ckpt"
    resumed = ns_train(synth_dir, tmp_path / "b", "--max-num-iterations", 3, "--load-dir", ckpts[-1].parent)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Done loading Nerfstudio checkpoint" in resumed.stdout
    assert sorted((tmp_path / "b").rglob("step-*.ckpt"))[-1].name == "step-000000006.ckpt"  # continues at step 4


def test_ns_train_bad_data_is_one_line(tmp_path):
    out = ns_train(tmp_path / "missing", tmp_path / "o", "--max-num-iterations", 1)
    assert out.returncode == 2
    assert "missing: does not exist" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_overfit_loss_falls(synth_dir):
    """A few dozen AdamW steps on one fixed batch: the rendering loss must fall well below its start."""
    torch.manual_seed(0)
    size = ViTSize(dim=64, depth=2, heads=4, mlp_hidden=128, hook=0)
    model = PensieveModelConfig(
        patch=8, camera_head=CameraHeadConfig(hidden=32), lpips_weight=0.0, frame_vit=size, camera_vit=size, context_vit=size, lvsm_vit=size
    ).setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    dm = PensieveDataManagerConfig(
        data=synth_dir, image_size=(32, 32), batch_size=2, sampler=ClipSamplerConfig(window_frames=3, min_gap=1, max_gap=2)
    ).setup(device="cpu")
    _, batch = dm.next_train(0)
    opt = torch.optim.AdamW(model.get_param_groups()["model"], lr=1e-3)
    losses = []
    for _ in range(60):
        loss = model.get_loss_dict(model(batch), batch)["l2"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_ns_train_refuses_size_the_patch_cannot_tile(synth_dir, tmp_path):
    out = ns_train(synth_dir, tmp_path / "o", "--max-num-iterations", 1, "--pipeline.datamanager.image-size", 30, 32)
    assert out.returncode == 2
    assert "not a multiple of the patch size 8" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_too_few_frames_for_the_window_is_refused(synth_dir, tmp_path):
    out = ns_train(synth_dir, tmp_path / "o", "--max-num-iterations", 1, "--pipeline.datamanager.sampler.window-frames", 20)
    assert out.returncode == 2
    assert "no training clip has the 20 frames" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_sigkill_then_resume_at_the_same_step(synth_dir, tmp_path):
    """Kill -9 a running ns-train; every checkpoint left loads, and --load-dir continues from its step."""
    import os
    import signal
    import time

    cmd = [
        str(NS_TRAIN), "pensieve-stage1", "--data", str(synth_dir), "--output-dir", str(tmp_path / "a"),
        "--machine.device-type", "cpu", "--viewer.quit-on-train-completion", "True",
        "--pipeline.datamanager.image-size", "32", "32", "--max-num-iterations", "100000", "--steps-per-save", "2",
        "--steps-per-eval-image", "1000000", "--steps-per-eval-all-images", "1000000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            steps = [int(p.stem.split("-")[1]) for p in (tmp_path / "a").rglob("step-*.ckpt")]
            if steps and max(steps) >= 6:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 300 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpts = sorted((tmp_path / "a").rglob("step-*.ckpt"))
    assert len(ckpts) == 1  # only the latest is kept, and it is complete:
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    saved = state["step"]
    assert ckpts[0].name == f"step-{saved:09d}.ckpt"
    resumed = ns_train(synth_dir, tmp_path / "b", "--max-num-iterations", 2, "--steps-per-save", 1, "--load-dir", ckpts[0].parent)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The resumed run starts at saved + 1 and saves after each step: saved + 1 and saved + 2 (only the latest kept).
    assert sorted((tmp_path / "b").rglob("step-*.ckpt"))[-1].name == f"step-{saved + 2:09d}.ckpt"


@pytest.mark.slow
def test_ns_train_two_cpu_processes(synth_dir, tmp_path):
    """--machine.num-devices 2 on CPU: nerfstudio's launcher, gloo, DDP; one checkpoint from rank 0."""
    out = ns_train(synth_dir, tmp_path / "d", "--machine.num-devices", 2, "--max-num-iterations", 2,
                   "--pipeline.datamanager.batch-size", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [p.name for p in (tmp_path / "d").rglob("step-*.ckpt")] == ["step-000000001.ckpt"]
