"""Camera conventions: the one module that converts between them.

Conventions used across pensieve-ns (a name always says which one a tensor is in):

* ``c2w_opencv`` [..., 4, 4]: camera-to-world, OpenCV axes (x right, y down, z forward). This is what the
  model predicts and what every internal computation uses.
* ``w2c_opencv`` [..., 4, 4]: its inverse, what gsplat calls a ``viewmat``.
* ``c2w_opengl`` [..., 3|4, 4]: camera-to-world, OpenGL/Blender axes (x right, y up, z back), what
  nerfstudio's ``Cameras`` and ``transforms.json`` hold.
* quaternions are (w, x, y, z).
* intrinsics ``K`` [..., 3, 3] are in pixels of the image they belong to, principal point in pixel units
  where the top-left pixel's centre is (0.5, 0.5).
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

Array = Union[np.ndarray, Tensor]

# Flipping y and z of the camera axes maps OpenCV <-> OpenGL (the map is its own inverse).
_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


def _flip(like: Array) -> Array:
    if isinstance(like, Tensor):
        return torch.as_tensor(_FLIP_YZ, dtype=like.dtype, device=like.device)
    return _FLIP_YZ.astype(like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64)


def to_homogeneous(mat: Array) -> Array:
    """[..., 3, 4] or [..., 4, 4] -> [..., 4, 4] (appends the row 0 0 0 1 where missing)."""
    if mat.shape[-2] == 4:
        return mat
    if isinstance(mat, Tensor):
        bottom = torch.zeros(*mat.shape[:-2], 1, 4, dtype=mat.dtype, device=mat.device)
        bottom[..., 0, 3] = 1.0
        return torch.cat([mat, bottom], dim=-2)
    bottom = np.zeros((*mat.shape[:-2], 1, 4), dtype=mat.dtype)
    bottom[..., 0, 3] = 1.0
    return np.concatenate([mat, bottom], axis=-2)


def opengl_to_opencv_c2w(c2w_opengl: Array) -> Array:
    """Camera-to-world OpenGL [..., 3|4, 4] -> camera-to-world OpenCV [..., 4, 4] (flips camera y and z)."""
    c2w = to_homogeneous(c2w_opengl)
    return c2w @ _flip(c2w)


def opencv_to_opengl_c2w(c2w_opencv: Array) -> Array:
    """Camera-to-world OpenCV [..., 4, 4] -> camera-to-world OpenGL [..., 4, 4]."""
    c2w = to_homogeneous(c2w_opencv)
    return c2w @ _flip(c2w)


def invert_rigid(mat: Array) -> Array:
    """Inverse of rigid transforms [..., 4, 4] (c2w <-> w2c), analytic: [R t]^-1 = [R^T -R^T t]."""
    mat = to_homogeneous(mat)
    if isinstance(mat, Tensor):
        rot_t = mat[..., :3, :3].transpose(-1, -2)
        out = torch.zeros_like(mat)
    else:
        rot_t = np.swapaxes(mat[..., :3, :3], -1, -2)
        out = np.zeros_like(mat)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ mat[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def intrinsics_matrix(fx: Array, fy: Array, cx: Array, cy: Array) -> Array:
    """Pinhole K [..., 3, 3] from focal lengths and principal point [...] in pixels."""
    if isinstance(fx, Tensor):
        fy, cx, cy = (torch.as_tensor(v, dtype=fx.dtype, device=fx.device).expand_as(fx) for v in (fy, cx, cy))
        K = torch.zeros(*fx.shape, 3, 3, dtype=fx.dtype, device=fx.device)
    else:
        fx, fy, cx, cy = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (fx, fy, cx, cy)))
        K = np.zeros((*fx.shape, 3, 3))
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = cx
    K[..., 1, 2] = cy
    K[..., 2, 2] = 1.0
    return K


def resize_crop_intrinsics(
    K: Float[np.ndarray, "*batch 3 3"], scale_xy: Tuple[float, float], crop_offset_xy: Tuple[float, float]
) -> Float[np.ndarray, "*batch 3 3"]:
    """Intrinsics after resizing an image by ``scale_xy`` then cropping ``crop_offset_xy`` pixels off its top-left.

    Pixel centres sit at +0.5, so a resize scales the continuous image plane exactly (principal point
    included) and the crop is a pure shift of the principal point.
    """
    out = np.array(K, dtype=np.float64, copy=True)
    out[..., 0, :] *= scale_xy[0]
    out[..., 1, :] *= scale_xy[1]
    out[..., 0, 2] -= crop_offset_xy[0]
    out[..., 1, 2] -= crop_offset_xy[1]
    return out


def pixelsplat_camera_to_opencv(
    cameras: Float[np.ndarray, "N 18"], width: int, height: int
) -> Tuple[Float[np.ndarray, "N 4 4"], Float[np.ndarray, "N 3 3"]]:
    """pixelSplat chunk cameras -> (c2w_opencv [N,4,4], K [N,3,3] in pixels of a ``width`` x ``height`` image).

    Each row is fx, fy, cx, cy normalised by image width/height, two unused values, then the 12 entries of a
    row-major 3x4 world-to-camera [R|t] in OpenCV axes.
    """
    cams = np.asarray(cameras, dtype=np.float64)
    K = intrinsics_matrix(cams[:, 0] * width, cams[:, 1] * height, cams[:, 2] * width, cams[:, 3] * height)
    w2c = to_homogeneous(cams[:, 6:18].reshape(-1, 3, 4))
    return invert_rigid(w2c), K


def opencv_to_pixelsplat_camera(
    c2w_opencv: Float[np.ndarray, "N 4 4"], K: Float[np.ndarray, "N 3 3"], src_hw: Sequence[Tuple[int, int]]
) -> Float[np.ndarray, "N 18"]:
    """The inverse of ``pixelsplat_camera_to_opencv``: rows of fx/W, fy/H, cx/W, cy/H, 0, 0, w2c[:3, :4].

    ``K[i]`` is in pixels of an image of ``src_hw[i]`` = (H, W). Normalised intrinsics do not change when an image
    is resized (pixel centres at +0.5 scale with the plane), so the reader's K at the packed size equals the
    source K scaled per axis, with no resize factor to carry here.
    """
    hw = np.asarray(src_hw, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((len(c2w_opencv), 18), dtype=np.float64)
    out[:, 0], out[:, 2] = K[:, 0, 0] / hw[:, 1], K[:, 0, 2] / hw[:, 1]
    out[:, 1], out[:, 3] = K[:, 1, 1] / hw[:, 0], K[:, 1, 2] / hw[:, 0]
    out[:, 6:] = invert_rigid(np.asarray(c2w_opencv, dtype=np.float64))[:, :3, :].reshape(-1, 12)
    return out.astype(np.float32)


def quaternion_to_matrix(quat: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Unit quaternions (w, x, y, z) -> rotation matrices (normalises first)."""
    w, x, y, z = _normalize(quat).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quat.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 4"]:
    """Rotation matrices -> unit quaternions (w, x, y, z) with w >= 0 (Shepperd's branch per element)."""
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # Four candidate solutions, each well conditioned where its leading component is large; pick the best.
    q = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # [*, 4 candidates, 4]; candidate k has 4 q_k^2 as its k-th entry
    lead = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = lead.argmax(dim=-1, keepdim=True)
    pick = torch.gather(q, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    pick = _normalize(pick)
    return torch.where(pick[..., :1] < 0, -pick, pick)


def quaternion_multiply(a: Float[Tensor, "*batch 4"], b: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 4"]:
    """Hamilton product a ⊗ b of (w, x, y, z) quaternions: the rotation b followed by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def axis_angle_to_matrix(w: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """Rodrigues: exp([w]x) = I + A [w]x + B [w]x², with Taylor forms near 0 (finite gradients at w = 0)."""
    theta2 = (w * w).sum(-1)[..., None, None]
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    A = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    B = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe2)
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    S = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).view(*w.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(S)
    return eye + A * S + B * (S @ S)


def _normalize(quat: Tensor) -> Tensor:
    return quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def pixel_rays_opencv(
    K: Float[Tensor, "*batch 3 3"], height: int, width: int
) -> Float[Tensor, "*batch H W 3"]:
    """Unit ray directions in OpenCV camera space through pixel centres (u + 0.5, v + 0.5)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=K.dtype, device=K.device) + 0.5,
        torch.arange(width, dtype=K.dtype, device=K.device) + 0.5,
        indexing="ij",
    )
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    dirs = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like((u - cx) / fx)], dim=-1)
    return dirs / dirs.norm(dim=-1, keepdim=True)


