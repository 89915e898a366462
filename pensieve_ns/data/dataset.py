"""Clip frames at the model's size, cached, and the torch Dataset that turns a SampleSpec into tensors."""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import UInt8

from pensieve_ns.data.frames import fit_matrix, resize_center_crop
from pensieve_ns.data.sampler import SampleSpec, loss_weights
from pensieve_ns.data.sources import Clip


class ClipFrames:
    """Frames of a list of clips, fitted to (H, W) by resize + centre crop, with intrinsics updated to match.

    A bounded in-memory cache (least recently used out) keeps processed uint8 frames: whole clips for
    sequential sources (video: any frame costs a full decode), single frames otherwise. ``preload()`` fills
    it in the main process before DataLoader workers fork, so workers share it copy-on-write and no frame
    is decoded twice in an epoch.
    """

    def __init__(self, clips: Sequence[Clip], out_hw: Tuple[int, int], cache_bytes: int = 4 << 30):
        self.clips = list(clips)
        self.out_hw = tuple(out_hw)
        self.cache_bytes = cache_bytes
        self._cache: "OrderedDict[Tuple[int, int], np.ndarray]" = OrderedDict()
        self._cached = 0
        # Ground-truth intrinsics at the output size: pure geometry, no pixels read.
        self.gt_K = [None if c.gt is None else fit_matrix(c.native_hw, self.out_hw) @ c.gt.K for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def _put(self, key: Tuple[int, int], value: np.ndarray) -> None:
        if self.cache_bytes <= 0:
            return
        self._cache[key] = value
        self._cached += value.nbytes
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes

    def _fit(self, frames: List[np.ndarray]) -> np.ndarray:
        return np.stack([resize_center_crop(f, self.out_hw) for f in frames])

    def frames(self, clip_idx: int, indices: Sequence[int]) -> UInt8[np.ndarray, "K H W 3"]:
        """uint8 frames [K, H, W, 3] of one clip at the output size."""
        clip = self.clips[clip_idx]
        if clip.sequential:
            whole = self._cache.get((clip_idx, -1))
            if whole is None:
                whole = self._fit(clip.read(range(clip.num_frames)))
                self._put((clip_idx, -1), whole)
            else:
                self._cache.move_to_end((clip_idx, -1))
            return whole[np.minimum(np.asarray(indices), len(whole) - 1)]
        out = []
        missing = [i for i in indices if (clip_idx, i) not in self._cache]
        if missing:
            for i, frame in zip(missing, self._fit(clip.read(missing))):
                self._put((clip_idx, i), frame)
        for i in indices:
            frame = self._cache.get((clip_idx, i))
            if frame is None:  # cache disabled or evicted within this call
                frame = self._fit(clip.read([i]))[0]
            out.append(frame)
        return np.stack(out)

    def nbytes(self) -> int:
        """Bytes all frames take once processed (what preloading would hold)."""
        return sum(c.num_frames for c in self.clips) * self.out_hw[0] * self.out_hw[1] * 3

    def preload(self, progress: bool = False) -> None:
        """Decode and fit every frame now (when they fit in the cache budget)."""
        clips = range(len(self.clips))
        if progress:
            from rich.progress import track

            clips = track(clips, description="Decoding clips", transient=True)
        for k in clips:
            self.frames(k, range(self.clips[k].num_frames))


def sample_item(
    images: UInt8[np.ndarray, "L H W 3"], frames: Sequence[int], context: Sequence[int], context_weight: float,
    target_weight: float, c2w_opencv: Optional[np.ndarray] = None, K: Optional[np.ndarray] = None,
) -> Dict[str, torch.Tensor]:
    """One clip sample as tensors (the fields of ``ClipSampleDataset`` items but ``clip_index``); ground truth
    ``c2w_opencv`` [L, 4, 4] and ``K`` [L, 3, 3] (pixels of ``images``) where known, zeros otherwise."""
    L = len(frames)
    known = c2w_opencv is not None
    return {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0),
        "context": torch.tensor(context, dtype=torch.long),
        "loss_weights": torch.from_numpy(loss_weights(L, context, context_weight, target_weight)),
        "frame_index": torch.tensor(frames, dtype=torch.long),
        "has_gt": torch.tensor(known),
        "gt_c2w_opencv": torch.from_numpy(c2w_opencv).float() if known else torch.zeros(L, 4, 4),
        "gt_K": torch.from_numpy(K).float() if known else torch.zeros(L, 3, 3),
    }


class ClipSampleDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by ``SampleSpec``: returns one clip sample as tensors.

    Item fields (L frames in the order the model sees them, G context frames):
      images [L, 3, H, W] float32 in [0, 1]; context [G] long (positions into L); loss_weights [L];
      frame_index [L] long (frame numbers in the clip); clip_index [] long; has_gt [] bool;
      gt_c2w_opencv [L, 4, 4] and gt_K [L, 3, 3] (pixels of the output size; zeros where has_gt is False).
    """

    def __init__(self, frames: ClipFrames, context_weight: float = 0.1, target_weight: float = 1.0):
        self.frames = frames
        self.context_weight = context_weight
        self.target_weight = target_weight

    def __getitem__(self, spec: SampleSpec) -> Dict[str, torch.Tensor]:
        clip_idx, frame_ids, context = spec
        gt, ids = self.frames.clips[clip_idx].gt, list(frame_ids)
        item = sample_item(self.frames.frames(clip_idx, frame_ids), frame_ids, context, self.context_weight,
                           self.target_weight, gt.c2w_opencv[ids] if gt is not None else None,
                           self.frames.gt_K[clip_idx][ids] if gt is not None else None)
        item["clip_index"] = torch.tensor(clip_idx, dtype=torch.long)
        return item

    def __len__(self) -> int:  # a map-style dataset must say something; specs come from a batch sampler
        return len(self.frames)
