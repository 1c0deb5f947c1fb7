"""Configuration of a training run: one dataclass per component, one help string per field.

The CLI (`train_rl.py`) is generated from these dataclasses, so a field added here is an
option there, documented by its ``help`` metadata. `validate` checks every value and raises
`ConfigError` (a `ValueError`) with a one-line message naming the bad value and what is allowed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

ALGOS = ("ppo", "a2c")
MEMORY_KINDS = ("expire-span", "window", "full", "gru", "lstm", "none")
DEVICES = ("auto", "cpu", "cuda")
CRITICS = ("shared", "separate")
WANDB_MODES = ("auto", "offline", "online", "disabled")


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message is one line, fit for a user."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


def _json(default: Any, help: str, shown: str) -> Any:
    """A field given on the command line as a JSON object (``shown``: its default in --help);
    each config gets its own copy of ``default``."""
    return field(
        default_factory=lambda: copy.deepcopy(default),
        metadata={"help": help, "json": True, "shown": shown},
    )


@dataclass
class MemoryConfig:
    """The recurrent core between the observation encoder and the actor / critic heads."""

    kind: str = _f("expire-span", f"memory core: {', '.join(MEMORY_KINDS)}", flag="memory")
    width: int = _f(64, "hidden width of the encoder output and the memory core")
    layers: int = _f(2, "attention layers (expire-span / window / full) or recurrent layers")
    heads: int = _f(4, "attention heads per layer (must divide --width)")
    capacity: int = _f(
        32, "expire-span: memory slots per layer and env, a hard budget on memory and compute"
    )
    span_limit: int = _f(
        64,
        "expire-span: maximum span L in steps; must exceed the longest gap the task needs "
        "remembered (e.g. 1100 for Lethe/Corridor-L1000-v0)",
    )
    ramp: int = _f(4, "expire-span: length R of the soft ramp of the mask, in steps")
    alpha: float = _f(
        0.0,
        "expire-span: weight of the auxiliary loss alpha * mean span (steps) per layer; it "
        "shortens the spans of memories that do not pay (0: off; e.g. 1e-5 with a small "
        "--capacity on long tasks, where evicted memories' spans otherwise drift up)",
    )
    span_init: float = _f(
        0.125,
        "expire-span: initial spans as a fraction of --span-limit; short initial spans put "
        "memories in the ramp, where spans learn",
    )
    span_pre_div: float = _f(
        1.0,
        "expire-span: the span predictor reads norm(h) / this; larger values slow and steady "
        "span learning (a saturated sigmoid gives a span no gradient to come back with)",
    )
    span_use_coef: float = _f(
        0.0,
        "expire-span: weight of the use loss, which pulls the span of every memory the "
        "attention reads (above its uniform share) at age a up to --span-use-margin x a, so "
        "that a kept cue's span does not drift below the step that needs it (0: off, as in "
        "the paper; e.g. 1e-2 on the long corridors)",
    )
    span_use_margin: float = _f(
        1.25, "expire-span: a memory read at age a is kept at least this many times a"
    )
    previous_action_reward: bool = _f(
        False,
        "feed the previous action and reward to the policy with each observation, so that the "
        "memory holds what the agent did and got (needed where reward is the only sign of an "
        "outcome, e.g. which last-room portal of Lethe/Portal-v0 completed a trial)",
    )
    window: int = _f(32, "window: steps each layer attends to")
    max_memory: int = _f(1024, "full: most memories kept (the whole episode up to this)")
    critic: str = _f(
        "shared",
        "shared: the value head reads the policy's encoder and memory; separate: the value "
        "head has its own encoder and memory of the same kind and options (twice the memory "
        "compute; as sb3-contrib's RecurrentPPO, whose critic has its own LSTM), so the value "
        "loss and the policy loss never move each other's features",
    )


@dataclass
class AlgoConfig:
    """The update rule and its optimiser; A2C and PPO share everything else."""

    algo: str = _f("ppo", f"update rule: {', '.join(ALGOS)}", flag="algo")
    rollout_steps: int = _f(64, "steps per env per rollout (the chunk the memory is trained on)")
    learning_rate: float = _f(5e-4, "Adam learning rate")
    anneal_lr: bool = _f(True, "decay the learning rate linearly to 0 over the run")
    gamma: float = _f(0.99, "discount factor")
    gae_lambda: float = _f(0.95, "GAE lambda")
    update_epochs: int = _f(4, "PPO: epochs over each rollout (A2C: always 1)")
    num_minibatches: int = _f(
        8, "PPO: minibatches per epoch, cut by env (at most one per env; A2C: always 1)"
    )
    clip_coef: float = _f(0.2, "PPO: clipping of the probability ratio")
    clip_value_loss: bool = _f(True, "PPO: clip the value loss as in the PPO paper's code")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    vf_coef: float = _f(0.5, "value loss coefficient")
    max_grad_norm: float = _f(0.5, "gradient clipping norm")
    normalize_advantages: bool = _f(True, "normalise advantages per minibatch")
    target_kl: float = _f(0.0, "PPO: stop the epochs of an update once KL exceeds this (0: off)")


@dataclass
class TrainConfig:
    """A whole run: the environment, the run's length and where its results go."""

    env: str = _f(
        "Lethe/Corridor-Curriculum-v0",
        "Gymnasium id (or module:id) of the environment; the default is Lethe/Corridor-v0 "
        "taught through its length curriculum (evaluated on Lethe/Corridor-v0)",
    )
    env_kwargs: dict[str, Any] = _json(
        {},
        "keyword arguments for the env's constructor, a JSON object, e.g. "
        "'{\"slack_steps\": 100}' (a Lethe corridor's episodes end at most 100 steps after "
        "their shortest walk) or '{\"size\": 11}' for a MiniGrid id; they go to --eval-env "
        "too unless --eval-env-kwargs is given",
        "{}",
    )
    num_envs: int = _f(
        32, "environments stepped together (batched on the device for Lethe ids; per process)"
    )
    total_steps: int = _f(
        400_000, "environment steps to train for, over all envs (of all processes under torchrun)"
    )
    device: str = _f("auto", f"torch device: {', '.join(DEVICES)}")
    threads: int = _f(
        0,
        "CPU threads of torch's operators (0: torch's default, one per core); 1 is far faster "
        "when other jobs share the cores (see the README)",
    )
    seed: int = _f(1, "random seed for envs, parameters and sampling")
    run_dir: str = _f(
        "", "where the run writes its files (default: runs/<env>-<algo>-<memory>-s<seed>)"
    )
    wandb: str = _f(
        "auto", "W&B: auto (online when logged in, else offline), offline, online, disabled"
    )
    wandb_project: str = _f("lethe", "W&B project name")
    checkpoint_every: int = _f(10, "iterations between checkpoints (and one at the end)")
    heatmap_every: int = _f(
        50, "iterations between retention heatmaps (and at the end; 0: end only)"
    )
    eval_episodes: int = _f(
        100, "episodes of the final evaluation and of each --eval-every evaluation (0: none)"
    )
    eval_every: int = _f(
        0,
        "iterations between evaluations during training (--eval-episodes on --eval-env, "
        "logged as eval/*; the policy that scores best, by success rate or else return, is "
        "kept in RUN_DIR/best.pt and evaluated again at the end; 0: the final one only)",
    )
    eval_env: str = _f(
        "",
        "Gymnasium id of the final evaluation and the retention heatmaps (default: --env, or "
        "for a curriculum id the task it teaches: Lethe/Corridor-L1000-v0 for "
        "Lethe/Corridor-L1000-Curriculum-v0)",
    )
    eval_env_kwargs: dict[str, Any] | None = _json(
        None,
        "keyword arguments for --eval-env's constructor, a JSON object ('{}': none)",
        "--env-kwargs",
    )
    eval_deterministic: bool = _f(False, "evaluate with the most likely action instead of sampling")
    dist_timeout: float = _f(
        300.0,
        "under torchrun: seconds a process waits for the others before the run stops with an "
        "error (also at the end, while rank 0 evaluates)",
    )
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)

    def to_dict(self) -> dict[str, Any]:
        """The whole configuration as plain data (saved in the run directory and logged)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise `TypeError` (old and new configs never mix)."""
        data = dict(data)
        memory = MemoryConfig(**data.pop("memory", {}))
        algo = AlgoConfig(**data.pop("algo", {}))
        return cls(**data, memory=memory, algo=algo)


