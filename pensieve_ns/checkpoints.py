"""Finding, checking and loading nerfstudio checkpoints of pensieve runs (stage 1 -> stage 2 chaining).

A run folder as ns-train writes it: ``outputs/EXP/METHOD/TIMESTAMP/{config.yml, nerfstudio_models/step-N.ckpt}``.
Anything of that chain may be given: the run folder, its ``config.yml``, ``nerfstudio_models`` or one ``.ckpt``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from pensieve_ns.errors import PensieveInputError

# nerfstudio's schedulers put numpy scalars into checkpoints once the cosine decay starts, which torch >= 2.6
# refuses to unpickle with weights_only=True (nerfstudio issue #3683): allow exactly those types. Here, because every
# loader of a run imports this module (ns-* commands through the method configs, the pensieve-* commands directly).
torch.serialization.add_safe_globals([np.core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in ("float64", "float32", "int64")}])

STAGE1_MODULES = ("encoder.", "camera_head.", "lvsm.")  # what stage 2 takes over (docs/method.md §2.3)
STAGE2_MODULES = STAGE1_MODULES + ("gaussian_head.",)  # what the DL3DV fine-tune takes from a stage-2 run


def resolve_checkpoint(path: Path) -> Path:
    """The newest ``step-*.ckpt`` that ``path`` points to, or a clear error."""
    path = Path(path)
    if not path.exists():
        raise PensieveInputError(path, "checkpoint not found (give a run folder, its config.yml or a step-*.ckpt)")
    if path.is_file() and path.suffix == ".ckpt":
        return path
    folder = path.parent if path.is_file() else path
    if (folder / "nerfstudio_models").is_dir():
        folder = folder / "nerfstudio_models"
    found = sorted(folder.glob("step-*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not found:
        raise PensieveInputError(path, "no step-*.ckpt checkpoint in this run (did training save one?)")
    return found[-1]


def run_method_name(ckpt: Path) -> Optional[str]:
    """``method_name`` from the run's config.yml (beside ``nerfstudio_models``), if there is one."""
    config = ckpt.parent.parent / "config.yml"
    if not config.exists():
        return None
    match = re.search(r"^method_name:\s*(\S+)", config.read_text(errors="replace"), re.MULTILINE)
    return match.group(1) if match else None


def load_model_state(ckpt: Path) -> Dict[str, Tensor]:
    """The model's weights (``_model.`` prefix removed) from a nerfstudio checkpoint."""
    try:
        state = torch.load(ckpt, map_location="cpu")
    except Exception as err:  # truncated or not a torch file
        raise PensieveInputError(ckpt, f"cannot read the checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or "pipeline" not in state:
        raise PensieveInputError(ckpt, "not a nerfstudio checkpoint (no 'pipeline' state)")
    out = {}
    for key, value in state["pipeline"].items():
        if key.startswith("_model."):
            key = key[len("_model."):]
            out[key[len("module."):] if key.startswith("module.") else key] = value  # DDP-wrapped runs
    return out


def load_head_weights(path: Path, head: Optional[nn.Module] = None, what: str = "camera head") -> Dict[str, Tensor]:
    """A pre-trained head's state dict (keys 'net.*': ``FlowCameraHead``, ``FlowDepthHead``), or
    a clear error: missing, unreadable, not such a file, or (given ``head``) one for another kind of head."""
    path = Path(path)
    if not path.is_file():
        raise PensieveInputError(path, f"{what} weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  any unreadable file gets the same one-line error
        raise PensieveInputError(path, f"{what} weights unreadable ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or not any(k.startswith("net.") for k in state):
        raise PensieveInputError(path, f"not a {what} state dict (expected keys 'net.*')")
    if head is not None:
        own = head.state_dict()
        if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            raise PensieveInputError(path, f"these weights are not for a {type(head).__name__} of this size "
                                           f"(another kind of {what} or width?)")
    return state


def load_stage1_weights(model: nn.Module, path: Path, modules: Iterable[str] = STAGE1_MODULES) -> Tuple[Path, int]:
    """Copy the backbone, camera head and LVSM head of a pensieve stage-1 (or stage-2) run into ``model``.

    Refuses, naming what differs: a checkpoint of another method, one without these modules, or one whose
    tensors have other shapes (another preset). Returns the checkpoint used and the number of tensors loaded.
    """
    ckpt = resolve_checkpoint(path)
    method = run_method_name(ckpt)
    if method is not None and not method.startswith("pensieve-stage"):
        raise PensieveInputError(ckpt, f"a checkpoint of method '{method}', not of pensieve-stage1")
    saved = load_model_state(ckpt)
    own = model.state_dict()
    wanted = [k for k in own if k.startswith(tuple(modules))]
    missing = [k for k in wanted if k not in saved]
    if missing:
        raise PensieveInputError(
            ckpt, f"not a pensieve stage-1 checkpoint: {len(missing)} of its tensors are missing (e.g. {missing[0]})"
        )
    shapes = [(k, tuple(saved[k].shape), tuple(own[k].shape)) for k in wanted if saved[k].shape != own[k].shape]
    unexpected = [k for k in saved if k.startswith(tuple(modules)) and k not in own]
    if shapes or unexpected:
        detail = (f"{shapes[0][0]} is {list(shapes[0][1])} there and {list(shapes[0][2])} here" if shapes
                  else f"it has {unexpected[0]}, this model does not")
        raise PensieveInputError(
            ckpt, f"checkpoint of another preset or model size ({len(shapes) + len(unexpected)} tensors differ; "
            f"{detail}): train stage 2 with the same preset and --pipeline.model sizes as stage 1",
        )
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(saved[k])
    return ckpt, len(wanted)


def forget_start_weights(model_config) -> None:
    """For a model a checkpoint is about to fill: drop the paths of the heads' starting weights (``weights`` of the
    camera and depth head configs). The checkpoint holds the trained heads, so those files need not exist any more
    (a run read from another clone, or after the repository moved)."""
    for head in (getattr(model_config, "camera_head", None), getattr(model_config, "depth_head", None)):
        if hasattr(head, "weights"):
            head.weights = None


def load_run(config_path: Path, methods: Tuple[str, ...], program: str):
    """The model of a run from its ``config.yml`` and newest checkpoint, without its training data.

    Returns (model in eval mode on the CPU, the run's trainer config, the checkpoint). Refuses a missing config,
    a run of a method not in ``methods`` or a preset of one (naming ``program``) and a run without a checkpoint."""
    import yaml

    if not config_path.is_file():
        raise PensieveInputError(config_path, "no such config (give a run's config.yml)")
    match = re.search(r"^method_name:\s*(\S+)", config_path.read_text(errors="replace"), re.MULTILINE)
    method = match.group(1) if match else None
    # 'pensieve-stage2-flow64' is a pensieve-stage2 run of another preset (method_configs.stage2_config)
    if method is None or not any(method == m or method.startswith(m + "-") for m in methods):
        raise PensieveInputError(config_path, f"a config of method '{method}'; {program} needs a {' or '.join(methods)} run")
    ckpt = resolve_checkpoint(config_path.parent)
    trainer_config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    forget_start_weights(trainer_config.pipeline.model)
    model = trainer_config.pipeline.model.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    model.load_state_dict(load_model_state(ckpt), strict=False)
    return model.eval(), trainer_config, ckpt
