"""Learning on the short Corridor: memory makes the difference, within a CPU budget.

Each run is deterministic on the CPU for its seed (see test_determinism.py), so these are
not flaky; the budgets leave a margin over the steps at which the runs first passed.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from agents import AlgoConfig, MemoryConfig, TrainConfig, train
from envs.events import CORRECT_ARM, CUE_VISIBLE, JUNCTION_REACHED, NONE

ENV = "Lethe/Corridor-S-v0"  # corridor length 5 to 10, the cue visible only at the start


def run(
    tmp_path: Path, memory: MemoryConfig, algo: AlgoConfig, total_steps: int, num_envs: int = 32
) -> dict:
    config = TrainConfig(
        env=ENV,
        num_envs=num_envs,
        total_steps=total_steps,
        seed=1,
        run_dir=str(tmp_path / "run"),
        wandb="disabled",
        heatmap_every=0,
        eval_episodes=200,
        memory=memory,
        algo=algo,
    )
    return train(config, progress=False)


@pytest.fixture(scope="module")
def trained_ppo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One Expire-Span PPO run on the short Corridor, shared by the tests that need it.

    With the default spans: they start short (8 steps, ramp 4), so the memories of a
    5-to-10-step corridor pass through the ramp, where Expire-Span learns. One layer: with
    two, the cue can also be relayed (layer 1 stores layer 0's output, which attended to the
    cue), so whether the cue observation itself is kept would be up to the run; with one
    layer the cue observation's memory is the only way the cue reaches the junction.
    """
    config = TrainConfig(
        env=ENV,
        num_envs=32,
        total_steps=200_000,  # training success 0.97 at ~75k steps; the spans settle later
        seed=1,
        run_dir=str(tmp_path_factory.mktemp("ppo") / "run"),
        wandb="disabled",
        heatmap_every=0,
        eval_episodes=200,
        memory=MemoryConfig(kind="expire-span", layers=1),
        algo=AlgoConfig(algo="ppo"),
    )
    return Path(config.run_dir), train(config, progress=False)


@pytest.mark.slow
def test_expire_span_ppo_learns_the_cue(trained_ppo: tuple[Path, dict]) -> None:
    _, summary = trained_ppo
    assert summary["eval"]["success_rate"] >= 0.9


@pytest.mark.slow
def test_trained_agent_keeps_the_cue_until_the_junction(trained_ppo: tuple[Path, dict]) -> None:
    """What the one-layer agent must keep to succeed, it keeps: in the episodes it wins, a
    cue observation is still in memory (mask > 0) when the agent reaches the junction, and
    the cue's predicted span exceeds that of the corridor steps without an event.
    """
    from agents.evaluate import load_policy
    from agents.retention import track_episode

    run_dir, _ = trained_ppo
    policy, *_ = load_policy(run_dir, "cpu", None)
    records = [track_episode(policy, ENV, torch.device("cpu"), seed) for seed in range(40)]
    kept_at_junction = []
    for record in records:
        events = record.events
        if not (events == CORRECT_ARM).any() or not (events == JUNCTION_REACHED).any():
            continue
        junction = int(np.argmax(events == JUNCTION_REACHED))
        cue_steps = np.flatnonzero(events == CUE_VISIBLE)
        kept_at_junction.append(bool((record.keep[0, cue_steps, junction] > 0).any()))
    assert len(kept_at_junction) >= 30  # most tracked episodes are won
    assert np.mean(kept_at_junction) >= 0.9, kept_at_junction
    spans = np.concatenate([r.span[0] for r in records])  # layer 0, [sum T]
    events = np.concatenate([r.events for r in records])
    cue, other = np.nanmean(spans[events == CUE_VISIBLE]), np.nanmean(spans[events == NONE])
    assert cue > other, (cue, other)


@pytest.mark.slow
def test_expire_span_a2c_learns_the_cue(tmp_path: Path) -> None:
    """A2C's single gradient step per rollout learns the cue too, given what makes it fast
    here: 64 batched envs (about 15,000 env steps/s on one thread, four times the 16 envs'
    rate) and spans that start past the longest corridor (0.3 x 64 = 19 steps; the default
    starts at 8, ramp 4, at the edge of the 10-step corridors).

    This run (seed 1) passes 0.9 training success at ~0.58M steps. Not every run does in
    this budget: the same options learnt the cue in 4 of 6 seeds at 1.8M steps and 11 of 14
    runs of 1.6M to 2M steps (docs/results.md); the others stayed at chance.
    """
    memory = MemoryConfig(kind="expire-span", span_init=0.3)
    algo = AlgoConfig(algo="a2c", rollout_steps=32, learning_rate=1e-3)
    summary = run(tmp_path, memory, algo, 1_800_000, num_envs=64)
    assert summary["eval"]["success_rate"] >= 0.9


@pytest.mark.slow
def test_without_memory_the_arm_is_a_coin_flip(tmp_path: Path) -> None:
    """A memoryless agent learns to walk to the junction, then can only guess."""
    summary = run(tmp_path, MemoryConfig(kind="none"), AlgoConfig(algo="ppo"), 65_536)
    assert 0.35 <= summary["eval"]["success_rate"] <= 0.65
    assert summary["eval"]["mean_length"] < 20  # it did learn to walk the corridor
