"""Clip readers: a video, image folders, a nerfstudio scene, pixelSplat chunks -> ``Clip``.

``find_clips(path)`` detects the reader from what the path holds (or takes it by name) and returns clips
whose frames are read lazily. Ground-truth cameras, where a source has them, are kept on the clip for
evaluation only; nothing in training reads them.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import cv2
import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image

from pensieve_ns.cameras import intrinsics_matrix, opengl_to_opencv_c2w, pixelsplat_camera_to_opencv
from pensieve_ns.data.frames import IMAGE_EXTENSIONS, describe_mode, load_image_rgb8
from pensieve_ns.errors import DataWarning, PensieveInputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
ReaderName = Literal["auto", "video", "images", "nerfstudio", "chunks"]


@dataclass
class GroundTruth:
    """Ground-truth cameras of a clip, for evaluation only (never fed to training)."""

    c2w_opencv: Float[np.ndarray, "N 4 4"]
    K: Float[np.ndarray, "N 3 3"]
    """Intrinsics in pixels of the clip's native frames."""
    depth_paths: Optional[List[Path]] = None
    """Per-frame z-depth maps (16-bit PNG, millimetres), where the source has them (generated clips)."""


@dataclass
class Clip:
    """One unposed clip: a name, a frame count and a way to read frames (uint8 RGB at native size)."""

    name: str
    reader: str
    path: Path
    num_frames: int
    native_hw: Tuple[int, int]
    read: Callable[[Sequence[int]], List[UInt8[np.ndarray, "h w 3"]]] = field(repr=False)
    sequential: bool = False
    """True where reading any frame costs decoding the whole clip (video): caches then keep the whole clip."""
    gt: Optional[GroundTruth] = field(default=None, repr=False)
    files: Optional[List[Path]] = field(default=None, repr=False)
    """The image file of each frame, where frames are files (image folders, nerfstudio scenes)."""
    sizes: Optional[List[Tuple[int, int]]] = field(default=None, repr=False)
    """(H, W) of each frame file as stored, where frames are files (``read`` brings them all to native_hw)."""


def natural_key(path: Path) -> List:
    """Sort key that orders frame_2 before frame_10."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def _image_header(path: Path) -> Tuple[Tuple[int, int], str]:
    try:
        with Image.open(path) as image:
            return (image.height, image.width), image.mode
    except Exception as err:  # PIL raises many types for bad files
        raise PensieveInputError(path, f"not a readable image ({err})") from None


def _check_frames(paths: Sequence[Path], clip_name: str) -> Tuple[Tuple[int, int], List[Tuple[int, int]]]:
    """Read every frame's header once: warn (once per clip) about mixed sizes and converted colour modes. Returns
    the clip's size (the first frame's) and every frame's."""
    headers = [_image_header(p) for p in paths]
    first = headers[0][0]
    odd = [p.name for p, (hw, _) in zip(paths, headers) if hw != first]
    if odd:
        warnings.warn(
            f"{clip_name}: {len(odd)} frame(s) differ in size from the first ({first[1]}x{first[0]}), e.g. "
            f"{odd[0]}; they are resized to it",
            DataWarning,
            stacklevel=2,
        )
    modes = sorted({describe_mode(mode) for _, mode in headers} - {""})
    if modes:
        warnings.warn(f"{clip_name}: {', '.join(modes)} frames converted to 8-bit RGB", DataWarning, stacklevel=2)
    return first, [hw for hw, _ in headers]


def _image_reader(paths: Sequence[Path], hw: Tuple[int, int]) -> Callable[[Sequence[int]], List[np.ndarray]]:
    def read(indices: Sequence[int]) -> List[np.ndarray]:
        out = []
        for i in indices:
            frame = load_image_rgb8(paths[i])
            if frame.shape[:2] != hw:  # mixed sizes (warned at scan): bring to the clip's size
                frame = cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
            out.append(frame)
        return out

    return read


