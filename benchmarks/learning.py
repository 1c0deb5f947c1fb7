"""Learning targets: env steps until each learner reaches a task's target, over seeds.

    python benchmarks/learning.py                             # CPU-sized: the short Corridor
    python benchmarks/learning.py --task corridor-l1000 --device cuda
    python benchmarks/learning.py --task portal --device cuda --seeds 1,2,3
    python benchmarks/learning.py --algo a2c --memories expire-span --no-sb3 --num-envs 64 \
        --steps 2000000 --algo-kwargs '{"rollout_steps": 32, "learning_rate": 1e-3}' \
        --memory-kwargs '{"span_init": 0.3}' --threads 1    # A2C on the short Corridor

Each task fixes an environment, a target and a budget; every learner trains once per seed
with the same budget, and the table gives the env steps at which its training episodes
first met the target (over a window of at least ``--window-episodes`` episodes), its final
evaluation and its wall time. Learners: Lethe PPO (``--algo a2c``: A2C) with each memory core
of ``--memories``
(the task's memory options: e.g. capacity 16 on the long corridor, window 16 beside it) and,
unless ``--no-sb3``, sb3-contrib's ``RecurrentPPO`` (LSTM) on the MiniGrid version of the
same task with its own budget (``--sb3-steps``: it is ~100x slower per step).

Targets (issue 4): ``corridor-l1000``: success >= 0.95 with capacity 16 where window 16 stays
at chance; ``portal``: return >= 90% of the perfect-memory oracle's (measured here on the
batched twin). ``corridor`` and the long corridors train on their length curriculum
(``Lethe/Corridor-Curriculum-v0``, ``Lethe/Corridor-L*-Curriculum-v0``), ``portal`` on its
room curriculum (``Lethe/Portal-Curriculum-v0``), and are evaluated on the task it teaches;
steps to target count only training episodes drawn at the curriculum's last level (lengths 5
to 50; L/2 to L; all 4 rooms), by the level each episode reports when it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too


@dataclass(frozen=True)
class Task:
    """An environment, what counts as solved, a budget and the memory options it needs."""

    env: str
    metric: str  # "success": success rate >= target; "return": mean return >= target x oracle
    target: float
    steps: int
    sb3_steps: int
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # per kind, MemoryConfig
    algo: dict[str, Any] = field(default_factory=dict)  # AlgoConfig overrides
    num_envs: int = 32
    train_env: str = ""  # trained on this (e.g. a curriculum), evaluated on `env`; "": `env`
    # With a curriculum: its last level at the task's own kwargs, nonzero. Only episodes drawn
    # at the last level count; which level that is, the envs say (`curriculum_last`: the
    # --env-kwargs may move it), so here the value marks a curriculum.
    final_level: float = 0.0
    previous_action_reward: bool = False  # every Lethe learner also observes them


# The long corridors: one layer (the cue's own memory must reach the junction, no relay
# through a second layer), capacity 16 (memories pass their ramp, 5.5 + 8 steps, before
# eviction, or spans never learn: see `agents.config.advisories`), alpha 1e-5 (keeps the
# corridor's spans short enough for the cue to hold its slot), use loss 1e-2 (holds the
# cue's span once it is read across the corridor: without it every L100 run collapsed back
# to chance, see docs/results.md). Trained on the length curriculum, evaluated on the fixed
# length.
def long_memory(length: int) -> dict[str, dict[str, Any]]:
    """Memory options for a corridor of ``length``: full keeps a whole episode at most."""
    return {
        "expire-span": {
            "layers": 1,
            "capacity": 16,
            "span_limit": 1100,
            "span_init": 0.005,
            "ramp": 8,
            "alpha": 1e-5,
            "span_use_coef": 1e-2,
        },
        "window": {"layers": 1, "window": 16},
        "full": {"layers": 1, "max_memory": length + length // 4},
    }


LONG = long_memory(1000)

TASKS = {
    "corridor-s": Task("Lethe/Corridor-S-v0", "success", 0.9, 200_000, 20_000),
    "corridor": Task(
        "Lethe/Corridor-v0",
        "success",
        0.9,
        2_000_000,
        20_000,
        train_env="Lethe/Corridor-Curriculum-v0",
        final_level=50,
    ),
    "corridor-l100": Task(
        "Lethe/Corridor-L100-v0",
        "success",
        0.95,
        2_000_000,
        20_000,
        long_memory(100),
        num_envs=256,
        train_env="Lethe/Corridor-L100-Curriculum-v0",
        final_level=100,
    ),
    "corridor-l1000": Task(
        "Lethe/Corridor-L1000-v0",
        "success",
        0.95,
        10_000_000,
        100_000,
        LONG,
        # No entropy bonus: a corridor step's advantage is ~0 hundreds of steps from the arm,
        # so the bonus alone moves the walk (docs/results.md: with 0.01 or 0.001 every run fell
        # back once its policy's entropy rose).
        algo={"ent_coef": 0.0},
        num_envs=256,
        train_env="Lethe/Corridor-L1000-Curriculum-v0",
        final_level=1000,
    ),
    "portal": Task(
        "Lethe/Portal-v0",
        "return",
        0.9,
        20_000_000,
        100_000,
        {"expire-span": {"span_limit": 512, "span_init": 0.03, "ramp": 16}},
        num_envs=256,
        train_env="Lethe/Portal-Curriculum-v0",
        final_level=4,
        # A completed trial and a wrong last-room portal both lead back to room 0: only the
        # reward tells them apart, so the learners observe it (and the action).
        previous_action_reward=True,
    ),
}


def steps_to_target(
    rows: list[dict[str, Any]],
    metric: str,
    threshold: float,
    window_episodes: int,
    final_level: float = 0.0,
) -> int | None:
    """First ``global_step`` at which the episodes of the last iterations (at least
    ``window_episodes`` of them) meet the threshold; None if never.

    ``rows`` are `metrics.jsonl` lines: ``charts/episodes`` episodes ended in the iteration,
    with mean ``charts/success_rate`` and ``charts/episodic_return``. With ``final_level``
    (a curriculum), only the episodes drawn at that level count: ``charts/last_level_episodes``
    with their ``charts/last_level_success_rate`` / ``charts/last_level_return``. (Counting
    the episodes that end while the logged level is the last one would not do: those under
    way when it rose end at the level below, easier, for up to an episode's length.)
    """
    if final_level:
        count_key = "charts/last_level_episodes"
        key = "charts/last_level_" + ("success_rate" if metric == "success" else "return")
    else:
        count_key = "charts/episodes"
        key = "charts/success_rate" if metric == "success" else "charts/episodic_return"
    window: list[tuple[float, float]] = []  # (episodes, episodes x value) per iteration
    for row in rows:
        episodes, value = row.get(count_key) or 0.0, row.get(key)
        if episodes and value is not None:
            window.append((episodes, episodes * value))
        while len(window) > 1 and sum(e for e, _ in window[1:]) >= window_episodes:
            window.pop(0)
        total = sum(e for e, _ in window)
        if total >= window_episodes and sum(v for _, v in window) / total >= threshold:
            return int(row["global_step"])
    return None


def portal_oracle_return(
    env_id: str, episodes: int, device: str, env_kwargs: dict[str, Any] | None = None
) -> float:
    """Mean return of the perfect-memory oracle over ``episodes`` episodes of the twin."""
    from agents.vec import make_vector_env
    from envs.reference import BatchedPortalOracle

    vec = make_vector_env(env_id, episodes, torch.device(device), env_kwargs=env_kwargs)
    twin = vec.env
    twin.reset(seed=0)
    oracle = BatchedPortalOracle(twin)
    total = torch.zeros(episodes, device=device)
    active = torch.ones(episodes, dtype=torch.bool, device=device)
    while bool(active.any()):
        _, reward, terminated, truncated, info = twin.step(oracle.act(twin))
        done = terminated | truncated
        oracle.observe(info, done)
        total += reward * active
        active &= ~done
    vec.close()
    return float(total.mean())


def lethe_config(task: Task, memory: str, seed: int, args: argparse.Namespace, run_dir: str) -> Any:
    """The `agents.TrainConfig` of one Lethe learner's run: the task's options, then the
    command line's."""
    from agents import AlgoConfig, MemoryConfig, TrainConfig

    return TrainConfig(
        env=task.train_env or task.env,
        env_kwargs=args.env_kwargs,
        eval_env=task.env,
        num_envs=args.num_envs or task.num_envs,
        total_steps=args.steps or task.steps,
        device=args.device,
        seed=seed,
        run_dir=run_dir,
        wandb="disabled",
        heatmap_every=0,
        eval_episodes=args.eval_episodes,
        eval_every=args.eval_every,
        memory=MemoryConfig(
            kind=memory,
            previous_action_reward=task.previous_action_reward,
            **task.memory.get(memory, {}) | args.memory_kwargs,
        ),
        algo=AlgoConfig(**task.algo | args.algo_kwargs | {"algo": args.algo}),
    )


def run_lethe(task: Task, memory: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from agents import train

    # The run directory: kept under --runs-dir (replaced if there), else a temporary one.
    learner = memory if args.algo == "ppo" else f"{args.algo}-{memory}"
    kept = Path(args.runs_dir, f"{args.task}-{learner}-seed{seed}") if args.runs_dir else None
    with nullcontext(str(kept)) if kept else tempfile.TemporaryDirectory() as run_dir:
        config = lethe_config(task, memory, seed, args, run_dir)
        summary = train(config, overwrite=True, progress=args.progress)
        lines = Path(run_dir, "metrics.jsonl").read_text().splitlines()
    return {"summary": summary, "rows": [json.loads(line) for line in lines]}


class EpisodeLog:
    """SB3 callback state: ``(global step, success, return, level)`` of every finished
    episode (``level``: the curriculum level it was drawn at, ``nan`` without one)."""

    def __init__(self, final_level: float = 0.0) -> None:
        self.final_level = final_level
        self.episodes: list[tuple[int, float, float, float]] = []

    def callback(self):  # noqa: ANN201  (an SB3 BaseCallback)
        from stable_baselines3.common.callbacks import BaseCallback

        log = self

        class Record(BaseCallback):
            def _on_step(self) -> bool:
                for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
                    if done and "episode" in info:
                        success = float(info.get("success", np.nan))
                        level = float(info.get("curriculum_level", np.nan))
                        log.episodes.append(
                            (self.num_timesteps, success, info["episode"]["r"], level)
                        )
                return True

        return Record()

    def final(self, count: int) -> dict[str, Any]:
        """The last ``count`` episodes as an evaluation: on a curriculum only those drawn at its
        last level (the task Lethe's learners are evaluated on); none there: no figures."""
        episodes = self.episodes
        if self.final_level:
            episodes = [e for e in episodes if e[3] == self.final_level]
        tail = episodes[-count:] if count else []
        successes = [s for _, s, _, _ in tail if not np.isnan(s)]
        return {
            "episodes": len(tail),
            "mean_return": float(np.mean([r for _, _, r, _ in tail])) if tail else None,
            "success_rate": float(np.mean(successes)) if successes else None,
        }

    def as_rows(self, per_row: int) -> list[dict[str, Any]]:
        """Batches of ``per_row`` episodes in the shape of `metrics.jsonl` rows."""
        rows = []
        for start in range(0, len(self.episodes), per_row):
            chunk = self.episodes[start : start + per_row]
            row = {
                "global_step": chunk[-1][0],
                "charts/episodes": float(len(chunk)),
                "charts/success_rate": float(np.mean([s for _, s, _, _ in chunk])),
                "charts/episodic_return": float(np.mean([r for _, _, r, _ in chunk])),
            }
            if self.final_level:
                row["charts/curriculum_level"] = float(max(level for *_, level in chunk))
                last = [(s, r) for _, s, r, level in chunk if level == self.final_level]
                row["charts/last_level_episodes"] = float(len(last))
                if last:
                    row["charts/last_level_success_rate"] = float(np.mean([s for s, _ in last]))
                    row["charts/last_level_return"] = float(np.mean([r for _, r in last]))
            rows.append(row)
        return rows


def sb3_envs(task: Task, seed: int, env_kwargs: dict[str, Any] | None = None) -> tuple[Any, str]:
    """RecurrentPPO's 8 MiniGrid envs of the task and its policy class. Where Lethe's learners
    observe the previous action and reward, so does it: the view flattened (SB3 would read a
    3-D uint8 box as an image for its CNN, too small for it), the entries added by
    `envs.wrappers.PreviousActionReward`, and the ``MultiInputLstmPolicy`` to read them."""
    from gymnasium.wrappers import FlattenObservation
    from stable_baselines3.common.env_util import make_vec_env

    from envs.wrappers import PreviousActionReward  # (importing envs registers Lethe/*)

    policy, wrapper = "MlpLstmPolicy", None
    if task.previous_action_reward:
        policy = "MultiInputLstmPolicy"
        wrapper = lambda env: PreviousActionReward(FlattenObservation(env))  # noqa: E731
    vec_env = make_vec_env(
        task.train_env or task.env, 8, seed=seed, wrapper_class=wrapper, env_kwargs=env_kwargs
    )
    return vec_env, policy


def run_recurrent_ppo(task: Task, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """sb3-contrib's RecurrentPPO with its defaults on 8 MiniGrid envs (the same observations)."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.logger import Logger

    vec_env, policy = sb3_envs(task, seed, args.env_kwargs)
    model = RecurrentPPO(policy, vec_env, device=args.device, verbose=0, seed=seed)
    # A logger with no outputs: SB3's default one makes a directory in the temp folder per run.
    model.set_logger(Logger(folder=None, output_formats=[]))
    # The curriculum's last level as the envs have it (--env-kwargs may move it: max_length).
    log = EpisodeLog(vec_env.get_attr("curriculum_last")[0] if task.final_level else 0.0)
    start = time.perf_counter()
    model.learn(total_timesteps=args.sb3_steps or task.sb3_steps, callback=log.callback())
    wall = time.perf_counter() - start
    vec_env.close()
    return {
        "summary": {
            "total_env_steps": model.num_timesteps,
            "wall_seconds": wall,
            "eval": log.final(args.eval_episodes),
        },
        "rows": log.as_rows(per_row=8),
        "eval_note": "last episodes of training (on a curriculum: those drawn at its last level)",
    }


def highest_level(rows: list[dict[str, Any]]) -> float | None:
    """The highest curriculum level in a run's rows (`metrics.jsonl` or `EpisodeLog.as_rows`);
    None without a curriculum."""
    levels = [row.get("charts/curriculum_level") for row in rows]
    levels = [level for level in levels if level is not None and not np.isnan(level)]
    return max(levels) if levels else None


def format_table(results: list[dict[str, Any]], metric: str) -> str:
    """The printed table; a ``best (step)`` column where a run kept a best policy, a ``level``
    column (the highest curriculum level reached) on a curriculum."""
    with_best = any("best_step" in row for row in results)
    with_level = any(row.get("highest_level") is not None for row in results)
    best_head = f" {'best (step)':>20} |" if with_best else ""
    level_head = " level |" if with_level else ""
    lines = [
        f"| {'learner':<32} | seed | {'steps to target':>15} | {'budget':>11} |{level_head}"
        f" final |{best_head} wall s |",
        f"|{'-' * 34}|------|{'-' * 17}|{'-' * 13}|{'-------|' if with_level else ''}-------|"
        f"{'-' * 22 + '|' if with_best else ''}--------|",
    ]
    key = "success" if metric == "success" else "return"
    for row in results:
        reached = "not reached" if row["steps_to_target"] is None else f"{row['steps_to_target']:,}"
        final = row[f"final_{key}"]
        final_text = "-" if final is None else f"{final:.2f}"
        best_text = ""
        if with_best:
            best = row.get(f"best_{key}")
            cell = "-" if best is None else f"{best:.2f} ({row['best_step']:,})"
            best_text = f" {cell:>20} |"
        level_text = ""
        if with_level:
            level = row.get("highest_level")
            level_text = f" {'-' if level is None else f'{level:,.0f}':>5} |"
        lines.append(
            f"| {row['learner']:<32} | {row['seed']:>4} | {reached:>15} | {row['budget']:>11,} "
            f"|{level_text} {final_text:>5} |{best_text} {row['wall_seconds']:>6.0f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The script's options (tests/docs parses the documented commands with it)."""
    from agents.cli import OneLineParser
    from agents.config import ALGOS, json_object

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="corridor-s")
    parser.add_argument("--memories", default="expire-span,gru,window,full")
    parser.add_argument(
        "--algo", choices=ALGOS, default="ppo", help="Lethe runs' update rule (default: ppo)"
    )
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=0, help="Lethe budget (0: the task's)")
    parser.add_argument("--sb3-steps", type=int, default=0, help="RecurrentPPO budget (0: task)")
    parser.add_argument("--no-sb3", action="store_true", help="leave RecurrentPPO out")
    parser.add_argument("--num-envs", type=int, default=0, help="Lethe envs (0: the task's)")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="Lethe runs: evaluate every N iterations and report the best policy's final "
        "evaluation too (train_rl.py --eval-every; 0: off)",
    )
    parser.add_argument("--window-episodes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    parser.add_argument(
        "--runs-dir",
        default="",
        help="keep each Lethe run's directory (config, metrics.jsonl, checkpoints, best.pt) "
        "under this folder as TASK-MEMORY-seedS (A2C: TASK-a2c-MEMORY-seedS), replacing one "
        "already there (default: temporary directories, removed after each run)",
    )
    parser.add_argument("--progress", action="store_true", help="progress bars of the runs")
    parser.add_argument(
        "--env-kwargs",
        type=json_object,
        default={},
        metavar="JSON",
        help="keyword arguments for the task's envs (training, evaluation, RecurrentPPO's), e.g. "
        "'{\"slack_steps\": 100}' to end a corridor episode 100 steps after its shortest walk",
    )
    parser.add_argument(
        "--algo-kwargs",
        type=json_object,
        default={},
        metavar="JSON",
        help="Lethe runs: update-rule options over the task's (AlgoConfig fields, train_rl.py's "
        "option names with _), e.g. '{\"gamma\": 0.999}'",
    )
    parser.add_argument(
        "--memory-kwargs",
        type=json_object,
        default={},
        metavar="JSON",
        help="Lethe runs: memory options over the task's, for every --memories kind "
        "(MemoryConfig fields), e.g. '{\"capacity\": 32}'",
    )
    return parser


