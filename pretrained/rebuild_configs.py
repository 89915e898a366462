"""Rebuild each shipped model's ``config.yml`` from its manifest and check its weights against it.

    python pretrained/rebuild_configs.py          # rewrite every pretrained/*/config.yml
    python pretrained/rebuild_configs.py --check  # only check (what tests/test_pretrained.py runs)

A ``config.yml`` is nerfstudio's pickled trainer config: it names the classes of the package, so moving a module
breaks it. The manifest (``manifest.json`` beside it) names the preset instead; this script builds the preset's
config with today's classes, checks that the checkpoint's sha256 is the manifest's and that its tensors fill the
model exactly (no missing, unexpected or reshaped tensor), and writes the YAML as ``ns-train`` would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_models() -> list:
    """Folders of shipped nerfstudio runs (those with a manifest naming a preset)."""
    return sorted(p.parent for p in HERE.glob("*/manifest.json") if "preset" in json.loads(p.read_text()))


def build_config(folder: Path):
    """The trainer config of ``folder``'s manifest, with today's classes."""
    from pensieve_ns.method_configs import stage1_config, stage2_config

    manifest = json.loads((folder / "manifest.json").read_text())
    config = (stage1_config if manifest["stage"] == 1 else stage2_config)(manifest["preset"])
    config.experiment_name = folder.name
    config.output_dir = Path("pretrained")
    config.timestamp = ""
    config.pipeline.model.labelled_prior = manifest.get("labelled_synthetic_prior", "")
    return config, manifest


def check(folder: Path) -> str:
    """Rebuild the model of ``folder`` and load its checkpoint strictly; returns the checkpoint's name."""
    from pensieve_ns.checkpoints import load_model_state

    config, manifest = build_config(folder)
    ckpt = folder / manifest["checkpoint"]
    if sha256(ckpt) != manifest["sha256"]:
        raise SystemExit(f"{ckpt}: sha256 differs from the manifest's")
    model = config.pipeline.model.setup(scene_box=None, num_train_data=1, metadata={}, device="cpu")
    state = load_model_state(ckpt)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("lpips.")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise SystemExit(f"{ckpt}: does not fit the preset '{manifest['preset']}' (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, other shapes {shapes[:3]})")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return ckpt.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="check only; write nothing")
    args = parser.parse_args()
    for folder in shipped_models():
        name = check(folder)
        if not args.check:
            config, _ = build_config(folder)
            (folder / "config.yml").write_text(yaml.dump(config), "utf8")
        print(f"{folder.name}: {name} fits its preset" + ("" if args.check else "; config.yml rebuilt"))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
