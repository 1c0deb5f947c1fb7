"""Retention matrices, span metrics and their pictures, on disk and in an offline W&B run."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import matplotlib.collections
import matplotlib.colors
import numpy as np
import pytest
import torch
from wandb_records import check_media_in_offline_run

from agents.config import AlgoConfig, MemoryConfig, TrainConfig
from agents.policy import ActorCritic
from agents.retention import (
    EVENT_STYLE,
    EpisodeRetention,
    keep_figure,
    memory_metrics,
    retention_snapshot,
    span_by_event,
    track_episode,
)
from agents.vec import make_vector_env
from envs import events

ENV = "Lethe/Corridor-S-v0"
CPU = torch.device("cpu")
SMALL = {"width": 16, "heads": 2}


def make_policy(**memory: Any) -> ActorCritic:
    torch.manual_seed(0)
    env = make_vector_env(ENV, 1, CPU)
    try:
        return ActorCritic(env.obs_spaces, 3, MemoryConfig(**{**SMALL, **memory}))
    finally:
        env.close()


def force_span(policy: ActorCritic, span: float) -> None:
    """Every memory gets span ``span``: span predictor weight 0, bias at the right logit."""
    fraction = span / policy.memory.max_span
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "span" in name:
                if name.endswith("weight"):
                    parameter.zero_()
                else:
                    parameter.fill_(math.log(fraction / (1 - fraction)))


def long_episode(policy: ActorCritic, min_steps: int) -> EpisodeRetention:
    """The first tracked episode (seeds 0, 1, ...) of at least ``min_steps`` observations."""
    for seed in range(20):
        record = track_episode(policy, ENV, CPU, seed)
        if record.n_steps >= min_steps:
            return record
    raise AssertionError(f"no episode of {min_steps} steps in 20 seeds")


def test_window_keep_matrix_is_the_band() -> None:
    record = long_episode(make_policy(kind="window", window=3), min_steps=8)
    steps = record.n_steps
    age = np.arange(steps)[None, :] - np.arange(steps)[:, None]  # [i, t] = t - i
    band = ((age >= 0) & (age <= 3)).astype(np.float32)  # the current step and the 3 before
    assert record.kind == "window"
    assert record.keep.shape == (2, steps, steps)
    np.testing.assert_array_equal(record.keep[0], band)
    np.testing.assert_array_equal(record.keep[1], band)
    np.testing.assert_array_equal(record.span, np.full((2, steps), 3.0, np.float32))
    assert record.kept_steps()[0, 0] == 3 and record.kept_steps()[0, -1] == 0


def test_expire_span_keep_matrix_is_the_ramp() -> None:
    policy = make_policy(kind="expire-span", capacity=16, span_limit=100, ramp=4)
    force_span(policy, 5.0)
    record = long_episode(policy, min_steps=12)
    # span e = 5, ramp R = 4: m = clamp(1 + (e - age) / R, 0, 1), 0 from age e + R = 9 on
    by_age = [1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0, 0, 0]
    steps = record.n_steps
    expected = np.zeros((steps, steps), np.float32)
    for i in range(steps):
        for t in range(i, min(steps, i + len(by_age))):
            expected[i, t] = by_age[t - i]
    for layer in range(2):
        np.testing.assert_allclose(record.keep[layer], expected, atol=1e-4)
    np.testing.assert_allclose(record.span, 5.0, rtol=1e-4)
    assert record.kind == "expire-span" and record.ramp == 4.0


def test_capacity_evicts_and_full_memory_keeps_everything() -> None:
    tight = make_policy(kind="expire-span", capacity=2, span_limit=100, ramp=4)
    force_span(tight, 5.0)
    record = long_episode(tight, min_steps=6)
    # two slots: at step t the memories of t-1 and t-2 are visible, nothing older
    assert (record.keep[0][np.triu_indices(record.n_steps, k=3)] == 0).all()
    assert (record.keep[0][np.arange(record.n_steps - 2), np.arange(2, record.n_steps)] > 0).all()

    full = long_episode(make_policy(kind="full"), min_steps=6)
    upper = np.triu(np.ones((full.n_steps, full.n_steps), bool))
    assert (full.keep[:, upper] == 1).all() and (full.keep[:, ~upper] == 0).all()
    assert np.isinf(full.span).all()


def test_a_memory_never_stored_has_no_span() -> None:
    """Span 0 and ramp 1: expiry w + 0 + 1 is not after step w + 1, so no memory is stored.

    Every span is NaN, also at step 0, where the empty slots' write step 0 equals the step:
    a slot counts as observation i's only while it is alive.
    """
    policy = make_policy(kind="expire-span", capacity=4, span_limit=100, ramp=1)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "span" in name:  # sigmoid(-1e4) is 0 exactly: span 0
                parameter.fill_(0.0 if name.endswith("weight") else -1e4)
    record = long_episode(policy, min_steps=3)
    assert np.isnan(record.span).all(), record.span[:, :3]
    np.testing.assert_array_equal(record.keep[0], np.eye(record.n_steps, dtype=np.float32))


def test_events_and_actions_replay_the_episode() -> None:
    policy = make_policy(kind="window", window=4)
    record = track_episode(policy, ENV, CPU, seed=5)
    assert record.actions[-1] == -1 and (record.actions[:-1] >= 0).all()
    env = make_vector_env(ENV, 1, CPU)
    try:
        _, info = env.reset(seed=5)
        replayed = [int(info["event"][0])]
        for action in record.actions[:-1]:
            _, _, terminated, truncated, info = env.step(torch.tensor([int(action)]))
            replayed.append(int(info["event"][0]))
        assert bool(terminated | truncated)  # the record ends with the episode's final step
    finally:
        env.close()
    np.testing.assert_array_equal(record.events, replayed)
    assert set(np.unique(record.events)) <= set(events.EVENT_NAMES)


def test_memory_metrics() -> None:
    policy = make_policy(kind="expire-span", capacity=4, span_limit=100, ramp=4)
    force_span(policy, 5.0)
    env = make_vector_env(ENV, 3, CPU)
    try:
        obs, _ = env.reset(seed=0)
        state = policy.initial_state(3, CPU)
        assert memory_metrics(policy, state)["memory/live_layer0"] == 0.0
        start = torch.ones(3, dtype=torch.bool)
        with torch.no_grad():
            for _ in range(3):
                _, _, state = policy.step(obs, state, start)
                start = torch.zeros_like(start)
                obs, *_ = env.step(torch.full((3,), 2))
    finally:
        env.close()
    metrics = memory_metrics(policy, state)
    assert metrics["memory/live_layer0"] == 3.0 and metrics["memory/live_layer1"] == 3.0
    assert metrics["memory/live_mean"] == 3.0
    assert metrics["memory/span_mean"] == pytest.approx(5.0, rel=1e-4)
    assert metrics["memory/span_max"] == pytest.approx(5.0, rel=1e-4)
    for kind in ("gru", "lstm", "none"):
        recurrent = make_policy(kind=kind)
        assert memory_metrics(recurrent, recurrent.initial_state(2, CPU)) == {}
    full = make_policy(kind="full")
    assert "memory/span_mean" not in memory_metrics(full, full.initial_state(2, CPU))


def test_span_by_event_separates_event_kinds() -> None:
    keep = np.zeros((1, 4, 4), np.float32)
    record = EpisodeRetention(
        kind="expire-span",
        keep=keep,
        span=np.array([[30.0, 10.0, 12.0, np.nan]], np.float32),
        events=np.array([events.CUE_VISIBLE, 0, 0, events.CORRECT_ARM]),
        actions=np.array([2, 2, 2, -1]),
        ramp=4.0,
        seed=0,
        env_id=ENV,
    )
    stats = span_by_event([record, record])["layer0"]
    assert stats["cue_visible"] == 30.0 and stats["none"] == 11.0
    assert stats["count/none"] == 4.0 and math.isnan(stats["correct_arm"])
    # The arm observation was never stored: counted as dropped, not in the mean or n.
    assert stats["count/correct_arm"] == 0.0 and stats["dropped/correct_arm"] == 2.0
    assert stats["dropped/none"] == 0.0


def test_snapshot_writes_pngs_and_npz(tmp_path: Path) -> None:
    policy = make_policy(kind="expire-span")
    images, histograms = retention_snapshot(policy, ENV, CPU, tmp_path / "retention", 1234, seed=3)
    assert set(images) == {"retention/keep", "retention/spans"}
    for path in images.values():
        assert path.parent == tmp_path / "retention" and path.suffix == ".png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "step000001234" in path.name
    arrays = np.load(tmp_path / "retention" / "retention_step000001234.npz")
    steps = arrays["events"].shape[0]
    assert arrays["keep"].shape == (2, steps, steps) and arrays["span"].shape == (2, steps)
    np.testing.assert_array_equal(arrays["write_step"], np.arange(steps))
    np.testing.assert_array_equal(arrays["event_codes"], arrays["events"][arrays["event_steps"]])
    assert set(histograms) == {"retention/span_layer0", "retention/span_layer1"}
    assert histograms["retention/span_layer0"].shape == (steps,)

    for kind in ("gru", "lstm", "none"):
        out = tmp_path / kind
        assert retention_snapshot(make_policy(kind=kind), ENV, CPU, out, 1, seed=3) == ({}, {})
        assert not out.exists()


def _record(steps: int, cue_kept: int) -> EpisodeRetention:
    """One layer: every step kept 5 steps, the cue at step 0 kept ``cue_kept`` steps."""
    i, t = np.indices((steps, steps))
    keep = ((t >= i) & (t <= i + 5)).astype(np.float32)
    keep[0, : cue_kept + 1] = 1.0
    events_ = np.zeros(steps, dtype=np.int64)
    events_[0] = events.CUE_VISIBLE
    return EpisodeRetention(
        kind="expire-span",
        keep=keep[None],
        span=np.full((1, steps), 5.0, dtype=np.float32),
        events=events_,
        actions=np.zeros(steps, dtype=np.int64),
        ramp=1.0,
        seed=0,
        env_id=ENV,
    )


def test_kept_to_end_reads_the_episode_last_step() -> None:
    """Hand-worked on `_record`'s band (kept 5 steps after its own): at the last step t = 9
    rows 4..9 are visible, not row 3 (dropped at t = 9) nor the cue (kept to t = 8 only);
    the step before the last (t = 8) would answer differently for rows 0, 3 and 9."""
    record = _record(10, cue_kept=8)
    expected = np.array([[False, False, False, False, True, True, True, True, True, True]])
    np.testing.assert_array_equal(record.kept_to_end(), expected)
    np.testing.assert_array_equal(record.kept_steps()[0, [0, 3, 9]], [8, 5, 0])


def _event_lines(record: EpisodeRetention) -> list[np.ndarray]:
    """The line segments drawn in the cue's colour on the heatmap."""
    (ax,) = keep_figure(record, "title").axes[:1]
    colour = matplotlib.colors.to_rgba(EVENT_STYLE[events.CUE_VISIBLE][0])
    return [
        segment
        for collection in ax.collections
        if isinstance(collection, matplotlib.collections.LineCollection)
        for segment, rgba in zip(collection.get_segments(), collection.get_colors(), strict=False)
        if np.allclose(rgba, colour)
    ]


