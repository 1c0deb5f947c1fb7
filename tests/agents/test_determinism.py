"""The same seed on CPU gives the same run, bit for bit.

Two runs of the same configuration and ``--seed`` on CPU, in one process or in two, with the
same number of torch threads, write the same ``summary.json`` (up to the timing fields
``wall_seconds``, ``env_steps_per_second`` and ``run_dir``), the same ``metrics.jsonl`` (up to
``charts/steps_per_second``) and the same parameters in ``checkpoint.pt``. This holds for the
batched Lethe twins and for Gymnasium ids, in the sync and the async vector env alike (each
env is seeded from ``--seed``; the async env returns results in env order).

What may differ, and why:

- **Another number of CPU threads** (``OMP_NUM_THREADS``, ``torch.set_num_threads``) or
  another CPU / torch / BLAS build: float reductions are summed in another order, so the last
  bits differ, and a sampled action eventually flips; the runs then diverge (statistically the
  same, not bit-identical).
- **GPU (``--device cuda``)**: not bit-reproducible, not even twice on the same card. Lethe
  does not call ``torch.use_deterministic_algorithms``; several CUDA kernels it uses
  accumulate with atomic adds in an unspecified order (the backward passes of indexing /
  ``gather`` and of the attention over slots, ``index_add`` / ``scatter_add``, and the cuDNN
  GRU / LSTM kernels), and matrix products may use TF32 or split-K reductions chosen per card.
  Results also differ from CPU runs, and between GPU models, drivers and CUDA versions. The
  environments (the batched twins on the GPU included) and the random streams are seeded the
  same way, so GPU runs are reproducible in distribution, which is what seeds across runs
  measure. For bitwise repeatability on a GPU, run with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
  and ``torch.use_deterministic_algorithms(True)``: slower, and it raises for any op that has
  no deterministic CUDA version.
- **A resumed run** is not bit-identical to an uninterrupted one: on resume the environments
  are started fresh, reseeded from the iteration (so they do not replay the first episodes),
  and the memory state starts empty. The number of steps and the logged iterations are the
  same; the numbers are statistically, not bitwise, equal.
- **Multi-process (torchrun) runs**: each rank has its own envs and random stream, so a run
  with another number of processes is another run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_run import QUIET, TINY_MODEL

import train_rl
from agents.checkpoint import load_checkpoint

TIMING_SUMMARY_KEYS = ("wall_seconds", "env_steps_per_second", "run_dir")
TIMING_METRIC_KEYS = ("charts/steps_per_second",)
COMMON = [
    "--rollout-steps",
    "16",
    *TINY_MODEL,
    "--checkpoint-every",
    "2",
    "--eval-episodes",
    "4",
    *QUIET,
    "--device",
    "cpu",
    "--seed",
    "7",
]


def run(run_dir: Path, args: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]], dict]:
    """Train in-process; (summary minus timing, metrics minus timing, policy state dict)."""
    assert train_rl.main([*COMMON, *args, "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in TIMING_SUMMARY_KEYS:
        summary.pop(key)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        for key in TIMING_METRIC_KEYS:
            record.pop(key)
    return summary, records, load_checkpoint(run_dir)["policy"]


@pytest.mark.parametrize(
    "args",
    [
        # a batched twin and the flagship memory
        ["--env", "Lethe/Corridor-S-v0", "--num-envs", "8", "--total-steps", "512"],
        # a Gymnasium id: the async vector env on > 1 core (two envs)
        [
            "--env",
            "CartPole-v1",
            "--num-envs",
            "2",
            "--num-minibatches",
            "2",
            "--memory",
            "gru",
            "--total-steps",
            "128",
        ],
    ],
    ids=["lethe-twin-expire-span", "gymnasium-gru"],
)
def test_same_seed_same_run_on_cpu(args: list[str], tmp_path: Path) -> None:
    summary_a, metrics_a, policy_a = run(tmp_path / "a", args)
    summary_b, metrics_b, policy_b = run(tmp_path / "b", args)
    assert summary_a["device"] == "cpu"
    assert summary_a["total_env_steps"] == int(args[args.index("--total-steps") + 1])
    assert summary_a == summary_b
    assert len(metrics_a) == summary_a["iterations"]
    assert metrics_a == metrics_b
    assert policy_a.keys() == policy_b.keys()
    for name in policy_a:
        assert torch.equal(policy_a[name], policy_b[name]), name


def test_another_seed_gives_another_run(tmp_path: Path) -> None:
    """The comparison above is not vacuous: the seed does reach the numbers."""
    args = ["--env", "Lethe/Corridor-S-v0", "--num-envs", "8", "--total-steps", "256"]
    _, metrics_a, _ = run(tmp_path / "a", args)
    _, metrics_b, _ = run(tmp_path / "b", [*args, "--seed", "8"])
    assert metrics_a != metrics_b
