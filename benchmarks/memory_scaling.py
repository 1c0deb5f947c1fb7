"""Memory-core scaling: step time vs stream position, state size, and training-chunk time.

Prints one table. For each core: mean time of one ``step`` for ``--envs`` envs at stream
positions 100, 1,000 and 10,000; the state's size; peak device memory (CUDA only); and the
time of one ``sequence`` call over a ``--chunk``-step chunk in training mode, forward and
backward.

How position P is reached: the attention cores' state is *constructed* at position P (episode
step counter = P, every slot filled with random hidden vectors written within the previous
steps, spans drawn up to ``max_span``): the worst case, all capacity in use. GRU's state is
a random hidden vector (its cost cannot depend on position). No step is run to get there.

    python benchmarks/memory_scaling.py [--envs 256]  (package installed, or PYTHONPATH=.)
    [--chunk 128] [--device cpu]

``--compare OLD/slot_attention.py`` instead times the learner's hot calls for the default
expire-span (capacity 32, L = 1024, R = 16) against another copy of the slot machinery, both
in the same run and interleaved (so a busy machine slows both alike): ``sequence`` forward and
backward in training mode (``--chunk`` steps, ``--batch`` envs, slots partly full, episode
starts inside the chunk) and one ``step`` for ``--envs`` envs without gradients. It prints the
median times and the largest output difference (the parameters are shared).

    OMP_NUM_THREADS=1 python benchmarks/memory_scaling.py --compare /tmp/old/slot_attention.py
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from memory import SlotState, make_memory
from memory.slot_attention import SlotTransformer

INPUT_DIM = 64
POSITIONS = (100, 1_000, 10_000)
CORES = {
    "expire-span (capacity 64)": ("expire-span", {"capacity": 64}),
    "window (64)": ("window", {"window": 64}),
    "full (max_memory 1024)": ("full", {}),
    "gru (128)": ("gru", {}),
}


def state_at(core, batch: int, position: int, device: str):
    """A state at episode step ``position`` with every slot the position allows in use."""
    state = core.initial_state(batch, device)
    if not isinstance(state, SlotState):
        return type(state)(*(torch.randn_like(part) for part in state))
    slots = core.capacity
    ages = torch.arange(1, slots + 1, device=device).expand(batch, core.n_layers, -1)
    alive = ages <= position
    span = state.span.clone()
    if core.learn_span:
        span = torch.rand_like(span) * core.max_span + ages  # alive until at least now
    else:
        span = torch.full_like(span, core.fixed_span)
    return SlotState(
        hidden=torch.randn_like(state.hidden),
        write_step=(position - ages).clamp(min=0),
        span=span,
        alive=alive,
        step=torch.full_like(state.step, position),
    )


def on_cuda(device: str) -> bool:
    """Whether ``device`` is a CUDA device (``cuda``, ``cuda:1``)."""
    return torch.device(device).type == "cuda"


def time_it(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if on_cuda(device):
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if on_cuda(device):
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def measure(name: str, kind: str, options: dict, args: argparse.Namespace) -> str:
    """One table row for one core."""
    device = args.device
    core = make_memory(kind, INPUT_DIM, **options).to(device)
    x = torch.randn(args.envs, INPUT_DIM, device=device)
    no_start = torch.zeros(args.envs, dtype=torch.bool, device=device)
    if on_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)
    step_ms = []
    core.eval()
    for position in POSITIONS:
        state = state_at(core, args.envs, position, device)
        with torch.no_grad():
            seconds = time_it(partial(core.step, x, state, no_start), args.repeats, device)
        step_ms.append(1e3 * seconds)
    state_mib = sum(t.numel() * t.element_size() for t in state) / 2**20

    core.train()
    chunk = torch.randn(args.chunk, args.envs, INPUT_DIM, device=device)
    starts = torch.zeros(args.chunk, args.envs, dtype=torch.bool, device=device)
    start_state = state_at(core, args.envs, 1_000, device)

    def train_chunk() -> None:
        y, aux, _ = core.sequence(chunk, start_state, starts)
        (y.square().mean() + aux).backward()

    seq_ms = 1e3 * time_it(train_chunk, max(1, args.repeats // 5), device)
    peak = "      n/a"
    if on_cuda(device):
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:9.0f}"
    steps = " ".join(f"{ms:10.2f}ms" for ms in step_ms)
    ratio = step_ms[-1] / step_ms[0]
    return f"{name:<26} {steps} {ratio:8.2f} {state_mib:10.1f} {peak} {seq_ms:9.0f}ms"


LEARNER_CORE = {"capacity": 32, "max_span": 1024, "ramp": 16}  # the agents' defaults


def load_slot_module(path: str):
    """Import another copy of ``memory/slot_attention.py`` under a private name."""
    spec = importlib.util.spec_from_file_location("baseline_slot_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def twin(core: SlotTransformer, module) -> SlotTransformer:
    """The same core (same options and parameters) built from ``module``'s SlotTransformer."""
    other = module.SlotTransformer(
        INPUT_DIM,
        d_model=core.d_model,
        n_layers=core.n_layers,
        n_heads=core.layers[0].n_heads,
        ff_mult=core.layers[0].ff[0].out_features // core.d_model,
        capacity=core.capacity,
        ramp=core.ramp,
        position_buckets=core.position_buckets,
        max_age=core.max_age,
        span_source="learned",
        max_span=core.max_span,
        span_loss_coef=core.span_loss_coef,
    )
    other.load_state_dict(core.state_dict())
    return other


