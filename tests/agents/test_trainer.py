"""What a resumed or forked run takes from the checkpoint: the optimiser's moments, the RNG
state, and fresh envs seeded apart from the episodes the run has played."""

import json
from pathlib import Path

import pytest
import torch
from tiny_run import QUIET, TINY_CORRIDOR

import train_rl
from agents import trainer
from agents.checkpoint import load_checkpoint, save_checkpoint

#: 8 envs x 16 steps: 128 steps an iteration
RUN = [*TINY_CORRIDOR, *QUIET, "--eval-episodes", "0", "--checkpoint-every", "1"]
#: optimiser steps an iteration: PPO's 4 epochs of 8 minibatches (one env each)
UPDATES = 4 * 8


@pytest.fixture
def collectors(monkeypatch) -> list[dict]:
    """Each `RolloutCollector` the trainer makes: its env seed and the torch RNG state then."""
    made: list[dict] = []

    class Recording(trainer.RolloutCollector):
        def __init__(self, *args, **kwargs):
            made.append({"seed": kwargs["seed"], "rng": torch.get_rng_state()})
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trainer, "RolloutCollector", Recording)
    return made


def adam_steps(run_dir: Path) -> set[int]:
    """The step counts of the Adam moments in `run_dir`'s checkpoint (one per parameter)."""
    state = load_checkpoint(run_dir)["optimizer"]["state"]
    return {int(s["step"]) for s in state.values()}


def test_resume_restores_optimizer_and_rng_and_reseeds_the_envs(tmp_path, collectors):
    run_dir = tmp_path / "run"
    assert train_rl.main([*RUN, "--total-steps", "256", "--run-dir", str(run_dir)]) == 0
    saved = load_checkpoint(run_dir)
    (before,) = adam_steps(run_dir)
    assert before == 2 * UPDATES

    assert train_rl.main(["--resume", str(run_dir), "--total-steps", "384"]) == 0
    assert adam_steps(run_dir) == {before + UPDATES}  # the moments went on, not restarted
    first, resumed = collectors
    # the resumed run draws its actions from where the interrupted one stopped ...
    assert torch.equal(resumed["rng"], saved["rng"]["torch"])
    assert not torch.equal(resumed["rng"], first["rng"])
    # ... and its fresh envs do not replay the episodes the run started with
    assert resumed["seed"] != first["seed"]


def test_fork_keeps_the_optimizer_moments_and_reseeds(tmp_path, collectors):
    source = tmp_path / "source"
    assert train_rl.main([*RUN, "--total-steps", "256", "--run-dir", str(source)]) == 0
    (before,) = adam_steps(source)
    fork = tmp_path / "fork"
    args = ["--fork", str(source), "--total-steps", "384", "--ent-coef", "0.02"]
    assert train_rl.main([*args, "--run-dir", str(fork)]) == 0
    assert adam_steps(fork) == {before + UPDATES}
    assert collectors[1]["seed"] != collectors[0]["seed"]


def metric_rows(run_dir: Path, key: str) -> list:
    return [json.loads(line)[key] for line in (run_dir / "metrics.jsonl").open()]


def test_learning_rate_falls_linearly_from_the_first_iteration(tmp_path):
    """4 iterations: the rate of iteration i (from 1) is ``lr * (1 - (i - 1) / 4)``."""
    run_dir = tmp_path / "run"
    args = [*RUN, "--total-steps", "512", "--learning-rate", "1e-3", "--run-dir", str(run_dir)]
    assert train_rl.main(args) == 0
    assert metric_rows(run_dir, "charts/learning_rate") == pytest.approx(
        [1e-3, 7.5e-4, 5e-4, 2.5e-4]
    )


def test_checkpoints_every_n_iterations_and_at_the_end(tmp_path, monkeypatch):
    saved = []

    def recording(run_dir, payload, *args):
        if "iteration" in payload and not args:  # the run's checkpoint, not the kept policy
            saved.append(payload["iteration"])
        return save_checkpoint(run_dir, payload, *args)

    monkeypatch.setattr(trainer, "save_checkpoint", recording)
    run = [*RUN, "--checkpoint-every", "2", "--total-steps", "640"]  # 5 iterations
    assert train_rl.main([*run, "--run-dir", str(tmp_path / "run")]) == 0
    assert saved == [2, 4, 5]


def test_a_good_iteration_resets_the_count_of_skipped_ones(tmp_path, monkeypatch):
    """Every other iteration skips all its updates: never MAX_SKIPPED_IN_A_ROW in a row, so
    the run finishes, however many are skipped in all."""
    real, calls = trainer.UPDATES["ppo"], []

    def every_other_skipped(*args):
        metrics = real(*args)
        calls.append(None)
        if len(calls) % 2:
            metrics["losses/skipped_updates"] = metrics["losses/updates"]
        return metrics

    monkeypatch.setitem(trainer.UPDATES, "ppo", every_other_skipped)
    iterations = 2 * trainer.MAX_SKIPPED_IN_A_ROW + 1
    run_dir = tmp_path / "run"
    run = [*RUN, "--total-steps", str(128 * iterations), "--run-dir", str(run_dir)]
    assert train_rl.main(run) == 0
    skipped = metric_rows(run_dir, "losses/skipped_updates")
    assert len(skipped) == iterations and sum(s > 0 for s in skipped) > trainer.MAX_SKIPPED_IN_A_ROW


def test_threads_hold_for_the_run_and_are_given_back(tmp_path, monkeypatch):
    """``--threads 1``: the update runs on one thread, the setting is saved with the run (a
    resume keeps it), and the process gets its own setting back at the end."""
    real, seen = trainer.UPDATES["ppo"], []

    def recording(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setitem(trainer.UPDATES, "ppo", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_dir = tmp_path / "run"
        args = [*RUN, "--total-steps", "128", "--threads", "1", "--run-dir", str(run_dir)]
        assert train_rl.main(args) == 0
        assert torch.get_num_threads() == 2
        assert train_rl.main(["--resume", str(run_dir), "--total-steps", "256"]) == 0
        assert seen == [1, 1] and torch.get_num_threads() == 2
        assert json.loads((run_dir / "config.json").read_text())["threads"] == 1
    finally:
        torch.set_num_threads(before)
