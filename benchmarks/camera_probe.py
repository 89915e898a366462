"""Can the camera path learn relative pose at all? A fast supervised probe (issue 5 diagnosis).

Trains only a pose predictor, with the supervised camera loss of the labelled synthetic prior
(``losses.camera_prior_loss``), on generated training clips, and measures relative rotation on held-out generated
clips against the identity baseline. No image loss, no renderer: if a variant cannot learn poses here, it cannot
learn them self-supervised either.

Variants (``--variants``):
  spec      PensieveEncoder (per-frame ViT -> camera ViT over all frames) + CameraHead (method.md §1.2; residual
            quaternion): 16 learned channels, spatial mean, one linear layer.
  mlp       the same encoder; a 2-layer MLP on the per-frame mean of F_cam instead of the linear head.
  tokens    the same encoder; the camera ViT's last tokens (width D, before the 16-channel unpatchify head),
            averaged per frame, then a 2-layer MLP.
  relative  the same encoder and token readout, but each frame's tokens are concatenated with the first frame's
            (the reference of the loss) before the MLP: relative readout, the first frame is the identity.
  cnn_pair  control: a small CNN on [first frame, frame j] stacked on channels -> relative pose of frame j (the
            classic pose network). No transformer.
  flow_pair the model's ``PairCameraHead`` (camera_head="pair_flow"): first frame and frame j through a shared CNN,
            their correlation volume and soft-argmax flow -> relative pose of frame j. ``--save`` writes its weights
            for ``camera_head_weights`` (the labelled prior). ``--warmup-kind pan``: a curriculum, the first
            ``--warmup-steps`` on pure-rotation clips (LEARNING.md exp 22).

    python benchmarks/camera_probe.py --steps 1500 --out benchmarks/results/camera_probe/exp8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.cameras import axis_angle_to_matrix, intrinsics_matrix  # noqa: E402
from pensieve_ns.data.synthetic import generate_clip  # noqa: E402
from pensieve_ns.eval.poses import relative_pose_errors, summarise  # noqa: E402
from pensieve_ns.losses import camera_prior_loss  # noqa: E402
from pensieve_ns.model.camera_head import CameraHead, PairCameraHead, focal_from_raw  # noqa: E402
from pensieve_ns.model.encoder import PensieveEncoder  # noqa: E402
from pensieve_ns.model.vit import ViTSize  # noqa: E402

VARIANTS = ("spec", "mlp", "tokens", "relative", "cnn_pair", "flow_pair")


ROT_SCALE = 1.0
"""Radians per unit of the axis-angle outputs (``--rot-scale``; pi/180: the network outputs degrees)."""


def raw_to_cameras(raw: Tensor, H: int, W: int, first_is_identity: bool = False):
    """raw [B, L, 7]: axis-angle (3, times ROT_SCALE), centre (3), focal (1) -> c2w_opencv [B, L, 4, 4],
    K [B, L, 3, 3]."""
    B, L = raw.shape[:2]
    c2w = torch.zeros(B, L, 4, 4, dtype=raw.dtype)
    c2w[..., :3, :3] = axis_angle_to_matrix(raw[..., :3] * ROT_SCALE)
    c2w[..., :3, 3] = raw[..., 3:6]
    c2w[..., 3, 3] = 1.0
    if first_is_identity:
        c2w = torch.cat([torch.eye(4, dtype=raw.dtype).expand(B, 1, 4, 4), c2w[:, 1:]], dim=1)
    f = focal_from_raw(raw[..., 6], W).mean(dim=1, keepdim=True).expand(B, L)
    K = intrinsics_matrix(f, f * H / W, torch.full_like(f, W / 2), torch.full_like(f, H / 2))
    return c2w, K


ZERO_INIT = True
"""Zero-initialise the last layer of every readout MLP (``--head-init``): identity cameras at the start."""


READOUT_HIDDEN_LAYERS = 2
"""Hidden layers of every readout MLP (``--readout-layers``)."""


def mlp(i: int, o: int, hidden: int = 256) -> nn.Sequential:
    last = nn.Linear(hidden, o)
    if ZERO_INIT:
        nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
    layers = [nn.Linear(i, hidden), nn.GELU()]
    for _ in range(READOUT_HIDDEN_LAYERS - 1):
        layers += [nn.Linear(hidden, hidden), nn.GELU()]
    return nn.Sequential(*layers, last)


class EncoderProbe(nn.Module):
    def __init__(self, variant: str, size: ViTSize, patch: int):
        super().__init__()
        self.variant = variant
        self.encoder = PensieveEncoder(size, size, size, patch)
        self._tokens: List[Tensor] = []
        self.encoder.camera_vit.head_norm.register_forward_hook(lambda m, i, o: self._tokens.append(o))
        if variant == "spec":
            self.head = CameraHead(21, 128, quaternion="residual")
        elif variant == "mlp":
            self.head = mlp(21, 7)
        elif variant == "tokens":
            self.head = mlp(size.dim, 7)
        else:
            self.head = mlp(2 * size.dim, 7)

    def forward(self, images: Tensor):
        B, L, _, H, W = images.shape
        self._tokens.clear()
        f_cam, _ = self.encoder(images, torch.zeros(B, 1, dtype=torch.long))
        if self.variant == "spec":
            c2w, K, _ = self.head(f_cam)
            return c2w, K
        if self.variant == "mlp":
            return raw_to_cameras(self.head(f_cam.mean(dim=(-2, -1))), H, W)
        tokens = self._tokens[0].view(B, L, -1, self._tokens[0].shape[-1]).mean(dim=2)  # [B, L, D]
        if self.variant == "tokens":
            return raw_to_cameras(self.head(tokens), H, W)
        pair = torch.cat([tokens, tokens[:, :1].expand_as(tokens)], dim=-1)
        return raw_to_cameras(self.head(pair), H, W, first_is_identity=True)


class PairCNN(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        c = width
        layers, cin = [], 6
        for cout in (c, c, 2 * c, 2 * c, 4 * c):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GELU()]
            cin = cout
        self.conv = nn.Sequential(*layers)
        self.head = mlp(cin, 7)

    def forward(self, images: Tensor):
        B, L, _, H, W = images.shape
        pairs = torch.cat([images[:, :1].expand_as(images), images], dim=2).flatten(0, 1)
        feats = self.conv((pairs - 0.45) / 0.226).mean(dim=(-2, -1)).view(B, L, -1)
        return raw_to_cameras(self.head(feats), H, W, first_is_identity=True)


def make_clips(
    n: int, frames: int, size: int, split: str, seed: int, cache: Optional[Path] = None, path_kind: Optional[str] = None
):
    """n generated clips as (frames [F, 3, S, S], c2w_opencv [F, 4, 4], K [3, 3]); ``cache`` keeps them on disk
    (keyed by every argument) so several probes share one generation. ``path_kind``: one camera path kind only."""
    kind = f"_{path_kind}" if path_kind else ""
    path = cache / f"{split}_{n}x{frames}_{size}px_seed{seed}{kind}.pt" if cache else None
    if path is not None and path.exists():
        return torch.load(path)
    clips = [generate_clip(seed + k, frames, size, split, path_kind) for k in range(n)]
    out = [
        (torch.from_numpy(c.frames).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(c.c2w_opencv).float(),
         torch.from_numpy(c.K).float())
        for c in clips
    ]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return out


def sample_batch(clips, batch: int, views: int, max_gap: int, rng: np.random.Generator):
    """images [B, V, 3, S, S], c2w [B, V, 4, 4], K [B, V, 3, 3] and the frame numbers [B, V] (shuffled order)."""
    imgs, c2ws, Ks, frame_ids = [], [], [], []
    for _ in range(batch):
        frames, c2w, K = clips[int(rng.integers(len(clips)))]
        gaps = rng.integers(1, max_gap + 1, views - 1)
        start = int(rng.integers(0, len(frames) - gaps.sum()))
        idx = start + np.concatenate([[0], np.cumsum(gaps)])
        idx = idx[rng.permutation(views)]  # shuffled, as in training (method.md §2.1)
        imgs.append(frames[idx]), c2ws.append(c2w[idx]), Ks.append(K.expand(views, 3, 3))
        frame_ids.append(torch.from_numpy(idx))
    return torch.stack(imgs), torch.stack(c2ws), torch.stack(Ks), torch.stack(frame_ids)


@torch.no_grad()
def evaluate(model: nn.Module, clips, views: int, gap: int) -> Dict[str, float]:
    model.eval()
    pairs, ident, focal = [], [], []
    for frames, c2w, K in clips:
        idx = np.arange(views) * gap
        x = frames[idx][None]
        c2w_pred, K_pred = model(x, torch.from_numpy(idx)[None]) if isinstance(model, FlowPairProbe) else model(x)
        pairs.append(relative_pose_errors(c2w_pred[0].numpy(), c2w[idx].numpy()))
        ident.append(relative_pose_errors(np.tile(np.eye(4), (views, 1, 1)), c2w[idx].numpy()))
        focal.append(abs(float(K_pred[0, 0, 0, 0]) / float(K[0, 0]) - 1))
    model.train()
    s, i = summarise(pairs), summarise(ident)
    return {
        "Racc@5": s["Racc@5"], "Racc@15": s["Racc@15"], "rot_err_median": s["rot_err_median"],
        "Tacc@15": s["Tacc@15"], "pred_angle": s["pred_pair_angle_mean"], "true_angle": s["true_pair_angle_mean"],
        "angle_corr": s["angle_correlation"], "identity_Racc@5": i["Racc@5"], "identity_Racc@15": i["Racc@15"],
        "identity_rot_err_median": i["rot_err_median"], "focal_err": float(np.mean(focal)),
    }


class FlowPairProbe(nn.Module):
    def __init__(self, grid: int, symmetric: bool, chain: bool = False):
        super().__init__()
        self.head = PairCameraHead(grid, symmetric=symmetric)
        self.chain = chain

    def forward(self, images: Tensor, frame_index: Optional[Tensor] = None):
        c2w, K, _ = self.head(images, frame_index, chain=self.chain)
        return c2w, K


def run(variant: str, args, train, heldout, warmup=None) -> Dict:
    torch.manual_seed(args.seed)
    size = ViTSize(dim=args.dim, depth=args.depth, heads=4, mlp_hidden=4 * args.dim, hook=0)
    if variant == "cnn_pair":
        model = PairCNN()
    elif variant == "flow_pair":
        model = FlowPairProbe(args.pair_grid, args.pair_symmetric, args.pair_chain)
        if args.init is not None:  # continue from a saved head (e.g. on another sampling of the same clips)
            from pensieve_ns.checkpoints import load_camera_head_weights

            model.head.load_state_dict(load_camera_head_weights(args.init))
    else:
        model = EncoderProbe(variant, size, args.patch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    # --cosine: constant through the warm-up, then a cosine decay to 5 % (settles the late oscillation of exp 25).
    hold = args.warmup_steps if warmup is not None else 0
    decay = lambda s: 1.0 if s < hold else 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (s - hold) / max(1, args.steps - hold)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay if args.cosine else (lambda s: 1.0))
    rng = np.random.default_rng(args.seed)
    curve, t0 = [], time.time()
    for step in range(1, args.steps + 1):
        source = warmup if warmup is not None and step <= args.warmup_steps else train
        images, c2w, K, frame_ids = sample_batch(source, args.batch, args.views, args.max_gap, rng)
        pred_c2w, pred_K = model(images, frame_ids) if isinstance(model, FlowPairProbe) else model(images)
        loss = camera_prior_loss(pred_c2w, pred_K, c2w, K, rotation_weight=args.rot_weight,
                                 translation_weight=args.trans_weight, focal_weight=args.focal_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            m = evaluate(model, heldout, args.views, args.eval_gap)
            m.update(step=step, loss=loss.item(), minutes=(time.time() - t0) / 60)
            curve.append(m)
            print(f"[{variant}] step {step} loss {loss.item():.3f} Racc@5 {m['Racc@5']:.2f} (id {m['identity_Racc@5']:.2f})"
                  f" Racc@15 {m['Racc@15']:.2f} (id {m['identity_Racc@15']:.2f}) rot err {m['rot_err_median']:.1f}"
                  f" (id {m['identity_rot_err_median']:.1f}) angle {m['pred_angle']:.1f}/{m['true_angle']:.1f}"
                  f" focal {m['focal_err']:.2f} {m['minutes']:.1f} min", flush=True)
    params = sum(p.numel() for p in model.parameters())
    if variant == "flow_pair" and args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.head.state_dict(), args.save.with_suffix(".tmp"))
        args.save.with_suffix(".tmp").replace(args.save)
    return {"variant": variant, "params": params, "final": curve[-1], "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--max-gap", type=int, default=3)
    p.add_argument("--eval-gap", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--train-clips", type=int, default=200)
    p.add_argument("--eval-clips", type=int, default=24)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--rot-weight", type=float, default=1.0, help="weight of the rotation term of the camera loss")
    p.add_argument("--trans-weight", type=float, default=1.0, help="weight of the normalised-centre term")
    p.add_argument("--rot-scale", type=float, default=1.0, help="radians per unit of axis-angle output")
    p.add_argument("--head-init", choices=("zero", "default"), default="zero", help="last readout layer's init")
    p.add_argument("--focal-weight", type=float, default=1.0, help="weight of the log-focal term")
    p.add_argument("--readout-layers", type=int, default=2, help="hidden layers of the readout MLPs")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument("--pair-grid", type=int, default=16, help="flow_pair: correlation grid (frames at 2x pixels)")
    p.add_argument("--cosine", action="store_true", help="cosine learning-rate decay after the warm-up (to 5 %%)")
    p.add_argument("--pair-symmetric", action="store_true", help="flow_pair: each pair both ways (exact inverses)")
    p.add_argument("--pair-chain", action="store_true", help="flow_pair: each frame against its predecessor in time")
    p.add_argument("--warmup-kind", default=None, help="curriculum: the first --warmup-steps on this path kind only")
    p.add_argument("--warmup-steps", type=int, default=600)
    p.add_argument("--warmup-clips", type=int, default=600)
    p.add_argument("--init", type=Path, default=None, help="flow_pair: start from these PairCameraHead weights")
    p.add_argument("--save", type=Path, default=None, help="flow_pair: write the trained PairCameraHead weights here")
    p.add_argument("--cache", type=Path, help="folder to keep generated clips in (shared between probes)")
    p.add_argument("--data-only", action="store_true", help="generate (and cache) the clips, then stop")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    global ROT_SCALE, ZERO_INIT, READOUT_HIDDEN_LAYERS
    ROT_SCALE, ZERO_INIT, READOUT_HIDDEN_LAYERS = args.rot_scale, args.head_init == "zero", args.readout_layers
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    chunk = 1500  # cached in chunks of 1500 clips (seeds k..k+1499), which can be generated in parallel
    train = [c for k in range(0, args.train_clips, chunk)
             for c in make_clips(min(chunk, args.train_clips - k), args.frames, args.size, "train", k, args.cache)]
    heldout = make_clips(args.eval_clips, args.frames, args.size, "heldout", 10_000, args.cache)
    warmup = None
    if args.warmup_kind:
        warmup = make_clips(args.warmup_clips, args.frames, args.size, "train", 50_000, args.cache, args.warmup_kind)
    print(f"data: {len(train)} train / {len(heldout)} held-out clips in {time.time() - t0:.0f} s", flush=True)
    if args.data_only:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for v in args.variants:
        results.append(run(v, args, train, heldout, warmup))
        (args.out / "results.json").write_text(json.dumps({"args": {k: str(x) for k, x in vars(args).items()},
                                                           "runs": results}, indent=1))
    lines = ["| variant | params | Racc@5 (identity) | Racc@15 (identity) | median rot err deg (identity) | "
             "pred / true pair angle | angle corr | focal err | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["final"]
        lines.append(f"| {r['variant']} | {r['params'] / 1e6:.2f} M | {f['Racc@5']:.2f} ({f['identity_Racc@5']:.2f}) | "
                     f"{f['Racc@15']:.2f} ({f['identity_Racc@15']:.2f}) | {f['rot_err_median']:.1f} "
                     f"({f['identity_rot_err_median']:.1f}) | {f['pred_angle']:.1f} / {f['true_angle']:.1f} | "
                     f"{f['angle_corr']:.2f} | {f['focal_err']:.2f} | {f['minutes']:.1f} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
