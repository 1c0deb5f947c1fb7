"""Faults a long run must survive or report clearly (issue 7).

- SIGKILL at any moment: ``--resume`` continues from the last checkpoint, the run ends with the
  requested total steps, and ``metrics.jsonl`` has each iteration exactly once.
- SIGINT / SIGTERM: a checkpoint is saved, exit status 130, and the run resumes to the end;
  Ctrl-C at a terminal (SIGINT to the whole process group) also reaches async env workers.
- Non-finite losses: updates are skipped and counted (``losses/skipped_updates``); after
  `MAX_SKIPPED_IN_A_ROW` iterations of only skipped updates the run stops (exit 1) with the
  last good checkpoint intact.
- A crashing environment (an exception in a worker, or a worker process that dies) ends the
  run with the env's error and a non-zero exit, never a hang.
- A truncated checkpoint is refused in one line; a stale temporary file from a kill during a
  save does not stop a resume.

Runs use the CLI in a subprocess where a signal or a crash is the point, in-process otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_run import QUIET, TINY_CORRIDOR, TINY_MODEL

import train_rl
from agents.checkpoint import CHECKPOINT_NAME, load_checkpoint
from agents.losses import apply_gradients
from agents.trainer import MAX_SKIPPED_IN_A_ROW

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_ITERATION = 8 * 16
ITERATIONS = 14
#: a tiny Lethe run: ~0.4 s per iteration on one CPU thread
TINY_LETHE = [
    *TINY_CORRIDOR,
    "--capacity",
    "8",
    "--span-init",
    "0.0625",  # 4 steps: below the capacity, so spans can learn (no advisory warning)
    "--num-minibatches",
    "4",
    "--eval-episodes",
    "4",
    *QUIET,
    "--seed",
    "3",
]
#: small Gymnasium (numpy) runs: two envs, so the async vector env is used on > 1 core
TINY_GYM = [
    "--num-envs",
    "2",
    "--num-minibatches",
    "2",
    "--rollout-steps",
    "16",
    *TINY_MODEL,
    "--memory",
    "gru",
    "--eval-episodes",
    "2",
    *QUIET,
]

FAULT_ENVS = '''
"""Envs that fail on purpose after `fail_after` steps of one instance."""
import os
import time

import gymnasium as gym
import numpy as np


class Faulty(gym.Env):
    """Box(4) observations, 2 actions, episodes of 10 steps, then the fault."""

    def __init__(self, mode="nan", fail_after=64):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.mode, self.fail_after, self.steps, self.t = mode, fail_after, 0, 0

    def _obs(self):
        return self.np_random.uniform(-1.0, 1.0, 4).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        if self.mode == "slow":
            time.sleep(0.005)
        reward = 0.1 * float(action)
        if self.steps > self.fail_after:
            if self.mode == "raise":
                raise RuntimeError(f"fault injected after {self.fail_after} steps")
            if self.mode == "exit":
                os._exit(3)
            reward = float("nan")
        return self._obs(), reward, self.t >= 10, False, {}


gym.register("FaultNaN-v0", entry_point=Faulty, kwargs={"mode": "nan", "fail_after": 64})
gym.register("FaultRaise-v0", entry_point=Faulty, kwargs={"mode": "raise", "fail_after": 40})
gym.register("FaultExit-v0", entry_point=Faulty, kwargs={"mode": "exit", "fail_after": 40})
gym.register("Slow-v0", entry_point=Faulty, kwargs={"mode": "slow", "fail_after": 10**9})
'''


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def fault_envs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the module ``lethe_fault_envs`` (use it as ``lethe_fault_envs:id``)."""
    directory = tmp_path_factory.mktemp("fault_envs")
    (directory / "lethe_fault_envs.py").write_text(textwrap.dedent(FAULT_ENVS))
    return directory


def child_env(extra_path: Path | None = None) -> dict[str, str]:
    """Environment of a CLI subprocess: one thread, the repo (and `extra_path`) importable."""
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))


