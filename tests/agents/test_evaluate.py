"""`agents.evaluate.evaluate` on a scripted env whose every episode is known.

Each env of the vector env plays a first episode chosen by its reset seed, then (under
``NEXT_STEP`` autoreset) later episodes that would change every statistic if they were counted.
Success is what the env reports in ``info["success"]``, and is deliberately unrelated to the
sign of the return. The dynamics ignore the action, so any policy gives the same episodes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tiny_run import train_tiny

import agents.evaluate
import train_rl
from agents.config import MemoryConfig, TrainConfig
from agents.evaluate import CHECK_EVERY, FRESH_SEED_OFFSET, evaluate, forked_rng
from agents.policy import ActorCritic

ENV_ID = "LetheTest/Scripted-v0"
CPU = torch.device("cpu")

# An episode: (rewards of its steps, success reported at its end, truncated rather than terminated).
# First episodes, by reset seed: success disagrees with ``return > 0`` both ways.
FIRST = [
    ([0.0, 0.0, 1.0], False, False),  # return 1, length 3, failure
    ([0.0, 0.0], True, True),  # return 0, length 2, success (by truncation)
    ([2.0, -0.5, 0.0, 0.0], False, False),  # return 1.5, length 4, failure
]
# What a correct evaluation of FIRST gives.
FIRST_RETURN = (1.0 + 0.0 + 1.5) / 3
FIRST_LENGTH = (3 + 2 + 4) / 3
FIRST_SUCCESS = 1 / 3
# Every later episode: one step, reward 10, the opposite success of the env's first episode.
LATER_REWARD = 10.0


class ScriptedEnv(gym.Env):
    """Plays ``FIRST[seed % 3]``, then one-step episodes of reward 10 and flipped success.

    Observation: steps taken in the episode. ``report_success=False``: no ``success`` in info.
    ``first_length`` overrides the first episode's length (rewards of 1 per step, success).
    Class attributes record the seeds of seeded resets and the vector env's steps (it is a
    sync one, in this process)."""

    seeds: list[int] = []
    steps = 0  # vector env steps: calls of step, and resets without a seed (autoresets)

    def __init__(self, report_success: bool = True, first_length: int | None = None) -> None:
        self.report_success, self.first_length = report_success, first_length
        self.observation_space = spaces.Box(0, 10**6, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.script = FIRST[0]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # the vector env's reset: a first episode
            ScriptedEnv.seeds.append(seed)
            self.script = FIRST[seed % len(FIRST)]
            if self.first_length is not None:
                self.script = ([1.0] * self.first_length, True, False)
            self.rewards, self.success, self.truncate = self.script
        else:  # autoreset (a step of the vector env): a later episode
            ScriptedEnv.steps += 1
            self.rewards, self.success, self.truncate = [LATER_REWARD], not self.script[1], False
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        ScriptedEnv.steps += 1
        reward = self.rewards[self.t]
        self.t += 1
        over = self.t >= len(self.rewards)
        info = {"success": self.success} if over and self.report_success else {}
        obs = np.array([self.t], np.float32)
        return obs, reward, over and not self.truncate, over and self.truncate, info


@pytest.fixture(autouse=True)
def scripted_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the env for one test (outside ``Lethe/``, which the registry tests walk), and
    make `agents.vec` pick the sync vector env, so that the class attributes see every call.
    Every first episode here ends within a few steps: `MAX_EVAL_STEPS` is lowered so that a
    round that never stops fails in a moment instead of running 100 000 steps."""
    monkeypatch.setattr("agents.vec.os.cpu_count", lambda: 1)
    monkeypatch.setattr(agents.evaluate, "MAX_EVAL_STEPS", 4 * CHECK_EVERY)
    gym.register(ENV_ID, entry_point=ScriptedEnv)
    ScriptedEnv.seeds, ScriptedEnv.steps = [], 0
    try:
        yield
    finally:
        del gym.registry[ENV_ID]


def make_policy() -> ActorCritic:
    obs_spaces = {"obs": spaces.Box(0, 10**6, (1,), np.float32)}
    return ActorCritic(obs_spaces, 2, MemoryConfig(kind="none", width=8))


def test_first_episode_of_each_env_is_counted():
    """Return, length and success are those of each env's first episode: later episodes (whose
    rewards and successes differ) add nothing, and success is the env's ``info["success"]``,
    not ``return > 0`` (env 0 earns 1 and fails, env 1 earns 0 and succeeds)."""
    result = evaluate(make_policy(), ENV_ID, 3, CPU, seed=0, deterministic=True)
    assert ScriptedEnv.seeds == [0, 1, 2]
    assert result["episodes"] == 3
    assert result["mean_return"] == pytest.approx(FIRST_RETURN)
    assert result["mean_length"] == pytest.approx(FIRST_LENGTH)
    assert result["success_rate"] == pytest.approx(FIRST_SUCCESS)


