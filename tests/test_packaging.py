"""A wheel install (not the editable one `make` does) must work outside the repository.

nerfstudio loads every method's entry point when any ``ns-*`` command starts: a wheel that cannot build our configs
would break ``ns-train`` for every method, not only ours. And the package never opens a path inside the repository:
the shipped model, given by path as a user would, runs through ``pensieve-eval`` and ``pensieve-reconstruct`` from the
unpacked wheel, with the repository nowhere on the import path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run from a directory with no repository above it, with only the unpacked wheel ahead of site-packages.
PROBE = """
import sys
from pathlib import Path
from nerfstudio.plugins.registry import discover_methods
import pensieve_ns
here = Path(pensieve_ns.__file__).resolve()
assert here.is_relative_to(Path(sys.argv[1]).resolve()), here
methods, _ = discover_methods()
for name in ("pensieve-stage1", "pensieve-stage2", "pensieve-stage2-flow64"):
    assert name in methods, name
print("image_size", methods["pensieve-stage2-flow64"].pipeline.datamanager.image_size)
"""


@pytest.mark.slow
def test_a_wheel_registers_the_methods_and_runs_the_shipped_model_outside_the_repository(tmp_path):
    source = tmp_path / "source"  # built from a copy: the build writes build/ and egg-info next to pyproject
    shutil.copytree(REPO / "pensieve_ns", source / "pensieve_ns", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source),
         "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("pensieve_ns-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pensieve_ns/method_configs.py" in names and "pensieve_ns/sfm/cli.py" in names
    assert not any(n.endswith((".pt", ".ckpt", ".yaml")) for n in names), "weights and data stay out of the wheel"

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(site)], cwd=elsewhere, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "image_size (64, 64)" in run.stdout

    # The shipped model, copied away from the repository, through both tools (as their entry points run them).
    from pensieve_ns.data.synthetic import write_dataset

    model = tmp_path / "model"
    shutil.copytree(REPO / "pretrained" / "stage1-flow64", model)
    write_dataset(tmp_path / "clips", 2, 8, 64, seed=10_000, split="heldout")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for module, args in (
        ("pensieve_ns.eval.cli", ["--data", str(tmp_path / "clips"), "--output", str(tmp_path / "eval.json"), "--no-lpips"]),
        ("pensieve_ns.reconstruct", ["--input", str(tmp_path / "clips" / "clip_0000"), "--output-dir", str(tmp_path / "rec")]),
    ):
        tool = subprocess.run([sys.executable, "-m", module, "--load-config", str(model / "config.yml"), *args],
                              cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
        assert tool.returncode == 0, (module, tool.stderr[-3000:])
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "rec" / "transforms.json").is_file()
