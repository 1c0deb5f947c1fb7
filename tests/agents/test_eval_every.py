"""``--eval-every``: evaluations during training, and the best policy kept in ``best.pt``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_run import QUIET, TINY_CORRIDOR

import train_rl
from agents import analyze
from agents.checkpoint import BEST_NAME, load_checkpoint, save_checkpoint
from agents.evaluate import evaluate, load_policy
from agents.trainer import PERIODIC_EVAL_SEED

SEED = 7
COMMON = [
    *TINY_CORRIDOR,
    "--eval-episodes",
    "6",
    "--eval-deterministic",
    *QUIET,
    "--device",
    "cpu",
    "--seed",
    str(SEED),
]
EVAL_KEYS = ("eval/mean_return", "eval/mean_length", "eval/success_rate", "eval/best_score")


def run(run_dir: Path, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    assert train_rl.main([*COMMON, *args, "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return summary, [json.loads(line) for line in lines]


def test_evaluations_leave_training_as_it_was(tmp_path: Path) -> None:
    """Evaluating every iteration draws its actions from a forked RNG: the training run (its
    metrics, parameters and final evaluation) is the one a run without them makes."""
    plain, plain_metrics = run(tmp_path / "plain", "--total-steps", "640")
    evaluated, evaluated_metrics = run(
        tmp_path / "eval", "--total-steps", "640", "--eval-every", "1"
    )
    assert "best" not in plain and not (tmp_path / "plain" / BEST_NAME).exists()
    for record in evaluated_metrics:
        assert all(key in record for key in EVAL_KEYS)
        for key in (*EVAL_KEYS, "charts/steps_per_second"):
            record.pop(key)
    for record in plain_metrics:
        assert not any(key.startswith("eval/") for key in record)
        record.pop("charts/steps_per_second")
    assert evaluated_metrics == plain_metrics
    assert evaluated["eval"] == plain["eval"]
    plain_policy = load_checkpoint(tmp_path / "plain")["policy"]
    evaluated_policy = load_checkpoint(tmp_path / "eval")["policy"]
    for name, value in plain_policy.items():
        assert torch.equal(value, evaluated_policy[name]), name


def test_best_policy_is_the_best_scoring_one_and_is_judged_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary, metrics = run(run_dir, "--total-steps", "1024", "--eval-every", "2")
    evaluated = [record for record in metrics if "eval/success_rate" in record]
    assert [record["iteration"] for record in evaluated] == [2, 4, 6, 8]
    scores = [record["eval/success_rate"] for record in evaluated]
    best_index = scores.index(max(scores))  # the first of equal scores is kept
    running = [max(scores[: i + 1]) for i in range(len(scores))]
    assert [record["eval/best_score"] for record in evaluated] == running

    best = load_checkpoint(run_dir, BEST_NAME)
    assert best["iteration"] == evaluated[best_index]["iteration"]
    assert best["global_step"] == evaluated[best_index]["global_step"]
    assert best["score"] == max(scores)
    assert summary["best"]["iteration"] == best["iteration"]
    assert summary["best"]["eval_when_chosen"]["success_rate"] == max(scores)
    assert summary["best"]["eval"]["episodes"] == 6
    # best.pt holds the policy as it was then: with greedy actions, its evaluation on the
    # periodic episodes gives the score it was chosen for.
    policy, *_ = load_policy(run_dir, "cpu", None, "best")
    again = evaluate(
        policy, "Lethe/Corridor-S-v0", 6, torch.device("cpu"), SEED + PERIODIC_EVAL_SEED, True
    )
    assert again == best["eval"]
    # So does `train_rl.py evaluate` on those episodes (greedy: the run's --eval-deterministic).
    out = tmp_path / "best_eval.json"
    episodes = ["--episodes", "6", "--seed", str(SEED + PERIODIC_EVAL_SEED), "--no-progress"]
    command = ["evaluate", str(run_dir), "--checkpoint", "best", *episodes, "--out", str(out)]
    assert train_rl.main(command) == 0
    played = json.loads(out.read_text())
    assert played["eval"] == best["eval"] and played["deterministic"] is True
    assert played["global_step"] == best["global_step"]


def test_resume_keeps_the_best_so_far(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, first = run(run_dir, "--total-steps", "512", "--eval-every", "1")
    best_before = load_checkpoint(run_dir, BEST_NAME)
    assert best_before["score"] == max(record["eval/success_rate"] for record in first)
    args = ["--resume", str(run_dir), "--total-steps", "1024", "--no-progress"]
    assert train_rl.main(args) == 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = metrics[len(first) :]
    assert [record["iteration"] for record in resumed] == [5, 6, 7, 8]
    scores = [record["eval/success_rate"] for record in metrics]
    assert resumed[-1]["eval/best_score"] == max(scores)
    assert all(record["eval/best_score"] >= best_before["score"] for record in resumed)


def test_resume_replaces_best_pt_only_with_a_higher_score(tmp_path: Path) -> None:
    """The best policy is the one on disk, also when a killed run found it after its last
    checkpoint: the resumed run compares with it."""
    run_dir = tmp_path / "run"
    _, first = run(run_dir, "--total-steps", "256", "--eval-every", "1")
    best = load_checkpoint(run_dir, BEST_NAME)
    save_checkpoint(run_dir, {**best, "score": 1.5, "iteration": 99}, BEST_NAME)  # unbeatable
    args = ["--resume", str(run_dir), "--total-steps", "512", "--no-progress"]
    assert train_rl.main(args) == 0
    kept = load_checkpoint(run_dir, BEST_NAME)
    assert (kept["score"], kept["iteration"]) == (1.5, 99)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["eval/best_score"] for record in metrics[len(first) :]] == [1.5, 1.5]
    assert json.loads((run_dir / "summary.json").read_text())["best"]["iteration"] == 99


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval-every", "-1"], "--eval-every must be >= 0, got -1"),
        (["--eval-every", "2", "--eval-episodes", "0"], "--eval-every 2 needs episodes to play"),
    ],
)
def test_bad_eval_every_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        train_rl.main([*COMMON, *args, "--run-dir", str(tmp_path / "run")])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_analyze_best_without_best_pt_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run(run_dir, "--total-steps", "128")
    assert analyze.main([str(run_dir), "--checkpoint", "best", "--episodes", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no best.pt in it" in lines[0] and "--eval-every" in lines[0]
    assert analyze.main([str(run_dir), "--episodes", "1"]) == 0
