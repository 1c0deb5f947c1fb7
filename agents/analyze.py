"""``python train_rl.py analyze RUN_DIR``: what a trained agent keeps in memory, and for how long.

Loads ``RUN_DIR/checkpoint.pt``, plays ``--episodes`` fresh episodes with the trained policy
(sampled actions, seeds from the run's seed on), and writes to ``RUN_DIR/analysis/``:

- ``keep_episode<k>.png``, ``spans_episode<k>.png``, ``retention_episode<k>.npz``: the same
  pictures and arrays as the training-time retention snapshots (`agents.retention`);
- ``report.txt`` (also printed): per layer, the mean predicted span of observations on event
  steps vs the others (per event kind) and the observations kept longest.

Bad input (missing or corrupt run directory, a core without per-observation memory, an
unknown env) is answered in one line with exit status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.cli import OneLineParser, prog
from agents.config import DEVICES, ConfigError, TrainConfig, env_label, json_object
from agents.evaluate import eval_env_id, eval_env_kwargs
from agents.policy import ActorCritic
from agents.retention import (
    MAX_TRACKED_STEPS,
    EpisodeRetention,
    episode_title,
    span_by_event,
    track_episode,
    write_retention_files,
)
from envs.events import EVENT_NAMES

#: how many of the longest-kept observations the report lists per layer
TOP_KEPT = 8
#: episode seeds start here past the run's seed, away from training and evaluation seeds
SEED_OFFSET = 77_777


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=f"{prog()} analyze",
        description="Play a trained agent and show what its memory keeps: retention heatmaps, "
        "spans by event, and a text report in RUN_DIR/analysis/.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory holding checkpoint.pt")
    parser.add_argument(
        "--checkpoint",
        default="last",
        choices=("last", "best"),
        help="the policy to play: last (checkpoint.pt) or best (best.pt, kept by runs with "
        "--eval-every; default last)",
    )
    parser.add_argument("--episodes", type=int, default=5, help="episodes to play (default 5)")
    parser.add_argument(
        "--env", default=None, help="env id to play (default: the run's --eval-env, else --env)"
    )
    parser.add_argument(
        "--env-kwargs",
        type=json_object,
        default=None,
        metavar="JSON",
        help="keyword arguments for the env's constructor (default: the run's eval env kwargs "
        "when playing its eval env, none for another --env)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=DEVICES, help="torch device (default cpu)"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=MAX_TRACKED_STEPS,
        help=f"cut each episode after this many steps (default {MAX_TRACKED_STEPS})",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="first episode seed (default: run seed + 77777)"
    )
    return parser


def played_env_kwargs(
    config: TrainConfig, env_id: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Keyword arguments for the env `analyze` plays: ``given`` (``--env-kwargs``), else the
    run's eval env kwargs when it plays the run's eval env, none for another id."""
    if given is not None:
        return given
    return eval_env_kwargs(config) if env_id == eval_env_id(config) else {}


