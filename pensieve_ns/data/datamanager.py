"""PensieveDataManager: nerfstudio's DataManager contract over clip samples (not rays).

``next_train(step)`` returns ``(cameras, batch)`` where ``batch`` holds B clip samples of L frames (see
``ClipSampleDataset`` for the fields, batched with a leading B) and ``cameras`` are placeholder cameras
[B, L] at the camera head's initial values (identity pose, default focal): the data has no cameras, the
model predicts them. Evaluation draws fixed, deterministic samples from held-out clips.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.scene_box import SceneBox

from pensieve_ns.data.chunk_stream import ChunkStream, chunk_files, is_chunk_folder
from pensieve_ns.data.dataset import ClipFrames, ClipSampleDataset
from pensieve_ns.data.sampler import (
    ClipSamplerConfig,
    SampleSpec,
    TrainBatchSampler,
    eval_specs,
    load_eval_index,
    usable_clips,
)
from pensieve_ns.data.sources import Clip, ReaderName, chunk_file_clips, find_clips
from pensieve_ns.errors import DataWarning, PensieveInputError, exit_with_error

DEFAULT_FOCAL_FRACTION = 1.55
"""Focal length / image width the camera head starts from (0.1 + 2.9 * sigmoid(0)): placeholders use it."""


@dataclass
class PensieveDataManagerConfig(DataManagerConfig):
    """Where clips come from and how they are sampled."""

    _target: Type = field(default_factory=lambda: PensieveDataManager)
    data: Optional[Path] = None
    """A video, a folder of videos, an image folder or folder of them, a nerfstudio scene, or pixelSplat chunks. A
    dataset root with ``train/`` and ``test/`` (pixelSplat's layout) trains on ``train/`` and evaluates on ``test/``."""
    reader: ReaderName = "auto"
    """Which reader to use; 'auto' detects it from what the path holds."""
    video_stride: int = 1
    """Keep every n-th decoded video frame."""
    video_max_frames: Optional[int] = None
    """Keep at most this many frames per video (after the stride)."""
    image_size: Tuple[int, int] = (64, 64)
    """(H, W) the frames are fitted to by resize-to-cover and centre crop."""
    batch_size: int = 4
    """Clips per training step."""
    sampler: ClipSamplerConfig = field(default_factory=ClipSamplerConfig)
    eval_data: Optional[Path] = None
    """Held-out clips; when None, ``data``'s ``test/`` (a dataset root) or a share of ``data``'s clips
    (``eval_fraction``)."""
    eval_fraction: float = 0.1
    """Share of clips held out for evaluation when ``eval_data`` is None (every k-th clip in name order)."""
    eval_index: Optional[Path] = None
    """pixelSplat-style evaluation index JSON choosing context and target frames per eval clip."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    cache_gb: float = 4.0
    """Memory for decoded frames; all clips are decoded up front when they fit (workers then share them)."""
    seed: int = 0
    """Sampler seed; each process adds its global rank."""
    stream_chunks: bool = True
    """Training clips in pixelSplat chunks, with held-out clips elsewhere (a dataset root's test/, or
    ``eval_data``), are streamed (``chunk_stream.ChunkStream``: chunk files listed, not opened, at start-up; one
    chunk per worker; JPEGs decoded in the workers). False: every chunk is read at start-up and frames cached."""


def split_clips(clips: List[Clip], fraction: float) -> Tuple[List[Clip], List[Clip]]:
    """Deterministic hold-out: every k-th clip (k = round(1 / fraction)), at least one when there are two or more."""
    if len(clips) < 2 or fraction <= 0:
        return clips, []
    k = max(2, int(round(1.0 / fraction)))
    held = [c for i, c in enumerate(clips) if i % k == k - 1] or [clips[-1]]
    held_ids = {id(c) for c in held}
    return [c for c in clips if id(c) not in held_ids], held


def placeholder_cameras(shape: Tuple[int, ...], hw: Tuple[int, int]) -> Cameras:
    """Cameras of ``shape`` at the camera head's initial state: identity pose (OpenGL c2w), default focal."""
    H, W = hw
    c2w = torch.eye(4)[:3].expand(*shape, 3, 4).contiguous()
    focal = torch.full((*shape, 1), DEFAULT_FOCAL_FRACTION * W)
    return Cameras(
        camera_to_worlds=c2w,
        fx=focal,
        fy=focal * H / W,
        cx=torch.full((*shape, 1), W / 2.0),
        cy=torch.full((*shape, 1), H / 2.0),
        width=torch.full((*shape, 1), W, dtype=torch.long),
        height=torch.full((*shape, 1), H, dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )


class ClipFramesView(torch.utils.data.Dataset):
    """The frames of one clip as nerfstudio's viewer and Model setup expect of ``train_dataset``:
    ``cameras`` (placeholders until a model predicts them), ``scene_box``, ``metadata``, and items
    ``{"image": float [H, W, 3], "image_idx": i}``."""

    def __init__(self, frames: ClipFrames, clip_idx: int, max_frames: int = 64):
        self.frames, self.clip_idx = frames, clip_idx
        n = frames.clips[clip_idx].num_frames
        self.indices = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
        self.cameras = placeholder_cameras((len(self.indices),), frames.out_hw)
        self.scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        self.metadata: Dict = {}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict:
        image = self.frames.frames(self.clip_idx, [int(self.indices[i])])[0]
        return {"image": torch.from_numpy(image).float() / 255.0, "image_idx": i}


def dataset_splits(root: Path) -> Optional[Tuple[Path, Path]]:
    """(train, test) folders of a dataset root laid out as pixelSplat's (``root/train``, ``root/test``), else None.
    A root with ``test/`` but no ``train/`` is refused: training on it would train on the test scenes."""
    if not root.is_dir() or not (root / "test").is_dir():
        return None
    if not (root / "train").is_dir():
        raise PensieveInputError(root, "has test/ but no train/: give the training folder itself as --data")
    return root / "train", root / "test"


def global_rank(local_rank: int, world_size: int = 1) -> Tuple[int, int]:
    """(rank, world size) of this process over every machine: the process group's where there is one (the
    pipeline builds the DataManager with world_size 1 and wraps DDP itself), else the values given."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return local_rank, world_size


def rank_seed(seed: int, local_rank: int) -> int:
    """The sampler seed of this process: ``seed`` + its GLOBAL rank (two machines have the same local ranks, so
    local ranks would draw the same clips on both)."""
    return seed + global_rank(local_rank)[0]


class PensieveDataManager(DataManager):
    """Yields clip samples for the feed-forward model; see the module docstring for the contract."""

    config: PensieveDataManagerConfig

    def __init__(
        self,
        config: PensieveDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        self.config, self.device, self.test_mode = config, device, test_mode
        self.world_size, self.local_rank = world_size, local_rank
        try:
            self._scan()
        except PensieveInputError as err:
            exit_with_error(err, "pensieve-ns")
        super().__init__()

    # -------------------------------------------------------------------------------------- set-up
    def _scan(self) -> None:
        cfg = self.config
        if cfg.data is None:
            raise PensieveInputError(None, "no data given: pass --data PATH (a video, image folder(s), scene or chunks)")
        find = lambda path: find_clips(path, cfg.reader, cfg.video_stride, cfg.video_max_frames)  # noqa: E731
        split = dataset_splits(Path(cfg.data))
        train_path = split[0] if split is not None else Path(cfg.data)
        self.train_files = None
        if cfg.stream_chunks and cfg.reader in ("auto", "chunks") and is_chunk_folder(train_path) and (
            split is not None or cfg.eval_data is not None
        ):  # streamed: only the chunk files are listed now; one clip is read for the viewer's frame list
            self.train_files = chunk_files(train_path)
            train = [chunk_file_clips(self.train_files[0])[0]]
            held = find(cfg.eval_data) if cfg.eval_data is not None else find(split[1])
        elif split is not None:  # a dataset root: train on train/ only; evaluate on test/ unless told otherwise
            train = find(split[0])
            held = find(cfg.eval_data) if cfg.eval_data is not None else find(split[1])
        elif cfg.eval_data is not None:
            train, held = find(cfg.data), find(cfg.eval_data)
        else:
            clips = find(cfg.data)
            train, held = split_clips(clips, cfg.eval_fraction)
            if not held:
                warnings.warn(
                    f"{cfg.data}: one clip only, so evaluation uses frames of the training clip (no held-out clip)",
                    DataWarning,
                    stacklevel=2,
                )
                held = clips
        keep = usable_clips([c.num_frames for c in train], [c.name for c in train], cfg.sampler.window_frames, "training")
        self.train_frames = ClipFrames([train[k] for k in keep], cfg.image_size, int(cfg.cache_gb * (1 << 30)))
        self.eval_frames = ClipFrames(held, cfg.image_size, int(cfg.cache_gb * (1 << 30)))
        index = load_eval_index(cfg.eval_index) if cfg.eval_index is not None else None
        self.eval_samples: List[SampleSpec] = eval_specs(
            [c.num_frames for c in held], cfg.sampler, [c.name for c in held], index
        )
        if not self.eval_samples:
            raise PensieveInputError(cfg.eval_index or cfg.data, "no evaluation sample could be drawn")
        self.train_dataset = ClipFramesView(self.train_frames, 0)
        self.eval_dataset = ClipFramesView(self.eval_frames, self.eval_samples[0].clip)

    def setup_train(self) -> None:
        cfg = self.config
        self.train_stream = None
        if self.train_files is not None:
            rank, world = global_rank(self.local_rank, self.world_size)
            self.train_stream = ChunkStream(self.train_files, cfg.image_size, cfg.batch_size, cfg.sampler, cfg.seed,
                                            rank=rank, world_size=world)
            self._train_loader = torch.utils.data.DataLoader(
                self.train_stream, batch_size=None, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0
            )
            self._train_iter = None
            return
        if self.train_frames.nbytes() <= self.train_frames.cache_bytes:
            self.train_frames.preload(progress=True)
        self.train_batch_sampler = TrainBatchSampler(
            [c.num_frames for c in self.train_frames.clips], cfg.batch_size, cfg.sampler, seed=rank_seed(cfg.seed, self.local_rank)
        )
        self._train_loader = torch.utils.data.DataLoader(
            ClipSampleDataset(self.train_frames, cfg.sampler.context_weight, cfg.sampler.target_weight),
            batch_sampler=self.train_batch_sampler,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
        )
        self._train_iter = None

    def setup_eval(self) -> None:
        self.eval_item_dataset = ClipSampleDataset(
            self.eval_frames, self.config.sampler.context_weight, self.config.sampler.target_weight
        )

    # -------------------------------------------------------------------------------------- batches
    def _to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def next_train(self, step: int) -> Tuple[Cameras, Dict[str, torch.Tensor]]:
        self.train_count += 1
        if self.train_stream is not None:
            self.train_stream.step.value = step
        else:
            self.train_batch_sampler.step = step
        if self._train_iter is None:
            self._train_iter = iter(self._train_loader)
        batch = self._to_device(next(self._train_iter))
        B, L = batch["images"].shape[:2]
        return placeholder_cameras((B, L), self.config.image_size).to(self.device), batch

    def eval_batch(self, i: int) -> Tuple[Cameras, Dict[str, torch.Tensor]]:
        """The i-th fixed evaluation sample as a batch of one clip."""
        item = self.eval_item_dataset[self.eval_samples[i % len(self.eval_samples)]]
        batch = self._to_device({k: v[None] for k, v in item.items()})
        L = batch["images"].shape[1]
        return placeholder_cameras((1, L), self.config.image_size).to(self.device), batch

    def next_eval(self, step: int) -> Tuple[Cameras, Dict[str, torch.Tensor]]:
        self.eval_count += 1
        return self.eval_batch(self.eval_count - 1)

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict[str, torch.Tensor]]:
        return self.next_eval(step)

    @cached_property
    def fixed_indices_eval_dataloader(self) -> List[Tuple[Cameras, Dict[str, torch.Tensor]]]:
        """Every fixed evaluation sample, in order (what ``ns-eval`` iterates)."""
        return [self.eval_batch(i) for i in range(len(self.eval_samples))]

    def get_train_rays_per_batch(self) -> int:
        H, W = self.config.image_size
        return self.config.batch_size * self.config.sampler.window_frames * H * W

    def get_eval_rays_per_batch(self) -> int:
        H, W = self.config.image_size
        return self.config.sampler.eval_views * H * W

    def get_datapath(self) -> Path:
        assert self.config.data is not None
        return self.config.data

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {}