def busy_state(core: SlotTransformer, batch: int, position: int, generator: torch.Generator):
    """Mid-episode state at ``position``: about 3/4 of the slots alive, spans up to 300."""
    state = core.initial_state(batch)
    ages = torch.arange(1, core.capacity + 1).expand(batch, core.n_layers, -1)
    return SlotState(
        hidden=torch.randn(state.hidden.shape, generator=generator),
        write_step=position - ages,
        span=torch.rand(state.span.shape, generator=generator) * 300 + ages,
        alive=torch.rand(state.alive.shape, generator=generator) < 0.75,
        step=torch.full_like(state.step, position),
    )


def interleaved(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call, the calls taking turns (after one warm-up each)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def compare(args: argparse.Namespace) -> None:
    """Before/after table of ``sequence`` (fwd + bwd) and ``step`` for the learner's core."""
    torch.manual_seed(0)
    core = make_memory("expire-span", INPUT_DIM, **LEARNER_CORE)
    cores = {"before": twin(core, load_slot_module(args.compare)), "after": core}
    generator = torch.Generator().manual_seed(0)
    steps, batch = args.chunk, args.batch
    chunk = torch.randn(steps, batch, INPUT_DIM, generator=generator)
    starts = torch.rand(steps, batch, generator=generator) < 0.01
    starts[steps // 2, 0] = True  # at least one episode starts inside the chunk
    seq_state = busy_state(core, batch, 1_000, generator)
    x = torch.randn(args.envs, INPUT_DIM, generator=generator)
    step_state = busy_state(core, args.envs, 1_000, generator)
    step_starts = torch.rand(args.envs, generator=generator) < 0.01

    outputs = {}

    def train_chunk(name: str) -> None:
        module = cores[name].train()
        module.zero_grad(set_to_none=True)
        y, aux, _ = module.sequence(chunk, type(seq_state)(*seq_state), starts)
        (y.square().mean() + aux).backward()
        outputs["seq " + name] = y.detach()

    @torch.no_grad()
    def one_step(name: str) -> None:
        module = cores[name].eval()
        outputs["step " + name] = module.step(x, step_state, step_starts)[0]

    seq = interleaved({name: partial(train_chunk, name) for name in cores}, args.repeats)
    step = interleaved({name: partial(one_step, name) for name in cores}, 5 * args.repeats)
    print(f"threads={torch.get_num_threads()} (median of interleaved calls)")
    header = f"{'call':<40} {'before':>10} {'after':>10} {'speedup':>8} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for label, times, key in (
        (f"sequence fwd+bwd T={steps} B={batch}", seq, "seq"),
        (f"step B={args.envs} (no grad)", step, "step"),
    ):
        diff = (outputs[f"{key} before"] - outputs[f"{key} after"]).abs().max().item()
        before, after = 1e3 * times["before"], 1e3 * times["after"]
        print(f"{label:<40} {before:8.1f}ms {after:8.1f}ms {before / after:7.2f}x {diff:11.1e}")


def build_parser() -> argparse.ArgumentParser:
    """The script's options (tests/docs parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64, help="--compare: envs per chunk")
    parser.add_argument(
        "--compare", metavar="SLOT_ATTENTION_PY", help="time against this copy (CPU)"
    )
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    torch.manual_seed(0)
    header = (
        f"{'core':<26} "
        + " ".join(f"{'step@' + f'{p:,}':>12}" for p in POSITIONS)
        + f" {'10k/100':>8} {'state MiB':>10} {'peak MiB':>9} {'seq T=' + str(args.chunk):>11}"
    )
    print(f"device={args.device} envs={args.envs} threads={torch.get_num_threads()}")
    print(header)
    print("-" * len(header))
    for name, (kind, options) in CORES.items():
        print(measure(name, kind, options, args), flush=True)


if __name__ == "__main__":
    main()