def test_sampled_actions_give_the_same_episodes():
    """The dynamics ignore the action: sampling (the default) changes nothing."""
    result = evaluate(make_policy(), ENV_ID, 3, CPU, seed=0)
    assert result["mean_return"] == pytest.approx(FIRST_RETURN)
    assert result["mean_length"] == pytest.approx(FIRST_LENGTH)
    assert result["success_rate"] == pytest.approx(FIRST_SUCCESS)


@pytest.mark.parametrize(
    ("seed", "first"), [(1, FIRST[1]), (2, FIRST[2])], ids=["success", "failure"]
)
def test_single_episode(seed, first):
    """One env: its success is reported as 1.0 or 0.0, whatever its later episodes report."""
    rewards, success, _ = first
    result = evaluate(make_policy(), ENV_ID, 1, CPU, seed=seed, deterministic=True)
    assert result == {
        "episodes": 1,
        "mean_return": pytest.approx(sum(rewards)),
        "mean_length": len(rewards),
        "success_rate": float(success),
    }


def test_success_rate_is_none_when_the_env_reports_no_success():
    """An env without ``success`` in its info gets ``success_rate`` None (not 0); ``env_kwargs``
    reach the env's constructor."""
    result = evaluate(make_policy(), ENV_ID, 3, CPU, seed=0, env_kwargs={"report_success": False})
    assert result["success_rate"] is None
    assert result["mean_return"] == pytest.approx(FIRST_RETURN)
    assert result["mean_length"] == pytest.approx(FIRST_LENGTH)


