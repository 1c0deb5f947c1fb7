"""Checkpoints that survive a kill at any moment: temporary file, fsync, atomic rename."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from agents.config import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"
#: the policy that scored best in the evaluations during training (``--eval-every``)
BEST_NAME = "best.pt"


def save_checkpoint(run_dir: Path, payload: dict[str, Any], name: str = CHECKPOINT_NAME) -> Path:
    """Write `payload` to ``run_dir/name`` (default ``checkpoint.pt``) atomically.

    The previous checkpoint stays in place until the new one is whole on disk: the data goes
    to a temporary file, is flushed and fsynced, and only then renamed over the old one.
    """
    path = Path(run_dir) / name
    tmp = path.with_suffix(".pt.tmp")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return path


def load_checkpoint(
    run_dir: Path, name: str = CHECKPOINT_NAME, flag: str = "--resume"
) -> dict[str, Any]:
    """Read ``run_dir/name``, or raise `ConfigError` saying why it cannot be used.

    ``checkpoint.pt`` (the default) must hold what `--resume` needs; ``best.pt`` the policy,
    its config and when it was taken. ``flag``: the option the errors name (``--fork``).
    """
    path = Path(run_dir) / name
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{flag} {run_dir}: no such run directory")
    if not path.is_file():
        if name == BEST_NAME:
            raise ConfigError(
                f"{flag} {run_dir}: no {name} in it (it is written by runs with --eval-every)"
            )
        raise ConfigError(f"{flag} {run_dir}: no {name} in it (nothing to start from)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as error:
        raise ConfigError(
            f"{flag} {run_dir}: {name} is corrupt or truncated ({type(error).__name__})"
        ) from None
    required = {"config", "iteration", "global_step", "policy"}
    required.add("optimizer" if name == CHECKPOINT_NAME else "score")
    if not isinstance(payload, dict) or not required <= payload.keys():
        raise ConfigError(f"{flag} {run_dir}: {name} is not a Lethe checkpoint")
    return payload


def mismatch_reason(error: RuntimeError, limit: int = 200) -> str:
    """Why ``load_state_dict`` refused a checkpoint, in one short line: the first of torch's
    reasons (``size mismatch for ...``, ``Missing key(s) in state_dict: ...``), cut at
    `limit` characters (a list of missing keys alone can run to thousands)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
