"""The CLI: bad input answered in one line with exit status 2, smoke runs, resume, env forms."""

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tiny_run import TINY_MODEL

import train_rl
from agents.checkpoint import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--num-envs",
    "4",
    "--rollout-steps",
    "16",
    "--wandb",
    "disabled",
    "--no-progress",
    "--eval-episodes",
    "4",
    *TINY_MODEL,
]


def run_cli(args, capsys):
    """Run `train_rl.main` in-process; returns (exit status, its stderr)."""
    capsys.readouterr()  # what earlier calls printed is not this call's
    with pytest.raises(SystemExit) as exit_info:
        train_rl.main(args)
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(status, err, *needles):
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("train_rl.py: error:"), err
    # one line: before it at most warnings (one line each), no usage block, no traceback
    assert all(line.startswith("train_rl.py: warning:") for line in lines[:-1]), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--env", "Lethe/NoSuchTask-v0"], ["Lethe/NoSuchTask-v0", "Lethe ids"]),
        (["--env", "nosuchmodule_xyz:Task-v0"], ["nosuchmodule_xyz"]),
        (["--env", "Pendulum-v1"], ["Box", "Discrete"]),
        (["--memory", "transformer"], ["transformer", "expire-span"]),
        (["--algo", "dqn"], ["dqn", "ppo"]),
        (["--critic", "both"], ["both", "shared", "separate"]),
        (["--num-envs", "0"], ["--num-envs", "0"]),
        (["--rollout-steps", "-3"], ["--rollout-steps", "-3"]),
        (["--total-steps", "0"], ["--total-steps"]),
        (["--capacity", "0"], ["--capacity", "0"]),
        (["--ramp", "64", "--span-limit", "32"], ["--ramp 64", "--span-limit 32"]),
        (["--heads", "3", "--width", "16"], ["--heads 3"]),
        (["--span-pre-div", "0"], ["--span-pre-div", "> 0"]),
        (["--alpha", "inf"], ["--alpha", "finite"]),
        (["--span-use-coef", "-1"], ["--span-use-coef", ">= 0"]),
        (["--span-use-coef", "nan"], ["--span-use-coef", "nan"]),
        (["--span-use-margin", "0.5"], ["--span-use-margin", ">= 1"]),
        (["--target-kl", "-1"], ["--target-kl", ">= 0"]),
        (["--gamma", "0"], ["--gamma", "(0, 1]", "got 0.0"]),
        (["--gamma", "1.5"], ["--gamma", "(0, 1]", "got 1.5"]),
        (["--gae-lambda", "1.5"], ["--gae-lambda", "[0, 1]", "got 1.5"]),
        (["--gae-lambda", "-0.1"], ["--gae-lambda", "[0, 1]"]),
        (["--learning-rate", "0"], ["--learning-rate", "> 0"]),
        (["--learning-rate", "inf"], ["--learning-rate", "finite"]),
        (["--clip-coef", "0"], ["--clip-coef", "> 0"]),
        (["--max-grad-norm", "0"], ["--max-grad-norm", "> 0"]),
        (["--span-init", "1"], ["--span-init", "(0, 1)", "got 1.0"]),
        (["--span-init", "0"], ["--span-init", "(0, 1)"]),
        (["--dist-timeout", "inf"], ["--dist-timeout", "finite"]),
        (["--threads", "-1"], ["--threads must be an integer >= 0, got -1"]),
        (["--ent-coef", "nan"], ["--ent-coef", "nan"]),
        (["--num-env", "4"], ["--num-env"]),  # a prefix is not taken for --num-envs
        (["--env-kwargs", "[1]"], ["--env-kwargs", "not a JSON object"]),
        (["--env-kwargs", "{slack: 1}"], ["--env-kwargs", "not JSON"]),
        (["--env-kwargs", '{"foo": 1}'], ["CartPole-v1", '{"foo": 1}', "foo"]),
        (["--eval-env-kwargs", '{"foo": 1}'], ["--eval-env-kwargs: env CartPole-v1", '{"foo": 1}']),
        (["--eval-env", "Acrobot-v1", "--eval-env-kwargs", '{"foo": 1}'], ["--eval-env: env Acr"]),
        (["--seed", "-1"], ["--seed must be in [0, 2**62), got -1"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, needles, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, err = run_cli(["--env", "CartPole-v1", *TINY, "--run-dir", str(run_dir), *args], capsys)
    assert_one_line_error(status, err, *needles)
    assert not run_dir.exists()


def test_help_and_bad_options_come_without_importing_torch():
    """`--help` and argparse's one-line errors answer at once: torch loads with `train`."""
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        import train_rl
        for argv in (["--help"], ["--num-env", "4"]):
            with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
                with contextlib.redirect_stderr(io.StringIO()):
                    train_rl.main(argv)
        print("torch" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.stdout.strip() == "False", done.stdout + done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    status, err = run_cli(["--device", "cuda", "--run-dir", str(tmp_path / "r")], capsys)
    assert_one_line_error(status, err, "cuda")


def test_existing_run_dir_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("precious")
    status, err = run_cli(["--env", "CartPole-v1", *TINY, "--run-dir", str(run_dir)], capsys)
    assert_one_line_error(status, err, "already exists", "--resume")
    assert (run_dir / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint at all"])
def test_resume_of_missing_or_corrupt_checkpoint(content, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is not None:
        (run_dir / CHECKPOINT_NAME).write_bytes(content)
    status, err = run_cli(["--resume", str(run_dir)], capsys)
    assert_one_line_error(status, err, str(run_dir))


def test_smoke_run_then_resume_continues(tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["--env", "CartPole-v1", "--memory", "gru", *TINY, "--checkpoint-every", "1"]
    assert train_rl.main([*base, "--total-steps", "128", "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_env_steps"] == 128
    assert summary["eval"]["episodes"] == 4
    assert summary["eval"]["success_rate"] is None  # CartPole reports no success
    for key in ("env_id", "algo", "memory", "wall_seconds", "env_steps_per_second"):
        assert key in summary

    # resume with a larger budget: continues from step 128, each iteration logged once
    assert train_rl.main(["--resume", str(run_dir), "--total-steps", "320"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_env_steps"] == 320
    iterations = [json.loads(x)["iteration"] for x in (run_dir / "metrics.jsonl").open()]
    assert iterations == list(range(1, 6))

    # a run at the end of its budget: evaluated again, with a warning saying so
    capsys.readouterr()
    with pytest.warns(UserWarning, match="has trained its --total-steps 320 already"):
        assert train_rl.main(["--resume", str(run_dir)]) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["total_env_steps"] == 320 and again["env_steps_per_second"] > 0
    assert [json.loads(x)["iteration"] for x in (run_dir / "metrics.jsonl").open()] == iterations

    # --resume goes on in place: a fresh start or another directory is refused
    status, err = run_cli(["--resume", str(run_dir), "--overwrite"], capsys)
    assert_one_line_error(status, err, "--resume", "--overwrite", "give one")
    other = tmp_path / "other"
    status, err = run_cli(["--resume", str(run_dir), "--run-dir", str(other)], capsys)
    assert_one_line_error(status, err, f"--run-dir {other}", f"--fork {run_dir}")
    with pytest.warns(UserWarning, match="already"):  # its own directory is fine
        assert train_rl.main(["--resume", str(run_dir), "--run-dir", str(run_dir)]) == 0

    # a checkpoint of another memory kind or env is refused
    status, err = run_cli(["--resume", str(run_dir), "--memory", "lstm"], capsys)
    assert_one_line_error(status, err, "memory kind", "gru", "lstm")
    status, err = run_cli(["--resume", str(run_dir), "--env", "Acrobot-v1"], capsys)
    assert_one_line_error(
        status,
        err,
        "--env 'CartPole-v1', not 'Acrobot-v1'; allowed: that value, or --fork",
        "a resume may change --checkpoint-every, --device, ",
    )
    # --threads may change (the machine got busy): the run goes on with the new setting
    with pytest.warns(UserWarning, match="already"):
        assert train_rl.main(["--resume", str(run_dir), "--threads", "1"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1


def test_fork_starts_a_new_run_from_a_checkpoint_with_changed_options(tmp_path, capsys):
    from agents.checkpoint import load_checkpoint, save_checkpoint

    source = tmp_path / "source"
    args = ["--env", "Lethe/Corridor-L100-Curriculum-v0", *TINY, "--checkpoint-every", "1"]
    assert train_rl.main([*args, "--total-steps", "128", "--run-dir", str(source)]) == 0
    checkpoint = load_checkpoint(source)
    checkpoint["curriculum_levels"] = [44.0]  # as if the source had climbed
    save_checkpoint(source, checkpoint)
    before = (source / CHECKPOINT_NAME).read_bytes()
    capsys.readouterr()

    # Any option may change; the step count, curriculum and policy go on from the source.
    fork = ["--fork", str(source), "--total-steps", "256", "--gae-lambda", "0.9"]
    assert train_rl.main([*fork, "--learning-rate", "1e-4", "--no-anneal-lr"]) == 0
    forked = tmp_path / "source-from2"  # the default name: the source's and its iteration
    summary = json.loads((forked / "summary.json").read_text())
    assert summary["total_env_steps"] == 256
    assert summary["forked_from"] == {
        "run_dir": str(source),
        "iteration": 2,
        "global_step": 128,
        "changed": [  # as given, in the order given
            "--total-steps 256 (was 128)",
            "--gae-lambda 0.9 (was 0.95)",
            "--learning-rate 0.0001 (was 0.0005)",
            "--no-anneal-lr",
        ],
    }
    config = json.loads((forked / "config.json").read_text())
    assert config["algo"]["gae_lambda"] == 0.9 and config["run_dir"] == str(forked)
    assert config["env"] == "Lethe/Corridor-L100-Curriculum-v0"  # kept from the source
    rows = [json.loads(x) for x in (forked / "metrics.jsonl").open()]
    assert [row["iteration"] for row in rows] == [3, 4]  # a metrics file of its own
    assert [row["charts/learning_rate"] for row in rows] == [1e-4, 1e-4]  # this run's rate
    assert rows[-1]["charts/curriculum_level"] == 44.0
    assert (source / CHECKPOINT_NAME).read_bytes() == before  # the source is left alone
    assert not (source / "source-from2").exists()
    # Resumed, the fork is the same run: its summary still says where it began.
    assert train_rl.main(["--resume", str(forked), "--total-steps", "320"]) == 0
    resumed = json.loads((forked / "summary.json").read_text())
    assert resumed["total_env_steps"] == 320
    assert resumed["forked_from"] == summary["forked_from"]

    # The forked policy starts from the source's parameters: with a vanishing learning rate
    # they stay equal to the source's.
    still = tmp_path / "still"
    tiny_rate = ["--fork", str(source), "--total-steps", "192", "--learning-rate", "1e-30"]
    assert train_rl.main([*tiny_rate, "--run-dir", str(still)]) == 0
    kept = load_checkpoint(still)["policy"]
    for name, tensor in load_checkpoint(source)["policy"].items():
        torch.testing.assert_close(kept[name], tensor, msg=name)

    # Another iteration size (8 envs: 128 steps, against the source's 64) counts on from the
    # source's 128 env steps to --total-steps, and the learning rate decays over those steps.
    wider = tmp_path / "wider"
    wide = ["--fork", str(source), "--total-steps", "256", "--num-envs", "8"]
    assert train_rl.main([*wide, "--run-dir", str(wider)]) == 0
    assert json.loads((wider / "summary.json").read_text())["total_env_steps"] == 256
    rows = [json.loads(x) for x in (wider / "metrics.jsonl").open()]
    assert [(row["iteration"], row["global_step"]) for row in rows] == [(2, 256)]
    assert rows[0]["charts/learning_rate"] == pytest.approx(0.5 * 5e-4)  # half-way to 256

    # Refused in one line: a network of other shapes, the source itself, both flags.
    status, err = run_cli([*fork, "--width", "24", "--run-dir", str(tmp_path / "w")], capsys)
    assert_one_line_error(status, err, "--fork", "does not fit", "--width 24 (was", "size mismatch")
    assert not (tmp_path / "w").exists()
    # A source at the end of its --total-steps: the fork, counting on, would train nothing.
    status, err = run_cli(["--fork", str(source), "--run-dir", str(tmp_path / "n")], capsys)
    assert_one_line_error(status, err, "step 128", "--total-steps 128", "train nothing")
    assert not (tmp_path / "n").exists()
    status, err = run_cli([*fork, "--run-dir", str(source)], capsys)
    assert_one_line_error(status, err, "its own --run-dir")
    status, err = run_cli([*fork, "--resume", str(source)], capsys)
    assert_one_line_error(status, err, "--fork and --resume")
    status, err = run_cli(["--fork", str(tmp_path / "nothing")], capsys)
    assert_one_line_error(status, err, "--fork", "no such run directory")
    status, err = run_cli(fork, capsys)  # the default name is taken by the first fork
    assert_one_line_error(status, err, "already exists")


def test_summary_is_strict_json_when_no_training_episode_ended(tmp_path, capsys):
    """64 steps of 400-step Portal episodes: no training episode ends, so the training
    means are null in summary.json (strict JSON: no NaN) and "-" on the progress bar."""
    run_dir = tmp_path / "run"
    args = ["--env", "Lethe/Portal-v0", *TINY, "--total-steps", "64", "--eval-episodes", "0"]
    assert train_rl.main([*args, "--run-dir", str(run_dir)]) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"summary.json holds {constant}")

    summary = json.loads((run_dir / "summary.json").read_text(), parse_constant=refuse)
    assert summary["final_train"] == {
        "charts/episodic_return": None,
        "charts/success_rate": None,
        "charts/episode_length": None,
    }
    from agents.trainer import _shown

    assert _shown(float("nan")) == "-" and _shown(0.5) == "0.50"


def test_curriculum_level_is_logged_kept_on_resume_and_eval_env_used(tmp_path, capsys):
    from agents.checkpoint import load_checkpoint, save_checkpoint

    run_dir = tmp_path / "run"
    args = ["--env", "Lethe/Corridor-L100-Curriculum-v0", "--eval-env", "Lethe/Corridor-S-v0"]
    args += [*TINY, "--checkpoint-every", "1", "--run-dir", str(run_dir)]
    assert train_rl.main([*args, "--total-steps", "64"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_id"] == "Lethe/Corridor-L100-Curriculum-v0"
    assert summary["eval_env_id"] == "Lethe/Corridor-S-v0"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
    assert rows[-1]["charts/curriculum_level"] == 10.0  # the registered start level
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["curriculum_levels"] == [10.0]

    # Fresh envs on resume, but the curriculum goes on at the checkpoint's level.
    checkpoint["curriculum_levels"] = [44.0]
    save_checkpoint(run_dir, checkpoint)
    capsys.readouterr()
    assert train_rl.main(["--resume", str(run_dir), "--total-steps", "128"]) == 0
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
    assert rows[-1]["charts/curriculum_level"] == 44.0
    assert "level=44" in capsys.readouterr().err  # the progress bar (on by default) shows it
    assert load_checkpoint(run_dir)["curriculum_levels"] == [44.0]


def test_the_main_job_trains_on_the_curriculum_and_evaluates_on_corridor(tmp_path):
    """``python train_rl.py`` with no ``--env``: Corridor-v0 through its curriculum."""
    from agents.config import TrainConfig
    from agents.evaluate import eval_env_id

    assert TrainConfig().env == "Lethe/Corridor-Curriculum-v0"
    for env, task in [
        ("Lethe/Corridor-Curriculum-v0", "Lethe/Corridor-v0"),
        ("Lethe/Corridor-L1000-Curriculum-v0", "Lethe/Corridor-L1000-v0"),
        ("Lethe/Portal-v0", "Lethe/Portal-v0"),
        ("CartPole-v1", "CartPole-v1"),
    ]:
        assert eval_env_id(TrainConfig(env=env)) == task
        assert eval_env_id(TrainConfig(env=env, eval_env="Lethe/Corridor-S-v0")) == (
            "Lethe/Corridor-S-v0"
        )
    run_dir = tmp_path / "run"
    assert train_rl.main([*TINY, "--total-steps", "64", "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_id"] == "Lethe/Corridor-Curriculum-v0"
    assert summary["eval_env_id"] == "Lethe/Corridor-v0"


@pytest.mark.parametrize(
    ("eval_env", "needles"),
    [
        ("Lethe/NoSuchTask-v0", ["Lethe/NoSuchTask-v0", "Lethe ids"]),
        ("MiniGrid-MemoryS7-v0", ["--eval-env MiniGrid-MemoryS7-v0", "observation space"]),
    ],
)
def test_bad_eval_env_is_refused_before_training(eval_env, needles, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["--env", "Lethe/Corridor-S-v0", "--eval-env", eval_env, *TINY, "--run-dir"]
    status, err = run_cli([*args, str(run_dir), "--total-steps", "64"], capsys)
    assert_one_line_error(status, err, *needles)
    assert not (run_dir / "metrics.jsonl").exists()


def test_module_colon_id_env(tmp_path):
    """Gymnasium's module:id form imports the user's module, which registers its env."""
    package = tmp_path / "mytasks"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent("""
        import gymnasium as gym
        gym.register("MyTask-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                     max_episode_steps=50)
    """)
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train_rl.py"),
            "--env",
            "mytasks:MyTask-v0",
            *TINY,
            "--memory",
            "none",
            "--total-steps",
            "64",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["env_id"] == "mytasks:MyTask-v0"


def test_minigrid_id_with_dict_observations(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "--env",
        "MiniGrid-MemoryS7-v0",
        *TINY,
        "--memory",
        "lstm",
        "--total-steps",
        "64",
        "--run-dir",
        str(run_dir),
    ]
    assert train_rl.main(args) == 0
    assert json.loads((run_dir / "summary.json").read_text())["memory"] == "lstm"


def test_a_capacity_that_stops_spans_from_learning_is_warned_about(tmp_path):
    """Memories evicted before they reach the ramp never teach their span: one warning line
    naming the values (the run itself is valid: it just cannot learn spans)."""
    from agents.config import MemoryConfig, TrainConfig, advisories

    assert advisories(TrainConfig()) == []  # defaults: capacity 32 > 8 + 4
    stuck = TrainConfig(memory=MemoryConfig(capacity=8))  # initial span 0.125 x 64 = 8
    (message,) = advisories(stuck)
    assert "--capacity 8" in message and "8 steps" in message and "> 12" in message
    assert "\n" not in message
    assert advisories(TrainConfig(memory=MemoryConfig(kind="window", capacity=8))) == []
    # whole iterations overshooting --total-steps by more than a tenth
    (short,) = advisories(TrainConfig(total_steps=100, num_envs=8))
    assert short.startswith("--total-steps 100 rounds up") and "trains 512 steps" in short
    (ranks,) = advisories(TrainConfig(total_steps=2048, num_envs=8), world_size=8)
    assert "x 8 processes" in ranks and "trains 4,096 steps" in ranks
    # an --eval-every the run never reaches: no evaluation during training, no best.pt
    never = TrainConfig(total_steps=4 * 2048, eval_every=5)  # 4 iterations of 32 x 64
    assert advisories(never) == [
        "--eval-every 5 is more than the run's 4 iterations: no evaluation during training "
        "and no best.pt; use a smaller --eval-every"
    ]
    assert advisories(TrainConfig(total_steps=4 * 2048, eval_every=4)) == []
    result = subprocess.run(
        [sys.executable, str(Path(train_rl.__file__)), "--env", "Lethe/Corridor-S-v0"]
        + ["--capacity", "8", "--total-steps", "64", "--num-envs", "2", "--rollout-steps", "32"]
        + ["--eval-episodes", "0", "--wandb", "disabled", "--no-progress"]
        + ["--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert warned == [f"train_rl.py: warning: {message}"], result.stderr


def test_previous_action_reward_through_train_eval_heatmaps_resume_and_analyze(tmp_path, capsys):
    """``--previous-action-reward``: the policy reads them in training, evaluation, the
    retention heatmaps, after a resume (the saved config keeps the option) and in analyze."""
    from agents.analyze import main as analyze
    from agents.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    args = ["--env", "Lethe/Corridor-S-v0", *TINY, "--previous-action-reward"]
    args += ["--checkpoint-every", "1", "--heatmap-every", "1", "--run-dir", str(run_dir)]
    assert train_rl.main([*args, "--total-steps", "64"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["eval"]["episodes"] == 4
    assert list((run_dir / "retention").glob("keep_step*.png"))
    policy = load_checkpoint(run_dir)["policy"]
    assert any(key.startswith("encoder.encoders.prev_action.") for key in policy)
    assert train_rl.main(["--resume", str(run_dir), "--total-steps", "128"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["memory"]["previous_action_reward"]
    capsys.readouterr()
    assert analyze([str(run_dir), "--episodes", "1"]) == 0


def test_a_separate_critic_through_train_heatmaps_resume_and_analyze(tmp_path, capsys):
    """``--critic separate``: its own encoder and memory in the checkpoint, the pair of memory
    states through a resume with the envs' state, heatmaps and analyze of the policy's."""
    from agents.analyze import main as analyze
    from agents.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    args = ["--env", "Lethe/Corridor-S-v0", *TINY, "--critic", "separate"]
    args += ["--checkpoint-every", "1", "--heatmap-every", "1", "--run-dir", str(run_dir)]
    assert train_rl.main([*args, "--total-steps", "64"]) == 0
    assert list((run_dir / "retention").glob("keep_step*.png"))
    policy = load_checkpoint(run_dir)["policy"]
    assert any(key.startswith("critic_memory.layers.0.") for key in policy)
    assert any(key.startswith("critic_encoder.") for key in policy)
    assert train_rl.main(["--resume", str(run_dir), "--total-steps", "128"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["memory"]["critic"] == "separate"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_env_steps"] == 128 and summary["critic"] == "separate"
    assert "ppo / expire-span (separate critic)" in capsys.readouterr().out  # the final table
    assert analyze([str(run_dir), "--episodes", "1"]) == 0
    # a shared-critic run cannot take this checkpoint
    shared = ["--fork", str(run_dir), "--critic", "shared", "--total-steps", "192"]
    status, err = run_cli(shared, capsys)
    assert_one_line_error(status, err, "does not fit", "--critic shared (was separate)")


def test_env_kwargs_reach_the_env_the_evaluation_the_summary_and_analyze(tmp_path, capsys):
    """``--env-kwargs '{"slack_steps": 3}'``: Corridor-S episodes (lengths 5 to 10) end by
    step 10 + 2 + 3, in training and in the evaluation; the kwargs are the run's (config,
    summary, refused as a change on resume); ``--eval-env-kwargs`` may change on resume."""
    from agents.analyze import analyze

    run_dir = tmp_path / "run"
    slack = ["--env-kwargs", '{"slack_steps": 3}']
    args = ["--env", "Lethe/Corridor-S-v0", *TINY, *slack, "--eval-episodes", "16"]
    assert train_rl.main([*args, "--total-steps", "256", "--run-dir", str(run_dir)]) == 0
    assert 'Corridor-S-v0 {"slack_steps": 3}' in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_kwargs"] == {"slack_steps": 3} and config["eval_env_kwargs"] is None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_kwargs"] == summary["eval_env_kwargs"] == {"slack_steps": 3}
    assert summary["eval"]["mean_length"] <= 15
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    lengths = [json.loads(line)["charts/episode_length"] for line in rows]
    assert max(x for x in lengths if x is not None) <= 15
    text = analyze(run_dir, episodes=1)
    assert 'env Lethe/Corridor-S-v0 {"slack_steps": 3},' in text

    status, err = run_cli(["--resume", str(run_dir), "--env-kwargs", '{"slack_steps": 4}'], capsys)
    assert_one_line_error(status, err, '--env-kwargs {"slack_steps": 3}, not {"slack_steps": 4}')
    resumed = ["--resume", str(run_dir), "--total-steps", "320", "--eval-env-kwargs", "{}"]
    assert train_rl.main(resumed) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_kwargs"] == {"slack_steps": 3} and summary["eval_env_kwargs"] == {}
    assert summary["eval"]["mean_length"] > 15  # 4 x length + 20: untrained walks run longer


@pytest.mark.parametrize("value", [[1], {1: 2}, {"seed_fn": object()}])
def test_env_kwargs_from_python_are_checked_too(value):
    """Through the Python API: a dict with string keys that JSON can hold (config.json)."""
    from agents.config import ConfigError, TrainConfig, validate

    with pytest.raises(ConfigError, match="--eval-env-kwargs must be a JSON object"):
        validate(TrainConfig(eval_env_kwargs=value))
    with pytest.raises(ConfigError, match="--env-kwargs must be a JSON object"):
        validate(TrainConfig(env_kwargs=value))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"num_envs": "4"}, "--num-envs (TrainConfig.num_envs) must be of type int, got str '4'"),
        ({"num_envs": 4.5}, "--num-envs (TrainConfig.num_envs) must be of type int, got float"),
        ({"total_steps": None}, "--total-steps (TrainConfig.total_steps) must be of type int"),
        ({"threads": True}, "--threads (TrainConfig.threads) must be of type int, got bool"),
        ({"seed": "3"}, "--seed (TrainConfig.seed) must be of type int, got str '3'"),
        ({"memory": "gru"}, "TrainConfig.memory must be an agents.MemoryConfig, got str 'gru'"),
        ({"algo": "a2c"}, "TrainConfig.algo must be an agents.AlgoConfig, got str 'a2c'"),
        ({"seed": -1}, "--seed must be in [0, 2**62), got -1"),
        ({"seed": 2**64 - 1}, "--seed must be in [0, 2**62), got 18446744073709551615"),
    ],
)
def test_python_api_values_of_the_wrong_type_or_range_are_config_errors(change, needle):
    """Through the Python API nothing checks types on the way in: `validate` does, naming the
    option and the field (argparse does it on the command line)."""
    from agents.config import ConfigError, TrainConfig, validate

    with pytest.raises(ConfigError) as error:
        validate(TrainConfig(**change))
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_the_memory_and_algo_sections_are_type_checked_too():
    from agents.config import AlgoConfig, ConfigError, MemoryConfig, TrainConfig, validate

    for section, cls, key, value in (
        ("memory", MemoryConfig, "capacity", 16.0),
        ("algo", AlgoConfig, "learning_rate", "1e-3"),
        ("algo", AlgoConfig, "anneal_lr", "no"),  # a str would pass for true
    ):
        with pytest.raises(ConfigError, match=rf"\({cls.__name__}\.{key}\) must be of type"):
            validate(TrainConfig(**{section: cls(**{key: value})}))
    validate(TrainConfig(algo=AlgoConfig(learning_rate=1)))  # an int where a float goes


def test_train_refuses_what_is_not_a_config_before_anything_runs(tmp_path, monkeypatch):
    from agents import ConfigError, train

    monkeypatch.chdir(tmp_path)
    for wrong in ({"env": "Lethe/Corridor-S-v0"}, "Lethe/Corridor-S-v0"):
        with pytest.raises(ConfigError, match="the config must be an agents.TrainConfig, got"):
            train(wrong)
    assert list(tmp_path.iterdir()) == []


def test_a_run_dir_that_cannot_be_a_directory_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    args = ["--env", "Lethe/Corridor-S-v0", *TINY, "--total-steps", "64"]
    status, err = run_cli([*args, "--run-dir", str(a_file)], capsys)
    assert_one_line_error(status, err, f"--run-dir {a_file} is a file; allowed: a directory")
    status, err = run_cli([*args, "--run-dir", str(a_file / "run")], capsys)
    assert_one_line_error(status, err, f"{a_file} is a file, not a directory")
    assert a_file.read_text() == "precious" and sorted(tmp_path.iterdir()) == [a_file]


def test_python_resume_finds_the_default_run_dir(tmp_path, monkeypatch):
    """``train(config, resume=True)``, as the "already exists" error says, without a run_dir:
    the run in the directory a run of `config` writes to by default; what a resume changes
    comes in `overrides`."""
    from agents import ConfigError, TrainConfig, train

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(env="Lethe/Corridor-S-v0", total_steps=64, eval_episodes=1)
    config.num_envs, config.algo.rollout_steps, config.wandb = 2, 32, "disabled"
    config.memory.width, config.memory.layers = 8, 1
    first = train(copy.deepcopy(config), progress=False)
    with pytest.raises(ConfigError, match="train\\(config, resume=True\\)"):
        train(copy.deepcopy(config), progress=False)
    resumed = train(
        copy.deepcopy(config), resume=True, overrides={"total_steps": 128}, progress=False
    )
    assert resumed["run_dir"] == first["run_dir"] and resumed["total_env_steps"] == 128


def test_the_installed_command_names_itself_in_usage_errors_and_hints(monkeypatch) -> None:
    """`pip install` puts the CLI on the PATH as `lethe-train`: what it prints says so."""
    from agents.cli import command, relaunch

    script = Path(sys.executable).with_name("lethe-train")
    if not script.exists():
        pytest.skip("lethe-train is not installed in this environment (pip install -e .)")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)

    shown = run("--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: lethe-train "), shown.stdout[:200]
    bad = run("--algo", "dqn")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("lethe-train: error:"), bad.stderr
    missing = run("analyze", "no/such/run")
    assert missing.returncode == 2
    assert missing.stderr.startswith("lethe-train analyze: error:"), missing.stderr
    # The resume hint after a signal: the command the user typed.
    monkeypatch.setattr(sys, "argv", [str(script), "--total-steps", "1"])
    assert command() == relaunch(False) == "lethe-train"
    # torchrun starts Python scripts: the installed command needs --no-python.
    assert relaunch(True) == "torchrun --nproc_per_node ... --no-python lethe-train"
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train_rl.py")])
    assert command() == relaunch(False) == "python train_rl.py"
    assert relaunch(True) == "torchrun --nproc_per_node ... train_rl.py"
