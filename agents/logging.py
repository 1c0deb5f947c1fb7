"""Where a run's numbers go: ``RUN_DIR/metrics.jsonl`` always, W&B when it is available.

W&B is optional at run time: ``auto`` picks ``online`` when the user is logged in (an API key
in the environment or in ``~/.netrc``) and ``offline`` otherwise, so there is never a login
prompt or a hang without network. If W&B cannot start (not installed, disabled, no network),
training goes on and logs to disk, after one warning.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def wandb_logged_in() -> bool:
    """Whether W&B has credentials on this machine, found without any network access."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return auth is not None


def resolve_wandb_mode(requested: str) -> str:
    """``auto`` -> the user's ``WANDB_MODE`` if set, else online when logged in, else offline."""
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "")
    if env_mode in ("offline", "online", "disabled"):
        return env_mode
    return "online" if wandb_logged_in() else "offline"


def _plain(value: Any) -> Any:
    """JSON-safe scalars: non-finite floats become null."""
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Scalars to ``metrics.jsonl`` and W&B; pictures and histograms to W&B.

    On resume, `metrics.jsonl` is cut back to the checkpoint's iteration, so the file of a run
    that was killed and resumed has each iteration exactly once.
    """

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        wandb_mode: str,
        project: str,
        run_id: str | None = None,
        resume_iteration: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if resume_iteration is not None:
            self._truncate_metrics(resume_iteration)
        self.wandb_run = None
        self.run_id = run_id
        mode = resolve_wandb_mode(wandb_mode)
        self.wandb_mode = mode
        if mode != "disabled":
            self._start_wandb(config, mode, project, run_id)

    def _truncate_metrics(self, iteration: int) -> None:
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _start_wandb(
        self, config: dict[str, Any], mode: str, project: str, run_id: str | None
    ) -> None:
        # W&B takes our top-level package `agents` for the OpenAI Agents SDK and suggests its
        # LLM tracer (Weave) at every start; its documented switch turns that off (a user's
        # own WANDB_DISABLE_WEAVE wins).
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        try:
            import wandb

            self.wandb_run = wandb.init(
                project=project,
                dir=str(self.run_dir),
                config=config,
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                name=self.run_dir.name,
                settings=wandb.Settings(silent=True, init_timeout=60, console="off"),
            )
            self.run_id = self.wandb_run.id
        except Exception as error:  # noqa: BLE001 - any W&B failure must not stop training
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            warnings.warn(
                f"W&B could not start ({reason}); logging to {self.run_dir} only",
                stacklevel=2,
            )
            self.wandb_run = None

    def log(self, iteration: int, global_step: int, metrics: dict[str, float]) -> None:
        """One iteration's scalars."""
        record = {"iteration": iteration, "global_step": global_step}
        record.update({k: _plain(v) for k, v in metrics.items()})
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self._wandb_call(self.wandb_run.log, metrics, step=global_step)

    def log_media(
        self, global_step: int, images: dict[str, Path], histograms: dict[str, np.ndarray]
    ) -> None:
        """PNG files and value arrays (already written to disk by the caller) to W&B."""
        if self.wandb_run is None:
            return
        import wandb

        payload: dict[str, Any] = {k: wandb.Image(str(p)) for k, p in images.items()}
        payload.update(
            {k: wandb.Histogram(np.asarray(v)) for k, v in histograms.items() if np.size(v) > 0}
        )
        self._wandb_call(self.wandb_run.log, payload, step=global_step)

    def summary(self, summary: dict[str, Any]) -> None:
        """The run's final summary, to W&B's run summary."""
        if self.wandb_run is not None:
            flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
            flat.update({f"eval/{k}": v for k, v in summary.get("eval", {}).items()})
            self._wandb_call(self.wandb_run.summary.update, flat)

    def _wandb_call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a W&B failure mid-run: carry on on disk
            warnings.warn(f"W&B logging failed ({error}); logging to disk only", stacklevel=3)
            self.wandb_run = None

    def close(self) -> None:
        if self.wandb_run is not None:
            self._wandb_call(self.wandb_run.finish)
            self.wandb_run = None
