"""Losses that need more than a line: LPIPS-VGG loading (offline-aware)."""

from __future__ import annotations

from pensieve_ns.errors import PensieveInputError


def load_lpips_vgg():
    """The ``lpips`` package's VGG variant, frozen. Its backbone comes from torchvision's ImageNet VGG16 weights,
    which torchvision downloads once into ``$TORCH_HOME/hub/checkpoints``; offline, that fails, and this says
    what to do instead of a traceback."""
    import lpips

    try:
        model = lpips.LPIPS(net="vgg", verbose=False)
    except Exception as err:  # urllib errors, missing files, hash mismatches
        raise PensieveInputError(
            None,
            f"LPIPS-VGG weights cannot be loaded ({type(err).__name__}: {err}). Put torchvision's vgg16-397923af.pth "
            "in $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints), or train without LPIPS: "
            "--pipeline.model.lpips-weight 0",
        ) from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
