"""Training throughput: Lethe PPO against sb3-contrib's RecurrentPPO, side by side in one run.

    python benchmarks/train_throughput.py                 # CPU, all cores: docs/results.md's table
    python benchmarks/train_throughput.py --device cuda --lethe-configs 4096x32/8

Both train PPO with a recurrent memory on ``Lethe/Corridor-v0``: RecurrentPPO (LSTM) through
SB3's vector env of MiniGrid environments, Lethe through the batched twin. Env steps per
second count every env step of training (collection and updates), not evaluation. Both
run in this one process with the same torch thread count (``--threads``, default all cores).

``--memories`` takes memory kinds with the default options and ``expire-span-long``: the
configuration the long-corridor learning benchmark trains with (one layer, capacity 16;
``LONG`` in ``benchmarks/learning.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too


def memory_config(name: str):  # noqa: ANN201  (a MemoryConfig)
    """A memory kind with its defaults, or ``expire-span-long`` (see the module docstring)."""
    from agents.config import MemoryConfig
    from benchmarks.learning import LONG

    if name == "expire-span-long":
        return MemoryConfig(kind="expire-span", **LONG["expire-span"])
    return MemoryConfig(kind=name)


def lethe_steps_per_second(
    memory: str, num_envs: int, rollout_steps: int, minibatches: int, steps: int, device: str
) -> float:
    from agents.config import AlgoConfig, TrainConfig
    from agents.trainer import train

    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(
            env="Lethe/Corridor-v0",
            num_envs=num_envs,
            total_steps=steps,
            device=device,
            run_dir=run_dir,
            wandb="disabled",
            eval_episodes=0,
            heatmap_every=0,
            memory=memory_config(memory),
            algo=AlgoConfig(rollout_steps=rollout_steps, num_minibatches=minibatches),
        )
        summary = train(config, overwrite=True, progress=False)
    return summary["env_steps_per_second"]


def recurrent_ppo_steps_per_second(steps: int, device: str) -> float:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    import envs  # noqa: F401  (registers Lethe/*)

    vec_env = make_vec_env("Lethe/Corridor-v0", n_envs=8, seed=0)
    model = RecurrentPPO(
        "MlpLstmPolicy", vec_env, n_steps=128, batch_size=256, device=device, verbose=0, seed=0
    )
    # A logger with no outputs: SB3's default one makes a directory in the temp folder per run.
    model.set_logger(Logger(folder=None, output_formats=[]))
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    vec_env.close()
    return model.num_timesteps / elapsed


def build_parser() -> argparse.ArgumentParser:
    """The script's options (tests/docs parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--lethe-configs",
        default="32x64/8,256x128/4,1024x32/8",
        help="envs x rollout steps / minibatches, comma-separated (the first is the default)",
    )
    parser.add_argument("--lethe-steps", type=int, default=131_072)
    parser.add_argument("--sb3-steps", type=int, default=4_096)
    parser.add_argument("--memories", default="expire-span,expire-span-long,gru")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads, for both (0: all cores)"
    )
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    rows = [
        (
            "sb3-contrib RecurrentPPO (LSTM), 8 MiniGrid envs",
            recurrent_ppo_steps_per_second(args.sb3_steps, args.device),
        )
    ]
    for memory in args.memories.split(","):
        for spec in args.lethe_configs.split(","):
            shape, minibatches = spec.split("/")
            num_envs, rollout_steps = (int(v) for v in shape.split("x"))
            rate = lethe_steps_per_second(
                memory, num_envs, rollout_steps, int(minibatches), args.lethe_steps, args.device
            )
            label = f"Lethe PPO {memory}, {num_envs} envs x {rollout_steps}, {minibatches} mb"
            rows.append((label, rate))
    base = rows[0][1]
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"\nTraining env steps / s on Lethe/Corridor-v0 ({name}, {threads} torch thread(s))\n")
    print(f"| {'learner':<50} | {'steps/s':>10} | {'vs RecurrentPPO':>15} |")
    print(f"|{'-' * 52}|{'-' * 12}|{'-' * 17}|")
    for label, rate in rows:
        print(f"| {label:<50} | {rate:>10,.0f} | {rate / base:>14.1f}x |")


if __name__ == "__main__":
    main()
