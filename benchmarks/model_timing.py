"""Shared by inference_scaling.py and training_throughput.py: build a preset's model, time a callable, and
measure peak memory of one configuration in a fresh process (CPU: peak resident set growth; CUDA:
torch.cuda.max_memory_allocated)."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(preset: str, stage: int, device: str, lpips: bool = False):
    """The model of ``ns-train pensieve-stage{stage}`` with preset ``preset`` (LPIPS off unless asked: offline)."""
    from pensieve_ns.method_configs import stage1_config, stage2_config

    cfg = (stage1_config if stage == 1 else stage2_config)(preset)
    if not lpips:
        cfg.pipeline.model.lpips_weight = 0.0
    model = cfg.pipeline.model.setup(scene_box=None, num_train_data=1, metadata={}, device=device)
    return model.to(device), cfg


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> Dict[str, float]:
    """Median and min wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones (seconds)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def current_rss_mib() -> float:
    """Resident set size now (Linux /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


class PeakRSS:
    """Samples the resident set every ``interval`` s in a thread while the block runs: ``peak_mib`` is its peak
    growth over the resident set at entry (the model is already resident). CPU tensors are malloc'd, so this is
    what a user sees; it misses peaks shorter than the interval."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak_mib = interval, 0.0

    def __enter__(self):
        import threading

        self.base, self._stop = current_rss_mib(), threading.Event()
        self.peak = self.base

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, current_rss_mib())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak, current_rss_mib()) - self.base


def peak_memory_in_subprocess(script: Path, args: List[str]) -> Dict[str, float]:
    """Run ``script --measure-memory ARGS`` in a fresh interpreter; it prints one JSON line with its peak."""
    out = subprocess.run([sys.executable, str(script), "--measure-memory", *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_peak(fn: Callable[[], object], device: str) -> Dict[str, float]:
    """What a --measure-memory child prints for one call of ``fn``: the CUDA allocator's peak over the call, or
    (CPU) the peak growth of the resident set over the call (``PeakRSS``)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20, "kind": "cuda_max_allocated_growth"}
    with PeakRSS() as peak:
        fn()
    return {"peak_mib": peak.peak_mib, "kind": "cpu_peak_rss_growth"}