class Cli:
    """``train_rl.py`` in a subprocess, its output in files (no pipe to fill up)."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], new_group: bool = False
    ) -> None:
        self.out_path, self.err_path = cwd / "cli.out", cwd / "cli.err"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "train_rl.py"), *args],
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=new_group,
            )

    def wait(self, timeout: float) -> tuple[int, str, str]:
        """Exit status, stdout, stderr; kills the process (and fails) past `timeout`."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(
                f"train_rl.py still running after {timeout} s:\n{self.err_path.read_text()}"
            )
        return code, self.out_path.read_text(), self.err_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def cli_processes() -> Iterator[list[Cli]]:
    """Every `Cli` appended here is killed at teardown, whatever the test's outcome."""
    started: list[Cli] = []
    yield started
    for cli in started:
        cli.kill()


def wait_for(condition: Callable[[], bool], cli: Cli, timeout: float = 120.0) -> None:
    """Poll `condition` every 20 ms; fail if the process ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if cli.process.poll() is not None:
            pytest.fail(
                f"train_rl.py ended early ({cli.process.returncode}):\n{cli.err_path.read_text()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting:\n{cli.err_path.read_text()}")
        time.sleep(0.02)


def logged_iterations(run_dir: Path) -> list[int]:
    """Iterations in ``metrics.jsonl``, in file order (a line cut short by a kill is skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line)["iteration"])
        except (json.JSONDecodeError, KeyError):
            continue
    return found


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def has_checkpoint_and(run_dir: Path, iterations: int) -> Callable[[], bool]:
    return lambda: (
        (run_dir / CHECKPOINT_NAME).exists() and len(logged_iterations(run_dir)) >= (iterations)
    )


def assert_finished(run_dir: Path, total_steps: int, iterations: int) -> None:
    """The summary has the requested steps; every iteration is logged exactly once, in order."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_env_steps"] == total_steps
    assert summary["iterations"] == iterations
    assert logged_iterations(run_dir) == list(range(1, iterations + 1))
    steps = [record["global_step"] for record in metrics(run_dir)]
    assert steps == [i * (total_steps // iterations) for i in range(1, iterations + 1)]


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`train_rl.main` in-process: (exit status, stdout, stderr)."""
    try:
        code = train_rl.main(args)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return int(code or 0), captured.out, captured.err


