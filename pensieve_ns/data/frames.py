"""Frames: decode one image file into RGB uint8, fit frames to the model's size (resize + centre crop), and grey
frames for optical flow.

Every reader goes through these two functions, so colour conversion and the intrinsics update exist once.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np
from jaxtyping import UInt8
from PIL import Image, UnidentifiedImageError

from pensieve_ns.cameras import resize_crop_intrinsics
from pensieve_ns.errors import PensieveInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def pil_to_rgb8(image: Image.Image) -> UInt8[np.ndarray, "H W 3"]:
    """Any PIL image -> RGB uint8 [H, W, 3] (silently: readers warn once per clip, see ``describe_mode``).

    Grayscale is replicated, palettes are expanded, CMYK goes through PIL's conversion, alpha is composited
    over white (as nerfstudio does for RGBA scenes with a white background), 16-bit and 32-bit integer images
    are scaled by their full range (not clipped, which is what ``convert("RGB")`` would do).
    """
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image).astype(np.float64)
        full = 65535.0 if mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
        gray = np.clip(np.round(arr / full * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        scale = 1.0 if arr.max() <= 1.0 else 255.0
        gray = np.clip(np.round(arr / scale * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if "A" in mode or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
        return np.round(rgb * 255.0).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def describe_mode(mode: str) -> str:
    """Human words for a PIL mode that needs converting ('' for plain 8-bit RGB)."""
    if mode == "RGB":
        return ""
    names = {"L": "grayscale", "LA": "grayscale+alpha", "1": "1-bit", "P": "palette", "PA": "palette+alpha",
             "RGBA": "RGBA", "CMYK": "CMYK", "YCbCr": "YCbCr", "F": "32-bit float", "I": "32-bit integer"}
    return names.get(mode, "16-bit" if mode.startswith("I;16") else mode)


def _cv2_high_bit_depth(source: Union[Path, bytes]) -> Optional[np.ndarray]:
    """16-bit colour PNG/TIFF: PIL truncates them to 8 bits per channel, OpenCV keeps the range."""
    if isinstance(source, Path):
        arr = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    else:
        arr = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    rgb = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB).astype(np.float64) / 65535.0
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float64) / 65535.0
        rgb = rgb * alpha + (1.0 - alpha)
    return np.round(rgb * 255.0).astype(np.uint8)


def load_image_rgb8(source: Union[str, Path, bytes], name: Optional[str] = None) -> UInt8[np.ndarray, "H W 3"]:
    """Decode an image file (or its bytes) to RGB uint8 [H, W, 3]; bad files raise PensieveInputError."""
    path = None if isinstance(source, bytes) else Path(source)
    name = name or str(path)
    if path is not None and not path.is_file():
        raise PensieveInputError(path, "file does not exist")
    try:
        with Image.open(io.BytesIO(source) if path is None else path) as image:
            image.load()
            if image.mode in ("RGB", "RGBA") and path is not None and path.suffix.lower() in (".png", ".tif", ".tiff"):
                # PIL reports 16-bit colour PNGs as RGB(A) after truncation; check the real bit depth.
                deep = _cv2_high_bit_depth(path)
                if deep is not None:
                    return deep
            return pil_to_rgb8(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise PensieveInputError(path if path is not None else name, f"not a readable image ({err})") from None


def fit_size(src_hw: Tuple[int, int], out_hw: Tuple[int, int]) -> Tuple[float, Tuple[int, int], Tuple[int, int]]:
    """Resize-to-cover then centre-crop geometry.

    Returns (scale, resized (h, w), crop offset (x, y)): the image is scaled uniformly so that it covers
    ``out_hw`` (the paper's 360x640 -> 256x455 -> 256x256), then the centre ``out_hw`` is cut out.
    """
    (h, w), (oh, ow) = src_hw, out_hw
    scale = max(oh / h, ow / w)
    rh, rw = max(oh, int(round(h * scale))), max(ow, int(round(w * scale)))
    return scale, (rh, rw), ((rw - ow) // 2, (rh - oh) // 2)


def fit_matrix(src_hw: Tuple[int, int], out_hw: Tuple[int, int]) -> np.ndarray:
    """The 3x3 map A with K_out = A @ K_src for ``resize_center_crop`` (exact per-axis resize scale, then shift)."""
    _, (rh, rw), (ox, oy) = fit_size(src_hw, out_hw)
    return resize_crop_intrinsics(np.eye(3), (rw / src_hw[1], rh / src_hw[0]), (ox, oy))


def resize_center_crop(frame: UInt8[np.ndarray, "h w 3"], out_hw: Tuple[int, int]) -> UInt8[np.ndarray, "H W 3"]:
    """Fit one frame to ``out_hw`` = (H, W) by resize-to-cover and centre crop (intrinsics: ``fit_matrix``).

    Shrinking uses area averaging (bilinear aliases badly at 640 -> 64 px); enlarging uses bilinear.
    """
    src_hw = frame.shape[:2]
    scale, (rh, rw), (ox, oy) = fit_size(src_hw, out_hw)
    if (rh, rw) != tuple(src_hw):
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (rw, rh), interpolation=interp)
    oh, ow = out_hw
    return np.ascontiguousarray(frame[oy : oy + oh, ox : ox + ow])


def grey(image: UInt8[np.ndarray, "H W 3"], up: int = 1) -> UInt8[np.ndarray, "h w"]:
    """RGB uint8 -> grey uint8, upsampled ``up`` times (cubic): what optical flow reads (DIS's 8-pixel patches are
    coarse on small frames, so both flow users upsample them)."""
    g = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return g if up == 1 else cv2.resize(g, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
