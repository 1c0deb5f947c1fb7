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
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from memory import SlotState, make_memory

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


def time_it(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(name: str, kind: str, options: dict, args: argparse.Namespace) -> str:
    """One table row for one core."""
    device = args.device
    core = make_memory(kind, INPUT_DIM, **options).to(device)
    x = torch.randn(args.envs, INPUT_DIM, device=device)
    no_start = torch.zeros(args.envs, dtype=torch.bool, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
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
    peak = f"{torch.cuda.max_memory_allocated() / 2**20:9.0f}" if device == "cuda" else "      n/a"
    steps = " ".join(f"{ms:10.2f}ms" for ms in step_ms)
    ratio = step_ms[-1] / step_ms[0]
    return f"{name:<26} {steps} {ratio:8.2f} {state_mib:10.1f} {peak} {seq_ms:9.0f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
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
