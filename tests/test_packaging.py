"""A wheel install (not the editable one `make` does) must work outside the repository.

nerfstudio loads every method's entry point when any ``ns-*`` command starts, and ours build their configs from the
presets at import time: a wheel without them would break ``ns-train`` for every method, not only ours.
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
def test_a_wheel_carries_the_presets(tmp_path):
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
    presets = sorted(n for n in names if n.startswith("pensieve_ns/configs/"))
    assert presets == sorted(f"pensieve_ns/configs/{p.name}" for p in (REPO / "pensieve_ns/configs").glob("*.yaml"))

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
