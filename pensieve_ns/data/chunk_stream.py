"""Training batches streamed from pixelSplat chunks: what RealEstate10K / DL3DV training reads.

Thousands of chunk files cannot be opened at start-up, nor cached whole. As pixelSplat's iterable dataset does,
the chunk files are only listed at start (``chunk_files``: from ``index.json`` or a glob; start-up time and memory
do not grow with the data), and each DataLoader worker streams its own share of them: every epoch the list is
shuffled the same way on every process, rank r takes every world_size-th chunk and worker w of that rank every
num_workers-th of those. A worker holds one chunk at a time, shuffles its scenes, and builds whole batches from
them (one L and G per batch, as ``TrainBatchSampler``), decoding only the JPEGs a batch uses, in the worker.

A frame that does not decode skips its clip with a warning and a running count: one bad frame must not end a
multi-day run. Clips shorter than the window are skipped (counted the same way).
"""

from __future__ import annotations

import json
import multiprocessing
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pensieve_ns.cameras import pixelsplat_camera_to_opencv
from pensieve_ns.data.dataset import sample_item
from pensieve_ns.data.frames import fit_matrix, resize_center_crop
from pensieve_ns.data.sampler import ClipSamplerConfig, draw_shape, draw_views
from pensieve_ns.data.sources import chunk_has_cameras, decode_chunk_frames, load_chunk
from pensieve_ns.errors import DataWarning, PensieveInputError


def is_chunk_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of pixelSplat chunks (what the stream reads)."""
    path = Path(path)
    return path.is_dir() and ((path / "index.json").is_file() or any(path.glob("*.torch")))


def chunk_files(folder: Path) -> List[Path]:
    """The chunk files of a folder, without opening any: ``index.json``'s values, else ``*.torch``, sorted."""
    folder = Path(folder)
    index = folder / "index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text()).values()))
        except (json.JSONDecodeError, AttributeError) as err:
            raise PensieveInputError(index, f"not a pixelSplat index ({err})") from None
    else:
        names = sorted(p.name for p in folder.glob("*.torch"))
    if not names:
        raise PensieveInputError(folder, "holds no *.torch chunk")
    return [folder / n for n in names]


class ChunkStream(torch.utils.data.IterableDataset):
    """Endless batches ``{images [B, L, 3, H, W], context [B, G], loss_weights [B, L], frame_index [B, L], has_gt
    [B], gt_c2w_opencv [B, L, 4, 4], gt_K [B, L, 3, 3]}`` (OpenCV c2w; K in pixels of the output size), as
    ``ClipSampleDataset`` items stacked. Use with ``DataLoader(stream, batch_size=None, num_workers=N)``."""

    def __init__(
        self, files: Sequence[Path], out_hw: Tuple[int, int], batch_size: int, sampler: ClipSamplerConfig,
        seed: int = 0, rank: int = 0, world_size: int = 1,
    ):
        self.files, self.out_hw, self.batch_size, self.sampler = list(files), tuple(out_hw), batch_size, sampler
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = multiprocessing.Value("l", 0)  # the training step, set by the DataManager (gap warm-up)
        self.skipped = 0

    def my_files(self, epoch: int, worker: int, workers: int) -> List[Path]:
        """This worker's chunk files in ``epoch``: the same shuffle on every process, then rank and worker shares."""
        order = np.random.default_rng(self.seed + epoch).permutation(len(self.files))
        mine = order[self.rank::self.world_size][worker::workers]
        return [self.files[i] for i in mine]

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.rank, worker])
        for epoch in range(1 << 62):
            files = self.my_files(epoch, worker, workers)
            if not files:  # more workers than chunks: this one idles rather than repeating another's share
                files = [self.files[(self.rank * workers + worker) % len(self.files)]]
            for path in files:
                try:
                    scenes = [s for s in load_chunk(path) if self._long_enough(s, path)]
                except PensieveInputError as err:  # a missing or broken chunk file: skipped, as a bad frame is
                    self._skip(path, {"key": "*"}, err.problem)
                    continue
                order = list(rng.permutation(len(scenes)))
                while len(order) >= self.batch_size:
                    batch = self._batch([scenes[order.pop()] for _ in range(self.batch_size)], rng, path)
                    if batch is not None:
                        yield batch

    def _long_enough(self, scene: dict, path: Path) -> bool:
        if len(scene["images"]) >= self.sampler.window_frames:
            return True
        self._skip(path, scene, f"{len(scene['images'])} frames, fewer than the window's {self.sampler.window_frames}")
        return False

    def _skip(self, path: Path, scene: dict, why: str) -> None:
        self.skipped += 1
        warnings.warn(f"{path.name}:{scene['key']}: clip skipped ({why}); {self.skipped} skipped so far by this "
                      "loader worker", DataWarning, stacklevel=2)

    def _batch(self, scenes: List[dict], rng: np.random.Generator, path: Path) -> Optional[Dict[str, torch.Tensor]]:
        shape = draw_shape(self.sampler, int(self.step.value), rng)
        items = []
        for scene in scenes:
            frames, context = draw_views(len(scene["images"]), self.sampler, shape, rng)
            try:
                items.append(self._item(scene, list(frames), list(context)))
            except PensieveInputError as err:  # a corrupt JPEG: this clip goes, the run goes on
                self._skip(path, scene, err.problem)
        if len(items) < len(scenes):
            return None
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    def _item(self, scene: dict, frames: List[int], context: List[int]) -> Dict[str, torch.Tensor]:
        raw = decode_chunk_frames(scene, frames)
        h, w = raw[0].shape[:2]
        images = np.stack([resize_center_crop(f, self.out_hw) for f in raw])
        c2w = K = None
        if chunk_has_cameras(scene):
            c2w, K = pixelsplat_camera_to_opencv(scene["cameras"].numpy()[frames], w, h)
            K = fit_matrix((h, w), self.out_hw) @ K
        return sample_item(images, frames, context, self.sampler.context_weight, self.sampler.target_weight, c2w, K)
