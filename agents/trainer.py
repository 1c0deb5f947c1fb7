"""The training loop A2C and PPO share: collect, update, log, checkpoint, evaluate.

`train(config)` is the Python API the CLI wraps::

    from agents import TrainConfig, train
    summary = train(TrainConfig(env="Lethe/Corridor-v0", total_steps=200_000))
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from agents.a2c import a2c_update
from agents.checkpoint import BEST_NAME, load_checkpoint, mismatch_reason, save_checkpoint
from agents.cli import relaunch
from agents.config import (
    ConfigError,
    TrainConfig,
    advisories,
    check_types,
    env_label,
    flag_of,
    iteration_steps,
    iterations,
    validate,
)
from agents.distributed import (
    SINGLE_PROCESS,
    DistContext,
    distributed_session,
    lost_peer,
    rank_device,
    unwrap,
    wrap_model,
)
from agents.evaluate import eval_env_id, eval_env_kwargs, evaluate, forked_rng
from agents.logging import RunLogger
from agents.losses import explained_variance
from agents.policy import ActorCritic
from agents.ppo import ppo_update
from agents.retention import memory_metrics, retention_snapshot
from agents.rollout import EpisodeStats, Rollout, RolloutCollector
from agents.vec import TorchVectorEnv, make_vector_env

UPDATES: dict[str, Callable[..., dict[str, float]]] = {"ppo": ppo_update, "a2c": a2c_update}

#: seeds of a run's envs (and of a fork's RNG) step this far apart per iteration, so that a
#: resumed or forked run does not replay the episodes it started with
ITERATION_SEED_STRIDE = 1_000_003

#: this many iterations in a row with every update skipped (a non-finite loss or gradient)
#: stop the run
MAX_SKIPPED_IN_A_ROW = 5

#: fields of a run's config that `--resume` may change; the rest must stay as they were
RESUMABLE_OVERRIDES = frozenset(
    {
        "total_steps",
        "device",
        "wandb",
        "checkpoint_every",
        "heatmap_every",
        "eval_episodes",
        "eval_every",
        "eval_env",
        "eval_env_kwargs",
        "eval_deterministic",
        "dist_timeout",
        "threads",
    }
)


class TrainingError(RuntimeError):
    """The run cannot go on (for instance, losses keep being non-finite)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is a `ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: CUDA is not available on this machine; allowed: auto, cpu"
        )
    return torch.device(name)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (0: leave torch's setting), then
    back to what it was: a run in a process (a notebook, a test) leaves its setting behind."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<env>-<algo>-<memory>-s<seed>``, the env id made safe for a path."""
    env = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.env.split(":")[-1])
    return Path("runs") / f"{env}-{config.algo.algo}-{config.memory.kind}-s{config.seed}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_eval_env(config: TrainConfig, env: TorchVectorEnv, device: torch.device) -> None:
    """A one-line `ConfigError` unless ``--eval-env`` exists and has the spaces of ``--env``.

    Checked before training, not found out by the evaluation at the end of the run.
    """
    eval_id = eval_env_id(config)
    if eval_id == config.env and eval_env_kwargs(config) == config.env_kwargs:
        return
    try:
        probe = make_vector_env(
            eval_id, 1, device, config.memory.previous_action_reward, eval_env_kwargs(config)
        )
    except ConfigError as error:  # the same words as for --env: say it is the eval env's
        flags = "--eval-env" if eval_id != config.env else "--eval-env-kwargs"
        raise ConfigError(f"{flags}: {error}") from None
    try:
        for what in ("single_observation_space", "single_action_space"):
            train_space, eval_space = getattr(env, what), getattr(probe, what)
            if train_space != eval_space:
                name = what.removeprefix("single_").replace("_", " ")
                raise ConfigError(
                    f"--eval-env {eval_id} has {name} {eval_space}, but --env "
                    f"{config.env} has {train_space}; allowed: an env with the same spaces"
                )
    finally:
        probe.close()


def _mean_or_nan(total: float, count: int) -> float:
    return total / count if count else float("nan")


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _shown(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


class _StopFlag:
    """SIGINT / SIGTERM ask the loop to checkpoint and stop after the current iteration."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _read_checkpoint(
    run_dir: Path, flag: str, world_size: int
) -> tuple[dict[str, Any], TrainConfig]:
    """The checkpoint of ``run_dir`` and its config, or a one-line `ConfigError` naming
    ``flag``. A resumed checkpoint goes on with the number of processes (`world_size`) that
    wrote it: each rank's envs, curriculum and RNG stream are its own. A fork, with fresh envs
    and RNG, may take another number."""
    checkpoint = load_checkpoint(run_dir, flag=flag)
    saved_world_size = checkpoint.get("world_size", 1)
    if saved_world_size != world_size and flag == "--resume":
        raise ConfigError(
            f"{flag} {run_dir}: the checkpoint was written by {saved_world_size} "
            f"process(es), not {world_size}; allowed: the same number "
            f"(torchrun --nproc_per_node ... x --nnodes ... = {saved_world_size})"
        )
    try:
        saved = TrainConfig.from_dict(checkpoint["config"])
    except TypeError as error:
        raise ConfigError(
            f"{flag} {run_dir}: checkpoint config is not readable ({error})"
        ) from None
    return checkpoint, saved


def prepare_run(
    config: TrainConfig,
    resume: bool,
    overwrite: bool,
    overrides: dict[str, Any] | None = None,
    world_size: int = 1,
    fork: str | Path | None = None,
) -> tuple[TrainConfig, Path, dict[str, Any] | None]:
    """Check everything that can be checked before the run directory is touched.

    Returns the config to run, the run directory and the checkpoint to start from. When
    resuming, the config is the saved one with the `overrides` it allows. For a ``fork`` (the
    run directory of another run), it is that run's saved config with every override applied,
    and the new run gets a directory of its own: ``config.run_dir`` if given, else
    ``FORK-from<iteration>`` beside it; whether its policy fits the new options is checked
    when the policy is built (`_train`).
    """
    checkpoint = None
    if fork is not None:
        if resume:
            raise ConfigError("--fork and --resume: give one (--resume continues a run in place)")
        source = Path(fork)
        checkpoint, saved = _read_checkpoint(source, "--fork", world_size)
        saved.run_dir = str(source.parent / f"{source.name}-from{checkpoint['iteration']}")
        changed = []  # the options the fork changes, as the user gave them
        for key, value in (overrides or {}).items():
            if key in ("memory", "algo"):
                for sub_key, sub_value in value.items():
                    before = getattr(getattr(saved, key), sub_key)
                    if before != sub_value:
                        changed.append(_as_given(flag_of(key, sub_key), sub_value, before))
                    setattr(getattr(saved, key), sub_key, sub_value)
            else:
                if key != "run_dir" and getattr(saved, key) != value:
                    changed.append(_as_given(flag_of(key), value, getattr(saved, key)))
                setattr(saved, key, value)
        if Path(saved.run_dir).resolve() == source.resolve():
            raise ConfigError(
                f"--fork {source}: the new run needs its own --run-dir, not {source} "
                f"(--resume {source} continues that run in place)"
            )
        checkpoint["forked_from"] = {
            "run_dir": str(source),
            "iteration": checkpoint["iteration"],
            "global_step": checkpoint["global_step"],
            "changed": changed,
        }
        # The fork counts on from the source's env steps, in iterations of its own size
        # (another --num-envs or --rollout-steps makes them another number of iterations).
        checkpoint["iteration"] = checkpoint["global_step"] // iteration_steps(saved, world_size)
        if iterations(saved, world_size) <= checkpoint["iteration"]:
            raise ConfigError(
                f"--fork {source}: its checkpoint is at step {checkpoint['global_step']:,}, the "
                f"end of --total-steps {saved.total_steps:,}, so the fork would train nothing "
                "(it counts on from the source's steps); allowed: a larger --total-steps"
            )
        config = saved
    elif resume:  # config.run_dir, or where a run of this config writes by default
        run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
        if overwrite:
            raise ConfigError(
                f"--resume {run_dir} and --overwrite: give one (--resume continues the run, "
                "--overwrite starts it over)"
            )
        given = (overrides or {}).get("run_dir")
        if given is not None and Path(given).resolve() != run_dir.resolve():
            raise ConfigError(
                f"--resume {run_dir} continues that run in its own directory, not --run-dir "
                f"{given}; allowed: no --run-dir, or --fork {run_dir} --run-dir {given} for a "
                "new run from its checkpoint"
            )
        checkpoint, saved = _read_checkpoint(run_dir, "--resume", world_size)
        resumable = ", ".join(sorted(flag_of(key) for key in RESUMABLE_OVERRIDES))
        for key, value in (overrides or {}).items():
            if key in ("memory", "algo"):
                for sub_key, sub_value in value.items():
                    if getattr(getattr(saved, key), sub_key) != sub_value:
                        what = "memory kind" if sub_key == "kind" else flag_of(key, sub_key)
                        before = getattr(getattr(saved, key), sub_key)
                        raise ConfigError(
                            f"--resume {run_dir}: the checkpoint was made with {what} "
                            f"{_shown_value(before)}, not {_shown_value(sub_value)}; allowed: "
                            f"that value, or --fork {run_dir} --run-dir NEW_DIR (a new run "
                            f"from its checkpoint); a resume may change {resumable}"
                        )
            elif key in RESUMABLE_OVERRIDES:
                setattr(saved, key, value)
            elif key != "run_dir" and getattr(saved, key) != value:
                raise ConfigError(
                    f"--resume {run_dir}: the checkpoint was made with {flag_of(key)} "
                    f"{_shown_value(getattr(saved, key))}, not {_shown_value(value)}; allowed: "
                    f"that value, or --fork {run_dir} --run-dir NEW_DIR (a new run from its "
                    f"checkpoint); a resume may change {resumable}"
                )
        saved.run_dir = str(run_dir)
        config = saved
    validate(config)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    config.run_dir = str(run_dir)
    _check_writable(run_dir)
    if not resume and not overwrite and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} already exists; pass --resume {run_dir} to continue "
            "it, --overwrite to start it over, or another --run-dir (in Python: "
            "train(config, resume=True), train(config, overwrite=True), config.run_dir)"
        )
    return config, run_dir, checkpoint


def _check_writable(run_dir: Path) -> None:
    """A one-line `ConfigError` unless ``run_dir`` is a directory, or one that can be made
    (its nearest existing parent a directory this process may write in)."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError(f"--run-dir {run_dir} is a file; allowed: a directory")
        return
    parent = run_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--run-dir {run_dir}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--run-dir {run_dir}: no permission to create it in {parent}")


def _shown_value(value: Any) -> str:
    """An option's value as typed: JSON for the keyword-argument objects, else its repr."""
    return json.dumps(value) if isinstance(value, dict) else repr(value)


def _as_given(flag: str, value: Any, before: Any) -> str:
    """A changed option as typed: ``--gae-lambda 0.9 (was 0.95)``, ``--no-anneal-lr``."""
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {json.dumps(value) if isinstance(value, dict) else value} (was {before})"


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    fork: str | Path | None = None,
) -> dict[str, Any]:
    """Train, checkpoint and evaluate; returns the summary also written to ``summary.json``.

    ``resume``: continue the run in ``config.run_dir`` (or the default directory of
    `config`) with its saved config; the other fields of `config` are not read, and
    `overrides` (``{"total_steps": 2_000_000}``) changes those `RESUMABLE_OVERRIDES` allows.
    ``fork``: start a new run from the last checkpoint of the run directory ``fork`` (its
    policy, optimiser state, step count and curriculum level; fresh envs, metrics and W&B
    run), with its saved config changed by every override (see `prepare_run`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this and trains on its own
    envs, with the gradients averaged over the processes (see `agents.distributed`). Rank 0
    checks the run directory and reads the checkpoint for all of them, and alone logs,
    writes files and evaluates; the other ranks return ``{"rank", "world_size",
    "iterations", "total_env_steps", "run_dir"}``. A process that dies or stops answering
    for ``config.dist_timeout`` seconds ends the run on the others with a `TrainingError`.
    """
    check_types(config)  # before any field is read
    with distributed_session(config.dist_timeout) as ctx:
        try:
            config, run_dir, checkpoint = ctx.run_on_main(
                lambda: prepare_run(config, resume, overwrite, overrides, ctx.world_size, fork)
            )
            if ctx.is_main:  # pointed at the caller of `train`, once per run
                for message in advisories(config, ctx.world_size):
                    warnings.warn(message, stacklevel=2)
                if resume and checkpoint["iteration"] >= iterations(config, ctx.world_size):
                    warnings.warn(
                        f"{run_dir} has trained its --total-steps {config.total_steps:,} "
                        f"already (step {checkpoint['global_step']:,}): nothing to train, so "
                        "the run is evaluated again and summary.json rewritten; a larger "
                        "--total-steps trains it on (in Python: train(config, resume=True, "
                        "overrides={'total_steps': N}))",
                        stacklevel=2,
                    )
            with cpu_threads(config.threads):
                summary = _train(config, run_dir, checkpoint, ctx, progress)
            # Leave the group together, after rank 0's evaluation and files: a rank that left
            # it while rank 0 still held its connections could abort in gloo's teardown.
            ctx.barrier()
            return summary
        except RuntimeError as error:
            if not (ctx.enabled and lost_peer(error)):
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise TrainingError(
                f"rank {ctx.rank} of {ctx.world_size} lost the other processes "
                f"({type(error).__name__}: {reason}): one of them died, hung for more than "
                f"--dist-timeout {config.dist_timeout:g} s, or lost its network. Continue from "
                f"the last checkpoint with "
                f"`{relaunch(True)} --resume {config.run_dir or 'RUN_DIR'}`"
            ) from error


def _train(
    config: TrainConfig,
    run_dir: Path,
    checkpoint: dict[str, Any] | None,
    ctx: DistContext,
    progress: bool,
) -> dict[str, Any]:
    """Build the envs, the policy and the optimiser of this rank, then run `_loop`."""
    device = rank_device(resolve_device(config.device), ctx)
    seed_everything(config.seed)  # before the policy: the same initial parameters on every rank
    env = make_vector_env(
        config.env,
        config.num_envs,
        device,
        config.memory.previous_action_reward,
        config.env_kwargs,
    )
    try:
        check_eval_env(config, env, device)
        policy = ActorCritic(env.obs_spaces, int(env.single_action_space.n), config.memory).to(
            device
        )
        algo = config.algo
        optimizer = torch.optim.Adam(policy.parameters(), lr=algo.learning_rate, eps=1e-5)
        iteration, global_step, wall_before, run_id = 0, 0, 0.0, None
        best = None
        forked_from = None if checkpoint is None else checkpoint.get("forked_from")
        resuming = checkpoint is not None and forked_from is None
        if checkpoint is not None:
            if forked_from is None:
                policy.load_state_dict(checkpoint["policy"])
                optimizer.load_state_dict(checkpoint["optimizer"])
            else:
                _load_fork(
                    policy, optimizer, checkpoint, forked_from["run_dir"], algo.learning_rate
                )
            iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
            levels = checkpoint.get("curriculum_levels")
            # Fresh envs, but the curriculum goes on where it was (a fork to another env
            # starts that env's own).
            if levels is not None and checkpoint["config"]["env"] == config.env:
                # a fork may run on more processes than wrote the levels: they take turns
                env.curriculum_level = levels[ctx.rank % len(levels)]
        if resuming:  # the same run goes on: its wall time, W&B run, RNG and best policy
            wall_before = checkpoint.get("wall_seconds", 0.0)
            run_id = checkpoint.get("wandb_run_id")
            _set_rng_state(checkpoint.get("rng_ranks", [checkpoint["rng"]])[ctx.rank])
            best = _best_so_far(run_dir) if ctx.is_main else None  # rank 0 alone evaluates
        else:  # a new run, fresh or forked
            if forked_from is not None:  # seeded apart from the source's first iterations
                seed_everything(ctx.seed(config.seed + ITERATION_SEED_STRIDE * iteration))
            elif ctx.enabled:
                seed_everything(ctx.seed(config.seed))  # each rank samples its own actions
            if ctx.is_main and run_dir.exists():
                shutil.rmtree(run_dir)  # --overwrite, checked in prepare_run
        if ctx.is_main:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:  # what `_check_writable` cannot foresee (/proc/x)
                raise ConfigError(f"--run-dir {run_dir}: cannot create it ({error})") from None
            (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        ctx.barrier()  # the run directory is ready before any rank goes on

        # Fresh envs on resume, seeded by the iteration so they do not replay the first episodes.
        collector = RolloutCollector(
            env,
            policy,
            algo.rollout_steps,
            device,
            seed=ctx.seed(config.seed + ITERATION_SEED_STRIDE * iteration),
        )
        logger = (
            RunLogger(
                run_dir,
                config.to_dict(),
                config.wandb,
                config.wandb_project,
                run_id,
                resume_iteration=iteration if resuming else None,
            )
            if ctx.is_main
            else None
        )
        try:
            summary = _loop(
                config,
                wrap_model(policy, ctx),
                optimizer,
                collector,
                logger,
                run_dir,
                device,
                iteration,
                global_step,
                wall_before,
                progress,
                ctx,
                best,
                checkpoint.get("fork_origin") if resuming else forked_from,
            )
        finally:
            if logger is not None:
                logger.close()
    finally:
        env.close()
    return summary


def _load_fork(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    checkpoint: dict[str, Any],
    source: str,
    learning_rate: float,
) -> None:
    """Load another run's policy and optimiser state (its Adam moments; the learning rate is
    this run's), or say in one line why they do not fit this run's options (a memory or env
    that changes the parameters' shapes)."""
    try:
        policy.load_state_dict(checkpoint["policy"])
    except RuntimeError as error:
        changed = checkpoint["forked_from"].get("changed") or ["none"]
        raise ConfigError(
            f"--fork {source}: its policy does not fit this run's options (changed: "
            f"{', '.join(changed)}; {mismatch_reason(error)}); "
            "allowed: options that keep the network's shapes, such as the update rule's "
            "(--learning-rate, --gae-lambda, ...), the span options, --capacity, --total-steps"
        ) from None
    optimizer.load_state_dict(checkpoint["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


def _checkpoint_payload(
    config: TrainConfig,
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    global_step: int,
    wall_seconds: float,
    run_id: str | None,
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "iteration": iteration,
        "global_step": global_step,
        "policy": policy.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(),
        "wall_seconds": wall_seconds,
        "wandb_run_id": run_id,
    }


#: periodic evaluations play the same episodes every time (comparable scores), seeded apart
#: from the final evaluation's, which judges the kept best policy on episodes it was not
#: chosen on
PERIODIC_EVAL_SEED = 7_919
FINAL_EVAL_SEED = 99_991


BEST_FIELDS = ("score", "iteration", "global_step", "eval")


def _best_so_far(run_dir: Path) -> dict[str, Any] | None:
    """The record of ``best.pt`` (its score, when it was taken, its evaluation), if any.

    On resume the best policy is the one on disk, even if it was found after the checkpoint
    the run resumes from: a later policy replaces it only by scoring higher.
    """
    if not (run_dir / BEST_NAME).is_file():
        return None
    payload = load_checkpoint(run_dir, BEST_NAME)
    return {key: payload[key] for key in BEST_FIELDS}


def _score(result: dict[str, Any]) -> float:
    """What `--eval-every` ranks policies by: success rate where the env reports it, else return."""
    return result["success_rate"] if result["success_rate"] is not None else result["mean_return"]


def _evaluate_apart(
    policy: ActorCritic, config: TrainConfig, device: torch.device, seed: int
) -> dict[str, Any]:
    """`evaluate` on the run's eval env with the global RNG forked: training samples the same
    actions with or without evaluations in between."""
    with forked_rng(device):
        return evaluate(
            policy,
            eval_env_id(config),
            config.eval_episodes,
            device,
            seed,
            config.eval_deterministic,
            eval_env_kwargs(config),
        )


def _loop(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    collector: RolloutCollector,
    logger: RunLogger | None,
    run_dir: Path,
    device: torch.device,
    iteration: int,
    global_step: int,
    wall_before: float,
    progress: bool,
    ctx: DistContext = SINGLE_PROCESS,
    best: dict[str, Any] | None = None,
    forked_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Iterate collect -> update -> (evaluate) -> log -> checkpoint, then evaluate and write
    the summary (with ``forked_from``: the run, iteration and step a fork started from).

    `model` is the `ActorCritic` or, under torchrun, its DDP wrapper (the update goes through
    it); `logger` is None on every rank but 0. Steps count the envs of all ranks. `best`:
    the record of the best evaluation so far (`--eval-every`; on resume, that of ``best.pt``).
    """
    policy = unwrap(model)
    algo = config.algo
    update = UPDATES[algo.algo]
    steps_per_iteration = iteration_steps(config, ctx.world_size)
    num_iterations = iterations(config, ctx.world_size)
    start_time = time.perf_counter()
    start_step = global_step
    skipped_in_a_row = 0
    metrics: dict[str, float] = {}
    bar = tqdm(
        total=num_iterations * steps_per_iteration,
        initial=global_step,
        unit="step",
        unit_scale=True,
        dynamic_ncols=True,
        disable=not progress or not ctx.is_main,
        mininterval=1.0,
        desc=f"{algo.algo}/{config.memory.kind}",
    )

    def save() -> None:
        rng_ranks = ctx.gather_object(_rng_state())  # every rank takes part, rank 0 writes
        levels = ctx.gather_object(collector.env.curriculum_level)
        if logger is None:
            return
        wall = wall_before + time.perf_counter() - start_time
        payload = _checkpoint_payload(
            config, policy, optimizer, iteration, global_step, wall, logger.run_id
        )
        payload["world_size"] = ctx.world_size
        if levels[0] is not None:
            payload["curriculum_levels"] = levels
        if ctx.enabled:
            payload["rng_ranks"] = rng_ranks
        if forked_from is not None:  # a resumed fork's summary still says where it began
            payload["fork_origin"] = forked_from
        save_checkpoint(run_dir, payload)

    interrupted = None
    with _StopFlag() as stop:
        while iteration < num_iterations:
            # Every rank stops at the same iteration, whichever of them got the signal.
            signal_number = ctx.max_int(stop.signal or 0)
            if signal_number:
                interrupted = signal_number
                break
            iteration += 1
            if algo.anneal_lr:
                fraction = 1.0 - (iteration - 1) / num_iterations
                for group in optimizer.param_groups:
                    group["lr"] = fraction * algo.learning_rate
            iter_start = time.perf_counter()
            rollout, episodes = collector.collect(algo.gamma, algo.gae_lambda)
            metrics = update(model, optimizer, rollout, algo)
            episodes, metrics = _reduce_over_ranks(episodes, metrics, ctx)
            global_step += steps_per_iteration
            skipped = metrics.get("losses/skipped_updates", 0.0)
            all_skipped = skipped >= metrics["losses/updates"]
            skipped_in_a_row = skipped_in_a_row + 1 if all_skipped else 0
            metrics.update(_rollout_metrics(rollout, episodes))
            if collector.env.curriculum_last_level is not None:
                metrics.update(_last_level_metrics(episodes))
            metrics.update(memory_metrics(policy, collector.state))
            metrics["charts/steps_per_second"] = steps_per_iteration / (
                time.perf_counter() - iter_start
            )
            metrics["charts/learning_rate"] = optimizer.param_groups[0]["lr"]
            level = collector.env.curriculum_level
            if level is not None:  # rank 0's envs (each rank's curriculum is its own)
                metrics["charts/curriculum_level"] = level
            if logger is not None and config.eval_every and iteration % config.eval_every == 0:
                # Rank 0 alone; the others wait for it at the next iteration's first collective.
                result = _evaluate_apart(policy, config, device, config.seed + PERIODIC_EVAL_SEED)
                metrics.update(
                    {f"eval/{k}": v for k, v in result.items() if k != "episodes" and v is not None}
                )
                score = _score(result)
                if best is None or score > best["score"]:
                    best = {
                        "score": score,
                        "iteration": iteration,
                        "global_step": global_step,
                        "eval": result,
                    }
                    best_payload = {"config": config.to_dict(), "policy": policy.state_dict()}
                    save_checkpoint(run_dir, {**best_payload, **best}, BEST_NAME)
                metrics["eval/best_score"] = best["score"]
            if logger is not None:
                logger.log(iteration, global_step, metrics)
            bar.update(steps_per_iteration)
            postfix = {  # "-": no episode ended this iteration, or the env reports no success
                "ret": _shown(metrics["charts/episodic_return"]),
                "success": _shown(metrics["charts/success_rate"]),
                "sps": f"{metrics['charts/steps_per_second']:.0f}",
            }
            if "charts/curriculum_level" in metrics:  # how far up its curriculum the run is
                postfix["level"] = f"{metrics['charts/curriculum_level']:g}"
            if best is not None:  # the best --eval-every score so far
                postfix["best_eval"] = f"{best['score']:.2f}"
            bar.set_postfix(postfix, refresh=False)
            if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                bar.close()
                raise TrainingError(
                    f"{skipped_in_a_row} iterations in a row had a non-finite loss or "
                    "gradient in every update; "
                    f"stopped at iteration {iteration}. The last good checkpoint is in {run_dir}; "
                    "try a lower --learning-rate or --max-grad-norm"
                )
            last = iteration == num_iterations
            heatmap = (config.heatmap_every and iteration % config.heatmap_every == 0) or last
            if logger is not None and heatmap:
                images, histograms = retention_snapshot(
                    policy,
                    eval_env_id(config),
                    device,
                    run_dir / "retention",
                    global_step,
                    seed=config.seed,
                    env_kwargs=eval_env_kwargs(config),
                )
                logger.log_media(global_step, images, histograms)
            # A skipped update leaves the parameters as they were, so they are always safe to save.
            if iteration % config.checkpoint_every == 0 or last:
                save()
    bar.close()
    if interrupted is not None:
        save()
        name = signal.Signals(interrupted).name
        if ctx.is_main:
            again = relaunch(ctx.enabled)
            print(
                f"{name}: checkpoint saved at step {global_step:,}; continue with "
                f"`{again} --resume {run_dir}`"
            )
        return {"interrupted": name, "global_step": global_step, "run_dir": str(run_dir)}
    if not ctx.is_main:  # rank 0 alone evaluates and writes the summary
        return {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "iterations": iteration,
            "total_env_steps": global_step,
            "run_dir": str(run_dir),
        }

    loop_seconds = time.perf_counter() - start_time  # training only: no evaluation in it
    wall_seconds = wall_before + loop_seconds
    this_session_steps = global_step - start_step
    if progress and config.eval_episodes > 0:  # long tasks take a while: say what runs now
        also = " and again with the kept best.pt" if best is not None else ""
        print(
            f"final evaluation: {config.eval_episodes} episodes of "
            f"{env_label(eval_env_id(config), eval_env_kwargs(config))}{also}",
            file=sys.stderr,
            flush=True,
        )
    eval_result = (
        _evaluate_apart(policy, config, device, config.seed + FINAL_EVAL_SEED)
        if config.eval_episodes > 0
        else {"episodes": 0, "mean_return": None, "mean_length": None, "success_rate": None}
    )
    best_summary = None
    if best is not None:
        kept = copy.deepcopy(policy)
        kept.load_state_dict(load_checkpoint(run_dir, BEST_NAME)["policy"])
        best_summary = {
            "iteration": best["iteration"],
            "global_step": best["global_step"],
            "eval_when_chosen": best["eval"],
            "eval": _evaluate_apart(kept, config, device, config.seed + FINAL_EVAL_SEED),
            "path": str(run_dir / BEST_NAME),
        }
    summary = {
        "env_id": config.env,
        "eval_env_id": eval_env_id(config),
        "env_kwargs": config.env_kwargs,
        "eval_env_kwargs": eval_env_kwargs(config),
        "algo": algo.algo,
        "memory": config.memory.kind,
        "critic": config.memory.critic,
        "seed": config.seed,
        "device": str(device),
        "world_size": ctx.world_size,
        "iterations": iteration,
        "total_env_steps": global_step,
        "wall_seconds": round(wall_seconds, 2),
        # this session's training; a resumed run with nothing left to train: the whole run's
        "env_steps_per_second": round(
            this_session_steps / max(loop_seconds, 1e-9)
            if this_session_steps
            else global_step / max(wall_seconds, 1e-9),
            1,
        ),
        "final_train": {  # null where no episode ended (strict JSON has no NaN)
            k: _finite_or_none(metrics.get(k))
            for k in ("charts/episodic_return", "charts/success_rate", "charts/episode_length")
        },
        "eval": eval_result,
        "run_dir": str(run_dir),
    }
    if best_summary is not None:
        summary["best"] = best_summary
    if forked_from is not None:
        summary["forked_from"] = forked_from
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if logger is not None:
        logger.summary(summary)
    return summary


def _reduce_over_ranks(
    episodes: EpisodeStats, metrics: dict[str, float], ctx: DistContext
) -> tuple[EpisodeStats, dict[str, float]]:
    """Episode sums of all ranks and update metrics averaged over them, in one message.

    Every rank has the same metric keys (the same update rule and number of minibatches).
    """
    if not ctx.enabled:
        return episodes, metrics
    keys = sorted(metrics)
    totals = ctx.sum([*episodes, *(metrics[key] for key in keys)])
    summed = EpisodeStats.of_sums(totals[: len(episodes)])
    means = totals[len(episodes) :]
    return summed, {key: value / ctx.world_size for key, value in zip(keys, means, strict=True)}


def _last_level_metrics(episodes: EpisodeStats) -> dict[str, float]:
    """The episodes drawn at the curriculum's last level (the task it teaches): what a
    "solved" criterion should read, since episodes under way when the level rises end at
    their old, easier level."""
    return {
        "charts/last_level_episodes": float(episodes.last_level_episodes),
        "charts/last_level_return": _mean_or_nan(
            episodes.last_level_return_sum, episodes.last_level_episodes
        ),
        "charts/last_level_success_rate": _mean_or_nan(
            episodes.last_level_success_sum, episodes.last_level_success_count
        ),
    }


def _rollout_metrics(rollout: Rollout, episodes: Any) -> dict[str, float]:
    return {
        "charts/episodic_return": _mean_or_nan(episodes.return_sum, episodes.episodes),
        "charts/episode_length": _mean_or_nan(episodes.length_sum, episodes.episodes),
        "charts/success_rate": _mean_or_nan(episodes.success_sum, episodes.success_count),
        "charts/episodes": float(episodes.episodes),
        "losses/explained_variance": explained_variance(
            rollout.values, rollout.returns, rollout.valid
        ),
    }
