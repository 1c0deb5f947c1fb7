"""Train an agent with a memory core from the command line.

    python train_rl.py              # Expire-Span PPO learns Lethe/Corridor-v0 via its curriculum
    python train_rl.py --env Lethe/Portal-v0 --algo a2c --memory window --num-envs 512
    python train_rl.py --resume runs/Lethe_Corridor-Curriculum-v0-ppo-expire-span-s1
    python train_rl.py analyze runs/Lethe_Corridor-Curriculum-v0-ppo-expire-span-s1  # heatmaps
    python train_rl.py evaluate runs/Lethe_Corridor-Curriculum-v0-ppo-expire-span-s1 --episodes 1000

Every option is a field of the dataclasses in `agents/config.py`; `--help` lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from typing import Any

from agents.cli import OneLineParser, prog
from agents.config import (
    ALGOS,
    CRITICS,
    DEVICES,
    MEMORY_KINDS,
    WANDB_MODES,
    AlgoConfig,
    ConfigError,
    MemoryConfig,
    TrainConfig,
    env_label,
    flag_of,
    json_object,
)

CHOICES = {
    "kind": MEMORY_KINDS,
    "algo": ALGOS,
    "device": DEVICES,
    "wandb": WANDB_MODES,
    "critic": CRITICS,
}
SECTIONS = (
    ("run", None, TrainConfig),
    ("memory core", "memory", MemoryConfig),
    ("update rule and optimiser", "algo", AlgoConfig),
)


def build_parser() -> argparse.ArgumentParser:
    """The CLI, generated from the config dataclasses (defaults shown in --help)."""
    parser = OneLineParser(
        prog=prog(),
        description="Train an A2C / PPO agent whose recurrent core is an Expire-Span memory.",
        epilog=f"{prog()} evaluate RUN_DIR plays a trained run's policy on fresh episodes and "
        f"reports its return and success; {prog()} analyze RUN_DIR reports what its memory "
        f"keeps, with heatmaps (see {prog()} evaluate --help, {prog()} analyze --help).",
        argument_default=argparse.SUPPRESS,  # only explicit options override (matters for --resume)
    )
    for title, section, cls in SECTIONS:
        group = parser.add_argument_group(title)
        defaults = cls()
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(getattr(defaults, field.name)):
                continue  # the nested sections, listed in SECTIONS
            default = getattr(defaults, field.name)
            flag = flag_of(section or "", field.name)
            dest = f"{section}.{field.name}" if section else field.name
            kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
            # a default of "" stands for one the help text describes: "(default: ...)"
            shown = "" if default == "" else f" (default: {default})"
            if field.metadata.get("json"):
                kwargs["type"] = json_object
                kwargs["metavar"] = "JSON"
                kwargs["help"] = field.metadata["help"] + f" (default: {field.metadata['shown']})"
            elif isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
                kwargs["help"] = field.metadata["help"] + shown
            else:
                kwargs["type"] = type(default)
                kwargs["metavar"] = type(default).__name__.upper()
                kwargs["help"] = field.metadata["help"] + shown
            if field.name in CHOICES:
                kwargs["choices"] = CHOICES[field.name]
                kwargs.pop("metavar", None)
            group.add_argument(flag, **kwargs)
    control = parser.add_argument_group("run control")
    control.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint"
    )
    control.add_argument(
        "--fork",
        metavar="RUN_DIR",
        help="start a new run from RUN_DIR's last checkpoint (its policy, optimiser state, "
        "step count and curriculum level) with the options given here changed, e.g. "
        "--learning-rate or --gae-lambda; fresh envs, its own --run-dir (default "
        "RUN_DIR-from<iteration>), metrics and W&B run. RUN_DIR is left as it is",
    )
    control.add_argument(
        "--overwrite", action="store_true", help="start over in an existing --run-dir"
    )
    control.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """The config with the explicitly given options, and those options as overrides."""
    config = TrainConfig()
    overrides: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest in ("resume", "fork", "overwrite", "no_progress"):
            continue
        if "." in dest:
            section, name = dest.split(".")
            setattr(getattr(config, section), name, value)
            overrides.setdefault(section, {})[name] = value
        else:
            setattr(config, dest, value)
            overrides[dest] = value
    return config, overrides


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit status 2 for bad input (one line, no traceback), 1 for a failed run."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["analyze"]:
        from agents.analyze import main as analyze_main

        return analyze_main(argv[1:])
    if argv[:1] == ["evaluate"]:
        from agents.evaluate import main as evaluate_main

        return evaluate_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    config, overrides = config_from_args(args)
    resume = getattr(args, "resume", None)
    if resume:
        config.run_dir = resume
    from agents.trainer import TrainingError, train
    from agents.vec import EnvError

    def one_line(message: Warning | str, *_: Any, **__: Any) -> str:
        return f"{parser.prog}: warning: {message}\n"

    shown_as = warnings.formatwarning
    warnings.formatwarning = one_line  # a warning is one line on the terminal, no source
    try:
        summary = train(
            config,
            resume=bool(resume),
            overwrite=getattr(args, "overwrite", False),
            overrides=overrides,
            progress=not getattr(args, "no_progress", False),
            fork=getattr(args, "fork", None),
        )
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except (TrainingError, EnvError) as error:
        parser.exit(1, f"{parser.prog}: training stopped: {error}\n")
    finally:
        warnings.formatwarning = shown_as
    if "interrupted" in summary:
        return 130
    if summary.get("rank", 0) == 0:  # under torchrun, rank 0 alone prints the summary
        print_summary(summary)
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    """The final table on the terminal."""
    ev = summary["eval"]
    rows = [
        ("env", env_label(summary["env_id"], summary.get("env_kwargs"))),
        (
            "algo / memory",
            f"{summary['algo']} / {summary['memory']}"
            + (" (separate critic)" if summary.get("critic") == "separate" else ""),
        ),
        ("env steps", f"{summary['total_env_steps']:,}"),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("env steps / s", f"{summary['env_steps_per_second']:,.0f}"),
        (
            "eval env",
            env_label(
                summary.get("eval_env_id", summary["env_id"]), summary.get("eval_env_kwargs")
            ),
        ),
        ("eval episodes", str(ev["episodes"])),
        ("eval mean return", "-" if ev["mean_return"] is None else f"{ev['mean_return']:.3f}"),
        ("eval success rate", "-" if ev["success_rate"] is None else f"{ev['success_rate']:.3f}"),
    ]
    best = summary.get("best")
    if best is not None:  # --eval-every: the kept policy, evaluated on the same episodes
        best_ev = best["eval"]
        rows += [
            ("best policy", f"step {best['global_step']:,} ({best['path']})"),
            ("best mean return", f"{best_ev['mean_return']:.3f}"),
            (
                "best success rate",
                "-" if best_ev["success_rate"] is None else f"{best_ev['success_rate']:.3f}",
            ),
        ]
    rows.append(("run directory", summary["run_dir"]))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
