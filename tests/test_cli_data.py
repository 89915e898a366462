"""``pensieve-data`` as a person runs it: real console script, exit codes, nothing written on bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHAIR

EXE = Path(sys.executable).parent / "pensieve-data"


def run(*args):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_inspect_json_on_each_source(synth_dir, mp4_path, image_folder, chunk_dir):
    expected = {synth_dir: ("nerfstudio", 4), mp4_path: ("video", 1), image_folder: ("images", 1), chunk_dir: ("chunks", 2)}
    for path, (reader, count) in expected.items():
        out = run("inspect", path, "--json")
        assert out.returncode == 0, out.stderr
        records = json.loads(out.stdout)
        assert len(records) == count and {r["reader"] for r in records} == {reader}
        assert all(r["gt_cameras"] == (reader in ("nerfstudio", "chunks")) for r in records)
    table = run("inspect", mp4_path)
    assert table.returncode == 0 and "video" in table.stdout and "64x48" in table.stdout


@pytest.mark.skipif(not CHAIR.is_dir(), reason="shared/data/chair_orbit not present")
def test_inspect_chair_orbit():
    out = run("inspect", CHAIR, "--json")
    (record,) = json.loads(out.stdout)
    assert (record["frames"], record["width"], record["height"], record["gt_cameras"]) == (200, 128, 128, True)


def test_synth_then_inspect(tmp_path):
    out = run("synth", tmp_path / "d", "--num-clips", 2, "--frames", 3, "--size", 16, "--seed", 5)
    assert out.returncode == 0, out.stderr
    records = json.loads(run("inspect", tmp_path / "d", "--json").stdout)
    assert [(r["frames"], r["width"], r["gt_depth"]) for r in records] == [(3, 16, True)] * 2
    again = run("synth", tmp_path / "d", "--num-clips", 1)
    assert again.returncode == 2 and "not empty" in again.stderr
    assert len(list((tmp_path / "d").iterdir())) == 2  # untouched


def test_bad_inputs_exit_2_with_one_line(tmp_path, synth_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 64)
    scene = tmp_path / "scene"
    shutil.copytree(synth_dir / "clip_0000", scene)
    (scene / "transforms.json").write_text("{oops")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    for path, needle in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "empty", "folder is empty"),
        (tmp_path / "fake.mp4", "not a readable video"),
        (scene, "not valid JSON"),
    ]:
        out = run("inspect", path)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0] and "Traceback" not in out.stderr
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing modified
