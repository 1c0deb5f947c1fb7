"""Env steps per second with random actions: MiniGrid vector env vs the batched twin.

Prints one table, all rows measured in the same run:

    python benchmarks/env_throughput.py                  # CPU
    python benchmarks/env_throughput.py --device cuda    # adds 65,536 envs on CUDA

Actions are drawn on the twin's device (torch) and on the host (numpy) for MiniGrid, so
each side pays only for its own kind of random numbers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

try:
    import envs  # noqa: F401  (registers Lethe/*)
except ModuleNotFoundError:  # run as a script from a checkout
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import envs  # noqa: F401


def synchronize(device: str) -> None:
    """Wait for ``device``'s queued work (any CUDA device: ``cuda``, ``cuda:1``)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def minigrid_steps_per_second(env_id: str, num_envs: int, seconds: float) -> float:
    """Random-action steps/s of ``num_envs`` MiniGrid envs in a ``SyncVectorEnv``."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    rng = np.random.default_rng(0)
    vec.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            vec.step(rng.integers(0, 3, num_envs))
        steps += 100 * num_envs
    rate = steps / (time.perf_counter() - start)
    vec.close()
    return rate


def twin_steps_per_second(
    env_id: str, num_envs: int, device: str, seconds: float, compile_step: bool
) -> float:
    """Random-action steps/s of the batched twin with ``num_envs`` envs on ``device``."""
    vec = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", device=device
    )
    vec.check_actions = False  # measure the env, not the input validation
    step = torch.compile(vec.step) if compile_step else vec.step
    gen = torch.Generator(device=device).manual_seed(0)
    vec.reset(seed=0)

    def run(n: int) -> None:
        for _ in range(n):
            step(torch.randint(0, 3, (num_envs,), generator=gen, device=device))

    run(20)  # warm-up (and compilation)
    synchronize(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(50)
        synchronize(device)
        steps += 50 * num_envs
    return steps / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    """The script's options (tests/docs parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Lethe/Corridor-v0")
    parser.add_argument("--device", default="cpu", help="device of the batched twin")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row")
    parser.add_argument("--minigrid-envs", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile the twin's step")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (on a small shared machine one thread avoids contention)",
    )
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sizes = [1024, 4096, 16384] + ([65536] if args.device.startswith("cuda") else [])
    print(
        f"# {args.env_id}, random actions, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    base = minigrid_steps_per_second(args.env_id, args.minigrid_envs, args.seconds)
    rows = [(f"MiniGrid SyncVectorEnv ({args.minigrid_envs} envs)", "cpu", base)]
    for n in sizes:
        rate = twin_steps_per_second(args.env_id, n, args.device, args.seconds, args.compile)
        rows.append((f"batched twin ({n:,} envs)", args.device, rate))
    print(f"| {'implementation':<36} | {'device':<6} | {'steps/s':>14} | {'vs MiniGrid':>11} |")
    print(f"|{'-' * 38}|{'-' * 8}|{'-' * 16}|{'-' * 13}|")
    for name, device, rate in rows:
        print(f"| {name:<36} | {device:<6} | {rate:>14,.0f} | {rate / base:>10.1f}x |")


if __name__ == "__main__":
    main()
