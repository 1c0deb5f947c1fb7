"""On CUDA the twins give what they give on the CPU: same layouts, same actions, same outputs.

Layouts are injected (drawn on the CPU), so the devices' different random streams do not
matter; the CUDA twin takes its sync-free reset path, the CPU twin its sparse one.
"""

from __future__ import annotations

import pytest
import torch

from envs.corridor import CorridorVectorEnv
from envs.portal import PortalVectorEnv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

N = 64


@pytest.mark.parametrize(
    "make",
    [
        lambda device: CorridorVectorEnv(N, min_length=1, max_length=6, device=device),
        lambda device: PortalVectorEnv(
            N, num_rooms=3, hallway_length=1, max_steps=30, device=device
        ),
    ],
    ids=["corridor", "portal"],
)
def test_cuda_twin_equals_cpu_twin(make) -> None:
    cpu, gpu, injector = make("cpu"), make("cuda"), make("cpu")
    assert not gpu.sparse_reset  # the path without host synchronisation
    injector.reset(seed=0)
    options = injector._draw_layouts()
    (obs_c, info_c), (obs_g, info_g) = cpu.reset(options=options), gpu.reset(options=options)
    assert torch.equal(obs_c, obs_g.cpu()) and torch.equal(info_c["event"], info_g["event"].cpu())
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.2, 0.2, 0.6])
    episodes = 0
    for step in range(200):
        actions = torch.multinomial(probs, N, replacement=True, generator=gen)
        options = injector._draw_layouts()
        cpu.set_next_layouts(**options)
        gpu.set_next_layouts(**options)
        out_c, out_g = cpu.step(actions), gpu.step(actions.cuda())
        for a, b in zip(out_c[:4], out_g[:4], strict=True):
            assert torch.equal(a, b.cpu()), step
        assert out_c[4].keys() == out_g[4].keys()
        for key in out_c[4]:
            assert torch.equal(out_c[4][key], out_g[4][key].cpu()), (step, key)
        episodes += int(out_c[4]["_episode_length"].sum())
    assert episodes >= N


@pytest.mark.parametrize(
    "env_id",
    [
        "Lethe/Corridor-v0",
        "Lethe/Portal-v0",
        "Lethe/Corridor-L100-Curriculum-v0",
        "Lethe/Portal-Curriculum-v0",
    ],
)
def test_cuda_twin_steps_without_host_synchronisation(env_id: str) -> None:
    """Stepping (auto-resets included) never waits on the GPU: CUDA's sync debug mode turns
    any host round-trip (``.item()``, ``nonzero``, a copy to the host) into an error."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers Lethe/*)

    vec = gym.make_vec(env_id, num_envs=N, vectorization_mode="vector_entry_point", device="cuda")
    vec.reset(seed=0)
    actions = torch.randint(0, 3, (300, N), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(300):
            vec.step(actions[step])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    vec.close()