def unproject_depth(
    depth: Float[Tensor, "*batch h w"], K: Float[Tensor, "*batch 3 3"], c2w_opencv: Float[Tensor, "*batch 4 4"],
    stride: int = 1,
) -> Float[Tensor, "*batch h w 3"]:
    """World points R (d K^-1 [u + 0.5, v + 0.5, 1]) + t of a z-depth map (OpenCV camera, pixel centres).

    With ``stride`` k, depth entry (i, j) belongs to the k x k block whose centre is ((j + 0.5) k, (i + 0.5) k).
    """
    h, w = depth.shape[-2:]
    v, u = torch.meshgrid(
        (torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5) * stride,
        (torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5) * stride,
        indexing="ij",
    )
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    points = torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], dim=-1)
    R, t = c2w_opencv[..., :3, :3], c2w_opencv[..., :3, 3]
    return torch.einsum("...ij,...hwj->...hwi", R, points) + t[..., None, None, :]


def plucker_rays(
    c2w_opencv: Float[Tensor, "*batch 4 4"], K: Float[Tensor, "*batch 3 3"], height: int, width: int
) -> Float[Tensor, "*batch 6 H W"]:
    """Plücker map of a camera: world ray direction d = R K^-1 [u+.5, v+.5, 1] (unit) and moment m = t x d."""
    dirs = pixel_rays_opencv(K, height, width)  # [*, H, W, 3] camera space
    R, t = c2w_opencv[..., :3, :3], c2w_opencv[..., :3, 3]
    d = torch.einsum("...ij,...hwj->...hwi", R, dirs)
    m = torch.cross(t[..., None, None, :].expand_as(d), d, dim=-1)
    return torch.cat([d, m], dim=-1).movedim(-1, -3)


