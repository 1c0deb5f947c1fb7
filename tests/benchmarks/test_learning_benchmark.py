"""benchmarks/learning.py: the steps-to-target rule, and one tiny run of every kind of learner."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import ROOT, load_script

SCRIPT = ROOT / "benchmarks" / "learning.py"


def rows(*iterations: tuple[int, float, float]) -> list[dict]:
    """(global step, episodes, success rate) per iteration, as metrics.jsonl rows."""
    return [
        {"global_step": step, "charts/episodes": episodes, "charts/success_rate": rate}
        for step, episodes, rate in iterations
    ]


def test_steps_to_target_needs_a_full_window_at_the_threshold() -> None:
    learning = load_script("learning.py")
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
    learning = load_script("learning.py")
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
    learning = load_script("learning.py")
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
    learning = load_script("learning.py")
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
    learning = load_script("learning.py")
    lethe_rows = [{"charts/curriculum_level": level} for level in (10.0, 22.0, 17.0)]
    assert learning.highest_level(lethe_rows) == 22.0
    assert learning.highest_level([{"global_step": 1}, {"charts/curriculum_level": None}]) is None
    row = {"learner": "x", "seed": 1, "steps_to_target": None, "budget": 8}
    row |= {"final_success": 0.5, "wall_seconds": 1.0}
    table = learning.format_table([row | {"highest_level": 22.0}], "success")
    assert "| level |" in table.splitlines()[0] and "|    22 |" in table.splitlines()[2]
    assert "level" not in learning.format_table([row], "success")


def test_steps_to_target_reads_returns_for_return_targets() -> None:
    learning = load_script("learning.py")
    history = [
        {"global_step": 10, "charts/episodes": 8, "charts/episodic_return": 1.0},
        {"global_step": 20, "charts/episodes": 8, "charts/episodic_return": 3.0},
    ]
    assert learning.steps_to_target(history, "return", 2.0, 16) == 20
    assert learning.steps_to_target(history, "return", 2.5, 16) is None


def test_portal_oracle_return_is_that_of_a_perfect_memory() -> None:
    """The oracle completes several trials per episode on the default Portal."""
    learning = load_script("learning.py")
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


def test_a2c_runs_are_labelled_configured_and_kept_apart(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--algo", "a2c", "--memories", "gru", "--no-sb3"]
        + ["--seeds", "1", "--steps", "1024", "--eval-episodes", "2", "--threads", "1"]
        + ["--out", str(out), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "| Lethe A2C gru " in result.stdout
    record = json.loads(out.read_text())
    assert record["algo"] == "a2c" and record["results"][0]["learner"] == "Lethe A2C gru"
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name == "corridor-s-a2c-gru-seed1"
    assert json.loads((run / "config.json").read_text())["algo"]["algo"] == "a2c"


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
    learning = load_script("learning.py")
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


def test_recurrent_ppo_counts_the_last_level_the_env_kwargs_set() -> None:
    """With ``max_length`` 10 the Corridor curriculum's last level is 10, not the task's 50:
    RecurrentPPO's episodes there are its figures (none would be at 50)."""
    learning = load_script("learning.py")
    args = argparse.Namespace(
        env_kwargs={"max_length": 10, "curriculum_start": 10},
        device="cpu",
        sb3_steps=1024,
        eval_episodes=4,
    )
    out = learning.run_recurrent_ppo(learning.TASKS["corridor"], seed=1, args=args)
    assert out["summary"]["eval"]["episodes"] == 4
    assert out["summary"]["eval"]["success_rate"] is not None
    assert sum(row["charts/last_level_episodes"] for row in out["rows"]) >= 4


def test_steps_to_target_drops_the_oldest_iteration_once_the_rest_fill_the_window() -> None:
    """The window is the fewest last iterations holding ``window_episodes`` episodes: one that
    the later ones already fill exactly leaves it."""
    learning = load_script("learning.py")
    history = rows((100, 50, 0.0), (200, 100, 1.0))
    assert learning.steps_to_target(history, "success", 0.9, 100) == 200
    assert learning.steps_to_target(history, "success", 0.9, 101) is None  # 100 / 150


def test_steps_to_target_on_a_curriculum_needs_a_window_of_last_level_episodes() -> None:
    """120 episodes ended, but only 40 were drawn at the last level: not a 100-episode window."""
    learning = load_script("learning.py")
    (row,) = rows((100, 120, 0.5))
    row |= {"charts/last_level_episodes": 40, "charts/last_level_success_rate": 1.0}
    assert learning.steps_to_target([row], "success", 0.9, 40, final_level=50) == 100
    assert learning.steps_to_target([row], "success", 0.9, 100, final_level=50) is None