def flag_of(section: str, name: str | None = None) -> str:
    """The command-line flag of a config field: ``flag_of("memory", "span_limit")`` is
    ``--span-limit``, ``flag_of("memory", "kind")`` ``--memory``, ``flag_of("num_envs")``
    ``--num-envs`` (a field of `TrainConfig` itself)."""
    if name is None:
        section, name = "", section
    cls = {"": TrainConfig, "memory": MemoryConfig, "algo": AlgoConfig}[section]
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return "--" + field.metadata.get("flag", name).replace("_", "-")


def json_object(text: str) -> dict[str, Any]:
    """An option's JSON object of keyword arguments, for argparse's ``type`` (which answers a
    bad one in one line: `argparse.ArgumentTypeError`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a JSON object; allowed: keyword arguments such as "
            "'{\"slack_steps\": 100}'"
        )
    return value


def seed_value(text: str) -> int:
    """A ``--seed`` of a subcommand, for argparse's ``type``: an int in [0, `MAX_SEED`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 2**62)")
    return value


def env_label(env_id: str, env_kwargs: dict[str, Any] | None) -> str:
    """An env id with its keyword arguments, as tables and reports show it:
    ``Lethe/Corridor-S-v0 {"slack_steps": 3}`` (the id alone without any)."""
    return f"{env_id} {json.dumps(env_kwargs)}" if env_kwargs else env_id


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_kwargs(flag: str, value: Any, optional: bool = False) -> None:
    """Keyword arguments for an env: a dict with string keys that JSON can hold (the run's
    config is saved as JSON)."""
    if value is None and optional:
        return
    try:
        json.dumps(value)
        fits = isinstance(value, dict) and all(isinstance(key, str) for key in value)
    except (TypeError, ValueError):
        fits = False
    _require(
        fits,
        f"{flag} must be a JSON object of keyword arguments (e.g. '{{\"slack_steps\": 100}}'), "
        f"got {value!r}",
    )


