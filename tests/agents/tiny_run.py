"""Command-line pieces the agents tests share: a tiny model and run (seconds each), quietly."""

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
