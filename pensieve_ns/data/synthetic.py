"""Built-in synthetic clips: seeded textured rooms with objects, filmed along smooth camera paths.

Every clip is ray-cast exactly (numpy), so ground-truth cameras and per-pixel z-depth are exact. Clips are
written as nerfstudio scenes (``transforms.json`` with OpenGL camera-to-world, frames, 16-bit depth PNGs in
millimetres), the format every reader here and nerfstudio itself understand.

Two disjoint splits keep evaluation honest: ``train`` and ``heldout`` draw textures from disjoint pools
(different photos, different procedural families) and seeds from disjoint streams.

World frame: y up, floor at y = 0, room centred on the origin. Cameras are OpenCV (x right, y down,
z forward) camera-to-world, converted to OpenGL only when written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from pensieve_ns.cameras import intrinsics_matrix, opencv_to_opengl_c2w

Split = Literal["train", "heldout"]
PATH_KINDS = ("orbit", "walk", "pan", "arc")
TEXTURE_RES = 48  # pixels per texture tile: band-limits textures so low-res renders do not sparkle
SUPERSAMPLE = 2

# Photos shipped inside scikit-image (no download); each split gets its own.
_PHOTOS: Dict[str, Tuple[str, ...]] = {
    "train": ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel"),
    "heldout": ("camera", "coins", "moon", "page", "text", "cell", "colorwheel"),
}


@dataclass
class SyntheticClip:
    """One rendered clip. Cameras are OpenCV camera-to-world; depth is z-depth in metres."""

    frames: UInt8[np.ndarray, "F H W 3"]
    depth: Float[np.ndarray, "F H W"]
    c2w_opencv: Float[np.ndarray, "F 4 4"]
    K: Float[np.ndarray, "3 3"]
    info: Dict


# ------------------------------------------------------------------------------------------ textures
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3].astype(np.float32)
    img = img / 255.0 if img.max() > 1.0 else img
    return img


def _procedural(kind: str, rng: np.random.Generator) -> np.ndarray:
    r = TEXTURE_RES
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    yy, xx = np.mgrid[0:r, 0:r] / r
    if kind == "checker":
        n = rng.integers(2, 5)
        mask = ((np.floor(xx * n) + np.floor(yy * n)) % 2)[..., None]
    elif kind == "noise":
        mask = np.zeros((r, r))
        for octave in (3, 6, 12):
            grid = rng.uniform(0, 1, (octave, octave))
            mask += cv2.resize(np.tile(grid, (2, 2)), (2 * r, 2 * r), interpolation=cv2.INTER_CUBIC)[:r, :r] / octave
        mask = ((mask - mask.min()) / (np.ptp(mask) + 1e-8))[..., None]
    elif kind == "stripes":
        n, angle = rng.integers(2, 6), rng.uniform(0, np.pi)
        mask = (0.5 + 0.5 * np.sin(2 * np.pi * n * (xx * np.cos(angle) + yy * np.sin(angle))))[..., None]
    elif kind == "bricks":
        rows = rng.integers(3, 6)
        row = np.floor(yy * rows)
        shifted = xx + 0.5 * (row % 2) / 2
        mortar = (np.abs((yy * rows) % 1 - 0.5) > 0.42) | (np.abs((shifted * 2) % 1 - 0.5) > 0.45)
        mask = mortar.astype(np.float64)[..., None]
    else:
        raise ValueError(kind)
    return (c0 * (1 - mask) + c1 * mask).astype(np.float32)


_PROCEDURAL: Dict[str, Tuple[str, ...]] = {"train": ("checker", "noise"), "heldout": ("stripes", "bricks")}


def _texture_pool(split: Split, rng: np.random.Generator, count: int) -> List[np.ndarray]:
    pool = []
    for _ in range(count):
        if rng.uniform() < 0.5:
            img = _photo(str(rng.choice(_PHOTOS[split])))
            h, w = img.shape[:2]
            s = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
            y0, x0 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            tex = cv2.resize(img[y0 : y0 + s, x0 : x0 + s], (TEXTURE_RES, TEXTURE_RES), interpolation=cv2.INTER_AREA)
            pool.append(np.clip(tex * rng.uniform(0.7, 1.2, 3), 0, 1).astype(np.float32))
        else:
            pool.append(_procedural(str(rng.choice(_PROCEDURAL[split])), rng))
    return pool


def _sample_texture(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup; u, v in texture tiles."""
    r = tex.shape[0]
    x, y = (u * r - 0.5) % r, (v * r - 0.5) % r
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = (x0 + 1) % r, (y0 + 1) % r
    return (
        tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x1] * fx * (1 - fy) + tex[y1, x0] * (1 - fx) * fy + tex[y1, x1] * fx * fy
    )