#: what a field of each annotated type accepts (an int where a float goes; no bool for numbers)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
}
#: seeds reach numpy's and torch's generators with per-rank, per-iteration and evaluation
#: offsets added (`agents.trainer`): 2**62 leaves room for those below torch's 2**64 - 1
MAX_SEED = 2**62


def check_types(config: Any) -> None:
    """Raise `ConfigError` for a config that is not a `TrainConfig`, or a field of another
    type than its annotation (as the Python API can set it: ``TrainConfig(num_envs="4")``)."""
    _require(
        isinstance(config, TrainConfig),
        f"the config must be an agents.TrainConfig, got {type(config).__name__} {config!r:.80}",
    )
    for section, cls in (("memory", MemoryConfig), ("algo", AlgoConfig)):
        obj = getattr(config, section)
        _require(
            isinstance(obj, cls),
            f"TrainConfig.{section} must be an agents.{cls.__name__}, got "
            f"{type(obj).__name__} {obj!r:.80}",
        )
    for section, obj, cls in (
        ("", config, TrainConfig),
        ("memory", config.memory, MemoryConfig),
        ("algo", config.algo, AlgoConfig),
    ):
        for f in dataclasses.fields(cls):
            allowed = _FIELD_TYPES.get(str(f.type))
            if allowed is None:  # the sections and the JSON kwargs: checked on their own
                continue
            value = getattr(obj, f.name)
            _require(
                isinstance(value, allowed) and (f.type == "bool" or not isinstance(value, bool)),
                f"{flag_of(section, f.name)} ({cls.__name__}.{f.name}) must be of type "
                f"{f.type}, got {type(value).__name__} {value!r:.80}",
            )


