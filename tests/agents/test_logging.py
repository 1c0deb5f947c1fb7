"""agents/logging.py: metrics.jsonl and W&B (offline, disabled, or failing to start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from test_retention import CPU, ENV, make_policy
from wandb_records import check_media_in_offline_run

from agents.logging import RunLogger
from agents.retention import retention_snapshot


def test_runlogger_offline_wandb_holds_images_and_histograms(tmp_path: Path) -> None:
    policy = make_policy(kind="expire-span")
    logger = RunLogger(tmp_path, {"memory": "expire-span"}, "offline", "lethe-test")
    assert logger.wandb_run is not None
    images, histograms = retention_snapshot(policy, ENV, CPU, tmp_path / "retention", 64, 1)
    logger.log(1, 64, {"charts/episodic_return": 0.0})
    logger.log_media(64, images, histograms)
    logger.close()
    check_media_in_offline_run(tmp_path, step=64)
    assert sorted(p.suffix for p in (tmp_path / "retention").iterdir()) == [".npz", ".png", ".png"]


def test_runlogger_start_says_nothing_about_llm_tracing(tmp_path: Path) -> None:
    """W&B mistakes the package `agents` for the OpenAI Agents SDK and, once per process,
    advertises its LLM tracer (Weave) on the terminal; a fresh process shows it is off."""
    code = (
        "import sys; from pathlib import Path; from agents.logging import RunLogger; "
        "RunLogger(Path(sys.argv[1]), {}, 'offline', 'lethe-test').close()"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_DISABLE_WEAVE"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Weave" not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize("how", ["disabled", "import fails"])
def test_runlogger_without_wandb_keeps_everything_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "import fails":
        monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = RunLogger(tmp_path, {}, "disabled" if how == "disabled" else "offline", "t")
        images, histograms = retention_snapshot(
            make_policy(kind="window", window=4), ENV, CPU, tmp_path / "retention", 8, 1
        )
        logger.log(1, 8, {"memory/live_layer0": 4.0})
        logger.log_media(8, images, histograms)
        logger.close()
    ours = [w for w in caught if "W&B" in str(w.message)]
    assert len(ours) == (1 if how == "import fails" else 0), [str(w.message) for w in caught]
    assert all(path.is_file() for path in images.values())
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["memory/live_layer0"] == 4.0
    assert not (tmp_path / "wandb").exists()


def test_scalars_reach_wandb_at_the_env_step_and_disk_as_strict_json(tmp_path: Path) -> None:
    """W&B's x axis is the env step (``_step``), not the iteration; a NaN (no episode ended)
    is ``null`` in metrics.jsonl, which strict JSON readers accept, and numpy scalars are
    plain numbers."""
    import numpy as np
    from wandb_records import wandb_history

    logger = RunLogger(tmp_path, {}, "offline", "lethe-test")
    logger.log(1, 64, {"charts/episodic_return": float("nan"), "losses/kl": np.float32(0.5)})
    logger.log(2, 128, {"charts/episodic_return": 1.0, "losses/kl": np.float64(0.25)})
    logger.close()

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=refuse) for line in lines]
    assert [r["charts/episodic_return"] for r in rows] == [None, 1.0]
    assert [r["losses/kl"] for r in rows] == [0.5, 0.25]
    assert [(r["iteration"], r["global_step"]) for r in rows] == [(1, 64), (2, 128)]
    history = [r for r in wandb_history(tmp_path) if "losses/kl" in r]
    assert [r["_step"] for r in history] == [64, 128]


# ---- which W&B mode --wandb auto picks ------------------------------------------------------
@pytest.fixture
def no_wandb_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No W&B key in the environment, no WANDB_MODE, and a home whose .netrc is this test's."""
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".netrc"


def write_netrc(path: Path, machine: str) -> None:
    path.write_text(f"machine {machine}\n  login user\n  password 0123456789abcdef\n")
    path.chmod(0o600)  # netrc refuses a password file others can read


def test_auto_is_offline_without_a_login(no_wandb_login: Path) -> None:
    from agents.logging import resolve_wandb_mode, wandb_logged_in

    assert not wandb_logged_in() and resolve_wandb_mode("auto") == "offline"
    write_netrc(no_wandb_login, "github.com")  # another host's login is not W&B's
    assert not wandb_logged_in() and resolve_wandb_mode("auto") == "offline"


def test_auto_is_online_with_a_key_or_a_netrc_login(
    no_wandb_login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.logging import resolve_wandb_mode

    write_netrc(no_wandb_login, "api.wandb.ai")  # what `wandb login` writes
    assert resolve_wandb_mode("auto") == "online"
    no_wandb_login.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert resolve_wandb_mode("auto") == "online"


@pytest.mark.parametrize("mode", ["offline", "online", "disabled"])
def test_auto_follows_the_user_s_wandb_mode_and_explicit_modes_win(
    no_wandb_login: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    from agents.logging import resolve_wandb_mode

    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    monkeypatch.setenv("WANDB_MODE", mode)
    assert resolve_wandb_mode("auto") == mode
    assert resolve_wandb_mode("offline") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"


# ---- resume: metrics.jsonl cut back, the same W&B run continued -------------------------------
@pytest.mark.parametrize("resume_iteration", [0, 2, 3])
def test_resume_cuts_metrics_back_to_the_checkpoint_and_drops_a_half_written_line(
    tmp_path: Path, resume_iteration: int
) -> None:
    """A kill can leave iterations after the checkpoint and a last line cut short; a resume
    from iteration k keeps exactly the lines of iterations 1..k (none for a checkpoint
    written before the first iteration ended)."""
    lines = [json.dumps({"iteration": i, "global_step": 64 * i}) for i in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 4, "glo')
    RunLogger(tmp_path, {}, "disabled", "t", resume_iteration=resume_iteration).close()
    kept = (tmp_path / "metrics.jsonl").read_text()
    assert kept == "".join(line + "\n" for line in lines[:resume_iteration])


def test_resume_continues_the_same_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B is asked to continue the checkpoint's run id (``resume="allow"``: or start it, if
    it never reached W&B), not to start a fresh run; a new run gets W&B's own id."""
    import wandb

    calls = []
    real_init = wandb.init

    def recording_init(*args, **kwargs):
        calls.append(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    first = RunLogger(tmp_path, {}, "offline", "lethe-test")
    run_id = first.run_id
    first.close()
    RunLogger(tmp_path, {}, "offline", "lethe-test", run_id=run_id, resume_iteration=0).close()
    assert (calls[0]["id"], calls[0]["resume"]) == (None, None)
    assert (calls[1]["id"], calls[1]["resume"]) == (run_id, "allow")


def test_the_final_evaluation_reaches_the_wandb_run_summary(tmp_path: Path) -> None:
    from wandb_records import read_wandb_records

    logger = RunLogger(tmp_path, {}, "offline", "lethe-test")
    logger.summary(
        {"env_id": "Lethe/Corridor-v0", "total_env_steps": 128, "eval": {"success_rate": 0.75}}
    )
    logger.close()
    summary = {}
    for record in read_wandb_records(tmp_path):
        if record.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in record.summary.update})
    assert summary["eval/success_rate"] == 0.75 and summary["total_env_steps"] == 128
    assert summary["env_id"] == "Lethe/Corridor-v0"