def test_a_round_stops_at_the_first_check_after_every_episode_ended():
    """All first episodes end within `CHECK_EVERY` steps: the round stops at the first check,
    before `MAX_EVAL_STEPS`, without the "still running" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the "still running" warning would be a failure
        evaluate(make_policy(), ENV_ID, 3, CPU, seed=0, deterministic=True)
    assert ScriptedEnv.steps == 3 * CHECK_EVERY


def test_episodes_still_running_at_the_step_limit_count_as_they_are(monkeypatch):
    """A round cut at `MAX_EVAL_STEPS` warns; an unfinished episode counts with its return and
    length so far and no success (the success rate is that of the ended episodes)."""
    monkeypatch.setattr(agents.evaluate, "MAX_EVAL_STEPS", 10)
    # seed 1: one env; its first episode is 50 steps of reward 1, cut at 10
    with pytest.warns(UserWarning, match="1 of 1 episodes still running after 10 steps"):
        result = evaluate(make_policy(), ENV_ID, 1, CPU, seed=1, env_kwargs={"first_length": 50})
    assert result == {"episodes": 1, "mean_return": 10.0, "mean_length": 10.0, "success_rate": None}


def test_more_episodes_than_envs_run_in_rounds(monkeypatch):
    """With at most 2 envs at once, 5 episodes run in rounds of 2, 2 and 1, no env seeded as
    another of any round (Gymnasium seeds env i of a reset with seed + i: rounds seeded
    seed + 1, seed + 2 would replay their neighbours' episodes), and the statistics are those
    of all 5 first episodes."""
    monkeypatch.setattr(agents.evaluate, "MAX_EVAL_ENVS", 2)
    result = evaluate(make_policy(), ENV_ID, 5, CPU, seed=0, deterministic=True)
    seeds = ScriptedEnv.seeds
    assert len(seeds) == 5  # one seeded reset per env of each round
    assert len(set(seeds)) == 5, seeds  # five different episodes
    played = [FIRST[s % len(FIRST)] for s in seeds]
    assert result["episodes"] == 5
    assert result["mean_return"] == pytest.approx(np.mean([sum(r) for r, _, _ in played]))
    assert result["mean_length"] == pytest.approx(np.mean([len(r) for r, _, _ in played]))
    assert result["success_rate"] == pytest.approx(np.mean([s for _, s, _ in played]))


# ---- `train_rl.py evaluate RUN_DIR` ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("evaluate") / "run")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.out == ""
    return lines[0]


def test_draws_in_a_forked_rng_leave_the_callers_draws_as_they_were():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    with forked_rng(torch.device("cpu")):
        torch.manual_seed(99)
        torch.rand(1000)
    assert torch.equal(torch.rand(4), expected)


def test_evaluate_command_reports_and_writes_json_the_same_each_time(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", str(trained), "--episodes", "6", "--out", str(out)]
    assert train_rl.main(args) == 0
    captured = capsys.readouterr()
    assert "6/6" in captured.err  # the progress bar of the episodes
    seed = TrainConfig().seed + FRESH_SEED_OFFSET  # episodes the run never played
    for needle in (
        "policy        last, step 32",
        "env           Lethe/Corridor-S-v0",
        f"episodes      6 (seeds from {seed})",
        "actions       sampled",
        "success rate  ",
        f"written to {out}",
    ):
        assert needle in captured.out, captured.out
    played = json.loads(out.read_text())
    assert played["eval"]["episodes"] == 6 and played["seed"] == seed
    assert (played["checkpoint"], played["global_step"], played["env_id"]) == (
        "last",
        32,
        "Lethe/Corridor-S-v0",
    )
    assert train_rl.main([*args, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert json.loads(out.read_text()) == played  # sampled actions, from the seed
    assert train_rl.main([*args, "--seed", "3", "--deterministic", "--threads", "1"]) == 0
    greedy = json.loads(out.read_text())
    assert greedy["seed"] == 3 and greedy["deterministic"] is True


def test_evaluate_plays_with_env_kwargs_and_any_memory_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GRU run (which analyze refuses: no per-observation memories) evaluates; with a slack
    of 1 step on Corridor-S (lengths 5 to 10) no episode lasts more than 11 steps."""
    from agents.evaluate import main

    gru = train_tiny(tmp_path / "gru", kind="gru")
    out = tmp_path / "eval.json"
    slack = ["--env-kwargs", '{"slack_steps": 1}', "--no-progress"]
    assert main([str(gru), "--episodes", "8", *slack, "--out", str(out)]) == 0
    played = json.loads(out.read_text())
    assert played["env_kwargs"] == {"slack_steps": 1} and played["eval"]["mean_length"] <= 11
    assert 'env           Lethe/Corridor-S-v0 {"slack_steps": 1}' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--episodes", "0"], "--episodes must be a positive integer, got 0"),
        (["--episodes", "many"], "--episodes"),
        (["--checkpoint", "best"], "no best.pt in it (it is written by runs with --eval-every)"),
        (["--env", "Lethe/Nope-v0"], "unknown env id"),
        (["--env-kwargs", "slack=1"], "--env-kwargs"),
        (["--device", "tpu"], "--device"),
        (["--threads", "-2"], "--threads must be an integer >= 0, got -2"),
        (["--out", "/nowhere/eval.json"], "--out /nowhere/eval.json: no such directory /nowhere"),
        (["--out", "/tmp"], "--out /tmp is a directory; allowed: a file name"),  # before playing
        (["--seed", str(2**64)], f"--seed: {2**64} is not in [0, 2**62)"),
        # torch's reason, not its heading ("Error(s) in loading state_dict for ActorCritic:")
        (["--env", "MiniGrid-MemoryS7-v0"], "does not fit env MiniGrid-MemoryS7-v0 (Missing key"),
    ],
)
def test_evaluate_bad_input_is_one_line_and_exit_2(
    trained: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert train_rl.main(["evaluate", str(trained), *args]) == 2
    assert needle in one_line_error(capsys)


def test_evaluate_bad_run_dirs_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_rl.main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in one_line_error(capsys)
    assert train_rl.main(["evaluate", str(tmp_path)]) == 2
    assert "no checkpoint.pt" in one_line_error(capsys)


def test_a_curriculum_run_plays_its_task_with_its_kwargs_and_another_env_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default a run on a -Curriculum id is played on the task it teaches, with the run's
    env kwargs; ``--env`` another id plays it without them (they were the run's env's)."""
    run = train_tiny(
        tmp_path / "run", env="Lethe/Corridor-Curriculum-v0", env_kwargs={"slack_steps": 2}
    )
    out = tmp_path / "eval.json"
    common = [str(run), "--episodes", "2", "--no-progress", "--out", str(out)]
    assert train_rl.main(["evaluate", *common]) == 0
    played = json.loads(out.read_text())
    assert (played["env_id"], played["env_kwargs"]) == ("Lethe/Corridor-v0", {"slack_steps": 2})
    assert train_rl.main(["evaluate", *common, "--env", "Lethe/Corridor-S-v0"]) == 0
    played = json.loads(out.read_text())
    assert (played["env_id"], played["env_kwargs"]) == ("Lethe/Corridor-S-v0", {})
    capsys.readouterr()