# ---------------------------------------------------------------------------- SIGKILL
def test_sigkill_at_any_moment_then_resume_finishes(
    tmp_path: Path, cli_processes: list[Cli], capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed twice (the second time a resumed run), the run still ends exactly as requested.

    Checkpoints every 3 iterations, so the kills usually land with iterations logged after the
    checkpoint: ``--resume`` must cut them from ``metrics.jsonl`` and redo them.
    """
    run_dir = tmp_path / "run"
    total = ITERATIONS * STEPS_PER_ITERATION
    first = [*TINY_LETHE, "--checkpoint-every", "3", "--total-steps", str(total)]
    for attempt, (args, logged) in enumerate(
        [([*first, "--run-dir", str(run_dir)], 4), (["--resume", str(run_dir)], 9)]
    ):
        cli = Cli(args, tmp_path, child_env())
        cli_processes.append(cli)
        wait_for(has_checkpoint_and(run_dir, logged), cli)
        os.kill(cli.process.pid, signal.SIGKILL)
        assert cli.process.wait(timeout=30) == -signal.SIGKILL
        checkpoint = load_checkpoint(run_dir)  # whole: written atomically
        assert checkpoint["iteration"] >= 1 + 3 * attempt
        assert checkpoint["global_step"] == checkpoint["iteration"] * STEPS_PER_ITERATION
        assert logged_iterations(run_dir)[: checkpoint["iteration"]] == list(
            range(1, checkpoint["iteration"] + 1)
        )

    code, _, err = run_main(["--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert_finished(run_dir, total, ITERATIONS)
    assert not (run_dir / "checkpoint.pt.tmp").exists()


# ---------------------------------------------------------------------------- SIGINT / SIGTERM
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_checkpoint_exits_130_and_resumes(
    sig: signal.Signals,
    tmp_path: Path,
    cli_processes: list[Cli],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    iterations = 10
    total = iterations * STEPS_PER_ITERATION
    args = [*TINY_LETHE, "--checkpoint-every", "50", "--total-steps", str(total)]
    cli = Cli([*args, "--run-dir", str(run_dir)], tmp_path, child_env())
    cli_processes.append(cli)
    # No periodic checkpoint before the end (every 50): the one found is the signal's.
    wait_for(lambda: len(logged_iterations(run_dir)) >= 3, cli)
    cli.process.send_signal(sig)
    code, out, err = cli.wait(timeout=60)
    assert code == 130, err
    assert "Traceback" not in err
    checkpoint = load_checkpoint(run_dir)
    step = checkpoint["global_step"]
    assert f"{sig.name}: checkpoint saved at step {step:,}" in out
    assert f"`python train_rl.py --resume {run_dir}`" in out  # how this run was started
    assert 3 <= checkpoint["iteration"] < iterations
    assert logged_iterations(run_dir) == list(range(1, checkpoint["iteration"] + 1))
    assert not (run_dir / "summary.json").exists()

    code, _, err = run_main(["--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert_finished(run_dir, total, iterations)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="async vector envs need > 1 core")
def test_ctrl_c_to_the_process_group_with_async_workers(
    fault_envs: Path, tmp_path: Path, cli_processes: list[Cli]
) -> None:
    """A terminal's Ctrl-C signals the workers too: they must leave the stop to the learner.

    The env sleeps 5 ms a step, so the signal mostly lands while the learner waits on its
    workers: a worker that died of it would end the run with an error instead of exit 130.
    """
    run_dir = tmp_path / "run"
    args = [
        *TINY_GYM,
        "--env",
        "lethe_fault_envs:Slow-v0",
        "--update-epochs",
        "1",
        "--num-minibatches",
        "1",
        "--total-steps",
        "1000000",
        "--run-dir",
        str(run_dir),
    ]
    cli = Cli(args, tmp_path, child_env(fault_envs), new_group=True)
    cli_processes.append(cli)
    wait_for(lambda: len(logged_iterations(run_dir)) >= 3, cli)
    os.killpg(cli.process.pid, signal.SIGINT)  # the group this test started, by its id
    code, out, err = cli.wait(timeout=60)
    assert code == 130, err
    assert "SIGINT: checkpoint saved at step" in out
    checkpoint = load_checkpoint(run_dir)
    assert logged_iterations(run_dir) == list(range(1, checkpoint["iteration"] + 1))


# ---------------------------------------------------------------------------- non-finite losses
def test_nan_rewards_skip_updates_then_stop_with_a_good_checkpoint(
    fault_envs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Rewards turn NaN after 64 steps per env: NaN advantages, NaN losses, skipped updates."""
    monkeypatch.syspath_prepend(str(fault_envs))
    run_dir = tmp_path / "run"
    args = [
        *TINY_GYM,
        "--env",
        "lethe_fault_envs:FaultNaN-v0",
        "--checkpoint-every",
        "1",
        "--total-steps",
        "3200",
        "--run-dir",
        str(run_dir),
    ]
    code, _, err = run_main(args, capsys)
    assert code == 1, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("train_rl.py: training stopped:"), err
    assert f"{MAX_SKIPPED_IN_A_ROW} iterations in a row had a non-finite loss" in last
    assert str(run_dir) in last

    records = metrics(run_dir)
    skipped = [record["losses/skipped_updates"] for record in records]
    updates = 2 * 4  # --num-minibatches 2, 4 epochs
    assert skipped[:4] == [0.0] * 4  # 64 good steps per env: the first 4 iterations are clean
    assert skipped[-MAX_SKIPPED_IN_A_ROW:] == [float(updates)] * MAX_SKIPPED_IN_A_ROW
    assert len(records) < 3200 // 32  # stopped early

    checkpoint = load_checkpoint(run_dir)  # the last good one, before the failing iteration
    assert checkpoint["iteration"] == records[-1]["iteration"] - 1
    for name, tensor in checkpoint["policy"].items():
        assert torch.isfinite(tensor).all(), name
    for state in checkpoint["optimizer"]["state"].values():
        for tensor in state.values():
            assert torch.isfinite(torch.as_tensor(tensor)).all()


def test_non_finite_gradient_leaves_parameters_and_optimizer_untouched() -> None:
    """A finite loss with an infinite gradient (sqrt at 0) is skipped like a NaN loss."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    taken, _ = apply_gradients(model, optimizer, model(torch.ones(1, 3)).sum() ** 2, 0.5)
    assert taken
    before = [p.detach().clone() for p in model.parameters()]
    moments = {k: v.clone() for k, v in optimizer.state[model.weight].items()}

    weight = model.weight
    loss = torch.sqrt(weight - weight.detach()).sum()  # value 0, gradient inf
    assert torch.isfinite(loss)
    taken, grad_norm = apply_gradients(model, optimizer, loss, 0.5)
    assert not taken and grad_norm != grad_norm  # nan
    taken, _ = apply_gradients(model, optimizer, torch.tensor(float("nan")), 0.5)
    assert not taken
    for got, want in zip(model.parameters(), before, strict=True):
        assert torch.equal(got, want)
    for key, value in optimizer.state[model.weight].items():
        assert torch.equal(value, moments[key]), key


# ---------------------------------------------------------------------------- crashing envs
@pytest.mark.parametrize(
    ("env_id", "needles"),
    [
        ("FaultRaise-v0", ["RuntimeError", "fault injected after 40 steps"]),
        ("FaultExit-v0", ["worker process died", "exit code 3"]),
    ],
    ids=["raises", "dies"],
)
def test_crashing_env_ends_the_run_with_its_error(
    env_id: str, needles: list[str], fault_envs: Path, tmp_path: Path, cli_processes: list[Cli]
) -> None:
    """An exception in an env (or the death of its worker) is reported, exit status 1, no hang."""
    async_used = (os.cpu_count() or 1) > 1
    if env_id == "FaultExit-v0" and not async_used:
        pytest.skip("a worker process exists only with the async vector env (> 1 core)")
    args = [
        *TINY_GYM,
        "--env",
        f"lethe_fault_envs:{env_id}",
        "--total-steps",
        "3200",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    cli = Cli(args, tmp_path, child_env(fault_envs))
    cli_processes.append(cli)
    code, _, err = cli.wait(timeout=120)
    assert code == 1, err
    # One line naming the env and the cause (the last line of stderr once train_rl.py catches
    # EnvError; a traceback ending in it before that).
    line = next(
        (
            line
            for line in reversed(err.splitlines())
            if "EnvError" in line or "training stopped" in line
        ),
        "",
    )
    assert f"lethe_fault_envs:{env_id}" in line, err
    for needle in needles:
        assert needle in line, err
    assert (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------------- checkpoint files
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-iteration run (in-process), to copy and damage."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    args = [*TINY_LETHE, "--checkpoint-every", "1", "--total-steps", str(2 * STEPS_PER_ITERATION)]
    assert train_rl.main([*args, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_truncated_checkpoint_is_refused_in_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    whole = (run_dir / CHECKPOINT_NAME).read_bytes()
    (run_dir / CHECKPOINT_NAME).write_bytes(whole[: len(whole) // 2])
    code, _, err = run_main(["--resume", str(run_dir), "--total-steps", "512"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("train_rl.py: error:"), err
    assert "corrupt or truncated" in lines[-1] and str(run_dir) in lines[-1]
    assert "Traceback" not in err


def test_stale_temporary_checkpoint_does_not_stop_a_resume(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill during a save leaves ``checkpoint.pt.tmp`` half written next to the good file."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    whole = (run_dir / CHECKPOINT_NAME).read_bytes()
    (run_dir / "checkpoint.pt.tmp").write_bytes(whole[: len(whole) // 3])
    code, _, err = run_main(
        ["--resume", str(run_dir), "--total-steps", str(3 * STEPS_PER_ITERATION)], capsys
    )
    assert code == 0, err
    assert_finished(run_dir, 3 * STEPS_PER_ITERATION, 3)
    assert not (run_dir / "checkpoint.pt.tmp").exists()
    assert load_checkpoint(run_dir)["iteration"] == 3