def test_steps_to_target_reads_last_level_returns_for_return_targets() -> None:
    """The Portal: a return target on a curriculum reads the last level's mean return (its
    success rate is NaN: the env reports none)."""
    learning = load_script("learning.py")
    history = [
        {"global_step": step, "charts/episodes": 100.0, "charts/episodic_return": 20.0}
        | {"charts/last_level_episodes": 50.0, "charts/last_level_return": ret}
        | {"charts/last_level_success_rate": float("nan")}
        for step, ret in ((10, 8.0), (20, 10.0), (30, 12.0))
    ]
    assert learning.steps_to_target(history, "return", 9.0, 50, final_level=4) == 20
    assert learning.steps_to_target(history, "return", 11.0, 100, final_level=4) == 30
    assert learning.steps_to_target(history, "return", 15.0, 50, final_level=4) is None


def test_sb3_final_figures_are_means_of_the_last_episodes() -> None:
    learning = load_script("learning.py")
    log = learning.EpisodeLog()
    for step, success, ret in ((10, 0.0, 100.0), (20, 0.0, 1.0), (30, 0.0, 2.0), (40, 1.0, 6.0)):
        log.episodes.append((step, success, ret, np.nan))
    # The last three: mean return 3 (median 2), success rate 1/3 (median 0).
    assert log.final(3) == {"episodes": 3, "mean_return": 3.0, "success_rate": 1 / 3}
    assert log.final(0) == {"episodes": 0, "mean_return": None, "success_rate": None}


def test_sb3_episode_log_rows_are_batches_in_order() -> None:
    """Each row: the step at its batch's last episode, its episodes' mean return and success,
    the highest level among them (a curriculum can step down); a short last batch is kept."""
    learning = load_script("learning.py")
    log = learning.EpisodeLog(final_level=4)
    for step, success, ret, level in (
        (10, 1.0, 5.0, 4),
        (20, 0.0, 1.0, 3),
        (30, 0.0, 2.0, 3),
        (40, 1.0, 7.0, 4),
        (50, 1.0, 9.0, 4),
    ):
        log.episodes.append((step, success, ret, float(level)))
    first, second, third = log.as_rows(per_row=2)
    assert [first["global_step"], second["global_step"], third["global_step"]] == [20, 40, 50]
    assert [first["charts/episodes"], second["charts/episodes"], third["charts/episodes"]] == [
        2.0,
        2.0,
        1.0,
    ]
    assert first["charts/episodic_return"] == 3.0 and first["charts/success_rate"] == 0.5
    assert first["charts/curriculum_level"] == 4.0 and second["charts/curriculum_level"] == 4.0
    assert second["charts/last_level_episodes"] == 1.0
    assert second["charts/last_level_return"] == 7.0
    # The rows give steps_to_target the steps of the batches' last episodes.
    assert learning.steps_to_target(log.as_rows(per_row=2), "return", 6.0, 2) == 50


def test_table_of_a_return_target_shows_returns() -> None:
    learning = load_script("learning.py")
    row = {"learner": "x", "seed": 1, "steps_to_target": 3000, "budget": 4096}
    row |= {"final_success": None, "final_return": 9.25, "wall_seconds": 2.0}
    row |= {"best_step": 1000, "best_success": None, "best_return": 9.5}
    line = learning.format_table([row], "return").splitlines()[2]
    assert "|  9.25 |" in line and "9.50 (1,000) |" in line


def fake_summary(total: int, success: float | None, ret: float, best: bool) -> dict:
    summary = {"total_env_steps": total, "wall_seconds": 3.0}
    summary["eval"] = {"episodes": 10, "success_rate": success, "mean_return": ret}
    if best:
        summary["best"] = {"global_step": 1000, "eval": {"success_rate": 0.9, "mean_return": 0.8}}
    return summary


def run_main(learning, monkeypatch, tmp_path: Path, argv: list[str], lethe_rows: list[dict]):
    """``main`` with the runs replaced by ones that return ``lethe_rows``: the JSON record."""
    calls = []

    def run_lethe(task, memory, seed, args):
        calls.append(("lethe", memory, seed))
        return {"summary": fake_summary(2048, 0.75, 0.5, best=True), "rows": lethe_rows}

    def run_recurrent_ppo(task, seed, args):
        calls.append(("sb3", None, seed))
        sb3_rows = [{"global_step": 64, "charts/episodes": 8.0, "charts/success_rate": 0.0}]
        return {"summary": fake_summary(1024, 0.25, 0.1, best=False), "rows": sb3_rows}

    monkeypatch.setattr(learning, "run_lethe", run_lethe)
    monkeypatch.setattr(learning, "run_recurrent_ppo", run_recurrent_ppo)
    out = tmp_path / "results.json"
    monkeypatch.setattr(sys, "argv", ["learning.py", *argv, "--out", str(out)])
    learning.main()
    return calls, json.loads(out.read_text())


