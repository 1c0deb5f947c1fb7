"""Distributed training on CPU (gloo, 2 processes): torchrun end to end, ranks in sync, DDP's
averaged gradient equal to one process's gradient on both ranks' data, a killed rank."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_run import TINY_MODEL
from torch.utils import _pytree as pytree

from agents.config import AlgoConfig, MemoryConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
TINY = [
    "--num-envs",
    "4",
    "--rollout-steps",
    "16",
    "--wandb",
    "disabled",
    "--no-progress",
    "--eval-episodes",
    "2",
    *TINY_MODEL,
    "--device",
    "cpu",
    "--dist-timeout",
    "30",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def quiet_env() -> dict[str, str]:
    """The environment of a child: one thread per process (2 ranks share the CI's cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(run_dir: Path, *args: str) -> list[str]:
    """The command line of a 2-process CPU run of the CLI on a free local rendezvous port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={WORLD_SIZE}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=localhost:{free_port()}",
        str(ROOT / "train_rl.py"),
        *TINY,
        "--run-dir",
        str(run_dir),
        *args,
    ]


def join_group(rank: int, port: int) -> None:
    """What torchrun does for a worker: the env variables, then the gloo process group."""
    os.environ.update(
        MASTER_ADDR="localhost",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)


def spawn(worker: Any, *args: Any) -> None:
    """Run `worker(rank, port, *args)` in 2 fresh processes; fails if either fails."""
    mp.spawn(worker, args=(free_port(), *args), nprocs=WORLD_SIZE, join=True)


# --- 1. torchrun end to end, and resume -------------------------------------------------------


def test_torchrun_run_writes_one_summary_with_the_steps_of_both_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = subprocess.run(
        torchrun(run_dir, "--total-steps", "256", "--memory", "gru", "--eval-every", "1"),
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    steps_per_iteration = 4 * 16 * WORLD_SIZE  # num-envs and rollout-steps are per process
    assert summary["world_size"] == WORLD_SIZE
    assert summary["iterations"] == 2  # --total-steps 256 is the total of both ranks
    assert summary["total_env_steps"] == 2 * steps_per_iteration
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in records] == [128, 256]  # rank 0 alone logs
    # --eval-every: rank 0 evaluates while the other rank waits, and keeps the best policy.
    assert all("eval/best_score" in r for r in records)
    assert summary["best"]["iteration"] in (1, 2) and (run_dir / "best.pt").is_file()
    assert done.stdout.count("run directory") == 1  # rank 0 alone prints the summary
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix == ".json") == [
        "config.json",
        "summary.json",
    ]

    # Resume with the same number of processes: every rank loads the checkpoint and goes on.
    resumed = subprocess.run(
        torchrun(run_dir, "--resume", str(run_dir), "--total-steps", "384"),
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["world_size"], summary["iterations"], summary["total_env_steps"]) == (
        2,
        3,
        384,
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]

    # A fork of it on one process (fresh envs, on rank 0's curriculum level) counts on from
    # its 384 steps in iterations of 64 (4 envs x 16 steps).
    import train_rl

    single = tmp_path / "single"
    fork = ["--fork", str(run_dir), "--total-steps", "512", "--run-dir", str(single)]
    assert train_rl.main([*fork, "--eval-every", "0", "--threads", "1"]) == 0
    forked = json.loads((single / "summary.json").read_text())
    assert (forked["world_size"], forked["iterations"], forked["total_env_steps"]) == (1, 8, 512)


def test_resume_with_another_number_of_processes_is_refused(tmp_path: Path, capsys) -> None:
    """A 1-process checkpoint resumed under 2 processes (here: the check itself, no launch);
    a fork is not."""
    from agents.trainer import prepare_run, train

    config = TrainConfig(
        num_envs=2,
        total_steps=32,
        device="cpu",
        run_dir=str(tmp_path / "run"),
        wandb="disabled",
        eval_episodes=0,
        memory=MemoryConfig(kind="gru", width=16),
        algo=AlgoConfig(rollout_steps=16, num_minibatches=1, update_epochs=1),
    )
    train(config, progress=False)
    with pytest.raises(ValueError, match="written by 1 process"):
        prepare_run(TrainConfig(run_dir=config.run_dir), True, False, {}, world_size=2)
    # A fork (fresh envs and RNG) may take another number: it counts on from the source's 32
    # steps in its own iterations of 64 (2 processes x 2 envs x 16 steps), the first whole one.
    fork, _, checkpoint = prepare_run(
        TrainConfig(), False, False, {"total_steps": 256}, world_size=2, fork=config.run_dir
    )
    assert (checkpoint["iteration"], checkpoint["global_step"], fork.total_steps) == (0, 32, 256)


# --- 2. after a distributed run, every rank holds the same parameters -------------------------


def _train_worker(rank: int, port: int, run_dir: str, out_dir: str) -> None:
    join_group(rank, port)
    import agents.trainer as trainer
    from agents.distributed import unwrap

    original_loop = trainer._loop

    def loop_then_dump(config: TrainConfig, model: torch.nn.Module, *args: Any) -> Any:
        result = original_loop(config, model, *args)
        torch.save(unwrap(model).state_dict(), Path(out_dir) / f"rank{rank}.pt")
        return result

    trainer._loop = loop_then_dump  # the test reads each rank's final parameters
    config = TrainConfig(
        num_envs=4,
        total_steps=384,
        device="cpu",
        run_dir=run_dir,
        wandb="disabled",
        eval_episodes=0,
        heatmap_every=0,
        dist_timeout=60,
        memory=MemoryConfig(kind="expire-span", width=16, heads=2, layers=1, capacity=8),
        # target_kl on: the early stop must be agreed, or a rank would wait for the other
        algo=AlgoConfig(rollout_steps=16, update_epochs=3, num_minibatches=2, target_kl=1e-4),
    )
    summary = trainer.train(config, progress=False)
    (Path(out_dir) / f"summary{rank}.json").write_text(json.dumps(summary, default=str))


def test_ranks_end_with_identical_parameters(tmp_path: Path) -> None:
    spawn(_train_worker, str(tmp_path / "run"), str(tmp_path))
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    initial = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["policy"]
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], initial[key]), key  # the checkpoint is rank 0's
    summary0 = json.loads((tmp_path / "summary0.json").read_text())
    summary1 = json.loads((tmp_path / "summary1.json").read_text())
    assert summary0["world_size"] == 2 and summary0["total_env_steps"] == 384
    assert summary1 == {
        "rank": 1,
        "world_size": 2,
        "iterations": 3,
        "total_env_steps": 384,
        "run_dir": str(tmp_path / "run"),
    }


# --- 3. DDP's update on 2 ranks equals one process's update on both ranks' data ---------------

#: One gradient step per update and no per-minibatch statistics: A2C, and PPO with one epoch
#: of one minibatch, both without advantage normalisation (which is per minibatch, so per
#: rank under DDP). Every loss is a masked mean; with the same number of valid steps on each
#: rank, the mean of the two ranks' means (DDP averages gradients) is the mean over both.
EQUIVALENT_ALGOS = {
    "a2c": AlgoConfig(algo="a2c", rollout_steps=12, normalize_advantages=False),
    "ppo": AlgoConfig(
        rollout_steps=12, update_epochs=1, num_minibatches=1, normalize_advantages=False
    ),
}


def _policy_and_rollout(seed: int, env_seed: int) -> tuple[Any, Any]:
    from agents.policy import ActorCritic
    from agents.rollout import RolloutCollector
    from agents.vec import make_vector_env

    torch.manual_seed(seed)
    env = make_vector_env("Lethe/Corridor-v0", 3, torch.device("cpu"))
    memory = MemoryConfig(kind="gru", width=16, layers=1)
    policy = ActorCritic(env.obs_spaces, int(env.single_action_space.n), memory)
    collector = RolloutCollector(env, policy, 12, torch.device("cpu"), seed=env_seed)
    torch.manual_seed(env_seed)
    rollout, _ = collector.collect(0.99, 0.95)
    env.close()
    # Same number of valid steps on both ranks (see EQUIVALENT_ALGOS).
    return policy, rollout._replace(valid=torch.ones_like(rollout.valid))


def _optimizer(policy: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(policy.parameters(), lr=1e-2, eps=1e-5)


def _update_worker(rank: int, port: int, out_dir: str) -> None:
    join_group(rank, port)
    from agents.trainer import DistContext

    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    _update_work(DistContext(rank, WORLD_SIZE, rank), Path(out_dir))
    # Leave together, as `train` does (`distributed_session`): the DDP models made above are
    # gone (`gc.collect`) before the group is destroyed, so gloo's threads stop here and not
    # in the interpreter's shutdown, where they abort the process (SIGABRT, seen in CI).
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def _update_work(ctx: Any, out_dir: Path) -> None:
    from agents.a2c import a2c_update
    from agents.distributed import wrap_model
    from agents.ppo import ppo_update

    rank = ctx.rank
    results = {}
    for name, update in (("a2c", a2c_update), ("ppo", ppo_update)):
        policy, rollout = _policy_and_rollout(seed=7, env_seed=100 + rank)
        model = wrap_model(policy, ctx)
        update(model, _optimizer(policy), rollout, EQUIVALENT_ALGOS[name])
        results[name] = {"rollout": rollout, "params": policy.state_dict()}
    torch.save(results, out_dir / f"update{rank}.pt")

    # A non-finite loss on one rank only: both skip the step, and the next update does not hang.
    from agents.losses import apply_gradients

    policy, rollout = _policy_and_rollout(seed=7, env_seed=100 + rank)
    model = wrap_model(policy, ctx)
    optimizer = _optimizer(policy)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    logits, values, aux = model(rollout.obs, rollout.initial_state, rollout.episode_starts)
    loss = values.mean() + aux + (float("nan") if rank == 1 else 0.0)
    taken, _ = apply_gradients(model, optimizer, loss, max_norm=0.5)
    unchanged = all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    metrics = a2c_update(model, optimizer, rollout, EQUIVALENT_ALGOS["a2c"])
    (out_dir / f"nan{rank}.json").write_text(
        json.dumps({"taken": taken, "unchanged": unchanged, "then": metrics["losses/grad_norm"]})
    )
    _reductions(rank, ctx, model, out_dir)


#: What each rank reduces in `_reductions` (rank 1's values differ from rank 0's in every field).
RANK_EPISODES = [
    (1, 2.0, 10.0, 1, 1.0),
    (3, -1.0, 30.0, 2, 0.0, 1, 0.5, 1, 1.0),
]
RANK_METRICS = [{"b": 10.0, "a": 1.0}, {"b": 20.0, "a": 3.0}]


def _reductions(rank: int, ctx: Any, model: torch.nn.Module, out_dir: Path) -> None:
    """The small reductions of a run: `DistContext.sum`, PPO's `mean_over_ranks` (the KL
    stop) and the trainer's episode sums and metric means, on values that differ by rank."""
    from agents.distributed import mean_over_ranks
    from agents.rollout import EpisodeStats
    from agents.trainer import _reduce_over_ranks

    episodes, metrics = _reduce_over_ranks(
        EpisodeStats(*RANK_EPISODES[rank]), RANK_METRICS[rank], ctx
    )
    result = {
        "sum": ctx.sum([1.0 + rank, 10.0 * rank]),
        "mean": mean_over_ranks(model, 1.0 + 2.0 * rank),
        "episodes": list(episodes),
        "metrics": metrics,
    }
    (out_dir / f"reductions{rank}.json").write_text(json.dumps(result))