def chain(first: Float[Tensor, "*batch 4 4"], steps: Float[Tensor, "*batch N 4 4"]) -> Float[Tensor, "*batch N+1 4 4"]:
    """Absolute poses from a first pose and relative steps: P_0 = first, P_i = P_{i-1} @ steps_{i-1} (c2w
    composed on the right: each step is expressed in the previous camera's frame)."""
    poses = [first]
    for k in range(steps.shape[-3]):
        poses.append(poses[-1] @ steps[..., k, :, :])
    return torch.stack(poses, dim=-3)


def camera_scale(c2w_opencv: Float[Tensor, "B L 4 4"]) -> Float[Tensor, "B"]:
    """Each clip's scale as ``normalise_cameras`` divides it out: the farthest camera centre from the first frame's
    (1 for pure rotations, whose centres do not move)."""
    rel = invert_rigid(c2w_opencv[:, :1]) @ c2w_opencv
    scale = rel[..., :3, 3].norm(dim=-1).amax(dim=1).clamp_min(1e-6)
    return torch.where(scale > 1e-4, scale, torch.ones_like(scale))


def normalise_cameras(c2w_opencv: Float[Tensor, "B L 4 4"]) -> Float[Tensor, "B L 4 4"]:
    """Express each clip's cameras relative to its first frame, scaled so the farthest camera centre is at 1.

    Removes the arbitrary world frame and scale of ground truth, so cameras of different scenes are comparable
    (pure rotations keep scale 1).
    """
    rel = invert_rigid(c2w_opencv[:, :1]) @ c2w_opencv
    scale = camera_scale(c2w_opencv)
    out = rel.clone()
    out[..., :3, 3] = rel[..., :3, 3] / scale[:, None, None]
    return out