def validate(config: TrainConfig) -> None:
    """Raise `ConfigError` naming the first bad value and what is allowed."""
    check_types(config)
    mem, algo = config.memory, config.algo
    _check_kwargs("--env-kwargs", config.env_kwargs)
    _check_kwargs("--eval-env-kwargs", config.eval_env_kwargs, optional=True)
    _require(algo.algo in ALGOS, f"unknown algo {algo.algo!r}; allowed: {', '.join(ALGOS)}")
    _require(
        mem.kind in MEMORY_KINDS, f"unknown memory {mem.kind!r}; allowed: {', '.join(MEMORY_KINDS)}"
    )
    _require(mem.critic in CRITICS, f"unknown critic {mem.critic!r}; allowed: {', '.join(CRITICS)}")
    _require(
        config.device in DEVICES, f"unknown device {config.device!r}; allowed: {', '.join(DEVICES)}"
    )
    _require(
        config.wandb in WANDB_MODES,
        f"unknown wandb mode {config.wandb!r}; allowed: {', '.join(WANDB_MODES)}",
    )
    for name, value in (
        ("num-envs", config.num_envs),
        ("total-steps", config.total_steps),
        ("rollout-steps", algo.rollout_steps),
        ("width", mem.width),
        ("layers", mem.layers),
        ("heads", mem.heads),
        ("capacity", mem.capacity),
        ("span-limit", mem.span_limit),
        ("ramp", mem.ramp),
        ("window", mem.window),
        ("max-memory", mem.max_memory),
        ("update-epochs", algo.update_epochs),
        ("num-minibatches", algo.num_minibatches),
        ("checkpoint-every", config.checkpoint_every),
    ):
        _require(value >= 1, f"--{name} must be a positive integer, got {value}")
    for name, value in (
        ("heatmap-every", config.heatmap_every),
        ("eval-episodes", config.eval_episodes),
        ("eval-every", config.eval_every),
    ):
        _require(value >= 0, f"--{name} must be >= 0, got {value}")
    _require(
        config.eval_every == 0 or config.eval_episodes > 0,
        f"--eval-every {config.eval_every} needs episodes to play; allowed: --eval-episodes "
        "> 0, or --eval-every 0",
    )
    _require(
        mem.ramp <= mem.span_limit,
        f"--ramp {mem.ramp} is longer than --span-limit {mem.span_limit}; "
        "allowed: ramp <= span limit",
    )
    _require(
        mem.width % mem.heads == 0,
        f"--heads {mem.heads} does not divide --width {mem.width}; allowed: a divisor of the width",
    )
    _require(0 < mem.span_init < 1, f"--span-init must be in (0, 1), got {mem.span_init}")
    for flag, value, comparison, bound in (
        ("--alpha", mem.alpha, ">=", 0),
        ("--span-pre-div", mem.span_pre_div, ">", 0),
        ("--span-use-coef", mem.span_use_coef, ">=", 0),
        ("--span-use-margin", mem.span_use_margin, ">=", 1),
    ):
        _require(
            math.isfinite(value) and (value > bound if comparison == ">" else value >= bound),
            f"{flag} must be a finite number {comparison} {bound}, got {value}",
        )
    _require(0 < algo.gamma <= 1, f"--gamma must be in (0, 1], got {algo.gamma}")
    _require(0 <= algo.gae_lambda <= 1, f"--gae-lambda must be in [0, 1], got {algo.gae_lambda}")
    _require(
        math.isfinite(algo.learning_rate) and algo.learning_rate > 0,
        f"--learning-rate must be a finite number > 0, got {algo.learning_rate}",
    )
    _require(algo.clip_coef > 0, f"--clip-coef must be > 0, got {algo.clip_coef}")
    _require(
        math.isfinite(config.dist_timeout) and config.dist_timeout > 0,
        f"--dist-timeout must be a finite number > 0, got {config.dist_timeout}",
    )
    _require(algo.max_grad_norm > 0, f"--max-grad-norm must be > 0, got {algo.max_grad_norm}")
    _require(config.threads >= 0, f"--threads must be an integer >= 0, got {config.threads}")
    _require(0 <= config.seed < MAX_SEED, f"--seed must be in [0, 2**62), got {config.seed}")
    for flag, value in (
        ("--ent-coef", algo.ent_coef),
        ("--vf-coef", algo.vf_coef),
        ("--target-kl", algo.target_kl),
    ):
        _require(
            math.isfinite(value) and value >= 0, f"{flag} must be a finite number >= 0, got {value}"
        )


def iteration_steps(config: TrainConfig, world_size: int = 1) -> int:
    """Env steps of one iteration: a rollout of every env of every process."""
    return config.num_envs * config.algo.rollout_steps * world_size


def iterations(config: TrainConfig, world_size: int = 1) -> int:
    """The iterations a run of `config` trains in all: whole ones, up to ``--total-steps``."""
    return max(1, math.ceil(config.total_steps / iteration_steps(config, world_size)))


def advisories(config: TrainConfig, world_size: int = 1) -> list[str]:
    """Settings that run but defeat their purpose: one line each (the trainer warns with them).

    A ``--total-steps`` that whole iterations overshoot by more than a tenth is one, an
    ``--eval-every`` that the run's iterations never reach another.

    Expire-Span spans learn only while a memory sits in its ramp (age between its span and
    span + ramp). A memory is visible for at most ``capacity`` steps before eviction, so with
    ``capacity`` at most the initial span no memory ever reaches the ramp: spans get no
    gradient and stay where they start (a fixed window, not a learned one).
    """
    mem, out = config.memory, []
    per_iteration = iteration_steps(config, world_size)
    whole = iterations(config, world_size) * per_iteration
    if whole > 1.1 * config.total_steps:  # rounding up to whole iterations adds over 10%
        processes = f" x {world_size} processes" if world_size > 1 else ""
        out.append(
            f"--total-steps {config.total_steps:,} rounds up to whole iterations of "
            f"{per_iteration:,} steps (--num-envs {config.num_envs} x --rollout-steps "
            f"{config.algo.rollout_steps}{processes}): the run trains {whole:,} steps"
        )
    if config.eval_every > iterations(config, world_size):
        out.append(
            f"--eval-every {config.eval_every} is more than the run's "
            f"{iterations(config, world_size):,} iterations: no evaluation during training and "
            "no best.pt; use a smaller --eval-every"
        )
    if mem.kind == "expire-span":
        initial = mem.span_init * mem.span_limit
        if mem.capacity <= initial:
            out.append(
                f"--capacity {mem.capacity} is at most the initial span of {initial:g} steps "
                f"(--span-init {mem.span_init} x --span-limit {mem.span_limit}): memories are "
                "evicted before they reach the ramp, where spans learn, so the spans will stay "
                f"as they start; use --capacity > {initial + mem.ramp:g} (initial span + "
                "--ramp) or a smaller --span-init"
            )
    return out
