"""Evaluation: image and pose metrics on hand-built cases, similarity alignment, target-pose refinement, and
``pensieve-eval`` / ``ns-eval`` end to end (both protocols, generated clips and a pixelSplat-style chunk with an
evaluation index)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pensieve_ns.cameras import axis_angle_to_matrix, invert_rigid
from pensieve_ns.eval.align import apply_similarity, markley_mean, similarity_from_cameras
from pensieve_ns.eval.poses import absolute_trajectory_error, pose_auc, relative_pose_errors, summarise, umeyama
from pensieve_ns.eval.metrics import depth_abs_rel, image_metrics, lpips_metric
from pensieve_ns.eval.protocol import refine_target_cameras

BIN = Path(sys.executable).parent


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    return axis_angle_to_matrix(torch.randn(3, generator=gen, dtype=torch.float64))


def trajectory(n: int) -> torch.Tensor:
    """n OpenCV c2w cameras along a curve, turning a little each (float64)."""
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    for i in range(n):
        c2w[i, :3, :3] = axis_angle_to_matrix(torch.tensor([0.02 * i, 0.1 * i, 0.0], dtype=torch.float64))
        c2w[i, :3, 3] = torch.tensor([math.sin(0.3 * i), 0.1 * i, math.cos(0.3 * i)], dtype=torch.float64)
    return c2w


def test_identical_images_give_infinite_psnr_ssim_one_lpips_zero():
    import lpips

    torch.manual_seed(0)
    img = torch.rand(2, 3, 32, 32)
    net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)  # random weights: no download
    m = image_metrics(img, img, lpips_metric(net))
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0, abs=1e-6) and m["lpips"] == pytest.approx(0.0, abs=1e-7)
    noisy = image_metrics((img + 0.1 * torch.randn_like(img)).clamp(0, 1), img, None)
    assert 15 < noisy["psnr"] < 30 and noisy["ssim"] < 0.99 and noisy["lpips"] is None  # absent, not 0


def test_depth_abs_rel_is_scale_free_and_skips_invalid_entries():
    gt = np.linspace(1.0, 5.0, 100)
    assert depth_abs_rel(3.7 * gt, gt) == pytest.approx(0.0, abs=1e-12)
    pred = 2.0 * gt
    pred[::2] *= 1.1  # half the entries 10 % too deep, before scaling
    assert 0.0 < depth_abs_rel(pred, gt) < 0.1
    pred[:10] = np.nan  # no depth there: left out, not counted as an error
    gt_holes = gt.copy()
    gt_holes[10:20] = 0.0  # no ground truth there
    assert np.isfinite(depth_abs_rel(pred, gt_holes))
    assert np.isnan(depth_abs_rel(pred, gt, mask=np.arange(100) < 15))  # 5 valid entries: no figure


def test_a_known_rotation_offset_gives_the_expected_accuracies_and_auc():
    gt = trajectory(5)
    pred = gt.clone()
    pred[4, :3, :3] = pred[4, :3, :3] @ axis_angle_to_matrix(torch.tensor([0.0, math.radians(10.0), 0.0], dtype=torch.float64))
    pairs = relative_pose_errors(pred.numpy(), gt.numpy())
    # 10 pairs; the 4 with frame 4 are off by exactly 10 degrees.
    assert np.allclose(np.sort(pairs.rot_err), [0] * 6 + [10] * 4, atol=1e-4)  # arccos near 1: ~1e-6 deg
    s = summarise([pairs])
    assert s["Racc@5"] == pytest.approx(0.6) and s["Racc@15"] == 1.0
    # Frame 4's centre stays, so translation directions of its pairs turn by up to 10 degrees too.
    err = np.maximum(pairs.rot_err, pairs.trans_err)
    assert s["AUC@20"] == pytest.approx(np.clip(1 - err / 20, 0, 1).mean())
    assert pose_auc(np.array([0.0, 10.0, 30.0]), (20.0,))["@20"] == pytest.approx((1 + 0.5 + 0) / 3)
    perfect = summarise([relative_pose_errors(gt.numpy(), gt.numpy())])
    assert perfect["Racc@5"] == perfect["Tacc@5"] == 1.0 and perfect["AUC@5"] == pytest.approx(1.0)


def test_alignment_recovers_a_random_similarity_exactly():
    gen = torch.Generator().manual_seed(3)
    gt = trajectory(6)
    for _ in range(5):
        s, R, t = float(torch.rand(1, generator=gen)) * 4 + 0.1, random_rotation(gen), torch.randn(3, generator=gen, dtype=torch.float64)
        moved = apply_similarity(gt, s, R, t)
        s2, R2, t2 = similarity_from_cameras(gt, moved)
        assert abs(float(s2) - s) < 1e-9 and torch.allclose(R2, R, atol=1e-9) and torch.allclose(t2, t, atol=1e-9)
        s3, R3, t3 = umeyama(gt[:, :3, 3].numpy(), moved[:, :3, 3].numpy())
        assert abs(s3 - s) < 1e-9 and np.allclose(R3, R.numpy(), atol=1e-9) and np.allclose(t3, t.numpy(), atol=1e-9)
        assert absolute_trajectory_error(moved.numpy(), gt.numpy())["ate"] < 1e-9
    q = torch.tensor([[0.9, 0.1, 0.0, 0.0], [-0.9, -0.1, 0.0, 0.0]], dtype=torch.float64)  # q and -q: one rotation
    assert torch.allclose(markley_mean(q / q.norm(dim=-1, keepdim=True)), q[0] / q[0].norm(), atol=1e-12)


def test_ate_of_a_known_offset():
    gt = trajectory(4)
    pred = gt.clone()
    pred[:, :3, 3] += torch.tensor([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0]], dtype=torch.float64)
    ate = absolute_trajectory_error(pred.numpy(), gt.numpy())
    assert 0 < ate["ate"] <= 0.1 + 1e-9 and ate["ate_rel"] == pytest.approx(ate["ate"] / np.linalg.norm(
        gt[:, :3, 3].numpy() - gt[:, :3, 3].numpy().mean(0), axis=1).max())


def test_target_pose_refinement_moves_a_perturbed_camera_back():
    from pensieve_ns.render import render

    torch.manual_seed(0)
    N, S = 400, 32
    means = torch.cat([torch.rand(N, 2) * 2 - 1, torch.rand(N, 1) * 1.5 + 2.5], dim=1)
    quats, scales = torch.tensor([1.0, 0, 0, 0]).expand(N, 4), torch.full((N, 3), 0.06)
    opac, colors = torch.full((N,), 0.9), torch.rand(N, 3)
    K = torch.tensor([[S * 1.0, 0, S / 2], [0, S * 1.0, S / 2], [0, 0, 1]])

    def render_fn(c2w):
        return render(means, quats, scales, opac, colors, invert_rigid(c2w), K.expand(len(c2w), 3, 3), S, S, backend="torch")[0]

    true = torch.eye(4)[None]
    target = render_fn(true)
    start = true.clone()
    start[0, :3, :3] = axis_angle_to_matrix(torch.tensor([0.0, math.radians(3.0), 0.0]))
    start[0, :3, 3] = torch.tensor([0.08, -0.05, 0.0])
    refined = refine_target_cameras(render_fn, start, target, steps=40, lr=0.01)
    err = lambda c: float((c[0, :3, 3] - true[0, :3, 3]).norm())  # noqa: E731
    assert ((render_fn(refined) - target) ** 2).mean() < 0.5 * ((render_fn(start) - target) ** 2).mean()
    assert err(refined) < 0.5 * err(start)


def pensieve_eval(*args):
    return subprocess.run([str(BIN / "pensieve-eval"), *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_pensieve_eval_both_modes_and_ns_eval_agree(stage2_run, synth_dir, tmp_path):
    config = stage2_run / "config.yml"
    aware = pensieve_eval("--load-config", config, "--data", synth_dir, "--output", tmp_path / "aware.json", "--no-lpips")
    assert aware.returncode == 0, aware.stderr[-3000:]
    assert "Racc@5/15/30" in aware.stdout and "blend of context" in aware.stdout
    a = json.loads((tmp_path / "aware.json").read_text())
    assert a["mode"] == "target-aware" and a["summary"]["scenes"] == 4 and len(a["scenes"]) == 4
    for key in ("psnr_lvsm", "ssim_lvsm", "psnr_gs", "ssim_gs", "psnr_blend_context", "Racc@5", "Tacc@30", "AUC@20",
                "ate", "ate_rel", "focal_err", "feed_forward_s", "identity_Racc@5", "identity_AUC@20"):
        assert isinstance(a["summary"][key], float) and math.isfinite(a["summary"][key]), key
    assert a["summary"]["lpips_lvsm"] is None and a["lpips"].startswith("absent")
    assert len(list((tmp_path / "aware_images").glob("*.png"))) == 3

    aligned = pensieve_eval("--load-config", config, "--data", synth_dir, "--output", tmp_path / "aligned.json",
                            "--no-lpips", "--mode", "target-aligned", "--tto-steps", 2, "--max-scenes", 2)
    assert aligned.returncode == 0, aligned.stderr[-3000:]
    b = json.loads((tmp_path / "aligned.json").read_text())
    assert b["summary"]["scenes"] == 2 and b["tto_steps"] == 2 and b["summary"]["tto_s"] > 0
    assert all(math.isfinite(r["psnr_gs"]) and math.isfinite(r["psnr_gs_before_tto"]) for r in b["scenes"])

    # ns-eval on the same clips: a copy of the config whose evaluation data is synth_dir (the run's checkpoints).
    text = config.read_text()
    assert "eval_data: null" in text
    copy = tmp_path / "config.yml"
    copy.write_text(text.replace("eval_data: null", f"eval_data: !!python/object/apply:pathlib.PosixPath\n    - {synth_dir}"))
    ns = subprocess.run([str(BIN / "ns-eval"), "--load-config", str(copy), "--output-path", str(tmp_path / "ns.json")],
                        capture_output=True, text=True, timeout=900)
    assert ns.returncode == 0, ns.stderr[-3000:]
    results = json.loads((tmp_path / "ns.json").read_text())["results"]
    for key in ("psnr_lvsm", "ssim_gs", "psnr_blend_context", "Racc@5", "Tacc@15", "AUC@10", "ate", "focal_err"):
        assert results[key] == pytest.approx(a["summary"][key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_pensieve_eval_reads_chunks_with_an_evaluation_index(stage2_run, chunk_dir, tmp_path):
    index = tmp_path / "evaluation_index.json"
    index.write_text(json.dumps({"scene000": {"context": [0, 8], "target": [3, 5]}, "scene001": None}))
    run = pensieve_eval("--load-config", stage2_run / "config.yml", "--data", chunk_dir, "--index", index,
                        "--output", tmp_path / "re10k.json", "--no-lpips")
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads((tmp_path / "re10k.json").read_text())
    assert [s["scene"] for s in r["scenes"]] == ["scene000"]
    assert r["scenes"][0]["frames"] == [0, 3, 5, 8] and r["scenes"][0]["targets"] == [1, 2]
    assert math.isfinite(r["summary"]["psnr_lvsm"]) and 0 <= r["summary"]["Racc@30"] <= 1


@pytest.mark.slow
def test_pensieve_eval_refuses_bad_input(stage2_run, mp4_path, synth_dir, tmp_path):
    def refused(*args):
        run = pensieve_eval(*args, "--output", tmp_path / "o.json", "--no-lpips")
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert not (tmp_path / "o.json").exists()
        return run.stderr.strip().splitlines()[-1]

    config = stage2_run / "config.yml"
    assert "no such config" in refused("--load-config", tmp_path / "none.yml", "--data", synth_dir)
    assert "no ground-truth cameras" in refused("--load-config", config, "--data", mp4_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in refused("--load-config", config, "--data", synth_dir, "--index", bad)
