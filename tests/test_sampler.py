import json

import numpy as np
import pytest

from pensieve_ns.data.sampler import (
    ClipSamplerConfig,
    TrainBatchSampler,
    eval_specs,
    largest_gap,
    load_eval_index,
    sample_window,
    usable_clips,
)
from pensieve_ns.errors import DataWarning, PensieveInputError


def test_window_gaps_within_bounds():
    rng = np.random.default_rng(0)
    for n in (7, 20, 100, 400):
        for _ in range(200):
            w = sample_window(n, 7, 12, 48, rng)
            gaps = np.diff(w)
            hi = min((n - 1) // 6, 48)
            assert w[0] >= 0 and w[-1] < n
            assert gaps.min() >= min(12, hi) and gaps.max() <= hi
    with pytest.raises(ValueError):
        sample_window(6, 7, 1, 4, rng)


def test_gaps_cover_their_range():
    rng = np.random.default_rng(1)
    gaps = np.concatenate([np.diff(sample_window(400, 7, 12, 48, rng)) for _ in range(500)])
    assert gaps.min() == 12 and gaps.max() == 48


def test_gap_warmup_is_linear_and_capped():
    cfg = ClipSamplerConfig(gap_warmup_start=4, gap_warmup_steps=20000)
    assert [largest_gap(cfg, s) for s in (0, 10000, 20000, 50000)] == [4, 26, 48, 48]
    assert largest_gap(ClipSamplerConfig(), 0) == 48
    sampler = TrainBatchSampler([500] * 3, 8, cfg, seed=0)
    first = sampler.draw()
    assert all(set(np.diff(sorted(s.frames))) <= {4} or len(s.frames) < 2 for s in first)  # min_gap clamps to 4


def test_batches_share_L_and_G_and_hold_out_a_frame():
    cfg = ClipSamplerConfig(window_frames=7, min_gap=1, max_gap=3)
    sampler = TrainBatchSampler([30, 40, 50], 6, cfg, seed=3)
    seen_L, seen_G = set(), set()
    for batch in (sampler.draw() for _ in range(300)):
        L, G = len(batch[0].frames), len(batch[0].context)
        seen_L.add(L)
        seen_G.add(G)
        for spec in batch:
            assert len(spec.frames) == L and len(spec.context) == G
            assert 1 <= G <= min(6, L - 1)  # strict subset
            assert list(spec.context) == sorted(spec.context) and len(set(spec.context)) == G
    assert seen_L == set(range(2, 8)) and seen_G == set(range(1, 7))


def test_order_is_shuffled_and_reproducible():
    cfg = ClipSamplerConfig(window_frames=5, min_views=5, min_gap=1, max_gap=2)
    a = [TrainBatchSampler([50], 4, cfg, seed=7).draw() for _ in range(2)]
    assert a[0] == a[1]  # same seed, same draws
    sampler = TrainBatchSampler([50], 4, cfg, seed=8)
    orders = [tuple(np.argsort(s.frames)) for _ in range(50) for s in sampler.draw()]
    assert len(set(orders)) > 10
    unshuffled = ClipSamplerConfig(window_frames=5, min_views=5, min_gap=1, max_gap=2, shuffle_order=False)
    for s in TrainBatchSampler([50], 4, unshuffled, seed=8).draw():
        assert list(s.frames) == sorted(s.frames)


def test_eval_specs_deterministic_layout():
    cfg = ClipSamplerConfig(min_gap=2, max_gap=6, eval_views=5)
    specs = eval_specs([100, 9, 1], cfg)
    assert [s.clip for s in specs] == [0, 1]  # a 1-frame clip cannot be evaluated
    assert specs[0].frames == (41, 45, 49, 53, 57) and specs[0].context == (0, 4)
    assert specs[1].frames == (0, 2, 4, 6, 8)
    assert eval_specs([100, 9, 1], cfg) == specs


def test_eval_index(tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"a": {"context": [3, 20], "target": [5, 9, 12]}, "b": None}))
    index = load_eval_index(path)
    specs = eval_specs([30, 30], ClipSamplerConfig(), ["a", "b"], index)
    assert len(specs) == 1 and specs[0].frames == (3, 5, 9, 12, 20) and specs[0].context == (0, 4)
    with pytest.raises(PensieveInputError, match="outside"):
        eval_specs([10], ClipSamplerConfig(), ["a"], index)
    path.write_text("[1, 2")
    with pytest.raises(PensieveInputError, match="not valid JSON"):
        load_eval_index(path)


def test_short_clips_skipped_or_refused():
    with pytest.warns(DataWarning, match="skipped 1 training clip"):
        assert usable_clips([3, 10], ["short", "long"], 7, "training") == [1]
    with pytest.raises(PensieveInputError, match="no training clip has the 7 frames"):
        with pytest.warns(DataWarning):
            usable_clips([3, 4], ["a", "b"], 7, "training")


def test_bad_sampler_config():
    with pytest.raises(PensieveInputError, match="min_gap"):
        ClipSamplerConfig(min_gap=5, max_gap=2)
