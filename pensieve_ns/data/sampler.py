"""Frame sampling: which frames of which clip a step sees, which are context, and their loss weights.

Pure functions over numpy generators plus a batch sampler that a DataLoader iterates in the main process,
so every random choice is made in one place, reproducibly, and workers only read frames.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pensieve_ns.errors import DataWarning, PensieveInputError


@dataclass
class ClipSamplerConfig:
    """Window, gaps and view selection (docs/method.md §2.1). Defaults are the paper's RE10K stage-1 values."""

    window_frames: int = 7
    """Frames drawn per clip window; the number of views L per step is at most this."""
    min_views: int = 2
    """L is drawn per step from {min_views .. window_frames}."""
    max_context: int = 6
    """G (context frames) is drawn from {1 .. min(max_context, L - 1)}: at least one frame is held out."""
    min_gap: int = 12
    max_gap: int = 48
    gap_warmup_start: Optional[int] = None
    """Largest gap at step 0 when the gap warm-up is on (stage 2: 4); None: no warm-up."""
    gap_warmup_steps: int = 20000
    """Steps over which the largest gap grows linearly from ``gap_warmup_start`` to ``max_gap``."""
    shuffle_order: bool = True
    context_weight: float = 0.1
    target_weight: float = 1.0
    eval_gap: Optional[int] = None
    """Gap between evaluation frames; None: the middle of [min_gap, max_gap] (clamped to what clips allow)."""
    eval_views: int = 5
    """Frames per evaluation sample: the first and last are context, the frames between are targets."""

    def __post_init__(self) -> None:
        problems = []
        if self.window_frames < 2:
            problems.append(f"window_frames must be >= 2 (got {self.window_frames})")
        if not 2 <= self.min_views <= self.window_frames:
            problems.append(f"min_views must be in [2, window_frames={self.window_frames}] (got {self.min_views})")
        if self.max_context < 1:
            problems.append(f"max_context must be >= 1 (got {self.max_context})")
        if not 1 <= self.min_gap <= self.max_gap:
            problems.append(f"need 1 <= min_gap <= max_gap (got {self.min_gap}, {self.max_gap})")
        if self.eval_views < 2:
            problems.append(f"eval_views must be >= 2 (got {self.eval_views})")
        if problems:
            raise PensieveInputError(None, "sampler config: " + "; ".join(problems))


def largest_gap(config: ClipSamplerConfig, step: int) -> int:
    """The largest gap allowed at ``step``: the paper's linear warm-up min(int(a + (b - a) * step / T), b)."""
    if config.gap_warmup_start is None:
        return config.max_gap
    span = config.max_gap - config.gap_warmup_start
    return min(int(config.gap_warmup_start + span * step / max(config.gap_warmup_steps, 1)), config.max_gap)


