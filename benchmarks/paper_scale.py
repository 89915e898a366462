"""Paper scale on paper: parameters, FLOPs per clip, activation memory and projected H100 throughput of the re10k
preset (stages 1 and 2), beside the figures of docs/method.md (/work/shared/spec/method.md).

    python benchmarks/paper_scale.py [--out benchmarks/results/paper_scale] [--mfu 0.4]

Everything is measured on the ``meta`` device: the real model, at the real sizes (7 views, 256 px), runs forward
and backward with shapes only, so FLOPs (``torch.utils.flop_counter.FlopCounterMode``) and saved-for-backward
bytes (``torch.autograd.graph.saved_tensors_hooks``) are exact counts of the graph, with no arithmetic done and no
scaling from smaller runs. What that needs:
  * ``torch.autocast`` refuses device type "meta" even when disabled: inside this script it maps "meta" to
    "cpu" (autocast stays off). bf16 is modelled by casting the model and inputs to bfloat16 instead.
  * attention goes through aten's memory-efficient SDPA kernel (what a GPU runs in bf16: flash or
    mem-efficient, both save q, k, v, out and the log-sum-exp, O(tokens)); PyTorch's meta fallback would
    otherwise materialise the [tokens x tokens] matrices.
  * the inputs of gradient-checkpointed blocks are held by the checkpoint, not by saved-tensor hooks: they are
    counted by wrapping ``torch.utils.checkpoint.checkpoint``.
Saved tensors are de-duplicated by tensor identity (views count once) and parameters are excluded (they are
model state, listed separately: fp32 weights + fp32 grads + 2 AdamW moments = 16 bytes per parameter).

Stage 2 = stage 1's graph + the Gaussian head (measured the same way, on the G context frames) + the splat
renderer, which is NOT counted: gsplat's CUDA kernels are not matmuls (FlopCounterMode does not see them) and
its memory depends on the per-tile lists of the predicted splats. Depth-projection and smoothness losses
(grid_sample, finite differences) are element-wise and are also not counted.

Per-clip numbers: the worst case of the paper's sampler (L = 7 views, G = 6 context frames), a fixed L = 7,
G = 3, and the expectation over the sampler (L ~ U{2..7}, G ~ U{1..min(6, L-1)}; docs/method.md §2.1).
Projected H100 step time = FLOPs of one per-GPU batch (2 clips, model FLOPs, no recomputation) / (MFU x 989 TFLOP/s
dense bf16); the recomputation of checkpointed blocks is reported as hardware FLOPs beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

H100_BF16_DENSE = 989.4e12
PAPER = dict(
    params_M=240.0, params_breakdown_M=dict(frame_vit=106.0, camera_vit=43.5, context_vit=43.5, lvsm=43.5,
                                            gaussian_head=4.8),
    batch_per_gpu=2, grad_accumulation=4, gpus=8, clips_per_update=64, updates_per_stage=200_000,
    updates_note="[unverified] 1.6M scheduler calls / 8 processes (method.md §2.3)", epochs_per_stage=200,
    train_clips_re10k=67_000, precision="bf16 autocast + gradient checkpointing", gpu_type="not stated",
    wall_clock="not stated",
)


# ---------------------------------------------------------------------------------------------------------------
# meta-device shims (this process only)

_Autocast = torch.autocast


class _MetaAutocast(_Autocast):
    def __init__(self, device_type, *args, **kwargs):
        super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)


def _efficient_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    assert attn_mask is None and dropout_p == 0.0 and not is_causal
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=scale)[0]


CKPT_INPUTS: list = []
_checkpoint = torch.utils.checkpoint.checkpoint


def _recording_checkpoint(fn, *args, **kwargs):
    CKPT_INPUTS.extend(a for a in args if isinstance(a, torch.Tensor))
    return _checkpoint(fn, *args, **kwargs)


def install_shims():
    torch.autocast = _MetaAutocast
    F.scaled_dot_product_attention = _efficient_sdpa
    torch.utils.checkpoint.checkpoint = _recording_checkpoint


# ---------------------------------------------------------------------------------------------------------------


def preset_facts():
    from pensieve_ns.method_configs import stage1_config

    t = stage1_config("re10k")
    acc = (getattr(t, "gradient_accumulation_steps", None) or {}).get("model", 1)
    return dict(batch_size=t.pipeline.datamanager.batch_size, accumulation=acc, max_num_iterations=t.max_num_iterations)


def build_stage2_model():
    from pensieve_ns.method_configs import stage2_config

    cfg = stage2_config("re10k").pipeline.model
    cfg.lpips_weight = 0.0  # LPIPS-VGG is a frozen loss network: not counted (its FLOPs are small beside the ViTs)
    model = cfg.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    return model, cfg


def param_counts(model):
    count = lambda *mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    e = model.encoder
    parts = {
        "encoder.frame_vit": count(e.frame_vit),
        "encoder.camera_vit (+bridge)": count(e.camera_vit, e.camera_bridge),
        "encoder.context_vit (+bridge)": count(e.context_vit, e.context_bridge),
        "camera_head": count(model.camera_head),
        "lvsm": count(model.lvsm),
        "gaussian_head": count(model.gaussian_head),
    }
    parts["encoder (total)"] = count(e)
    parts["stage 1 total"] = parts["encoder (total)"] + parts["camera_head"] + parts["lvsm"]
    parts["stage 2 total"] = parts["stage 1 total"] + parts["gaussian_head"]
    return parts


def set_checkpointing(model, on: bool):
    for m in model.modules():
        if isinstance(getattr(m, "checkpointing", None), bool):
            m.checkpointing = on


class SavedBytes:
    """Bytes of distinct non-parameter tensors saved for backward while active (plus checkpoint inputs)."""

    def __init__(self, params):
        self.param_ids = {id(p) for p in params}
        self.seen, self.keep, self.bytes = set(), [], 0

    def add(self, t):
        base = t._base if t._base is not None else t
        if id(base) in self.param_ids or id(t) in self.param_ids or id(base) in self.seen:
            return
        self.seen.add(id(base))
        self.keep.append(base)  # keep alive so ids are not reused
        self.bytes += base.numel() * base.element_size()

    def pack(self, t):
        self.add(t)
        return t


def make_batch(B, L, G, size, dtype):
    context = torch.arange(G)[None].expand(B, G).contiguous()
    weights = torch.ones(B, L)
    weights[:, :G] = 0.1
    return {"images": torch.empty(B, L, 3, size, size, device="meta", dtype=dtype),
            "context": context.to("meta"), "loss_weights": weights.to("meta", dtype)}


def measure_stage1(model, B, L, G, size, ckpt, dtype):
    """Forward + backward of the stage-1 graph (get_outputs without the Gaussians, L2 loss)."""
    set_checkpointing(model, ckpt)
    gh = model.gaussian_head
    model.gaussian_head = None
    CKPT_INPUTS.clear()
    saved = SavedBytes(model.parameters())
    counter = FlopCounterMode(display=False)
    try:
        batch = make_batch(B, L, G, size, dtype)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                out = model(batch)
                loss = sum(model.get_loss_dict(out, batch).values())
            for t in CKPT_INPUTS:
                saved.add(t)
            fwd_flops = counter.get_total_flops()
            loss.backward()
    finally:
        model.gaussian_head = gh
        model.zero_grad(set_to_none=True)
    total = counter.get_total_flops()
    return dict(flops_total=total, flops_fwd=fwd_flops, saved_bytes=saved.bytes)


def measure_gaussian_head(model, B, G, size, dtype):
    head = model.gaussian_head
    saved = SavedBytes(head.parameters())
    counter = FlopCounterMode(display=False)
    feats = torch.empty(B, G, 21, size, size, device="meta", dtype=dtype, requires_grad=True)
    images = torch.empty(B, G, 3, size, size, device="meta", dtype=dtype)
    c2w = torch.eye(4, dtype=dtype).to("meta").expand(B, G, 4, 4).requires_grad_(True)
    K = torch.eye(3, dtype=dtype).to("meta").expand(B, G, 3, 3).requires_grad_(True)
    with counter:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            gs = head(feats, images, c2w, K)
            loss = sum(x.sum() for x in gs)
        fwd = counter.get_total_flops()
        loss.backward()
    head.zero_grad(set_to_none=True)
    return dict(flops_total=counter.get_total_flops(), flops_fwd=fwd, saved_bytes=saved.bytes)


def sampler_cases():
    """(L, G, probability) of the paper's per-step sampler."""
    cases = []
    for L in range(2, 8):
        gmax = min(6, L - 1)
        cases += [(L, G, 1.0 / 6 / gmax) for G in range(1, gmax + 1)]
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/paper_scale")
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(2)
    install_shims()
    t_start = time.perf_counter()

    model, cfg = build_stage2_model()
    params = param_counts(model)
    model = model.to("meta").train()
    B, S = 2, args.size  # the paper's per-GPU batch, measured directly (meta: free)

    # Memory and FLOPs at the worst case and L=7,G=3, fp32 and bf16, checkpointing off and on.
    fixed = {}
    for L, G in ((7, 6), (7, 3)):
        for ckpt in (False, True):
            for dt_name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                m = model.to(dt)
                s1 = measure_stage1(m, B, L, G, S, ckpt, dt)
                gh = measure_gaussian_head(m, B, G, S, dt)
                fixed[f"L{L}_G{G}_ckpt{int(ckpt)}_{dt_name}"] = dict(stage1=s1, gaussian_head=gh)
    model = model.to(torch.float32)

    # FLOPs expectation over the sampler (fp32 counts = bf16 counts), checkpointing off (model FLOPs) and on.
    expect = {}
    for ckpt in (False, True):
        e1 = egh = 0.0
        for L, G, p in sampler_cases():
            e1 += p * measure_stage1(model, 1, L, G, S, ckpt, torch.float32)["flops_total"]
            egh += p * measure_gaussian_head(model, 1, G, S, torch.float32)["flops_total"]
        expect[f"ckpt{int(ckpt)}"] = dict(stage1=e1, stage2=e1 + egh)

    peak = H100_BF16_DENSE * args.mfu
    state_bytes = {st: 16 * params[f"stage {st} total"] for st in (1, 2)}
    rows = {}
    for st in (1, 2):
        r = dict(params_M=params[f"stage {st} total"] / 1e6)
        for case, (L, G) in (("worst L7 G6", (7, 6)), ("L7 G3", (7, 3))):
            k0, k1 = f"L{L}_G{G}_ckpt0", f"L{L}_G{G}_ckpt1"

            def get(key, dt, field):
                d = fixed[f"{key}_{dt}"]
                v = d["stage1"][field]
                return v + (d["gaussian_head"][field] if st == 2 else 0)

            flops_clip = get(k0, "fp32", "flops_total") / B
            r[case] = dict(
                tflops_per_clip=flops_clip / 1e12,
                tflops_per_clip_with_recompute=get(k1, "fp32", "flops_total") / B / 1e12,
                act_GiB_per_gpu_b2=dict(
                    no_ckpt_fp32=get(k0, "fp32", "saved_bytes") / 2**30, no_ckpt_bf16=get(k0, "bf16", "saved_bytes") / 2**30,
                    ckpt_fp32=get(k1, "fp32", "saved_bytes") / 2**30, ckpt_bf16=get(k1, "bf16", "saved_bytes") / 2**30),
                step_s_h100=B * flops_clip / peak,
                clips_per_s_h100=peak / flops_clip,
            )
        fe = expect["ckpt0"][f"stage{st}"]
        r["sampler mean"] = dict(tflops_per_clip=fe / 1e12,
                                 tflops_per_clip_with_recompute=expect["ckpt1"][f"stage{st}"] / 1e12,
                                 step_s_h100=B * fe / peak, clips_per_s_h100=peak / fe)
        clips_stage = PAPER["clips_per_update"] * PAPER["updates_per_stage"]
        r["h100_days_per_stage_at_sampler_mean"] = clips_stage / r["sampler mean"]["clips_per_s_h100"] / 86400
        r["model_state_GiB"] = state_bytes[st] / 2**30
        rows[f"stage{st}"] = r

    results = dict(
        preset=dict(name="re10k", **preset_facts()), image_size=S, per_gpu_batch=B, mfu=args.mfu, h100_bf16_dense_flops=H100_BF16_DENSE,
        params=params, stages=rows, raw_fixed=fixed, raw_sampler_expectation=expect, paper=PAPER,
        notes=[
            "FLOPs: FlopCounterMode counts matmuls, convolutions and attention (2 FLOPs per multiply-add); "
            "element-wise ops, the splat renderer and the depth losses are not counted.",
            "Activation memory: bytes saved for backward (distinct tensors, parameters excluded) for one per-GPU batch "
            "of 2 clips, measured directly at batch 2; bf16 = model and inputs cast to bf16 (a lower bound for "
            "autocast, which keeps LayerNorm/residual tensors in fp32); fp32 = upper bound.",
            "Stage 2 memory/FLOPs exclude the renderer (gsplat) and the loss network LPIPS-VGG.",
            "Step time = model FLOPs of 2 clips / (MFU x 989.4 TFLOP/s); clips/s = 2 / step time.",
        ],
        wall_s=time.perf_counter() - t_start,
    )

    # Markdown table
    P = PAPER
    lines = ["| quantity | stage 1 | stage 2 | paper (method.md) |", "| --- | --- | --- | --- |"]
    add = lines.append
    s1, s2 = rows["stage1"], rows["stage2"]
    add(f"| parameters (M) | {s1['params_M']:.1f} | {s2['params_M']:.1f} | ≈{P['params_M']:.0f} (stage 2, incl. GS head ≈4.8) |")
    for name, key in (("encoder.frame_vit", "encoder.frame_vit"), ("camera ViT + bridge", "encoder.camera_vit (+bridge)"),
                      ("context ViT + bridge", "encoder.context_vit (+bridge)"), ("camera head", "camera_head"),
                      ("LVSM", "lvsm"), ("Gaussian head", "gaussian_head")):
        paper_v = {"encoder.frame_vit": "≈106", "encoder.camera_vit (+bridge)": "≈43.5",
                   "encoder.context_vit (+bridge)": "≈43.5", "lvsm": "≈43.5", "gaussian_head": "≈4.8"}.get(key, "–")
        v = params[key] / 1e6
        add(f"| · {name} (M) | {'–' if key == 'gaussian_head' else f'{v:.2f}'} | {v:.2f} | {paper_v} |")
    for case in ("worst L7 G6", "L7 G3", "sampler mean"):
        add(f"| TFLOP per clip fwd+bwd, {case}, 256 px | {s1[case]['tflops_per_clip']:.1f} "
            f"({s1[case]['tflops_per_clip_with_recompute']:.1f} with recompute) | {s2[case]['tflops_per_clip']:.1f} "
            f"({s2[case]['tflops_per_clip_with_recompute']:.1f}) + renderer | not stated |")
    for case in ("worst L7 G6", "L7 G3"):
        a1, a2 = s1[case]["act_GiB_per_gpu_b2"], s2[case]["act_GiB_per_gpu_b2"]
        add(f"| activations GiB/GPU (batch 2, {case}), no checkpointing, bf16..fp32 | {a1['no_ckpt_bf16']:.1f}..{a1['no_ckpt_fp32']:.1f} "
            f"| {a2['no_ckpt_bf16']:.1f}..{a2['no_ckpt_fp32']:.1f} + renderer | – |")
        add(f"| activations GiB/GPU (batch 2, {case}), checkpointing, bf16..fp32 | {a1['ckpt_bf16']:.1f}..{a1['ckpt_fp32']:.1f} "
            f"| {a2['ckpt_bf16']:.1f}..{a2['ckpt_fp32']:.1f} + renderer | checkpointing on (§2.3) |")
    add(f"| model state GiB (fp32 w + g + AdamW) | {s1['model_state_GiB']:.1f} | {s2['model_state_GiB']:.1f} | – |")
    for case in ("worst L7 G6", "L7 G3", "sampler mean"):
        add(f"| H100 step s (batch 2, {case}) at {args.mfu:.0%} MFU | {s1[case]['step_s_h100']:.3f} | "
            f"{s2[case]['step_s_h100']:.3f} + renderer | – |")
        add(f"| clips/s per H100 ({case}) | {s1[case]['clips_per_s_h100']:.1f} | {s2[case]['clips_per_s_h100']:.1f} (upper bound) | – |")
    add(f"| H100-days per stage (64 clips × 200k updates, sampler mean) | {s1['h100_days_per_stage_at_sampler_mean']:.1f} | "
        f"{s2['h100_days_per_stage_at_sampler_mean']:.1f}+ | 8 GPUs, type and days not stated |")
    pf = results["preset"]
    add(f"| re10k preset: batch per GPU / accumulation / iterations | {pf['batch_size']} / {pf['accumulation']} / "
        f"{pf['max_num_iterations']} (= {pf['max_num_iterations'] // max(pf['accumulation'], 1)} updates) | same | "
        f"{P['batch_per_gpu']} / {P['grad_accumulation']} / on {P['gpus']} GPUs = {P['clips_per_update']} clips per update |")
    add(f"| updates per stage | – | – | ≈200k [unverified], 200 epochs of ≈67k clips |")
    table = "\n".join(lines)
    print(table)
    print(f"\n(measured on the meta device in {results['wall_s']:.0f} s; notes in results.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "table.md").write_text(table + "\n\nNotes:\n" + "\n".join(f"- {n}" for n in results["notes"]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