# --------------------------------------------------------------------------------------------- images
def image_folder_clip(folder: Path) -> Clip:
    """A folder of images in natural sort order -> one clip."""
    paths = sorted((p for p in folder.iterdir() if _is_image(p)), key=natural_key)
    if not paths:
        raise PensieveInputError(folder, "no image files in the folder")
    hw, sizes = _check_frames(paths, str(folder))
    return Clip(folder.name, "images", folder, len(paths), hw, _image_reader(paths, hw), files=list(paths), sizes=sizes)


# ----------------------------------------------------------------------------------------- nerfstudio
def nerfstudio_clip(path: Path) -> Clip:
    """A nerfstudio scene (``transforms.json``): frames in file order, its cameras kept as ground truth."""
    tf_path = path / "transforms.json" if path.is_dir() else path
    root = tf_path.parent
    try:
        meta = json.loads(tf_path.read_text())
    except json.JSONDecodeError as err:
        raise PensieveInputError(tf_path, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    except OSError as err:
        raise PensieveInputError(tf_path, f"cannot be read ({err.strerror})") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise PensieveInputError(tf_path, "has no 'frames' list")
    paths, c2ws, Ks = [], [], []
    for k, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise PensieveInputError(tf_path, f"frame {k} lacks 'file_path' or 'transform_matrix'")
        intr = {key: frame.get(key, meta.get(key)) for key in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
        missing = [key for key in ("fl_x", "fl_y", "cx", "cy") if intr[key] is None]
        if missing:
            raise PensieveInputError(tf_path, f"frame {k} has no {', '.join(missing)} (neither per frame nor global)")
        try:
            mat = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            mat = np.zeros(0)
        if mat.shape not in ((4, 4), (3, 4)) or not np.isfinite(mat).all():
            raise PensieveInputError(tf_path, f"frame {k} has a transform_matrix that is not a finite 3x4 or 4x4")
        image_path = root / frame["file_path"]
        if not image_path.is_file():
            raise PensieveInputError(image_path, f"listed in {tf_path.name} (frame {k}) but does not exist")
        paths.append(image_path)
        c2ws.append(opengl_to_opencv_c2w(mat))
        Ks.append(intrinsics_matrix(intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"]))
    hw, sizes = _check_frames(paths, str(root))
    depth_paths = None
    if all("depth_file_path" in f for f in frames):
        depth_paths = [root / f["depth_file_path"] for f in frames]
    gt = GroundTruth(np.stack(c2ws), np.stack(Ks), depth_paths)
    return Clip(root.name, "nerfstudio", root, len(paths), hw, _image_reader(paths, hw), gt=gt, files=paths, sizes=sizes)


# ---------------------------------------------------------------------------------------------- video
def _decode_video(path: Path, stride: int, max_frames: Optional[int], count_only: bool = False):
    """Decode frames 0, stride, 2*stride, ... with PyAV; corrupt packets are skipped with a warning."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise PensieveInputError(path, f"not a readable video ({err})") from None
    with container:
        if not container.streams.video:
            raise PensieveInputError(path, "has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, kept, index, errors, hw, last_time = [], 0, 0, 0, None, None
        try:
            packets = container.demux(stream)
            while max_frames is None or kept < max_frames:  # stop decoding once enough frames are kept
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    errors += 1
                    break  # the container itself is broken past here: keep what decoded
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    errors += 1
                    continue
                for frame in decoded:
                    last_time = frame.time if frame.time is not None else last_time
                    if index % stride == 0 and (max_frames is None or kept < max_frames):
                        hw = (frame.height, frame.width)
                        if not count_only:
                            frames.append(frame.to_ndarray(format="rgb24"))
                        kept += 1
                    index += 1
        except av.error.FFmpegError:
            errors += 1
        # A truncated file often decodes cleanly up to where it stops: compare with the duration in its header.
        rate = float(stream.average_rate or 0) or 25.0
        duration = container.duration / 1e6 if container.duration else None
        ended_early = last_time is not None and duration is not None and last_time + 2.0 / rate < duration * 0.98
        short_of_header = stream.frames > 0 and index < stream.frames  # frame count in the header (avi, mp4)
        truncated = (max_frames is None or kept < max_frames) and (ended_early or short_of_header)
        last_time = last_time or 0.0
        duration = duration or 0.0
    if kept == 0:
        raise PensieveInputError(path, "no frame could be decoded (corrupt, truncated or not a video)")
    if errors:
        warnings.warn(f"{path}: {errors} corrupt packet(s) skipped; {kept} frame(s) decoded", DataWarning, stacklevel=3)
    elif truncated:
        warnings.warn(
            f"{path}: looks truncated (decoding stops at {last_time:.2f} s of {duration:.2f} s, frame {index} of "
            f"{stream.frames or '?'}); {kept} frame(s) kept",
            DataWarning,
            stacklevel=3,
        )
    return kept, hw, frames


def video_clip(path: Path, stride: int = 1, max_frames: Optional[int] = None) -> Clip:
    """A video file -> one clip of frames 0, stride, ... (at most ``max_frames``), decoded with PyAV."""
    count, hw, _ = _decode_video(path, stride, max_frames, count_only=True)

    def read(indices: Sequence[int]) -> List[np.ndarray]:
        _, _, frames = _decode_video(path, stride, max_frames)
        return [frames[min(i, len(frames) - 1)] for i in indices]

    return Clip(path.stem, "video", path, count, hw, read, sequential=True)


def stream_frames(clip: Clip, indices: Sequence[int]) -> Iterator[Tuple[int, np.ndarray]]:
    """(index, frame [h, w, 3] uint8 at native size) for ascending ``indices``, one at a time: memory holds one frame,
    videos included (decoded in one pass; a video clip's indices count its decoded frames, stride 1)."""
    if clip.reader != "video":
        for i in indices:
            yield i, clip.read([i])[0]
        return
    import av

    wanted, index = set(int(i) for i in indices), 0
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if index in wanted:
                    yield index, frame.to_ndarray(format="rgb24")
                index += 1
                if index > max(wanted):
                    return
        except av.error.FFmpegError as err:  # a corrupt stream: what was decoded is kept; the caller counts
            warnings.warn(f"{clip.path}: decoding stopped at frame {index} ({err})", DataWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------- chunks
def load_chunk(path: Path) -> list:
    import torch

    try:
        scenes = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for bad files
        raise PensieveInputError(path, f"chunk file does not load ({type(err).__name__}: {err})") from None
    if not isinstance(scenes, list) or not all(isinstance(s, dict) for s in scenes):
        raise PensieveInputError(path, "chunk file is not a list of scene dicts (pixelSplat layout)")
    for k, scene in enumerate(scenes):
        missing = [key for key in ("key", "cameras", "images") if key not in scene]
        if missing:
            raise PensieveInputError(path, f"scene {k} lacks {', '.join(missing)}")
    return scenes


def chunk_clips(folder: Path) -> List[Clip]:
    """pixelSplat chunks (``*.torch``, optional ``index.json``) -> one clip per scene, cameras as ground truth."""
    index_path = folder / "index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise PensieveInputError(index_path, f"not valid JSON ({err.msg})") from None
        chunk_names = sorted(set(index.values()))
    else:
        chunk_names = sorted(p.name for p in folder.glob("*.torch"))
    clips = []
    for name in chunk_names:
        chunk_path = folder / name
        if not chunk_path.is_file():
            raise PensieveInputError(chunk_path, "listed in index.json but does not exist")
        clips.extend(chunk_file_clips(chunk_path))
    return clips


def chunk_has_cameras(scene: dict) -> bool:
    """Whether a chunk scene carries cameras: ``pensieve-data pack`` writes zeros and ``cameras_known: False`` for
    sources without them."""
    return bool(scene.get("cameras_known", True)) and bool(scene["cameras"].abs().sum() > 0)


def decode_chunk_frames(scene: dict, indices: Sequence[int], where: str = "") -> List[np.ndarray]:
    """RGB uint8 frames of a chunk scene (its JPEG bytes); a bad one raises PensieveInputError naming it."""
    return [load_image_rgb8(bytes(scene["images"][i].numpy().tobytes()), f"{where}{scene['key']}[{i}]") for i in indices]


def chunk_file_clips(chunk_path: Path) -> List[Clip]:
    """One pixelSplat chunk file -> one clip per scene with frames."""
    clips = []
    for scene in load_chunk(chunk_path):
        images = scene["images"]
        if len(images) == 0:
            continue
        first = decode_chunk_frames(scene, [0], f"{chunk_path}:")[0]
        h, w = first.shape[:2]
        gt = None
        if chunk_has_cameras(scene):
            gt = GroundTruth(*pixelsplat_camera_to_opencv(scene["cameras"].numpy(), w, h))
        reader = _chunk_reader(chunk_path, str(scene["key"]))
        clips.append(Clip(str(scene["key"]), "chunks", chunk_path, len(images), (h, w), reader, gt=gt))
    return clips


_CHUNK_CACHE: Dict[Path, list] = {}


def _chunk_reader(chunk_path: Path, key: str) -> Callable[[Sequence[int]], List[np.ndarray]]:
    def read(indices: Sequence[int]) -> List[np.ndarray]:
        if chunk_path not in _CHUNK_CACHE:  # one chunk held per process: scenes of a chunk are read together
            _CHUNK_CACHE.clear()
            _CHUNK_CACHE[chunk_path] = load_chunk(chunk_path)
        scene = next(s for s in _CHUNK_CACHE[chunk_path] if str(s["key"]) == key)
        return decode_chunk_frames(scene, indices)

    return read


# ------------------------------------------------------------------------------------------ detection
def _detect_dir(folder: Path, reader: ReaderName, stride: int, max_frames: Optional[int], depth: int) -> List[Clip]:
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_key)
    has = lambda pred: any(pred(p) for p in entries)  # noqa: E731
    if reader in ("auto", "nerfstudio") and (folder / "transforms.json").is_file():
        return [nerfstudio_clip(folder)]
    if reader in ("auto", "chunks") and ((folder / "index.json").is_file() or has(lambda p: p.suffix == ".torch")):
        return chunk_clips(folder)
    if reader in ("auto", "video") and has(_is_video):
        return [video_clip(p, stride, max_frames) for p in entries if _is_video(p)]
    if reader in ("auto", "images") and has(_is_image):
        return [image_folder_clip(folder)]
    clips: List[Clip] = []
    if depth > 0:
        for sub in entries:
            if sub.is_dir():
                try:
                    clips.extend(_detect_dir(sub, reader, stride, max_frames, depth - 1))
                except PensieveInputError as err:
                    if err.problem.startswith("found no"):
                        continue  # an unrelated sub-folder (e.g. depth maps): not a clip
                    raise
    if not clips:
        what = "clips" if reader == "auto" else f"{reader} clips"
        raise PensieveInputError(folder, f"found no {what} (videos, images, transforms.json or *.torch chunks)")
    return clips


def find_clips(
    path: Path, reader: ReaderName = "auto", stride: int = 1, max_frames: Optional[int] = None
) -> List[Clip]:
    """Every clip under ``path``: a video, an image folder or folder of them, a nerfstudio scene (or folder of
    them), pixelSplat chunks. ``stride``/``max_frames`` apply to videos."""
    path = Path(path)
    if stride < 1:
        raise PensieveInputError(path, f"stride must be >= 1 (got {stride})")
    if not path.exists():
        raise PensieveInputError(path, "does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if path.name == "transforms.json" or (reader == "nerfstudio" and suffix == ".json"):
            return [nerfstudio_clip(path)]
        if suffix == ".torch" or path.name == "index.json":
            return chunk_clips(path.parent) if path.name == "index.json" else _single_chunk(path)
        if suffix in VIDEO_EXTENSIONS or reader == "video":
            return [video_clip(path, stride, max_frames)]
        if suffix in IMAGE_EXTENSIONS:
            raise PensieveInputError(path, "is a single image; a clip needs a folder of frames or a video")
        raise PensieveInputError(path, "is not a video, an image folder, a transforms.json or a chunk file")
    if not any(path.iterdir()):
        raise PensieveInputError(path, "folder is empty")
    return _detect_dir(path, reader, stride, max_frames, depth=2)


def _single_chunk(path: Path) -> List[Clip]:
    clips = chunk_file_clips(path)
    if not clips:
        raise PensieveInputError(path, "chunk file holds no scene with frames")
    return clips