def main() -> None:
    from agents import AlgoConfig, MemoryConfig
    from agents.config import ConfigError, env_label, validate

    parser = build_parser()
    args = parser.parse_args()
    for flag, given, config in (
        ("--algo-kwargs", args.algo_kwargs, AlgoConfig),
        ("--memory-kwargs", args.memory_kwargs, MemoryConfig),
    ):
        allowed = [f.name for f in fields(config) if f.name not in ("algo", "kind")]
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            parser.error(f"{flag}: unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    task = TASKS[args.task]
    seeds = [int(s) for s in args.seeds.split(",")]
    threshold = task.target
    target_text = f"success >= {task.target}"
    if task.metric == "return":
        oracle = portal_oracle_return(task.env, 256, args.device, args.env_kwargs)
        threshold = task.target * oracle
        target_text = f"return >= {task.target:.0%} of the oracle's {oracle:.2f} = {threshold:.2f}"

    learners = [(f"Lethe {args.algo.upper()} {m}", m) for m in args.memories.split(",") if m]
    for _, memory in learners:  # a bad option fails here in one line, not hours into the runs
        try:
            validate(lethe_config(task, memory, seeds[0], args, "unused"))
        except ConfigError as error:
            given = args.algo_kwargs | args.memory_kwargs
            hint = (  # validate names train_rl.py's flags: --gamma is the key "gamma" here
                " (train_rl.py's flag; in --algo-kwargs / --memory-kwargs the key without "
                "'--', with '_' for '-')"
                if given
                else ""
            )
            parser.error(f"{error}{hint}")
    if not args.no_sb3:
        learners.append(("sb3-contrib RecurrentPPO (LSTM)", None))
    results = []
    for label, memory in learners:
        for seed in seeds:
            try:
                out = (
                    run_lethe(task, memory, seed, args)
                    if memory
                    else run_recurrent_ppo(task, seed, args)
                )
            except ConfigError as error:  # e.g. --env-kwargs the env refuses
                parser.error(str(error))
            summary = out["summary"]
            reached = steps_to_target(
                out["rows"], task.metric, threshold, args.window_episodes, task.final_level
            )
            row = {
                "learner": label,
                "seed": seed,
                "steps_to_target": reached,
                "budget": summary["total_env_steps"],
                "final_success": summary["eval"]["success_rate"],
                "final_return": summary["eval"]["mean_return"],
                "wall_seconds": summary["wall_seconds"],
            }
            if task.final_level:  # on a curriculum: how far up it got
                row["highest_level"] = highest_level(out["rows"])
            if "best" in summary:  # --eval-every: the kept policy, judged on the final episodes
                row["best_step"] = summary["best"]["global_step"]
                row["best_success"] = summary["best"]["eval"]["success_rate"]
                row["best_return"] = summary["best"]["eval"]["mean_return"]
            results.append(row)
            print(json.dumps(row), flush=True)

    env_text = env_label(task.env, args.env_kwargs)
    print(f"\n{env_text}: env steps to {target_text} ({args.window_episodes}-episode window)\n")
    print(format_table(results, task.metric))
    if args.out:
        record = {"task": args.task, "algo": args.algo, "env_kwargs": args.env_kwargs}
        record |= {"algo_kwargs": args.algo_kwargs, "memory_kwargs": args.memory_kwargs}
        record["results"] = results
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
