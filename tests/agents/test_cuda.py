"""Training on CUDA: a run end to end, and rollouts that never wait on the GPU per step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents import MemoryConfig, TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize(
    ("memory", "critic"),
    [("expire-span", "shared"), ("gru", "shared"), ("expire-span", "separate")],
)
def test_a_short_run_on_cuda(tmp_path: Path, memory: str, critic: str) -> None:
    summary = train(
        TrainConfig(
            env="Lethe/Corridor-S-v0",
            num_envs=256,
            total_steps=256 * 64 * 2,
            device="cuda",
            run_dir=str(tmp_path / "run"),
            wandb="disabled",
            heatmap_every=0,
            eval_episodes=32,
            memory=MemoryConfig(kind=memory, critic=critic),
        ),
        progress=False,
    )
    assert summary["total_env_steps"] == 256 * 64 * 2
    assert summary["eval"]["episodes"] == 32 and summary["eval"]["success_rate"] is not None


@pytest.mark.parametrize("previous_action_reward", [False, True])
def test_rollout_steps_without_host_synchronisation(previous_action_reward: bool) -> None:
    """The per-step part of a rollout (policy step, sampling, env step, bookkeeping, and the
    previous action and reward as observations) runs under CUDA's sync debug mode: a host
    round-trip in it would raise."""
    from agents.policy import ActorCritic
    from agents.rollout import RolloutCollector
    from agents.vec import make_vector_env

    device = torch.device("cuda")
    env = make_vector_env("Lethe/Corridor-v0", 128, device, previous_action_reward)
    policy = ActorCritic(env.obs_spaces, 3, MemoryConfig()).to(device)
    collector = RolloutCollector(env, policy, num_steps=32, device=device, seed=0)
    collector.collect(0.99, 0.95)  # warm-up (allocations, the first reset)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            obs, state, start = collector.obs, collector.state, collector.episode_start
            for _ in range(64):
                logits, _, state = policy.step(obs, state, start)
                action, _ = collector.act(logits)
                obs, _, terminated, truncated, _ = env.step(action)
                start = terminated | truncated
    finally:
        torch.cuda.set_sync_debug_mode("default")
    env.close()