# ------------------------------------------------------------------------------------------- scenes
@dataclass
class _Box:
    center: np.ndarray
    half: np.ndarray
    yaw: float
    textures: List[int]  # one per face: -x, +x, -y, +y, -z, +z
    tile: float  # metres per texture tile
    inside: bool = False  # the room: seen from inside


@dataclass
class _Sphere:
    center: np.ndarray
    radius: float
    texture: int
    tile: float


def _make_scene(rng: np.random.Generator, n_textures: int):
    half = np.array([rng.uniform(3.0, 6.0), rng.uniform(1.3, 1.8), rng.uniform(3.0, 6.0)])
    room = _Box(np.array([0.0, half[1], 0.0]), half, 0.0, list(rng.integers(0, n_textures, 6)), rng.uniform(0.5, 1.5), True)
    objects: List = []
    for _ in range(int(rng.integers(3, 7))):
        pos = np.array([rng.uniform(-half[0] + 1, half[0] - 1), 0.0, rng.uniform(-half[2] + 1, half[2] - 1)])
        if rng.uniform() < 0.65:
            size = rng.uniform([0.2, 0.2, 0.2], [0.8, 1.0, 0.8])
            pos[1] = size[1]
            objects.append(_Box(pos, size, rng.uniform(0, np.pi), list(rng.integers(0, n_textures, 6)), rng.uniform(0.3, 1.0)))
        else:
            radius = rng.uniform(0.25, 0.7)
            pos[1] = radius
            objects.append(_Sphere(pos, radius, int(rng.integers(0, n_textures)), rng.uniform(0.3, 1.0)))
    return room, objects


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _hit_box(box: _Box, origin: np.ndarray, dirs: np.ndarray):
    """Ray-box hits: (t [P], face [P], local hit point [P,3]); t = inf where missed."""
    rot = _yaw_matrix(box.yaw)
    o = (origin - box.center) @ rot  # into the box frame (rot^T applied to row vectors)
    d = dirs @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-box.half - o) / d, (box.half - o) / d
    t_lo, t_hi = np.minimum(t1, t2), np.maximum(t1, t2)
    if box.inside:
        t = t_hi.min(axis=1)
        axis = t_hi.argmin(axis=1)
    else:
        t_near, t_far = t_lo.max(axis=1), t_hi.min(axis=1)
        t = np.where((t_near <= t_far) & (t_near > 1e-4), t_near, np.inf)
        axis = t_lo.argmax(axis=1)
    local = o + t[:, None] * d
    side = (np.take_along_axis(local, axis[:, None], 1)[:, 0] > 0).astype(int)
    return t, axis * 2 + side, local


def _hit_sphere(sphere: _Sphere, origin: np.ndarray, dirs: np.ndarray):
    oc = origin - sphere.center
    a = (dirs * dirs).sum(1)
    b = 2 * (dirs @ oc)
    c = oc @ oc - sphere.radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    t = np.where((disc > 0) & (t > 1e-4), t, np.inf)
    return t, origin + t[:, None] * dirs - sphere.center


_LIGHT = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])


