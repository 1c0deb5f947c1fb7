"""agents/checkpoint.py: what a checkpoint file must hold to be used, said in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from agents.config import ConfigError

#: what --resume needs of checkpoint.pt (and a kept policy's best.pt, with its score)
RUN = {"config": {}, "iteration": 3, "global_step": 384, "policy": {}, "optimizer": {}}
BEST = {"config": {}, "iteration": 3, "global_step": 384, "policy": {}, "score": 0.5}


@pytest.mark.parametrize(("name", "payload"), [(CHECKPOINT_NAME, RUN), (BEST_NAME, BEST)])
def test_a_whole_checkpoint_round_trips(tmp_path: Path, name: str, payload: dict) -> None:
    path = save_checkpoint(tmp_path, {**payload, "policy": {"w": torch.ones(2)}}, name)
    assert path == tmp_path / name and not path.with_suffix(".pt.tmp").exists()
    loaded = load_checkpoint(tmp_path, name)
    assert loaded["global_step"] == 384 and torch.equal(loaded["policy"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("name", "payload", "missing"),
    [(CHECKPOINT_NAME, RUN, key) for key in RUN] + [(BEST_NAME, BEST, key) for key in BEST],
)
def test_a_checkpoint_missing_a_key_is_refused_in_one_line(
    tmp_path: Path, name: str, payload: dict, missing: str
) -> None:
    """A file torch can read but that lacks what a resume (or a kept policy) needs fails at
    load, naming the file, not later with a KeyError from deep in the trainer."""
    torch.save({k: v for k, v in payload.items() if k != missing}, tmp_path / name)
    with pytest.raises(
        ConfigError, match=rf"^--resume {tmp_path}: {name} is not a Lethe checkpoint$"
    ):
        load_checkpoint(tmp_path, name)


def test_something_else_torch_saved_is_refused(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ConfigError, match=rf"^--fork {tmp_path}: checkpoint.pt is not a Lethe"):
        load_checkpoint(tmp_path, flag="--fork")


def test_a_mismatch_is_torchs_first_reason_cut_short():
    from agents.checkpoint import mismatch_reason

    small, large = torch.nn.Linear(2, 3), torch.nn.Sequential(*[torch.nn.Linear(2, 2)] * 40)
    with pytest.raises(RuntimeError) as error:
        small.load_state_dict(torch.nn.Linear(2, 4).state_dict())
    assert mismatch_reason(error.value).startswith("size mismatch for weight: copying a param")
    with pytest.raises(RuntimeError) as error:
        large.load_state_dict(small.state_dict())
    reason = mismatch_reason(error.value)  # 80 missing keys: the line cut at 200 characters
    assert reason.startswith('Missing key(s) in state_dict: "0.weight"') and len(reason) == 200
    assert reason.endswith("...") and "\n" not in reason
