import numpy as np
import torch

from pensieve_ns.cameras import (
    intrinsics_matrix,
    invert_rigid,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
    pixelsplat_camera_to_opencv,
)
from pensieve_ns.data.synthetic import look_at_opencv


def random_rigid(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3], T[:, :3, 3] = R, rng.normal(size=(n, 3))
    return T


def test_opengl_opencv_roundtrip_and_axes():
    rng = np.random.default_rng(0)
    c2w = random_rigid(rng, 5)
    np.testing.assert_allclose(opencv_to_opengl_c2w(opengl_to_opencv_c2w(c2w)), c2w, atol=1e-12)
    gl = opencv_to_opengl_c2w(c2w)
    # OpenGL looks down -z: its -z axis is OpenCV's +z (forward); its y is OpenCV's -y.
    np.testing.assert_allclose(-gl[:, :3, 2], c2w[:, :3, 2])
    np.testing.assert_allclose(-gl[:, :3, 1], c2w[:, :3, 1])
    np.testing.assert_allclose(gl[:, :3, 3], c2w[:, :3, 3])
    # 3x4 input, torch input
    t = torch.tensor(c2w[:, :3], dtype=torch.float64)
    np.testing.assert_allclose(opengl_to_opencv_c2w(t).numpy(), opengl_to_opencv_c2w(c2w[:, :3]))


def test_invert_rigid_numpy_and_torch():
    c2w = random_rigid(np.random.default_rng(1), 4)
    np.testing.assert_allclose(invert_rigid(c2w) @ c2w, np.tile(np.eye(4), (4, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(torch.tensor(c2w)).numpy(), np.linalg.inv(c2w), atol=1e-12)


def test_pixelsplat_cameras_to_opencv():
    c2w = random_rigid(np.random.default_rng(2), 3)
    w2c = np.linalg.inv(c2w)
    cams = np.zeros((3, 18))
    cams[:, :4] = [0.9, 1.6, 0.5, 0.45]
    cams[:, 6:] = w2c[:, :3].reshape(3, 12)
    c2w_out, K = pixelsplat_camera_to_opencv(cams, width=640, height=360)
    np.testing.assert_allclose(c2w_out, c2w, atol=1e-12)
    np.testing.assert_allclose(K[0], intrinsics_matrix(576.0, 576.0, 320.0, 162.0))


def test_look_at_projects_target_to_centre():
    eye, target = np.array([1.0, 1.5, -2.0]), np.array([0.3, 0.5, 0.7])
    c2w = look_at_opencv(eye, target)
    K = intrinsics_matrix(50.0, 50.0, 32.0, 32.0)
    p = np.linalg.inv(c2w) @ np.append(target, 1.0)
    uv = (K @ p[:3])[:2] / p[2]
    np.testing.assert_allclose(uv, [32, 32], atol=1e-9)
    assert p[2] > 0
    # world up (+y) appears upwards in the image, i.e. towards smaller v (OpenCV y down)
    up = np.linalg.inv(c2w) @ np.append(target + [0, 0.1, 0], 1.0)
    assert (K @ up[:3])[1] / up[2] < 32


def se3_from(xi: torch.Tensor) -> torch.Tensor:
    """[..., 6] (axis-angle, translation) -> [..., 4, 4] rigid transforms (a test helper)."""
    from pensieve_ns.cameras import axis_angle_to_matrix

    T = torch.eye(4, dtype=xi.dtype).expand(*xi.shape[:-1], 4, 4).clone()
    T[..., :3, :3] = axis_angle_to_matrix(xi[..., :3])
    T[..., :3, 3] = xi[..., 3:]
    return T


def test_axis_angle_matches_quaternion_and_has_finite_gradient_at_zero():
    from pensieve_ns.cameras import axis_angle_to_matrix, quaternion_to_matrix

    w = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    th = w.norm()
    q = torch.cat([torch.cos(th / 2)[None], torch.sin(th / 2) * w / th])
    assert torch.allclose(axis_angle_to_matrix(w), quaternion_to_matrix(q), atol=1e-12)
    w0 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (axis_angle_to_matrix(w0) * torch.randn(3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(w0.grad).all() and w0.grad.abs().sum() > 0


def test_chain_composes_relative_steps():
    from pensieve_ns.cameras import chain

    steps = se3_from(torch.randn(4, 6, dtype=torch.float64) * 0.3)
    first = se3_from(torch.randn(6, dtype=torch.float64))
    poses = chain(first, steps)
    assert poses.shape == (5, 4, 4)
    for i in range(4):
        assert torch.allclose(torch.linalg.inv(poses[i]) @ poses[i + 1], steps[i], atol=1e-10)
