"""Shared helpers for the memory tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests may pin torch to one thread (timing under a loaded CI box); undo it after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
