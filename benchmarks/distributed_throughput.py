"""Training throughput with 1 and several learner processes (torchrun, gradients averaged by DDP).

    python benchmarks/distributed_throughput.py                       # CPU: 1 and 2 processes
    python benchmarks/distributed_throughput.py --processes 1 2 4 --device cuda --num-envs 1024

Each row is one training run of the CLI on ``Lethe/Corridor-v0``: one plain process (no
torchrun), then ``torchrun --standalone --nproc_per_node=K`` for each K. ``--num-envs`` is per
process and ``--steps-per-process`` too, so every process does the same work in every row;
env steps per second count the env steps of all processes (collection and updates, no
evaluation), as the run's ``summary.json`` reports them. On CPU each process gets one thread
(``OMP_NUM_THREADS=1``), so K processes need K free cores to scale. The table also gives what
one process sends per update: the gradient all-reduce of every parameter (float32).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parameter_count(memory: str) -> int:
    """Parameters of the ActorCritic of the default config with this memory core."""
    import torch

    from agents.config import MemoryConfig, TrainConfig
    from agents.policy import ActorCritic
    from agents.vec import make_vector_env

    config = TrainConfig(memory=MemoryConfig(kind=memory))
    env = make_vector_env(config.env, 1, torch.device("cpu"))
    policy = ActorCritic(env.obs_spaces, int(env.single_action_space.n), config.memory)
    env.close()
    return sum(p.numel() for p in policy.parameters())


def run(processes: int | None, args: argparse.Namespace) -> dict:
    """One training run; `processes` None is the plain single process without torchrun."""
    world = processes or 1
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        launcher = (
            [sys.executable]
            if processes is None
            else [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
            ]
        )
        command = [
            *launcher,
            str(ROOT / "train_rl.py"),
            "--device",
            args.device,
            "--memory",
            args.memory,
            "--num-envs",
            str(args.num_envs),
            "--total-steps",
            str(args.steps_per_process * world),
            "--eval-episodes",
            "0",
            "--heatmap-every",
            "0",
            "--wandb",
            "disabled",
            "--no-progress",
            "--run-dir",
            str(run_dir),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        subprocess.run(command, check=True, env=env, capture_output=True, cwd=ROOT)
        return json.loads((run_dir / "summary.json").read_text())


def build_parser() -> argparse.ArgumentParser:
    """The script's options (tests/docs parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", default="expire-span")
    parser.add_argument("--num-envs", type=int, default=32, help="per process")
    parser.add_argument("--steps-per-process", type=int, default=20_480)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()

    count = parameter_count(args.memory)
    print(
        f"Lethe/Corridor-v0, PPO, {args.memory}, {args.device}, {args.num_envs} envs per process; "
        f"{count:,} parameters = {count * 4 / 1024:.0f} KiB all-reduced per backward pass"
    )
    header = ("launch", "processes", "env steps", "wall s", "env steps/s", "vs 1 process")
    rows = []
    base = None
    for processes in [None, *args.processes]:
        summary = run(processes, args)
        sps = summary["env_steps_per_second"]
        base = base or sps
        launch = "python" if processes is None else "torchrun"
        rows.append(
            (
                launch,
                str(summary["world_size"]),
                f"{summary['total_env_steps']:,}",
                f"{summary['wall_seconds']:.1f}",
                f"{sps:,.0f}",
                f"{sps / base:.2f}x",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
