"""One command for a GPU machine (< 8 min on one H100): renderer agreement, paper-preset training steps, DDP.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check] [--skip-train] [--skip-ddp]

(a) gsplat (through ``render``'s focal-folding path) vs the tiled PyTorch renderer on the same CUDA scene:
    4,000 Gaussians, 3 cameras with fx != fy, 192 px. Loss = random-weighted sum of rgb, alpha and
    alpha-weighted depth; gradients w.r.t. means, quats, scales, opacities, colours, R (axis-angle), t, fx, fy.
    Two scenes:
      "low-opacity" (opacities 0.05..0.34): both renderers touch exactly the same pixels (the torch renderer's
        reach sqrt(2 ln(255 o)) sigma is below gsplat's 3 sigma box), so they must agree to float32 rounding:
        image max |diff| <= 1e-3; every gradient cosine >= 0.999 and relative error <= 2e-2.
      "full-opacity" (opacities 0.05..0.99): gsplat cuts each splat at a 3-sigma box (tile granularity) and stops
        a pixel when transmittance < 1e-4; the torch renderer reaches up to 3.33 sigma and never stops early.
        Tolerances: image max |diff| <= 3e-2 and mean |diff| <= 2e-3; gradient cosine >= 0.98, relative error <= 0.2.
(b) one re10k stage-1 and one stage-2 training step on CUDA with autocast_bf16=True and checkpointing=True:
    batch 2 per GPU, L = 7 views of 256 px, G = 6 context views (the sampler's largest case: most tokens and
    Gaussians), AdamW step included; LPIPS-VGG on if its weights load, else lpips_weight = 0 (reported).
    One warm-up step, then the median of 3 timed steps; peak = torch.cuda.max_memory_allocated over them.
(c) with more than one GPU: two DDP steps of the stage-1 model over NCCL (torch.multiprocessing, one process per
    GPU, up to 8), then checks that every rank holds the same parameters. With one GPU: "one GPU: DDP skipped".

Prints a table, writes gpu_check.json into --out. Without CUDA: exits 2 printing "gpu_check: no CUDA device".
``--cpu-selftest`` (for debugging part (a) without a GPU) compares the torch renderer against itself (tile 16 vs
tile 8 with checkpointed chunks) on a small CPU scene with the same comparison code and the low-opacity
tolerances.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pensieve_ns.cameras import axis_angle_to_matrix  # noqa: E402
from pensieve_ns.render import render  # noqa: E402

TOL_TIGHT = dict(img_max=1e-3, img_mean=1e-3, cos=0.999, rel=2e-2)
TOL_LOOSE = dict(img_max=3e-2, img_mean=2e-3, cos=0.98, rel=0.2)
GRAD_ITEMS = ("means", "quats", "scales", "opacities", "colors", "R", "t", "fx", "fy")


# ---------------------------------------------------------------------------------------------------------------
# (a) renderer agreement


def make_scene(n: int, size: int, n_cams: int, max_opacity: float, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    leaves = dict(
        means=torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.8, 0.5]),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 0.04 + 0.01,
        opacities=torch.rand(n, generator=g) * (max_opacity - 0.05) + 0.05,
        colors=torch.rand(n, 3, generator=g),
        R=torch.randn(n_cams, 3, generator=g) * 0.08,  # axis-angle of each world-to-camera rotation
        t=torch.tensor([[0.1 * c, -0.05 * c, 3.0 + 0.2 * c] for c in range(n_cams)]),
        fx=torch.tensor([1.05 * size, 0.9 * size, 1.2 * size][:n_cams]),
        fy=torch.tensor([0.95 * size, 1.1 * size, 1.0 * size][:n_cams]),
    )
    return {k: v.to(device) for k, v in leaves.items()}


def render_scene(leaves, size: int, backend: str, **kwargs):
    p = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
    C = p["fx"].shape[0]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=p["t"].device).expand(C, 1, 4)
    viewmats = torch.cat([torch.cat([axis_angle_to_matrix(p["R"]), p["t"][:, :, None]], 2), bottom], 1)
    zero, one = torch.zeros_like(p["fx"]), torch.ones_like(p["fx"])
    half = torch.full_like(p["fx"], size / 2)
    Ks = torch.stack([torch.stack([p["fx"], zero, half], -1), torch.stack([zero, p["fy"], half], -1),
                      torch.stack([zero, zero, one], -1)], -2)
    rgb, alpha, depth = render(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], viewmats, Ks, size,
                               size, backend=backend, **kwargs)
    g = torch.Generator().manual_seed(1)
    w = [torch.rand(x.shape, generator=g).to(x.device) for x in (rgb, alpha, depth)]
    loss = (rgb * w[0]).sum() + (alpha * w[1]).sum() + (depth * alpha * w[2]).sum()
    loss.backward()
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)).detach().double().cpu() for k, v in p.items()}
    return rgb.detach().double().cpu(), grads


def compare(leaves, size, path_a, path_b, tol, name):
    """path_*: (backend, kwargs). Returns rows: item, value(s), tolerance, pass."""
    img_a, grads_a = render_scene(leaves, size, path_a[0], **path_a[1])
    img_b, grads_b = render_scene(leaves, size, path_b[0], **path_b[1])
    diff = (img_a - img_b).abs()
    rows = [dict(scene=name, item="image", max_abs=diff.max().item(), mean_abs=diff.mean().item(),
                 tol=f"max<={tol['img_max']}, mean<={tol['img_mean']}",
                 ok=bool(diff.max() <= tol["img_max"] and diff.mean() <= tol["img_mean"]))]
    for k in GRAD_ITEMS:
        a, b = grads_a[k].flatten(), grads_b[k].flatten()
        rel = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
        cos = (a @ b / (a.norm() * b.norm()).clamp_min(1e-30)).item()
        nonzero = bool(b.norm() > 0)
        rows.append(dict(scene=name, item=f"d/d{k}", rel_err=rel, cosine=cos, norm_b=b.norm().item(),
                         tol=f"cos>={tol['cos']}, rel<={tol['rel']}",
                         ok=bool(nonzero and cos >= tol["cos"] and rel <= tol["rel"])))
    return rows


def part_a(device: str, selftest: bool):
    if selftest:  # CPU sanity: the same renderer, two tilings (one checkpointed in chunks)
        leaves = make_scene(600, 64, 2, 0.34, device)
        return compare(leaves, 64, ("torch", {}), ("torch", dict(tile_size=8, tiles_per_chunk=16)), TOL_TIGHT,
                       "selftest torch16 vs torch8-chunked")
    rows = []
    for name, max_o, tol in (("low-opacity", 0.34, TOL_TIGHT), ("full-opacity", 0.99, TOL_LOOSE)):
        leaves = make_scene(4000, 192, 3, max_o, device)
        rows += compare(leaves, 192, ("gsplat", {}), ("torch", {}), tol, f"{name} gsplat vs torch")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# (b) paper-preset training steps


def lpips_available() -> bool:
    """True where LPIPS-VGG loads without a download (the device machine is offline: no attempt to fetch)."""
    if not (Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth").exists():
        return False
    try:
        from pensieve_ns.losses import load_lpips_vgg

        load_lpips_vgg()
        return True
    except Exception:  # noqa: BLE001  (offline: no VGG weights)
        return False


def build_model(stage: int, device: str, lpips: bool):
    from pensieve_ns.method_configs import stage1_config, stage2_config

    cfg = (stage1_config if stage == 1 else stage2_config)("re10k").pipeline.model
    cfg.autocast_bf16, cfg.checkpointing = True, True
    if not lpips:
        cfg.lpips_weight = 0.0
    model = cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu").to(device)
    model.train()
    return model


def make_batch(B: int, L: int, G: int, size: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    context = torch.stack([torch.randperm(L, generator=g)[:G].sort().values for _ in range(B)])
    weights = torch.ones(B, L)
    weights.scatter_(1, context, 0.1)
    return {"images": torch.rand(B, L, 3, size, size, generator=g).to(device), "context": context.to(device),
            "loss_weights": weights.to(device)}


def train_step(model, opt, batch, forward=None):
    outputs = (forward or model)(batch)
    losses = model.get_loss_dict(outputs, batch)
    loss = sum(losses.values())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {k: float(v.detach()) for k, v in losses.items()}


def make_optimizer(model):
    return torch.optim.AdamW(model.get_param_groups()["model"], lr=4e-4, betas=(0.9, 0.95), weight_decay=0.01)


def part_b(device: str, B=2, L=7, G=6, size=256, repeats=3):
    lpips = lpips_available()
    rows = []
    for stage in (1, 2):
        row = dict(stage=stage, batch=B, views=L, context=G, size=size, lpips=lpips, autocast_bf16=True,
                   checkpointing=True)
        model = opt = None
        try:
            torch.cuda.empty_cache()
            model = build_model(stage, device, lpips)
            row["params_M"] = sum(p.numel() for p in model.get_param_groups()["model"]) / 1e6
            opt = make_optimizer(model)
            batch = make_batch(B, L, G, size, device)
            row["losses_first_step"] = train_step(model, opt, batch)  # warm-up (allocates the optimizer state)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                train_step(model, opt, batch)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            row["step_s_median"] = sorted(times)[len(times) // 2]
            row["step_s_all"] = times
            row["clips_per_s"] = B / row["step_s_median"]
            row["max_memory_allocated_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            row["ok"] = all(math.isfinite(v) for v in row["losses_first_step"].values())
        except Exception as err:  # noqa: BLE001  (OOM or a bug: report it, keep going)
            row["ok"] = False
            row["error"] = f"{type(err).__name__}: {err}"[:2000]
            row["traceback"] = traceback.format_exc()[-4000:]
        rows.append(row)
        del model, opt
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------------------------
# (c) DDP over NCCL


def _ddp_worker(rank: int, world: int, port: int, result_dir: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    result = dict(rank=rank)
    try:
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
        device = f"cuda:{rank}"
        torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_model(1, device, lpips=False)
        ddp = DDP(model, device_ids=[rank], find_unused_parameters=True)
        opt = make_optimizer(model)
        times = []
        for step in range(2):
            batch = make_batch(2, 7, 6, 256, device, seed=100 * rank + step)  # different clips per rank
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            result[f"losses_step{step}"] = train_step(model, opt, batch, forward=ddp)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        result["step_s"] = times
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(gathered, checksum)
        result["max_param_checksum_diff_across_ranks"] = max((g - gathered[0]).abs().max().item() for g in gathered)
        result["max_memory_allocated_GiB"] = torch.cuda.max_memory_allocated(rank) / 2**30
        result["ok"] = result["max_param_checksum_diff_across_ranks"] == 0.0
        dist.destroy_process_group()
    except Exception as err:  # noqa: BLE001
        result["ok"] = False
        result["error"] = f"{type(err).__name__}: {err}"[:2000]
        result["traceback"] = traceback.format_exc()[-4000:]
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(result))


def part_c():
    n = torch.cuda.device_count()
    if n < 2:
        print("one GPU: DDP skipped")
        return dict(skipped=True, reason="one GPU: DDP skipped")
    import socket

    import torch.multiprocessing as mp

    world = min(n, 8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_worker, args=(world, port, tmp), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    return dict(skipped=False, world_size=world, ranks=ranks, ok=all(r.get("ok") for r in ranks))


# ---------------------------------------------------------------------------------------------------------------


def fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_a(rows):
    print("\n(a) renderer agreement")
    print(f"{'scene':38s} {'item':12s} {'values':44s} {'tolerance':28s} result")
    for r in rows:
        if r["item"] == "image":
            vals = f"max|d|={fmt(r['max_abs'])} mean|d|={fmt(r['mean_abs'])}"
        else:
            vals = f"rel={fmt(r['rel_err'])} cos={r['cosine']:.6f} |g|={fmt(r['norm_b'])}"
        print(f"{r['scene']:38s} {r['item']:12s} {vals:44s} {r['tol']:28s} {'PASS' if r['ok'] else 'FAIL'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check")
    ap.add_argument("--skip-train", action="store_true", help="skip part (b)")
    ap.add_argument("--skip-ddp", action="store_true", help="skip part (c)")
    ap.add_argument("--cpu-selftest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.cpu_selftest:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        t0 = time.perf_counter()
        rows = part_a("cpu", selftest=True)
        print_a(rows)
        ok = all(r["ok"] for r in rows)
        print(f"\ncpu selftest: {'PASS' if ok else 'FAIL'} ({time.perf_counter() - t0:.1f} s)")
        return 0 if ok else 1

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device")
        return 2

    t_start = time.perf_counter()
    report = dict(device=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(), torch=torch.__version__,
                  host=platform.node())
    try:
        import gsplat

        report["gsplat"] = gsplat.__version__
    except Exception as err:  # noqa: BLE001
        report["gsplat"] = f"import failed: {err}"
    print(f"gpu_check on {report['device']} x{report['gpus']}, torch {report['torch']}, gsplat {report['gsplat']}")

    try:
        report["a_renderer"] = part_a("cuda", selftest=False)
    except Exception as err:  # noqa: BLE001
        report["a_renderer"] = [dict(scene="-", item="all", ok=False, tol="-", max_abs=float("nan"),
                                     mean_abs=float("nan"), error=f"{type(err).__name__}: {err}",
                                     traceback=traceback.format_exc()[-4000:])]
        print(traceback.format_exc())
    print_a(report["a_renderer"])

    if not args.skip_train:
        report["b_training"] = part_b("cuda")
        print("\n(b) re10k training step (B=2, L=7, G=6, 256 px, bf16 autocast, checkpointing, AdamW)")
        print(f"{'stage':6s} {'params M':>9s} {'lpips':6s} {'step s':>8s} {'clips/s':>8s} {'peak GiB':>9s} result")
        for r in report["b_training"]:
            print(f"{r['stage']:<6d} {fmt(r.get('params_M', float('nan'))):>9s} {str(r['lpips']):6s} "
                  f"{fmt(r.get('step_s_median', float('nan'))):>8s} {fmt(r.get('clips_per_s', float('nan'))):>8s} "
                  f"{fmt(r.get('max_memory_allocated_GiB', float('nan'))):>9s} "
                  f"{'PASS' if r['ok'] else 'FAIL ' + r.get('error', '')[:200]}")

    if not args.skip_ddp:
        print("\n(c) DDP")
        try:
            report["c_ddp"] = part_c()
        except Exception as err:  # noqa: BLE001
            report["c_ddp"] = dict(skipped=False, ok=False, error=f"{type(err).__name__}: {err}",
                                   traceback=traceback.format_exc()[-4000:])
        c = report["c_ddp"]
        if not c.get("skipped"):
            for r in c.get("ranks", []):
                print(f"rank {r['rank']}: step s {[fmt(x) for x in r.get('step_s', [])]} "
                      f"param checksum diff {r.get('max_param_checksum_diff_across_ranks')} "
                      f"{'PASS' if r.get('ok') else 'FAIL ' + r.get('error', '')[:200]}")
            if "error" in c:
                print("DDP FAIL:", c["error"])

    report["wall_s"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    checks = [r["ok"] for r in report["a_renderer"]] + [r["ok"] for r in report.get("b_training", [])]
    if report.get("c_ddp") and not report["c_ddp"].get("skipped"):
        checks.append(bool(report["c_ddp"].get("ok")))
    print(f"\n{sum(checks)}/{len(checks)} checks passed in {report['wall_s']:.0f} s; wrote {args.out / 'gpu_check.json'}")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