def sample_window(
    num_frames: int, window_frames: int, min_gap: int, max_gap: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices [window_frames] of one window: a random start and independent uniform gaps in [lo, hi], where
    hi = min(floor((n - 1) / (w - 1)), max_gap) and lo = min(min_gap, hi), so any clip with n >= w frames fits."""
    if num_frames < window_frames:
        raise ValueError(f"clip of {num_frames} frames is shorter than the window ({window_frames})")
    hi = max(1, min((num_frames - 1) // (window_frames - 1), max_gap))
    lo = min(min_gap, hi)
    gaps = rng.integers(lo, hi + 1, size=window_frames - 1)
    start = int(rng.integers(0, num_frames - int(gaps.sum())))
    return start + np.concatenate([[0], np.cumsum(gaps)])


def draw_shape(config: ClipSamplerConfig, step: int, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """What every clip of one batch shares: views L, context frames G, and the gap range (min, max) at ``step``."""
    num_views = int(rng.integers(config.min_views, config.window_frames + 1))
    num_context = int(rng.integers(1, min(config.max_context, num_views - 1) + 1))
    max_gap = largest_gap(config, step)
    return num_views, num_context, min(config.min_gap, max_gap), max_gap


def draw_views(
    num_frames: int, config: ClipSamplerConfig, shape: Tuple[int, int, int, int], rng: np.random.Generator
) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """One clip's frames (in the order the model sees them) and context positions, for a batch of ``shape``."""
    num_views, num_context, min_gap, max_gap = shape
    window = sample_window(num_frames, config.window_frames, min_gap, max_gap, rng)
    frames, context = arrange_views(window, num_views, num_context, config.shuffle_order, rng)
    return tuple(int(f) for f in frames), tuple(int(c) for c in context)


class SampleSpec(NamedTuple):
    """What one clip contributes to a step: frames in the order the model sees them, and which are context."""

    clip: int
    frames: Tuple[int, ...]
    context: Tuple[int, ...]
    """Positions into ``frames`` (sorted) of the context frames."""


def arrange_views(
    window: np.ndarray, num_views: int, num_context: int, shuffle: bool, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """Keep the first ``num_views`` window frames, shuffle their order, pick a sorted random context subset."""
    frames = np.array(window[:num_views])
    if shuffle:
        frames = frames[rng.permutation(num_views)]
    context = np.sort(rng.choice(num_views, size=num_context, replace=False))
    return frames, context


def loss_weights(num_views: int, context: Sequence[int], context_weight: float, target_weight: float) -> np.ndarray:
    """[L] weights: context frames ``context_weight`` (0.1), held-out frames ``target_weight`` (1.0)."""
    weights = np.full(num_views, target_weight, dtype=np.float32)
    weights[list(context)] = context_weight
    return weights


class TrainBatchSampler:
    """Infinite batch sampler: each batch draws L and G once (shapes must match), then a window per clip.

    Iterated by the DataLoader in the main process; ``step`` is set by the DataManager before each draw, so
    the gap warm-up follows training (prefetching lags it by a few batches, which the warm-up does not feel).
    """

    def __init__(self, clip_lengths: Sequence[int], batch_size: int, config: ClipSamplerConfig, seed: int = 0):
        self.clip_lengths = np.asarray(clip_lengths)
        self.batch_size = batch_size
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def draw(self) -> List[SampleSpec]:
        shape = draw_shape(self.config, self.step, self.rng)
        clips = self.rng.integers(0, len(self.clip_lengths), size=self.batch_size)
        return [SampleSpec(int(c), *draw_views(int(self.clip_lengths[c]), self.config, shape, self.rng)) for c in clips]

    def __iter__(self) -> Iterator[List[SampleSpec]]:
        while True:
            yield self.draw()


def eval_specs(
    clip_lengths: Sequence[int], config: ClipSamplerConfig, clip_names: Optional[Sequence[str]] = None,
    index: Optional[Dict[str, Optional[Dict[str, List[int]]]]] = None,
) -> List[SampleSpec]:
    """Fixed evaluation samples, one per clip, ordered [context0, targets..., context1] (docs/method.md §3.2).

    Without an index: ``eval_views`` frames with a constant gap (``eval_gap``, or the middle of the training
    gap range, shrunk to fit), centred in the clip; the first and last are context. With a pixelSplat-style
    index (``{clip: {"context": [...], "target": [...]}}``, null entries skipped) the frames come from it.
    """
    specs = []
    for k, n in enumerate(clip_lengths):
        if index is not None:
            name = clip_names[k] if clip_names is not None else str(k)
            entry = index.get(name)
            if entry is None:
                continue
            ctx, tgt = list(entry["context"]), list(entry["target"])
            bad = [i for i in ctx + tgt if not 0 <= i < n]
            if bad:
                raise PensieveInputError(None, f"evaluation index: clip {name} has frame(s) {bad} outside 0..{n - 1}")
            frames = [ctx[0], *tgt, *ctx[1:]]
            specs.append(SampleSpec(k, tuple(frames), (0, *range(1 + len(tgt), len(frames)))))
            continue
        views = min(config.eval_views, n)
        if views < 2:
            continue
        gap = config.eval_gap or (config.min_gap + config.max_gap) // 2
        gap = max(1, min(gap, (n - 1) // (views - 1)))
        start = (n - 1 - gap * (views - 1)) // 2
        frames = tuple(start + gap * i for i in range(views))
        specs.append(SampleSpec(k, frames, (0, views - 1)))
    return specs


def load_eval_index(path: Path) -> Dict[str, Optional[Dict[str, List[int]]]]:
    """Read a pixelSplat-style evaluation index JSON: ``{scene: {"context": [...], "target": [...]} | null}``."""
    try:
        index = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PensieveInputError(path, "does not exist") from None
    except json.JSONDecodeError as err:
        raise PensieveInputError(path, f"not valid JSON ({err.msg})") from None
    if not isinstance(index, dict):
        raise PensieveInputError(path, "evaluation index must map scene keys to {context, target}")
    for key, entry in index.items():
        if entry is not None and not (isinstance(entry, dict) and "context" in entry and "target" in entry):
            raise PensieveInputError(path, f"entry {key!r} needs 'context' and 'target' lists (or null)")
    return index


def usable_clips(lengths: Sequence[int], names: Sequence[str], needed: int, what: str) -> List[int]:
    """Indices of clips with at least ``needed`` frames; the rest are skipped with a warning, none left is an error."""
    keep = [k for k, n in enumerate(lengths) if n >= needed]
    short = [names[k] for k in range(len(lengths)) if lengths[k] < needed]
    if short:
        warnings.warn(
            f"skipped {len(short)} {what} clip(s) shorter than {needed} frames: {', '.join(short[:5])}"
            + (" ..." if len(short) > 5 else ""),
            DataWarning,
            stacklevel=2,
        )
    if not keep:
        raise PensieveInputError(None, f"no {what} clip has the {needed} frames the sampler needs")
    return keep