def test_main_judges_each_run_on_the_task_target_window_and_last_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The reported row: steps to target over ``--window-episodes`` episodes drawn at the
    curriculum's last level (not ``--eval-episodes``, not every episode), the budget the run
    spent, its final and kept policy's evaluations, the highest level it reached."""
    learning = load_script("learning.py")
    lethe_rows = [
        {"global_step": 1000, "charts/episodes": 200.0, "charts/success_rate": 1.0}
        | {"charts/last_level_episodes": 20.0, "charts/last_level_success_rate": 0.0}
        | {"charts/curriculum_level": 50.0},
        {"global_step": 2000, "charts/episodes": 200.0, "charts/success_rate": 1.0}
        | {"charts/last_level_episodes": 60.0, "charts/last_level_success_rate": 1.0}
        | {"charts/curriculum_level": 45.0},
    ]
    argv = ["--task", "corridor", "--memories", "gru", "--seeds", "7", "--steps", "64"]
    argv += ["--window-episodes", "50", "--eval-episodes", "100"]
    calls, record = run_main(learning, monkeypatch, tmp_path, argv, lethe_rows)
    assert calls == [("lethe", "gru", 7), ("sb3", None, 7)]
    lethe, sb3 = record["results"]
    assert lethe == {
        "learner": "Lethe PPO gru",
        "seed": 7,
        "steps_to_target": 2000,
        "budget": 2048,
        "final_success": 0.75,
        "final_return": 0.5,
        "wall_seconds": 3.0,
        "highest_level": 50.0,
        "best_step": 1000,
        "best_success": 0.9,
        "best_return": 0.8,
    }
    assert sb3["steps_to_target"] is None and sb3["budget"] == 1024
    assert sb3["final_success"] == 0.25 and "best_step" not in sb3
    printed = capsys.readouterr().out
    assert "Lethe/Corridor-v0: env steps to success >= 0.9 (50-episode window)" in printed
    assert "|           2,000 |       2,048 |    50 |  0.75 |" in printed


def test_main_sets_a_return_target_from_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The Portal's target is 90% of the oracle's return: 9 for an oracle's 10."""
    learning = load_script("learning.py")
    monkeypatch.setattr(learning, "portal_oracle_return", lambda *args: 10.0)
    lethe_rows = [
        {"global_step": step, "charts/episodes": 100.0, "charts/episodic_return": 20.0}
        | {"charts/last_level_episodes": 100.0, "charts/last_level_return": ret}
        | {"charts/last_level_success_rate": float("nan"), "charts/curriculum_level": 4.0}
        for step, ret in ((1000, 8.5), (2000, 9.5))
    ]
    argv = ["--task", "portal", "--memories", "gru", "--seeds", "1", "--steps", "64", "--no-sb3"]
    _, record = run_main(learning, monkeypatch, tmp_path, argv, lethe_rows)
    (row,) = record["results"]
    assert row["steps_to_target"] == 2000
    assert "return >= 90% of the oracle's 10.00 = 9.00" in capsys.readouterr().out


def test_portal_oracle_return_is_the_mean_of_each_env_first_episode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rewards after an env's first episode ended (the twin resets it) do not count."""
    import torch

    learning = load_script("learning.py")
    ends = torch.tensor([1, 2, 4])  # each env's episode ends at this step

    class Twin:
        def __init__(self) -> None:
            self.t = 0

        def reset(self, seed: int) -> None:
            self.t = 0

        def step(self, actions):
            self.t += 1
            done = ends == self.t
            return None, torch.ones(3), done, torch.zeros(3, dtype=torch.bool), {}

    class Vec:
        def __init__(self, *args, **kwargs) -> None:
            self.env = Twin()

        def close(self) -> None:
            pass

    class Oracle:
        def __init__(self, twin) -> None:
            pass

        def act(self, twin):
            return torch.zeros(3, dtype=torch.long)

        def observe(self, info, done) -> None:
            pass

    monkeypatch.setattr("agents.vec.make_vector_env", Vec)
    monkeypatch.setattr("envs.reference.BatchedPortalOracle", Oracle)
    assert learning.portal_oracle_return("Lethe/Portal-v0", 3, "cpu") == pytest.approx(7 / 3)
