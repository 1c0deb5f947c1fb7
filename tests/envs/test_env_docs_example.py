"""The worked example of docs/new_environment.md runs, and its twin equals its MiniGrid class."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium
import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "new_environment.md"


def _run_example() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {"__name__": "docs_example"}
    if "MyTasks/Hallway-v0" in gymnasium.registry:
        del gymnasium.registry["MyTasks/Hallway-v0"]
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # its own asserts must pass
    return namespace


def test_docs_example_runs_and_twin_matches(lockstep):
    ns = _run_example()
    twin = ns["HallwayVectorEnv"](6, length=5, max_steps=9)
    episodes, _ = lockstep(
        lambda: ns["HallwayEnv"](length=5, max_steps=9),
        twin,
        lambda rng: {},
        60,
        np.random.default_rng(0),
        action_probs=[0.2, 0.2, 0.6],
    )
    assert episodes > 6
    del gymnasium.registry["MyTasks/Hallway-v0"]
