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
