"""Command-line pieces the agents tests share: a tiny model and run (seconds each), quietly;
and `train_tiny`, a run of one short iteration to play back (analyze, evaluate)."""

from pathlib import Path

#: one attention layer of width 16 with two heads
TINY_MODEL = ["--width", "16", "--heads", "2", "--layers", "1"]
#: the short corridor's batched twin, 8 envs x 16 steps per iteration, with the tiny model
TINY_CORRIDOR = [
    "--env",
    "Lethe/Corridor-S-v0",
    "--num-envs",
    "8",
    "--rollout-steps",
    "16",
    *TINY_MODEL,
]
#: no heatmaps, no W&B, no progress bar
QUIET = ["--heatmap-every", "0", "--wandb", "disabled", "--no-progress"]


def train_tiny(
    run_dir: Path,
    kind: str = "expire-span",
    env: str = "Lethe/Corridor-S-v0",
    env_kwargs: dict | None = None,
) -> Path:
    """A run trained for one short iteration (a few seconds), by default of
    Lethe/Corridor-S-v0."""
    from agents.config import AlgoConfig, MemoryConfig, TrainConfig
    from agents.trainer import train

    train(
        TrainConfig(
            env=env,
            env_kwargs=env_kwargs or {},
            num_envs=2,
            total_steps=32,
            run_dir=str(run_dir),
            wandb="disabled",
            eval_episodes=0,
            heatmap_every=0,
            memory=MemoryConfig(
                kind=kind, width=16, heads=2, capacity=8, span_init=0.0625, window=4
            ),
            algo=AlgoConfig(rollout_steps=16, num_minibatches=2, update_epochs=1),
        ),
        progress=False,
    )
    return run_dir
