"""benchmarks/{train,env,distributed}_throughput.py and memory_scaling.py: the rates and ratios
their tables print, on fake clocks and fake runs (the real measurements take minutes)."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_scripts import load_script


class Clock:
    """A fake ``time`` module: ``perf_counter`` reads ``now``, which the fakes move."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def table_line(printed: str, start: str) -> str:
    (line,) = [line for line in printed.splitlines() if line.startswith(start)]
    return line


# train_throughput.py


def test_recurrent_ppo_rate_counts_the_steps_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    """RecurrentPPO finishes its rollout (8 envs x 128 steps): its rate counts those steps."""
    import sb3_contrib

    script = load_script("train_throughput.py")
    clock = Clock()

    class FakeRecurrentPPO:
        def __init__(self, policy, env, n_steps, batch_size, **kwargs) -> None:
            self.rollout = n_steps * env.num_envs
            self.num_timesteps = 0

        def set_logger(self, logger) -> None:
            pass

        def learn(self, total_timesteps: int) -> None:
            self.num_timesteps = math.ceil(total_timesteps / self.rollout) * self.rollout
            clock.now += 2.0

    monkeypatch.setattr(sb3_contrib, "RecurrentPPO", FakeRecurrentPPO)
    monkeypatch.setattr(script, "time", clock)
    assert script.recurrent_ppo_steps_per_second(64, "cpu") == 1024 / 2.0


def test_train_throughput_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--lethe-configs`` reads envs x rollout steps / minibatches; each row's ratio is its rate
    over RecurrentPPO's."""
    script = load_script("train_throughput.py")
    calls = []

    def lethe(memory, num_envs, rollout_steps, minibatches, steps, device) -> float:
        calls.append((memory, num_envs, rollout_steps, minibatches, steps, device))
        return 250.0 if num_envs == 32 else 1000.0

    monkeypatch.setattr(script, "lethe_steps_per_second", lethe)
    monkeypatch.setattr(script, "recurrent_ppo_steps_per_second", lambda steps, device: 100.0)
    argv = ["--memories", "gru", "--lethe-configs", "32x64/8,256x128/4", "--lethe-steps", "999"]
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", *argv])
    script.main()
    assert calls == [("gru", 32, 64, 8, 999, "cpu"), ("gru", 256, 128, 4, 999, "cpu")]
    printed = capsys.readouterr().out
    assert table_line(printed, "| sb3-contrib").endswith("|        100 |            1.0x |")
    small = table_line(printed, "| Lethe PPO gru, 32 envs x 64, 8 mb")
    assert small.endswith("|        250 |            2.5x |")
    large = table_line(printed, "| Lethe PPO gru, 256 envs x 128, 4 mb")
    assert large.endswith("|      1,000 |           10.0x |")


# env_throughput.py


class FakeVectorEnv:
    """Takes 1 ms of the fake clock per env step: 1,000 env steps per second."""

    def __init__(self, clock: Clock, num_envs: int) -> None:
        self.clock, self.num_envs = clock, num_envs

    def reset(self, seed: int) -> None:
        pass

    def step(self, actions) -> None:
        assert len(actions) == self.num_envs
        self.clock.now += len(actions) / 1000

    def close(self) -> None:
        pass


@pytest.mark.parametrize("num_envs", [4, 7])
def test_env_throughput_rates_are_env_steps_per_second(
    monkeypatch: pytest.MonkeyPatch, num_envs: int
) -> None:
    script = load_script("env_throughput.py")
    clock = Clock()
    monkeypatch.setattr(script, "time", clock)
    fake = lambda env_id, num_envs, **kwargs: FakeVectorEnv(clock, num_envs)  # noqa: E731
    monkeypatch.setattr(script.gym, "make_vec", fake)
    minigrid = script.minigrid_steps_per_second("Lethe/Corridor-v0", num_envs, 0.5)
    assert minigrid == pytest.approx(1000.0)
    twin = script.twin_steps_per_second("Lethe/Corridor-v0", num_envs, "cpu", 0.5, False)
    assert twin == pytest.approx(1000.0)