def test_a_long_episode_draws_the_kept_event_rows_as_lines() -> None:
    """1,000 rows do not fit the heatmap's pixels: the cue's row (kept 900 steps) is a line."""
    lines = _event_lines(_record(1000, cue_kept=900))
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0], [[-0.5, 0.0], [900.5, 0.0]])
    # A short episode's rows are tall enough to see: no line over the image.
    assert _event_lines(_record(60, cue_kept=50)) == []


def test_snapshot_leaves_global_rng_alone(tmp_path: Path) -> None:
    policy = make_policy(kind="window", window=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    retention_snapshot(policy, ENV, CPU, tmp_path, 1, seed=3)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------- through the trainer
TINY = {
    "env": ENV,
    "num_envs": 2,
    "total_steps": 64,
    "eval_episodes": 0,
    "heatmap_every": 1,
    "memory": MemoryConfig(capacity=8, span_init=0.0625, **SMALL),  # initial span 4 < 8
    "algo": AlgoConfig(rollout_steps=16, num_minibatches=2, update_epochs=1),
}


def test_training_logs_heatmaps_to_offline_wandb_and_disk(tmp_path: Path) -> None:
    from agents.trainer import train

    run_dir = tmp_path / "run"
    train(TrainConfig(run_dir=str(run_dir), wandb="offline", **TINY), progress=False)
    check_media_in_offline_run(run_dir)
    pngs = sorted((run_dir / "retention").glob("*.png"))
    assert len(pngs) >= 2 * 2  # two iterations (and the end), two pictures each
    assert list((run_dir / "retention").glob("*.npz"))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all("memory/live_layer0" in json.loads(line) for line in lines)


@pytest.mark.parametrize("how", ["disabled", "import fails"])
def test_training_without_wandb_logs_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from agents.trainer import train

    if how == "import fails":
        monkeypatch.setitem(sys.modules, "wandb", None)
    run_dir = tmp_path / "run"
    mode = "disabled" if how == "disabled" else "offline"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(TrainConfig(run_dir=str(run_dir), wandb=mode, **TINY), progress=False)
    ours = [w for w in caught if "W&B" in str(w.message)]
    assert len(ours) == (1 if how == "import fails" else 0)
    assert list((run_dir / "retention").glob("*.png")) and (run_dir / "checkpoint.pt").is_file()
    assert not (run_dir / "wandb").exists()
