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

from agents.cli import OneLineParser, prog, run_subcommand
from agents.config import ConfigError, env_label
from agents.evaluate import add_policy_arguments, load_policy, threads_of
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
#: the memory kinds whose state holds one memory per stored observation
PER_OBSERVATION_KINDS = ("expire-span", "window", "full")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=f"{prog()} analyze",
        description="Play a trained agent and show what its memory keeps: retention heatmaps, "
        "spans by event, and a text report in RUN_DIR/analysis/.",
    )
    add_policy_arguments(parser, default_episodes=5, seed_offset=SEED_OFFSET)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=MAX_TRACKED_STEPS,
        help=f"cut each episode after this many steps (default {MAX_TRACKED_STEPS})",
    )
    return parser


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
    see `agents.evaluate.played_env_kwargs`."""
    run_dir = Path(run_dir)
    if episodes < 1:
        raise ConfigError(f"--episodes must be a positive integer, got {episodes}")
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be a positive integer, got {max_steps}")
    policy, config, payload, env_id, env_kwargs, torch_device = load_policy(
        run_dir, device, env_id, checkpoint, env_kwargs, kinds=PER_OBSERVATION_KINDS
    )
    first_seed = config.seed + SEED_OFFSET if seed is None else seed
    out_dir = run_dir / "analysis"
    records = []
    for episode in range(episodes):
        record = track_episode(
            policy, env_id, torch_device, first_seed + episode, max_steps, env_kwargs
        )
        assert record is not None  # a per-observation memory: checked by load_policy
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

    def body(args: argparse.Namespace) -> int:
        with threads_of(args):
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
        print(text, end="")
        print(f"pictures and arrays in {args.run_dir / 'analysis'}")
        return 0

    return run_subcommand(build_parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main())
