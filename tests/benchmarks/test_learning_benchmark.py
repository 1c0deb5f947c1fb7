"""benchmarks/learning.py: the steps-to-target rule, and one tiny run of every kind of learner."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "learning.py"


def load_script():
    spec = importlib.util.spec_from_file_location("learning_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def rows(*iterations: tuple[int, float, float]) -> list[dict]:
    """(global step, episodes, success rate) per iteration, as metrics.jsonl rows."""
    return [
        {"global_step": step, "charts/episodes": episodes, "charts/success_rate": rate}
        for step, episodes, rate in iterations
    ]


def test_steps_to_target_needs_a_full_window_at_the_threshold() -> None:
    learning = load_script()
    history = rows(
        (100, 60, 1.0),  # only 60 episodes so far: not enough to judge
        (200, 60, 0.5),  # 120 episodes, (60 + 30) / 120 = 0.75
        (300, 0, None),  # no episode ended: the window stays as it was
        (400, 60, 1.0),  # the last 120: (30 + 60) / 120 = 0.75
        (500, 60, 1.0),  # the last 120: 1.0
    )
    assert learning.steps_to_target(history, "success", 0.9, 100) == 500
    assert learning.steps_to_target(history, "success", 0.7, 100) == 200
    assert learning.steps_to_target(history, "success", 0.7, 200) == 500  # 210 / 240
    assert learning.steps_to_target(history[:4], "success", 0.9, 100) is None


def test_steps_to_target_counts_only_episodes_drawn_at_the_final_level() -> None:
    learning = load_script()
    history = rows((100, 120, 1.0), (200, 120, 1.0), (300, 120, 0.8), (400, 120, 1.0))
    # Of each iteration's episodes, those drawn at the last level (episodes still under way
    # when the level rose end at the easier level below: all successes here).
    for row, (count, rate) in zip(
        history, ((0, None), (40, 0.5), (120, 0.8), (120, 1.0)), strict=True
    ):
        row["charts/last_level_episodes"] = count
        if rate is not None:
            row["charts/last_level_success_rate"] = rate
    assert learning.steps_to_target(history, "success", 0.9, 100) == 100  # every episode
    assert learning.steps_to_target(history, "success", 0.9, 100, final_level=100) == 400
    assert learning.steps_to_target(history, "success", 0.8, 100, final_level=100) == 300
    assert learning.steps_to_target(history[:3], "success", 0.9, 100, final_level=100) is None


def test_sb3_episode_log_singles_out_the_final_level() -> None:
    learning = load_script()
    log = learning.EpisodeLog(final_level=4)
    for step, success, ret, level in ((10, 1.0, 3.0, 3), (20, 0.0, 1.0, 4), (30, 1.0, 5.0, 4)):
        log.episodes.append((step, success, ret, float(level)))
    (row,) = log.as_rows(per_row=8)
    assert row["charts/episodes"] == 3 and row["charts/last_level_episodes"] == 2
    assert row["charts/last_level_return"] == 3.0 and row["charts/last_level_success_rate"] == 0.5
    assert row["charts/curriculum_level"] == 4.0  # the highest level of the batch's episodes
    assert "charts/last_level_episodes" not in learning.EpisodeLog().as_rows(per_row=8)[0:1]


def test_sb3_final_figures_come_from_the_last_level() -> None:
    """RecurrentPPO's "evaluation" is its last training episodes: on a curriculum only those
    drawn at the last level count; an env without ``success`` gives no success rate."""
    learning = load_script()
    log = learning.EpisodeLog(final_level=4)
    for step, ret, level in ((10, 30.0, 1), (20, 2.0, 4), (30, 4.0, 4), (40, 25.0, 1)):
        log.episodes.append((step, np.nan, ret, float(level)))
    assert log.final(100) == {"episodes": 2, "mean_return": 3.0, "success_rate": None}
    assert log.final(1) == {"episodes": 1, "mean_return": 4.0, "success_rate": None}
    only_level_1 = learning.EpisodeLog(final_level=4)
    only_level_1.episodes.append((10, np.nan, 30.0, 1.0))
    assert only_level_1.final(100) == {"episodes": 0, "mean_return": None, "success_rate": None}
    plain = learning.EpisodeLog()
    plain.episodes += [(10, 1.0, 1.0, np.nan), (20, 0.0, 0.0, np.nan)]
    assert plain.final(100) == {"episodes": 2, "mean_return": 0.5, "success_rate": 0.5}


def test_highest_level_and_its_column() -> None:
    """How far up a curriculum a run got, from Lethe's rows or RecurrentPPO's; the table shows
    it in a ``level`` column only when some run has one."""
    learning = load_script()
    lethe_rows = [{"charts/curriculum_level": level} for level in (10.0, 22.0, 17.0)]
    assert learning.highest_level(lethe_rows) == 22.0
    assert learning.highest_level([{"global_step": 1}, {"charts/curriculum_level": None}]) is None
    row = {"learner": "x", "seed": 1, "steps_to_target": None, "budget": 8}
    row |= {"final_success": 0.5, "wall_seconds": 1.0}
    table = learning.format_table([row | {"highest_level": 22.0}], "success")
    assert "| level |" in table.splitlines()[0] and "|    22 |" in table.splitlines()[2]
    assert "level" not in learning.format_table([row], "success")


def test_steps_to_target_reads_returns_for_return_targets() -> None:
    learning = load_script()
    history = [
        {"global_step": 10, "charts/episodes": 8, "charts/episodic_return": 1.0},
        {"global_step": 20, "charts/episodes": 8, "charts/episodic_return": 3.0},
    ]
    assert learning.steps_to_target(history, "return", 2.0, 16) == 20
    assert learning.steps_to_target(history, "return", 2.5, 16) is None


def test_portal_oracle_return_is_that_of_a_perfect_memory() -> None:
    """The oracle completes several trials per episode on the default Portal."""
    learning = load_script()
    assert learning.portal_oracle_return("Lethe/Portal-v0", 32, "cpu") >= 3.0


def test_a_tiny_run_prints_one_row_per_learner_and_seed(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    temp = tmp_path / "temp"  # the run's temp folder: SB3's default logger writes one per run
    temp.mkdir()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--task", "corridor-s", "--memories", "expire-span,gru"]
        + ["--seeds", "1", "--steps", "2048", "--sb3-steps", "64", "--eval-episodes", "4"]
        + ["--threads", "1", "--eval-every", "1", "--out", str(out)]
        + ["--runs-dir", str(tmp_path / "runs"), "--env-kwargs", '{"slack_steps": 3}']
        + ["--algo-kwargs", '{"gamma": 0.98}', "--memory-kwargs", '{"capacity": 8}'],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert result.returncode == 0, result.stderr
    assert not list(temp.glob("SB3-*")), "RecurrentPPO left a log folder in the temp folder"
    assert 'Corridor-S-v0 {"slack_steps": 3}: env steps to success >= 0.9' in result.stdout
    record = json.loads(out.read_text())
    assert record["env_kwargs"] == {"slack_steps": 3}
    assert record["algo_kwargs"] == {"gamma": 0.98}
    assert record["memory_kwargs"] == {"capacity": 8}
    results = record["results"]
    learners = [row["learner"] for row in results]
    assert learners == [
        "Lethe PPO expire-span",
        "Lethe PPO gru",
        "sb3-contrib RecurrentPPO (LSTM)",
    ]
    lethe = results[0]
    assert lethe["budget"] == 2048 and lethe["final_success"] is not None
    assert results[2]["budget"] >= 64  # SB3 finishes its rollout (8 envs x 128 steps)
    # --eval-every: Lethe's runs report their kept policy (one iteration: the only one).
    assert lethe["best_step"] == 2048 and lethe["best_success"] is not None
    assert "best_step" not in results[2]
    assert "best (step)" in result.stdout and f"({lethe['best_step']:,})" in result.stdout
    # --runs-dir keeps each Lethe run's directory; RecurrentPPO has none.
    kept = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert kept == ["corridor-s-expire-span-seed1", "corridor-s-gru-seed1"]
    for name in kept:
        run = tmp_path / "runs" / name
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # one iteration
        assert (run / "best.pt").exists() and (run / "summary.json").exists()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["env_kwargs"] == summary["eval_env_kwargs"] == {"slack_steps": 3}
        config = json.loads((run / "config.json").read_text())
        assert config["algo"]["gamma"] == 0.98  # --algo-kwargs over the task's options
        assert config["memory"]["capacity"] == 8 and config["memory"]["kind"] in name


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--algo-kwargs", '{"gama": 0.9}'], "--algo-kwargs: unknown option 'gama'; allowed: "),
        (["--memory-kwargs", '{"kind": "gru"}'], "--memory-kwargs: unknown option 'kind'; "),
        (["--algo-kwargs", '{"gamma": 2}'], "--gamma must be in (0, 1], got 2"),
        (["--memories", "expire-span,grue"], "unknown memory 'grue'; allowed: expire-span, "),
        (["--env-kwargs", '{"lenght": 3}'], 'refused the keyword arguments {"lenght": 3}'),
    ],
)
def test_bad_options_are_refused_in_one_line(
    tmp_path: Path, option: list[str], message: str
) -> None:
    """Refused before any run starts (the env's own refusal: at its first run), exit 2."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-sb3", "--seeds", "1", "--steps", "64", *option],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.splitlines()[-1].startswith("learning.py: error: ")
    assert "Traceback" not in result.stderr and not result.stdout


def test_recurrent_ppo_observes_what_lethes_learners_observe() -> None:
    """On the Portal (Lethe's learners get the previous action and reward) RecurrentPPO gets
    them too, through its multi-input policy; on the corridors its plain LSTM policy."""
    learning = load_script()
    vec_env, policy = learning.sb3_envs(learning.TASKS["portal"], seed=1)
    assert policy == "MultiInputLstmPolicy"
    assert set(vec_env.observation_space.spaces) == {"obs", "prev_action", "prev_reward"}
    obs = vec_env.reset()
    assert obs["prev_action"].tolist() == [0] * 8 and obs["obs"].shape == (8, 27)
    vec_env.close()
    vec_env, policy = learning.sb3_envs(learning.TASKS["corridor-s"], seed=1)
    assert policy == "MlpLstmPolicy" and vec_env.observation_space.shape == (3, 3, 3)
    vec_env.close()
    vec_env, _ = learning.sb3_envs(
        learning.TASKS["corridor-s"], seed=1, env_kwargs={"slack_steps": 3}
    )
    assert vec_env.get_attr("slack_steps") == [3] * 8  # --env-kwargs reach RecurrentPPO's envs
    vec_env.close()
