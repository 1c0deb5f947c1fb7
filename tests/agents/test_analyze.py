"""``train_rl.py analyze``: report and heatmaps of a trained checkpoint; one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_run import train_tiny

from agents.analyze import main

ENV = "Lethe/Corridor-S-v0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("analyze") / "run")


def test_analyze_writes_report_and_heatmaps(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(trained), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    analysis = trained / "analysis"
    report = (analysis / "report.txt").read_text()
    assert report in out
    for needle in ("memory expire-span", "Layer 0", "Layer 1", "cue_visible", "kept longest"):
        assert needle in report, needle
    for layer in report.split("Layer ")[1:]:  # the legend of "never stored" only with counts
        assert ("(never stored:" in layer) == (" never stored)" in layer), layer
    for episode in range(2):
        for name in (f"keep_episode{episode}.png", f"spans_episode{episode}.png"):
            assert (analysis / name).read_bytes()[:4] == b"\x89PNG"
        assert (analysis / f"retention_episode{episode}.npz").is_file()
    assert not (analysis / "keep_episode2.png").exists()


def test_analyze_window_run_with_env_and_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_tiny(tmp_path / "window", kind="window")
    args = [str(run), "--episodes", "1", "--env", "Lethe/Corridor-v0", "--device", "cpu"]
    assert main(args) == 0
    assert "memory window, env Lethe/Corridor-v0" in capsys.readouterr().out


def test_analyze_plays_with_env_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--env-kwargs`` reach the env it plays: with a slack of 1 step on Corridor-S (lengths 5
    to 10) every tracked episode ends within 13 steps."""
    run = train_tiny(tmp_path / "window", kind="window")
    args = [str(run), "--episodes", "3", "--env", "Lethe/Corridor-S-v0"]
    assert main([*args, "--env-kwargs", '{"slack_steps": 1}']) == 0
    assert 'env Lethe/Corridor-S-v0 {"slack_steps": 1},' in capsys.readouterr().out
    for episode in range(3):
        arrays = np.load(run / "analysis" / f"retention_episode{episode}.npz")
        assert arrays["events"].shape[-1] <= 14  # 13 steps, and the final observation
    assert main([*args, "--env-kwargs", '{"slack": 1}']) == 2
    assert "refused the keyword arguments" in one_line_error(capsys)
    assert main([*args, "--env-kwargs", "slack=1"]) == 2
    assert "--env-kwargs" in one_line_error(capsys)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_bad_run_dirs_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in one_line_error(capsys)

    assert main([str(tmp_path)]) == 2
    assert "no checkpoint.pt" in one_line_error(capsys)

    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    assert main([str(tmp_path)]) == 2
    assert "corrupt" in one_line_error(capsys)


def test_bad_options_exit_2_in_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(trained), "--episodes", "zero"]) == 2
    assert "--episodes" in one_line_error(capsys)
    assert main([str(trained), "--episodes", "0"]) == 2
    assert "--episodes" in one_line_error(capsys)
    assert main([str(trained), "--env", "Lethe/Nope-v0"]) == 2
    assert "unknown env id" in one_line_error(capsys)
    assert main([str(trained), "--device", "tpu"]) == 2
    one_line_error(capsys)

    gru = train_tiny(tmp_path / "gru", kind="gru")
    assert main([str(gru)]) == 2
    assert "keeps no per-observation memories" in one_line_error(capsys)


def test_analyze_plays_the_seeds_and_steps_it_is_given(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seed 5 --episodes 2`` plays seeds 5 and 6; ``--max-steps 3`` cuts each episode
    after 3 steps (the untrained policy's episodes are far longer)."""
    assert main([str(trained), "--episodes", "2", "--seed", "5", "--max-steps", "3"]) == 0
    assert "2 episode(s), seeds 5..6, lengths 3, 3 (mean 3.0) steps" in capsys.readouterr().out
    for episode, seed in enumerate((5, 6)):
        arrays = np.load(trained / "analysis" / f"retention_episode{episode}.npz")
        assert int(arrays["seed"]) == seed and arrays["events"].shape == (3,)
    assert main([str(trained), "--max-steps", "0"]) == 2
    assert "--max-steps must be a positive integer, got 0" in one_line_error(capsys)


def test_report_by_hand() -> None:
    """The report of three hand-made episodes (one layer): spans by event over the stored
    observations, their ratio to steps without an event, the never-stored count, and the
    observations kept longest, "still kept at the episode end" only before the last step."""
    from agents.analyze import report
    from agents.retention import EpisodeRetention

    def episode(seed: int, keep: list, span: list, events: list) -> EpisodeRetention:
        n = len(events)
        return EpisodeRetention(
            "expire-span",
            np.asarray(keep, np.float32)[None],
            np.asarray([span], np.float32),
            np.asarray(events),
            np.full(n, -1),
            4.0,
            seed,
            ENV,
        )

    # episode 0: the cue (event 1) kept to the end; step 1 dropped at once; step 2 kept from
    # step 3, the last; step 3 (event 5, the correct arm) is the last step itself.
    first = episode(
        11, [[1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], [12, 2, 4, 6], [1, 0, 0, 5]
    )
    # episodes 1 and 2: step 0 never stored (NaN span), step 1 the last
    rest = [episode(seed, [[1, 0], [0, 1]], [np.nan, 3], [0, 0]) for seed in (12, 13)]
    assert report([first, *rest], ["header"]) == (
        "header\n"
        "3 episode(s), seeds 11..13, lengths 4, 2, 2 (mean 2.7) steps\n"
        "\n"
        "Layer 0\n"
        "  mean predicted span of the stored observations (n), by their step's event\n"
        "  (never stored: dropped on arrival by the capacity, or a span < 1 step)\n"
        "    none              n=4      span       3.0 (2 never stored)\n"
        "    correct_arm       n=1      span       6.0  (2.00x steps without an event)\n"
        "    cue_visible       n=1      span      12.0  (4.00x steps without an event)\n"
        "  kept longest (steps in memory after its own step):\n"
        "    1. episode 0 step 0     cue_visible       kept 3 steps, still kept at the episode "
        "end (span 12.0)\n"
        "    2. episode 0 step 2     none              kept 1 steps, still kept at the episode "
        "end (span 4.0)\n"
        "    3. episode 0 step 3     correct_arm       kept 0 steps (span 6.0)\n"
        "    4. episode 1 step 1     none              kept 0 steps (span 3.0)\n"
        "    5. episode 2 step 1     none              kept 0 steps (span 3.0)\n"
        "    6. episode 0 step 1     none              kept 0 steps (span 2.0)\n"
        "    7. episode 1 step 0     none              kept 0 steps (span nan)\n"
        "    8. episode 2 step 0     none              kept 0 steps (span nan)\n"
    )