def _shade_box(box: _Box, face: np.ndarray, local: np.ndarray, textures: List[np.ndarray]) -> np.ndarray:
    axis = face // 2
    uv_axes = np.array([[2, 1], [2, 1], [0, 2], [0, 2], [0, 1], [0, 1]])[face]
    u = np.take_along_axis(local, uv_axes[:, :1], 1)[:, 0] / box.tile
    v = np.take_along_axis(local, uv_axes[:, 1:], 1)[:, 0] / box.tile
    color = np.zeros((len(face), 3), np.float32)
    for f in np.unique(face):
        sel = face == f
        color[sel] = _sample_texture(textures[box.textures[f]], u[sel], v[sel])
    normal_local = np.zeros((len(face), 3))
    normal_local[np.arange(len(face)), axis] = np.where(face % 2 == 1, 1.0, -1.0) * (-1.0 if box.inside else 1.0)
    normal = normal_local @ _yaw_matrix(box.yaw).T
    return color * (0.55 + 0.45 * np.clip(normal @ _LIGHT, 0, 1))[:, None]


def _shade_sphere(sphere: _Sphere, local: np.ndarray, textures: List[np.ndarray]) -> np.ndarray:
    n = local / sphere.radius
    u = np.arctan2(n[:, 0], n[:, 2]) * sphere.radius / sphere.tile
    v = np.arccos(np.clip(n[:, 1], -1, 1)) * sphere.radius / sphere.tile
    return _sample_texture(textures[sphere.texture], u, v) * (0.55 + 0.45 * np.clip(n @ _LIGHT, 0, 1))[:, None]


def render_view(
    room: _Box, objects: List, textures: List[np.ndarray], c2w_opencv: np.ndarray, K: np.ndarray, hw: Tuple[int, int]
) -> Tuple[np.ndarray, np.ndarray]:
    """Ray-cast one view: (rgb float [H,W,3], z-depth [H,W]) at pixel centres, colour supersampled."""
    H, W = hw
    ss = SUPERSAMPLE
    vv, uu = np.mgrid[0 : H * ss, 0 : W * ss]
    pix = np.stack([(uu + 0.5) / ss, (vv + 0.5) / ss, np.ones_like(uu, dtype=float)], -1).reshape(-1, 3)
    dirs_cam = pix @ np.linalg.inv(K).T  # z = 1: the ray parameter t is the z-depth
    dirs = dirs_cam @ c2w_opencv[:3, :3].T
    origin = c2w_opencv[:3, 3]
    t_best, _, _ = _hit_box(room, origin, dirs)
    owner = np.full(len(dirs), -1)
    for k, obj in enumerate(objects):
        t = _hit_box(obj, origin, dirs)[0] if isinstance(obj, _Box) else _hit_sphere(obj, origin, dirs)[0]
        closer = t < t_best
        t_best, owner = np.where(closer, t, t_best), np.where(closer, k, owner)
    color = np.zeros((len(dirs), 3), np.float32)
    for k, obj in [(-1, room)] + list(enumerate(objects)):
        sel = owner == k
        if not sel.any():
            continue
        if isinstance(obj, _Box):
            _, face, local = _hit_box(obj, origin, dirs[sel])
            color[sel] = _shade_box(obj, face, local, textures)
        else:
            _, local = _hit_sphere(obj, origin, dirs[sel])
            color[sel] = _shade_sphere(obj, local, textures)
    rgb = color.reshape(H, ss, W, ss, 3).mean(axis=(1, 3))
    # Depth at the true pixel centres (exact, not an average of sub-samples), as the models' pixels use.
    depth = _center_depth(room, objects, c2w_opencv, K, hw) if ss > 1 else t_best.reshape(H, W)
    return np.clip(rgb, 0, 1), depth.astype(np.float32)


def _center_depth(room, objects, c2w_opencv, K, hw) -> np.ndarray:
    H, W = hw
    vv, uu = np.mgrid[0:H, 0:W]
    pix = np.stack([uu + 0.5, vv + 0.5, np.ones_like(uu, dtype=float)], -1).reshape(-1, 3)
    dirs = pix @ np.linalg.inv(K).T @ c2w_opencv[:3, :3].T
    origin = c2w_opencv[:3, 3]
    t = _hit_box(room, origin, dirs)[0]
    for obj in objects:
        t = np.minimum(t, _hit_box(obj, origin, dirs)[0] if isinstance(obj, _Box) else _hit_sphere(obj, origin, dirs)[0])
    return t.reshape(H, W)