def _concat(a: Any, b: Any) -> Any:
    """Two ranks' rollouts as one: the env dimension is 1 for ``[T, N]`` fields, 0 for states."""
    fields = {}
    for name in a._fields:
        env_dim = 0 if name in ("initial_state", "next_value") else 1
        fields[name] = pytree.tree_map(
            lambda x, y, d=env_dim: torch.cat([x, y], dim=d), getattr(a, name), getattr(b, name)
        )
    return type(a)(**fields)


@pytest.fixture(scope="module")
def update_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of one 2-process `_update_worker` run (read by more than one test)."""
    out_dir = tmp_path_factory.mktemp("update")
    spawn(_update_worker, str(out_dir))
    return out_dir


def test_ddp_update_equals_one_process_on_both_ranks_data(update_run: Path) -> None:
    from agents.a2c import a2c_update
    from agents.ppo import ppo_update

    ranks = [torch.load(update_run / f"update{r}.pt", weights_only=False) for r in range(2)]
    for name, update in (("a2c", a2c_update), ("ppo", ppo_update)):
        both = _concat(ranks[0][name]["rollout"], ranks[1][name]["rollout"])
        policy, _ = _policy_and_rollout(seed=7, env_seed=100)
        start = {k: v.clone() for k, v in policy.state_dict().items()}
        update(policy, _optimizer(policy), both, EQUIVALENT_ALGOS[name])
        moved = False
        for key, value in policy.state_dict().items():
            torch.testing.assert_close(ranks[0][name]["params"][key], value, rtol=1e-4, atol=1e-5)
            assert torch.equal(ranks[0][name]["params"][key], ranks[1][name]["params"][key])
            moved |= not torch.equal(start[key], value)
        assert moved, f"{name}: the update changed nothing, the comparison would be empty"

    for rank in range(2):
        nan = json.loads((update_run / f"nan{rank}.json").read_text())
        assert nan["taken"] is False and nan["unchanged"] is True, (rank, nan)
        assert nan["then"] is not None and nan["then"] == nan["then"]  # a finite step followed


def test_reductions_sum_episodes_and_average_metrics_over_ranks(update_run: Path) -> None:
    """Hand-summed: episode statistics add up over the ranks (the logged episode counts and
    returns are of both ranks' envs), loss metrics and PPO's KL are averaged (not summed: the
    same number on every rank stays that number), and every rank gets the same result."""
    from agents.rollout import EpisodeStats

    both = [
        a + b
        for a, b in zip(
            EpisodeStats(*RANK_EPISODES[0]), EpisodeStats(*RANK_EPISODES[1]), strict=True
        )
    ]
    assert both == [4, 1.0, 40.0, 3, 1.0, 1, 0.5, 1, 1.0]
    expected = {"sum": [3.0, 10.0], "mean": 2.0, "episodes": both, "metrics": {"a": 2.0, "b": 15.0}}
    for rank in range(2):
        assert json.loads((update_run / f"reductions{rank}.json").read_text()) == expected, rank


# --- 4. a killed rank ends the run with an error, not a hang ----------------------------------


def _worker_pids(parent: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of the workers torchrun started (read from /proc)."""
    pids: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for item in environ:
            if item.startswith(b"LOCAL_RANK="):
                pids[int(item.split(b"=", 1)[1])] = int(entry.name)
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_killing_one_rank_ends_the_run_with_an_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        torchrun(run_dir, "--total-steps", "10000000", "--memory", "gru", "--dist-timeout", "20"),
        env=quiet_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 90
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        pids = _worker_pids(process.pid)
        assert sorted(pids) == [0, 1], pids
        killed_at = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert time.monotonic() - killed_at < 60
    assert "lost the other processes" in output or "SIGKILL" in output, output[-3000:]


def _hang_worker(rank: int, port: int, out_dir: str) -> None:
    join_group(rank, port)
    from agents.distributed import distributed_session, lost_peer

    with distributed_session(timeout_s=3) as ctx:
        ctx.barrier()
        if rank == 1:
            time.sleep(120)  # hangs: never joins the next reduction
        started = time.monotonic()
        try:
            ctx.sum([1.0])
            outcome = {"raised": False}
        except RuntimeError as error:
            outcome = {"raised": True, "lost_peer": lost_peer(error)}
        outcome["seconds"] = time.monotonic() - started
        (Path(out_dir) / "hang.json").write_text(json.dumps(outcome))
        os._exit(0)  # leave without the group's teardown, which would wait for rank 1


def test_a_hung_rank_raises_on_the_others_after_the_timeout(tmp_path: Path) -> None:
    context = mp.get_context("spawn")
    port = free_port()
    workers = [
        context.Process(target=_hang_worker, args=(rank, port, str(tmp_path))) for rank in (0, 1)
    ]
    for worker in workers:
        worker.start()
    try:
        workers[0].join(timeout=60)
        assert workers[0].exitcode == 0
    finally:
        for worker in workers:
            worker.kill()
            worker.join()
    outcome = json.loads((tmp_path / "hang.json").read_text())
    assert outcome["raised"] and outcome["lost_peer"], outcome
    assert 2 < outcome["seconds"] < 30, outcome
