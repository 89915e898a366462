"""Losses: the pooled weighting, and LPIPS's offline failure as a clear message."""

import urllib.error

import pytest
import torch

from pensieve_ns.errors import PensieveInputError
from pensieve_ns.losses import load_lpips_vgg
from pensieve_ns.losses import weighted_image_loss


def test_weighted_image_loss_pools_over_weights():
    per_frame = torch.tensor([[1.0, 2.0, 3.0]])
    weights = torch.tensor([[0.1, 1.0, 1.0]])
    assert weighted_image_loss(per_frame, weights).item() == pytest.approx((0.1 + 2 + 3) / 2.1)


def test_lpips_without_weights_says_what_to_do(monkeypatch):
    import lpips

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(lpips, "LPIPS", offline)
    with pytest.raises(PensieveInputError, match="lpips-weight 0") as err:
        load_lpips_vgg()
    assert "vgg16" in str(err.value) and "TORCH_HOME" in str(err.value)