# ---------------------------------------------------------------------------------------- camera paths
def look_at_opencv(eye: np.ndarray, target: np.ndarray, up=np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """OpenCV camera-to-world [4,4] at ``eye`` looking at ``target`` (world y up)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right = right / np.linalg.norm(right)
    down = np.cross(fwd, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, fwd], axis=1)
    c2w[:3, 3] = eye
    return c2w


def _camera_path(kind: str, n: int, room: _Box, objects: List, rng: np.random.Generator) -> np.ndarray:
    hx, hz = room.half[0] - 0.6, room.half[2] - 0.6
    s = np.arange(n, dtype=float)
    # Orbits and arcs circle an object when there is one: the interesting, parallax-rich case.
    focus = objects[int(rng.integers(len(objects)))].center.copy() if objects else np.array([0.0, 0.6, 0.0])
    if kind == "orbit":
        center = focus
        radius = rng.uniform(1.5, min(hx, hz, 3.0))
        step = np.deg2rad(rng.uniform(2.0, 6.0)) * rng.choice([-1, 1])
        a = rng.uniform(0, 2 * np.pi) + step * s
        eyes = center + np.stack([radius * np.cos(a), np.full(n, rng.uniform(0.9, 2.0)) - center[1], radius * np.sin(a)], 1)
        targets = np.repeat(center[None], n, 0)
    elif kind == "arc":
        center = focus
        r0 = rng.uniform(1.2, min(hx, hz, 3.0))
        radius = r0 * (1.0 + rng.uniform(-0.015, 0.015) * s)
        a = rng.uniform(0, 2 * np.pi) + np.deg2rad(rng.uniform(1.5, 4.0)) * rng.choice([-1, 1]) * s
        height = rng.uniform(1.0, 2.0) + 0.2 * np.sin(2 * np.pi * s / rng.uniform(40, 100))
        eyes = np.stack([center[0] + radius * np.cos(a), height, center[2] + radius * np.sin(a)], 1)
        targets = center + np.outer(s, rng.uniform(-0.02, 0.02, 3))  # the look-at point drifts slowly
    elif kind == "walk":
        length = rng.uniform(0.05, 0.12) * (n - 1)
        start = np.array([rng.uniform(-hx, hx), rng.uniform(1.2, 1.8), rng.uniform(-hz, hz)])
        # Walk towards the room's middle (give or take 40 degrees), so the view spans the room.
        heading = np.arctan2(-start[2], -start[0]) + rng.uniform(-0.7, 0.7)
        direction = np.array([np.cos(heading), 0.0, np.sin(heading)])
        eyes = start + np.outer(s / max(n - 1, 1) * length, direction)
        wobble = 0.15 * np.sin(2 * np.pi * s / rng.uniform(30, 80))  # head sway, period in frames
        look = np.stack([np.cos(heading + wobble), rng.uniform(-0.2, 0.1) * np.ones(n), np.sin(heading + wobble)], 1)
        targets = eyes + look
    elif kind == "pan":
        eye = np.array([rng.uniform(-hx, hx) / 2, rng.uniform(1.0, 1.8), rng.uniform(-hz, hz) / 2])
        yaw = rng.uniform(0, 2 * np.pi) + np.deg2rad(rng.uniform(1.5, 5.0)) * rng.choice([-1, 1]) * s
        pitch = rng.uniform(-0.3, 0.1) + 0.1 * np.sin(2 * np.pi * s / rng.uniform(40, 100))
        eyes = np.repeat(eye[None], n, 0)
        targets = eyes + np.stack([np.cos(yaw) * np.cos(pitch), np.sin(pitch), np.sin(yaw) * np.cos(pitch)], 1)
    else:
        raise ValueError(f"unknown camera path {kind!r}; choose from {PATH_KINDS}")
    return np.stack([look_at_opencv(e, t) for e, t in zip(eyes, targets)])


def _path_is_clear(c2ws: np.ndarray, room: _Box, objects: List) -> bool:
    eyes = c2ws[:, :3, 3]
    inside = (np.abs(eyes[:, [0, 2]]) < room.half[[0, 2]] - 0.3).all() and (eyes[:, 1] > 0.2).all() and (
        eyes[:, 1] < 2 * room.half[1] - 0.2
    ).all()
    if not inside:
        return False
    for obj in objects:
        reach = np.linalg.norm(obj.half) if isinstance(obj, _Box) else obj.radius
        if (np.linalg.norm(eyes - obj.center, axis=1) < reach + 0.35).any():
            return False
    return True


# ---------------------------------------------------------------------------------------------- clips
def _split_seed(split: Split, seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, 0 if split == "train" else 1, 20250519])


def generate_clip(
    seed: int, num_frames: int = 16, size: int = 64, split: Split = "train", path_kind: Optional[str] = None
) -> SyntheticClip:
    """Render one clip, fully determined by (seed, split, num_frames, size, path_kind)."""
    rng = np.random.default_rng(_split_seed(split, seed))
    textures = _texture_pool(split, rng, 8)
    for _ in range(50):
        room, objects = _make_scene(rng, len(textures))
        kind = path_kind or str(rng.choice(PATH_KINDS))
        c2ws = _camera_path(kind, num_frames, room, objects, rng)
        if _path_is_clear(c2ws, room, objects):
            break
        objects = [o for o in objects if (np.linalg.norm(c2ws[:, :3, 3] - o.center, axis=1) > 1.2).all()]
        if _path_is_clear(c2ws, room, objects):
            break
    fov = np.deg2rad(rng.uniform(45.0, 75.0))
    focal = size / 2 / np.tan(fov / 2)
    K = intrinsics_matrix(focal, focal, size / 2, size / 2)
    views = [render_view(room, objects, textures, c2w, K, (size, size)) for c2w in c2ws]
    frames = np.stack([np.round(v[0] * 255) for v in views]).astype(np.uint8)
    depth = np.stack([v[1] for v in views])
    info = {"seed": seed, "split": split, "path": kind, "fov_deg": float(np.rad2deg(fov)), "objects": len(objects)}
    return SyntheticClip(frames, depth, c2ws, K, info)


def write_clip(clip: SyntheticClip, out: Path) -> None:
    """Write one clip as a nerfstudio scene: images/, depth/ (uint16 mm) and transforms.json (OpenGL c2w)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    n, H, W = clip.frames.shape[:3]
    records = []
    for i in range(n):
        cv2.imwrite(str(out / "images" / f"frame_{i:05d}.png"), cv2.cvtColor(clip.frames[i], cv2.COLOR_RGB2BGR))
        depth_mm = np.clip(np.round(clip.depth[i] * 1000.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(out / "depth" / f"frame_{i:05d}.png"), depth_mm)
        records.append({"file_path": f"images/frame_{i:05d}.png", "depth_file_path": f"depth/frame_{i:05d}.png",
                        "transform_matrix": opencv_to_opengl_c2w(clip.c2w_opencv[i]).tolist()})
    K = clip.K
    meta = {"camera_model": "OPENCV", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
            "cy": float(K[1, 2]), "w": int(W), "h": int(H), "depth_unit_scale_factor": 1e-3,
            "pensieve_synthetic": clip.info, "frames": records}
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))


def write_dataset(
    out: Path, num_clips: int, num_frames: int, size: int, seed: int = 0, split: Split = "train"
) -> List[Path]:
    """Write ``num_clips`` clips to ``out/clip_XXXX`` (clip k uses seed ``seed + k``)."""
    paths = []
    for k in range(num_clips):
        clip_dir = Path(out) / f"clip_{k:04d}"
        write_clip(generate_clip(seed + k, num_frames, size, split), clip_dir)
        paths.append(clip_dir)
    return paths
