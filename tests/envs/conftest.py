"""Shared helpers of the environment tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers Lethe/*)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The twins work on small tensors: one thread avoids contention on small CI machines.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def lockstep():
    """The ``run_lockstep`` helper (a fixture, so test modules need not import conftest)."""
    return run_lockstep


def run_lockstep(make_single, twin, draw_layout, num_steps, rng, action_probs=None):
    """Step one MiniGrid env per column and the twin with the same actions and layouts,
    handling NEXT_STEP autoreset on the MiniGrid side by hand, and assert every output is
    equal. Returns the number of episodes started and a list of events seen."""
    n = twin.num_envs
    singles = [make_single() for _ in range(n)]
    layouts = [draw_layout(rng) for _ in range(n)]
    options = {k: np.stack([np.asarray(lay[k]) for lay in layouts]) for k in layouts[0]}
    twin_obs, twin_info = twin.reset(options=options)
    needs_reset = [False] * n
    episodes, seen_events = n, []
    for i, single in enumerate(singles):
        obs, info = single.reset(options=layouts[i])
        np.testing.assert_array_equal(obs, twin_obs[i].numpy())
        assert info["event"] == int(twin_info["event"][i])
    for step in range(num_steps):
        actions = rng.choice(3, n, p=action_probs)
        next_layouts = [draw_layout(rng) for _ in range(n)]
        twin.set_next_layouts(
            **{k: np.stack([np.asarray(lay[k]) for lay in next_layouts]) for k in layouts[0]}
        )
        obs_t, rew_t, term_t, trunc_t, info_t = twin.step(torch.as_tensor(actions))
        for i, single in enumerate(singles):
            if needs_reset[i]:
                obs, info = single.reset(options=next_layouts[i])
                reward, terminated, truncated = 0.0, False, False
                episodes += 1
            else:
                obs, reward, terminated, truncated, info = single.step(int(actions[i]))
            needs_reset[i] = terminated or truncated
            where = f"step {step}, env {i}"
            np.testing.assert_array_equal(obs, obs_t[i].numpy(), err_msg=where)
            assert np.float32(reward) == rew_t[i].item(), where
            assert terminated == bool(term_t[i]) and truncated == bool(trunc_t[i]), where
            assert info["event"] == int(info_t["event"][i]), where
            seen_events.append(info["event"])
            for key in twin.final_info_keys:
                assert bool(info_t["_" + key][i]) == needs_reset[i], where
                if needs_reset[i]:
                    assert info[key] == info_t[key][i].item(), (where, key)
    return episodes, seen_events