def test_env_throughput_waits_for_any_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cuda:1`` is waited for as ``cuda`` is (else the clock stops before the work ends)."""
    script = load_script("env_throughput.py")
    waited: list[str] = []
    monkeypatch.setattr(script.torch.cuda, "synchronize", waited.append)
    for device in ("cpu", "cuda", "cuda:1"):
        script.synchronize(device)
    assert waited == ["cuda", "cuda:1"]


def test_env_throughput_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    script = load_script("env_throughput.py")
    monkeypatch.setattr(script, "minigrid_steps_per_second", lambda *args: 100.0)
    monkeypatch.setattr(script, "twin_steps_per_second", lambda env_id, n, *args: float(n))
    threads = str(torch.get_num_threads())  # main sets torch's threads: leave them as they are
    monkeypatch.setattr(sys, "argv", ["env_throughput.py", "--threads", threads])
    script.main()
    printed = capsys.readouterr().out
    assert table_line(printed, "| MiniGrid").endswith("|            100 |        1.0x |")
    line = table_line(printed, "| batched twin (4,096 envs)")
    assert line.endswith("|          4,096 |       41.0x |")


# distributed_throughput.py


def test_distributed_run_gives_every_process_the_same_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--total-steps`` is ``--steps-per-process`` x the processes; torchrun launches them."""
    script = load_script("distributed_throughput.py")
    commands = []

    def fake_run(command, **kwargs) -> None:
        commands.append(command)
        run_dir = Path(command[command.index("--run-dir") + 1])
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"world_size": len(commands)}))

    monkeypatch.setattr(script.subprocess, "run", fake_run)
    args = types.SimpleNamespace(device="cpu", memory="gru", num_envs=16, steps_per_process=500)
    assert script.run(None, args) == {"world_size": 1}
    assert script.run(3, args) == {"world_size": 2}
    plain, torchrun = commands
    assert plain[plain.index("--total-steps") + 1] == "500"
    assert torchrun[torchrun.index("--total-steps") + 1] == "1500"
    assert "--nproc_per_node=3" in torchrun and "--nproc_per_node=3" not in plain
    assert torchrun[torchrun.index("--num-envs") + 1] == "16"


def test_distributed_table_compares_with_the_plain_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    script = load_script("distributed_throughput.py")
    monkeypatch.setattr(script, "parameter_count", lambda memory: 102_400)
    rates = {None: 1000.0, 1: 900.0, 2: 1800.0}

    def fake_run(processes, args) -> dict:
        world = processes or 1
        return {
            "world_size": world,
            "total_env_steps": args.steps_per_process * world,
            "wall_seconds": 2.0,
            "env_steps_per_second": rates[processes],
        }

    monkeypatch.setattr(script, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["distributed_throughput.py", "--processes", "1", "2"])
    script.main()
    printed = capsys.readouterr().out
    # 102,400 float32 parameters: 400 KiB.
    assert "102,400 parameters = 400 KiB all-reduced per backward pass" in printed
    rows = [line for line in printed.splitlines() if line.startswith("|") and "x |" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["python", "torchrun", "torchrun"]
    assert [row.split("|")[-2].strip() for row in rows] == ["1.00x", "0.90x", "1.80x"]
    assert [row.split("|")[3].strip() for row in rows] == ["20,480", "20,480", "40,960"]


# memory_scaling.py


def test_memory_scaling_times_are_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time_it``: mean seconds per call after a warm-up; ``interleaved``: median per call."""
    script = load_script("memory_scaling.py")
    clock = Clock()
    monkeypatch.setattr(script, "time", clock)

    def half_a_second() -> None:
        clock.now += 0.5

    assert script.time_it(half_a_second, 3, "cpu") == 0.5
    durations = iter([100.0, 1.0, 1.0, 10.0])  # a slow warm-up, then one outlier

    def varying() -> None:
        clock.now += next(durations)

    assert script.interleaved({"a": varying}, 3) == {"a": 1.0}


def test_memory_scaling_waits_for_any_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timed on ``cuda:1``, the clock stops after the device's work (warm-up and calls) ends."""
    script = load_script("memory_scaling.py")
    clock = Clock()
    monkeypatch.setattr(script, "time", clock)
    waited: list[tuple[str, float]] = []
    monkeypatch.setattr(
        script.torch.cuda, "synchronize", lambda device: waited.append((device, clock.now))
    )

    def call() -> None:
        clock.now += 1.0

    assert script.time_it(call, 2, "cuda:1") == 1.0
    assert waited == [("cuda:1", 1.0), ("cuda:1", 3.0)]
    assert script.on_cuda("cuda") and script.on_cuda("cuda:0") and not script.on_cuda("cpu")


def test_memory_scaling_row_gives_the_slowdown_from_100_to_10000(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = load_script("memory_scaling.py")
    seconds = iter([0.001, 0.002, 0.004, 0.010])  # step at 100, 1,000, 10,000; the chunk
    monkeypatch.setattr(script, "time_it", lambda fn, repeats, device: next(seconds))
    args = types.SimpleNamespace(device="cpu", envs=2, chunk=4, repeats=5)
    line = script.measure("gru (128)", "gru", {}, args)
    assert line.startswith("gru (128)") and "1.00ms       2.00ms       4.00ms     4.00 " in line
    assert line.endswith("       10ms")
    assert np.isfinite(float(line.split()[-3]))  # the state's MiB
