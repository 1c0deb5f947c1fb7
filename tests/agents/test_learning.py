"""Learning on the short Corridor: memory makes the difference, within a CPU budget.

Each run is deterministic on the CPU for its seed (see test_determinism.py), so these are
not flaky; the budgets leave a margin over the steps at which the runs first passed.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from agents import AlgoConfig, MemoryConfig, TrainConfig, train
from envs.events import CUE_VISIBLE, NONE

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
    5-to-10-step corridor pass through the ramp, where Expire-Span learns.
    """
    config = TrainConfig(
        env=ENV,
        num_envs=32,
        total_steps=200_000,  # success >= 0.9 from ~64k steps; the spans sort out later
        seed=1,
        run_dir=str(tmp_path_factory.mktemp("ppo") / "run"),
        wandb="disabled",
        heatmap_every=0,
        eval_episodes=200,
        memory=MemoryConfig(kind="expire-span"),
        algo=AlgoConfig(algo="ppo"),
    )
    return Path(config.run_dir), train(config, progress=False)


@pytest.mark.slow
def test_expire_span_ppo_learns_the_cue(trained_ppo: tuple[Path, dict]) -> None:
    _, summary = trained_ppo
    assert summary["eval"]["success_rate"] >= 0.9


def cue_colour(seed: int) -> int:
    """MiniGrid colour index of the cue ball of the episode `seed` (1 green, 0 red)."""
    from agents.vec import make_vector_env

    env = make_vector_env(ENV, 1, torch.device("cpu"))
    obs, _ = env.reset(seed=seed)
    env.close()
    image = obs["obs"][0]  # [V, V, 3]: the cue lies in the cell left of the start cell
    assert int(image[0, 2, 0]) == 6, "the cue ball is visible at the start"
    return int(image[0, 2, 1])


@pytest.mark.slow
def test_trained_agent_keeps_the_cue_longer(trained_ppo: tuple[Path, dict]) -> None:
    """The predicted span of the cue observation is far above the corridor's.

    The agent learns to keep one of the two cue colours (remembering "green was seen" is
    enough to tell the arms apart), so the colour it keeps gets at least 3x the span of the
    steps without an event, and the mean over both colours at least 2x.
    """
    from agents.analyze import load_policy
    from agents.retention import track_episode

    run_dir, _ = trained_ppo
    policy, *_ = load_policy(run_dir, "cpu", None)
    seeds = range(24)
    records = [track_episode(policy, ENV, torch.device("cpu"), seed) for seed in seeds]
    spans = np.concatenate([r.span[0] for r in records])  # layer 0, [sum T]
    events = np.concatenate([r.events for r in records])
    other = np.nanmean(spans[events == NONE])
    cue_span = {
        seed: float(r.span[0][r.events == CUE_VISIBLE].mean())
        for seed, r in zip(seeds, records, strict=True)
    }
    by_colour = {
        colour: np.mean([span for seed, span in cue_span.items() if cue_colour(seed) == colour])
        for colour in (0, 1)
    }
    assert max(by_colour.values()) >= 3 * other, (by_colour, other)
    assert np.mean(list(cue_span.values())) >= 2 * other, (cue_span, other)


@pytest.mark.slow
def test_expire_span_a2c_learns_the_cue(tmp_path: Path) -> None:
    # one gradient step per rollout: many short rollouts (16 envs x 16 steps) are what A2C
    # needs; the memory still carries across them
    algo = AlgoConfig(algo="a2c", rollout_steps=16, learning_rate=7e-4)
    memory = MemoryConfig(kind="expire-span", span_limit=1024, span_init=0.1, ramp=16)
    summary = run(tmp_path, memory, algo, 400_000, num_envs=16)
    assert summary["eval"]["success_rate"] >= 0.9


@pytest.mark.slow
def test_without_memory_the_arm_is_a_coin_flip(tmp_path: Path) -> None:
    """A memoryless agent learns to walk to the junction, then can only guess."""
    summary = run(tmp_path, MemoryConfig(kind="none"), AlgoConfig(algo="ppo"), 65_536)
    assert 0.35 <= summary["eval"]["success_rate"] <= 0.65
    assert summary["eval"]["mean_length"] < 20  # it did learn to walk the corridor