def load_policy(
    run_dir: Path,
    device_name: str,
    env_id: str | None,
    checkpoint: str = "last",
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[ActorCritic, TrainConfig, dict[str, Any], str, dict[str, Any], torch.device]:
    """(policy on device, config, checkpoint payload, env id, env kwargs, device) of a run
    directory; ``checkpoint``: ``"last"`` (``checkpoint.pt``) or ``"best"`` (``best.pt``); the
    env kwargs are `played_env_kwargs` (``env_kwargs``: ``--env-kwargs``).

    Raises `ConfigError` (one line) for a missing / corrupt run directory, a core without
    per-observation memory, an unknown env or a checkpoint that does not fit the env."""
    from agents.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
    from agents.trainer import resolve_device
    from agents.vec import make_vector_env

    try:
        payload = load_checkpoint(run_dir, BEST_NAME if checkpoint == "best" else CHECKPOINT_NAME)
    except ConfigError as error:
        raise ConfigError(str(error).replace("--resume ", "", 1)) from None
    try:
        config = TrainConfig.from_dict(payload["config"])
    except (TypeError, AttributeError) as error:
        raise ConfigError(f"{run_dir}: checkpoint config is not readable ({error})") from None
    if config.memory.kind not in ("expire-span", "window", "full"):
        raise ConfigError(
            f"{run_dir}: memory kind {config.memory.kind!r} keeps no per-observation memories; "
            "allowed: expire-span, window, full"
        )
    device = resolve_device(device_name)
    env_id = env_id or eval_env_id(config)
    env_kwargs = played_env_kwargs(config, env_id, env_kwargs)
    env = make_vector_env(env_id, 1, device, config.memory.previous_action_reward, env_kwargs)
    try:
        policy = ActorCritic(env.obs_spaces, int(env.single_action_space.n), config.memory)
    finally:
        env.close()
    try:
        policy.load_state_dict(payload["policy"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ConfigError(
            f"{run_dir}: the checkpoint does not fit env {env_id} ({first})"
        ) from None
    policy.to(device).eval()
    return policy, config, payload, env_id, env_kwargs, device


def report(records: Sequence[EpisodeRetention], header: Sequence[str], top: int = TOP_KEPT) -> str:
    """The text report: per layer, spans by event kind and the observations kept longest."""
    lines = list(header)
    lengths = [r.n_steps for r in records]
    lines.append(
        f"{len(records)} episode(s), seeds {records[0].seed}..{records[-1].seed}, "
        f"lengths {', '.join(map(str, lengths))} (mean {np.mean(lengths):.1f}) steps"
    )
    by_event = span_by_event(records)
    for layer in range(records[0].n_layers):
        stats = by_event[f"layer{layer}"]
        lines.append("")
        lines.append(f"Layer {layer}")
        lines.append("  mean predicted span of the stored observations (n), by their step's event")
        other = stats.get("none", math.nan)
        kinds = sorted(
            (k for k in stats if "/" not in k),
            key=lambda k: (k != "none", k),
        )
        if any(stats[f"dropped/{kind}"] for kind in kinds):  # the legend of "never stored"
            lines.append("  (never stored: dropped on arrival by the capacity, or a span < 1 step)")
        for kind in kinds:
            mean, count = stats[kind], int(stats[f"count/{kind}"])
            dropped = int(stats[f"dropped/{kind}"])
            ratio = ""
            if kind != "none" and math.isfinite(other) and other > 0 and math.isfinite(mean):
                ratio = f"  ({mean / other:.2f}x steps without an event)"
            shown = "inf" if math.isinf(mean) else f"{mean:9.1f}"
            never = f" ({dropped} never stored)" if dropped else ""
            lines.append(f"    {kind:<17} n={count:<6} span {shown}{ratio}{never}")
        lines.append("  kept longest (steps in memory after its own step):")
        rows = []
        for episode, record in enumerate(records):
            kept = record.kept_steps()[layer]  # [T]
            to_end = record.kept_to_end()[layer]  # [T]
            for step in range(record.n_steps):
                span = float(record.span[layer, step])
                rows.append((int(kept[step]), span, -episode, -step, episode, step, to_end[step]))
        rows.sort(key=lambda row: (row[0], np.nan_to_num(row[1], nan=-1.0)), reverse=True)
        for rank, (kept, span, _, _, episode, step, to_end) in enumerate(rows[:top], start=1):
            code = int(records[episode].events[step])
            event = EVENT_NAMES.get(code, f"event {code}")
            end = (
                ", still kept at the episode end" if to_end and step < lengths[episode] - 1 else ""
            )
            lines.append(
                f"    {rank}. episode {episode} step {step:<5} {event:<17} kept {kept} steps"
                f"{end} (span {span:.1f})"
            )
    return "\n".join(lines) + "\n"


def analyze(
    run_dir: Path,
    episodes: int = 5,
    env_id: str | None = None,
    device: str = "cpu",
    max_steps: int = MAX_TRACKED_STEPS,
    seed: int | None = None,
    checkpoint: str = "last",
    env_kwargs: dict[str, Any] | None = None,
) -> str:
    """Play, write ``RUN_DIR/analysis/`` and return the report; `ConfigError` on bad input.

    ``checkpoint``: ``"last"`` or ``"best"`` (the policy `--eval-every` kept); ``env_kwargs``:
    see `played_env_kwargs`."""
    run_dir = Path(run_dir)
    if episodes < 1:
        raise ConfigError(f"--episodes must be a positive integer, got {episodes}")
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be a positive integer, got {max_steps}")
    policy, config, payload, env_id, env_kwargs, torch_device = load_policy(
        run_dir, device, env_id, checkpoint, env_kwargs
    )
    first_seed = config.seed + SEED_OFFSET if seed is None else seed
    out_dir = run_dir / "analysis"
    records = []
    for episode in range(episodes):
        record = track_episode(
            policy, env_id, torch_device, first_seed + episode, max_steps, env_kwargs
        )
        assert record is not None  # checked by load_policy
        records.append(record)
        title = episode_title(record, f"checkpoint step {payload['global_step']:,}")
        write_retention_files(record, out_dir, f"episode{episode}", title)
    header = [
        f"Retention analysis of {run_dir}",
        f"memory {config.memory.kind}, env {env_label(env_id, env_kwargs)}, {checkpoint} "
        f"checkpoint, at step {payload['global_step']:,} (iteration {payload['iteration']})",
    ]
    text = report(records, header)
    (out_dir / "report.txt").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``analyze RUN_DIR [--episodes N] [--env ID] [--device D]``; exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad option (2, one line already printed)
        return int(stop.code or 0)
    try:
        text = analyze(
            args.run_dir,
            args.episodes,
            args.env,
            args.device,
            args.max_steps,
            args.seed,
            args.checkpoint,
            args.env_kwargs,
        )
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"pictures and arrays in {args.run_dir / 'analysis'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
