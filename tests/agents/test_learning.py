"""Learning on the short Corridor: memory makes the difference, within a CPU budget.

Each run is deterministic on the CPU for its seed (see test_determinism.py), so these are
not flaky; the budgets leave a margin over the steps at which the runs first passed.
"""

from pathlib import Path

import pytest

from agents import AlgoConfig, MemoryConfig, TrainConfig, train

ENV = "Lethe/Corridor-S-v0"  # corridor length 5 to 10, the cue visible only at the start


def run(
    tmp_path: Path, memory: str, algo: AlgoConfig, total_steps: int, num_envs: int = 32
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
        memory=MemoryConfig(kind=memory),
        algo=algo,
    )
    return train(config, progress=False)


@pytest.mark.slow
def test_expire_span_ppo_learns_the_cue(tmp_path: Path) -> None:
    summary = run(tmp_path, "expire-span", AlgoConfig(algo="ppo"), 131_072)
    assert summary["eval"]["success_rate"] >= 0.9


@pytest.mark.slow
def test_expire_span_a2c_learns_the_cue(tmp_path: Path) -> None:
    # one gradient step per rollout: many short rollouts (16 envs x 16 steps) are what A2C
    # needs; the memory still carries across them
    algo = AlgoConfig(algo="a2c", rollout_steps=16, learning_rate=7e-4)
    summary = run(tmp_path, "expire-span", algo, 400_000, num_envs=16)
    assert summary["eval"]["success_rate"] >= 0.9


@pytest.mark.slow
def test_without_memory_the_arm_is_a_coin_flip(tmp_path: Path) -> None:
    """A memoryless agent learns to walk to the junction, then can only guess."""
    summary = run(tmp_path, "none", AlgoConfig(algo="ppo"), 65_536)
    assert 0.35 <= summary["eval"]["success_rate"] <= 0.65
    assert summary["eval"]["mean_length"] < 20  # it did learn to walk the corridor
