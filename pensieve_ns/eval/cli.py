"""pensieve-eval: the paper's evaluation protocols on clips with ground-truth cameras (docs/method.md §3).

    pensieve-eval --load-config outputs/.../config.yml --data PATH [--index INDEX.json]
                  [--mode target-aware|target-aligned] [--tto-steps 40] --output OUT.json

PATH is anything the training reader takes that carries cameras: pixelSplat-style chunks (RE10K/DL3DV, with
``--index`` for the evaluation index), a nerfstudio scene or a folder of them (generated clips). Without an index,
each clip gives one sample by the run's own rule (``sampler.eval_specs``: ``eval_views`` frames at a constant gap,
centred in the clip; first and last are context), so the target-aware numbers equal ``ns-eval``'s on the same
data. Writes OUT.json (per-scene rows and a summary), prints a table, and saves side-by-side PNGs (ground truth,
LVSM, Gaussians, |error|) of the first scenes next to OUT.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from pensieve_ns.errors import PensieveInputError, exit_with_error
from pensieve_ns.eval.protocol import MODES, Mode, evaluate_sample, summarise_rows

PROG = "pensieve-eval"


@dataclass
class EvalConfig:
    load_config: Path
    """config.yml of a pensieve-stage1 or pensieve-stage2 run."""
    data: Path
    """Clips with ground-truth cameras: chunks, a nerfstudio scene, or a folder of scenes."""
    output: Path
    """The JSON to write (figures go to <output stem>_images/)."""
    index: Optional[Path] = None
    """pixelSplat-style evaluation index ({scene: {"context": [...], "target": [...]} | null})."""
    mode: Mode = "target-aware"
    tto_steps: int = 40
    """Target-pose refinement steps in target-aligned mode (0: none); reported apart from the feed-forward time."""
    tto_lr: float = 0.05
    lpips: bool = True
    """Compute LPIPS-VGG (needs its weights; without them LPIPS is reported as absent)."""
    max_scenes: Optional[int] = None
    num_images: int = 3
    """Scenes that get a side-by-side PNG."""
    reader: str = "auto"


def load_lpips() -> tuple:
    """(LPIPS function on [T, 3, H, W] images in [0, 1], or None; a note saying which)."""
    from pensieve_ns.eval.metrics import lpips_metric
    from pensieve_ns.losses import load_lpips_vgg

    try:
        net = load_lpips_vgg()
    except PensieveInputError as err:
        return None, f"absent: {err}"
    return lpips_metric(net), "lpips-vgg"


def figure(images: Dict[str, torch.Tensor]) -> np.ndarray:
    """Rows per target: ground truth | LVSM | Gaussians | |error| of the last branch (x3), uint8 [T*H, k*W, 3]."""
    cols = [images["gt"]] + [images[k] for k in ("rgb", "rgb_gs") if k in images]
    cols.append(((cols[-1].clamp(0, 1) - images["gt"]).abs() * 3).clamp(0, 1))
    grid = torch.cat([torch.cat(list(c.clamp(0, 1)), dim=1) for c in cols], dim=2)  # [3, T*H, k*W]
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def evaluate(cfg: EvalConfig, progress=None) -> Dict:
    from pensieve_ns.checkpoints import load_run
    from pensieve_ns.data.dataset import ClipFrames, ClipSampleDataset
    from pensieve_ns.data.sampler import eval_specs, load_eval_index
    from pensieve_ns.data.sources import find_clips

    if cfg.mode not in MODES:
        raise PensieveInputError(None, f"--mode must be one of {', '.join(MODES)}")
    if cfg.tto_steps < 0:
        raise PensieveInputError(None, "--tto-steps must be >= 0")
    model, trainer_config, ckpt = load_run(Path(cfg.load_config), ("pensieve-stage1", "pensieve-stage2"), PROG)
    dm = trainer_config.pipeline.datamanager
    clips = find_clips(cfg.data, cfg.reader)
    with_gt = [c for c in clips if c.gt is not None]
    if not with_gt:
        raise PensieveInputError(cfg.data, "has no ground-truth cameras; evaluation needs clips with cameras")
    frames = ClipFrames(with_gt, tuple(dm.image_size), 1 << 30)
    index = load_eval_index(cfg.index) if cfg.index is not None else None
    specs = eval_specs([c.num_frames for c in with_gt], dm.sampler, [c.name for c in with_gt], index)
    specs = specs[: cfg.max_scenes] if cfg.max_scenes else specs
    if not specs:
        raise PensieveInputError(cfg.index or cfg.data, "no evaluation sample could be drawn")
    if cfg.mode == "target-aligned" and any(len(s.frames) - len(s.context) < 1 or len(s.context) < 2 for s in specs):
        raise PensieveInputError(cfg.index or cfg.data, "target-aligned mode needs 2+ context frames and 1+ target per scene")
    lpips_fn, lpips_note = load_lpips() if cfg.lpips else (None, "absent: disabled (--no-lpips)")
    dataset = ClipSampleDataset(frames)
    figures = cfg.output.parent / f"{cfg.output.stem}_images"
    rows, pairs = [], []
    task = progress.add_task("evaluating", total=len(specs)) if progress is not None else None
    for k, spec in enumerate(specs):
        batch = {key: v[None] for key, v in dataset[spec].items()}
        row, pair, images = evaluate_sample(model, batch, cfg.mode, cfg.tto_steps, cfg.tto_lr, lpips_fn)
        rows.append({"scene": with_gt[spec.clip].name, **row})
        pairs.append(pair)
        if k < cfg.num_images:
            from PIL import Image

            figures.mkdir(parents=True, exist_ok=True)
            Image.fromarray(figure(images)).save(figures / f"{k:03d}_{with_gt[spec.clip].name.replace('/', '_')}.png")
        if task is not None:
            progress.update(task, advance=1)
    result = {
        "config": str(cfg.load_config), "checkpoint": str(ckpt), "data": str(cfg.data), "mode": cfg.mode,
        "tto_steps": cfg.tto_steps if cfg.mode == "target-aligned" else 0, "lpips": lpips_note,
        "image_size": list(dm.image_size), "device": "cpu", "threads": torch.get_num_threads(),
        "labelled_synthetic_prior": model.config.labelled_prior or None,
        "summary": summarise_rows(rows, pairs), "scenes": rows,
    }
    tmp = cfg.output.with_name(cfg.output.name + ".tmp")
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, cfg.output)
    return result


def table(result: Dict) -> str:
    s = result["summary"]
    fmt = lambda v, f="{:.3f}": "absent" if v is None else f.format(v)  # noqa: E731
    prior = result.get("labelled_synthetic_prior")
    lines = [f"{PROG}: {s['scenes']} scenes, {result['mode']}, LPIPS {result['lpips'].split(':')[0]}"
             + (f"\nLABELLED SYNTHETIC PRIOR: {prior}" if prior else ""),
             "| branch | PSNR | SSIM | LPIPS |", "|---|---|---|---|"]
    for name, label in (("lvsm", "LVSM"), ("gs", "Gaussians")):
        if f"psnr_{name}" in s:
            lines.append(f"| {label} | {fmt(s[f'psnr_{name}'], '{:.2f}')} | {fmt(s[f'ssim_{name}'])} | {fmt(s[f'lpips_{name}'])} |")
    lines.append(f"| blend of context (baseline) | {s['psnr_blend_context']:.2f} | | |")
    lines += ["", "| Racc@5/15/30 | Tacc@5/15/30 | AUC@5/10/20 | ATE (rel) | focal err | feed-forward s | refinement s |",
              "|---|---|---|---|---|---|---|"]
    acc = lambda p: "/".join(f"{s[f'{p}@{t}']:.2f}" for t in (5, 15, 30))  # noqa: E731
    auc = "/".join(f"{s[f'AUC@{t}']:.2f}" for t in (5, 10, 20))
    lines.append(f"| {acc('Racc')} | {acc('Tacc')} | {auc} | {fmt(s.get('ate_rel'))} | {s['focal_err']:.3f} | "
                 f"{s['feed_forward_s']:.3f} | {fmt(s.get('tto_s'))} |")
    lines.append(f"| identity: {acc('identity_Racc')} | {acc('identity_Tacc')} | "
                 + "/".join(f"{s[f'identity_AUC@{t}']:.2f}" for t in (5, 10, 20)) + " | | | | |")
    return "\n".join(lines)


def main(cfg: EvalConfig) -> None:
    import warnings

    from rich.progress import Progress

    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    try:
        with Progress(transient=True) as progress:
            result = evaluate(cfg, progress)
    except PensieveInputError as err:
        exit_with_error(err, PROG)
    print(table(result))
    print(f"{PROG}: wrote {cfg.output} in {time.perf_counter() - start:.0f} s", file=sys.stdout)


def entrypoint() -> None:
    import tyro

    main(tyro.cli(EvalConfig, description=__doc__.split("\n")[0]))


if __name__ == "__main__":
    entrypoint()
