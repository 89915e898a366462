import cv2
import numpy as np
import pytest
from PIL import Image

from pensieve_ns.cameras import intrinsics_matrix
from pensieve_ns.data.frames import fit_matrix, load_image_rgb8, resize_center_crop
from pensieve_ns.errors import PensieveInputError


def test_modes_are_converted(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_image_rgb8(tmp_path / "rgb.png"), rgb)

    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = load_image_rgb8(tmp_path / "gray.png")
    assert out.shape == (10, 12, 3) and (out == gray[..., None]).all()

    rgba = np.concatenate([rgb, np.zeros((10, 12, 1), np.uint8)], -1)
    rgba[:5, :, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = load_image_rgb8(tmp_path / "rgba.png")
    np.testing.assert_array_equal(out[:5], rgb[:5])  # opaque: unchanged
    assert (out[5:] == 255).all()  # transparent: white background

    gray16 = (np.arange(120).reshape(10, 12) * 500).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    out = load_image_rgb8(tmp_path / "gray16.png")
    np.testing.assert_allclose(out[..., 0], np.round(gray16 / 65535 * 255), atol=1)  # scaled, not clipped

    rgb16 = (rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb16.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    np.testing.assert_allclose(load_image_rgb8(tmp_path / "rgb16.png"), rgb, atol=1)

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    out = load_image_rgb8(tmp_path / "cmyk.jpg")
    assert out.shape == (10, 12, 3) and np.abs(out.astype(int) - rgb).mean() < 25


def test_unreadable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(PensieveInputError, match="bad.png: not a readable image"):
        load_image_rgb8(tmp_path / "bad.png")
    with pytest.raises(PensieveInputError, match="does not exist"):
        load_image_rgb8(tmp_path / "missing.png")


@pytest.mark.parametrize("src_hw,out_hw", [((360, 640), (256, 256)), ((48, 64), (32, 32)), ((30, 20), (64, 48))])
def test_resize_crop_keeps_projection(src_hw, out_hw):
    """A 3D point projects to the same image content before and after fitting (K updated by fit_matrix)."""
    H, W = src_hw
    K = intrinsics_matrix(0.9 * W, 0.9 * W, W / 2, H / 2)
    K_out = fit_matrix(src_hw, out_hw) @ K
    # A smooth image: a bright blob at a projected point must land where K_out projects it.
    point = np.array([0.05, -0.03, 1.0])
    uv = (K @ point)[:2] / point[2]
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    blob = np.exp(-((xx - uv[0]) ** 2 + (yy - uv[1]) ** 2) / (2 * (0.06 * max(H, W)) ** 2))
    img = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, -1)
    out = resize_center_crop(img, out_hw).astype(float)[..., 0]
    assert out.shape == out_hw
    yy, xx = np.mgrid[0 : out_hw[0], 0 : out_hw[1]] + 0.5
    centroid = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    expected = (K_out @ point)[:2] / point[2]
    np.testing.assert_allclose(centroid, expected, atol=0.6)
