"""What the agent keeps: span metrics, retention matrices and their pictures.

Three entry points, for the attention cores (``expire-span``, ``window``, ``full``; for
``gru``, ``lstm`` and ``none`` each returns an empty result):

- `memory_metrics(policy, state)`: cheap scalars under ``memory/`` for every iteration (mean
  and max predicted span of the live memories, live memories per layer), one host read.
- `track_episode(policy, env_id, device, seed)`: play one fresh episode in a 1-env vector
  env and record, per layer, the retention matrix ``keep[i, t]`` (observation step ``i`` by
  agent step ``t``: the soft mask ``core.keep_mask`` gives for the state entering step ``t``,
  0 once dropped, 1 on the diagonal), the predicted span of every stored observation and the
  event code of every observation (``envs.events``).
- `retention_snapshot(...)`: `track_episode`, then PNGs (heatmaps with the events marked,
  spans over the episode and their histogram) and an ``.npz`` in a folder, returning what
  `agents.logging.RunLogger.log_media` takes.

`span_by_event` summarises recorded episodes: mean predicted span per layer and event kind
(the "does the agent keep the cue longer" measurement).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from agents.policy import ActorCritic
from agents.vec import make_vector_env
from envs.events import EVENT_NAMES

#: a tracked episode stops after this many observations even if it has not ended
MAX_TRACKED_STEPS = 2000

#: how each event kind is drawn: (colour, marker)
EVENT_STYLE: dict[int, tuple[str, str]] = {
    1: ("#ff2d2d", "o"),  # cue visible
    2: ("#ff9f1c", "s"),  # junction reached
    3: ("#2ecc40", "^"),  # correct portal
    4: ("#b10dc9", "v"),  # wrong portal
    5: ("#00e5ff", "*"),  # correct arm
    6: ("#ffffff", "X"),  # wrong arm
}


def slot_core(policy: ActorCritic) -> Any | None:
    """The policy's attention core (`memory.SlotTransformer`), or None for gru/lstm/none."""
    from memory import SlotTransformer

    core = getattr(policy, "memory", None)
    return core if isinstance(core, SlotTransformer) else None


def core_kind(core: Any) -> str:
    """``expire-span``, ``window`` or ``full``, from the core's class."""
    from memory import FullMemory, WindowMemory

    if isinstance(core, WindowMemory):
        return "window"
    if isinstance(core, FullMemory):
        return "full"
    return "expire-span"


@torch.no_grad()
def memory_metrics(policy: ActorCritic, state: Any) -> dict[str, float]:
    """Scalars about the live memories of ``state`` (all envs), for every iteration.

    ``memory/span_mean`` and ``memory/span_max``: predicted span (steps) of the live memories
    (left out when there are none with a finite span, as for ``full``);
    ``memory/live_layer{l}``: live memories per env in layer ``l``; ``memory/live_mean``: the
    same averaged over layers. Empty for cores without slots. One device-to-host copy.
    """
    core = slot_core(policy)
    if core is None:
        return {}
    state = policy.policy_state(state)  # the policy's memories (a separate critic's left out)
    alive = state.alive  # [B, L, S] bool
    span = state.span  # [B, L, S]
    live_per_layer = alive.sum(-1).float().mean(0)  # [L]
    finite = alive & torch.isfinite(span)  # [B, L, S]
    count = finite.sum()
    span_sum = torch.where(finite, span, 0.0).sum()
    span_max = torch.where(finite, span, -torch.inf).amax()
    values = torch.cat(
        [live_per_layer, torch.stack([count.float(), span_sum.float(), span_max.float()])]
    ).tolist()  # the one host read
    n_layers = live_per_layer.shape[0]
    metrics = {f"memory/live_layer{layer}": values[layer] for layer in range(n_layers)}
    metrics["memory/live_mean"] = sum(values[:n_layers]) / max(n_layers, 1)
    finite_count, total, largest = values[n_layers:]
    if finite_count > 0:
        metrics["memory/span_mean"] = total / finite_count
        metrics["memory/span_max"] = largest
    return metrics


@dataclass
class EpisodeRetention:
    """One tracked episode of ``T`` observations through an attention core of ``L`` layers.

    Fields:
        kind: ``expire-span``, ``window`` or ``full``.
        keep: ``[L, T, T]`` float32, ``keep[l, i, t]`` = soft mask layer ``l`` applies at agent
            step ``t`` to the memory of observation ``i`` (0 for ``i > t`` or once dropped;
            1 for ``i == t``, the current step).
        span: ``[L, T]`` float32, predicted span in steps of observation ``i`` in layer ``l``
            (``inf`` for ``full``; NaN when the memory was not stored at all).
        events: ``[T]`` int64, ``info["event"]`` of each observation (``envs.events``).
        actions: ``[T]`` int64, the action sampled after each observation (-1 after the last).
        ramp: ramp ``R`` of the core's mask, in steps.
        seed: the episode's env seed.
        env_id: the environment.
    """

    kind: str
    keep: np.ndarray
    span: np.ndarray
    events: np.ndarray
    actions: np.ndarray
    ramp: float
    seed: int
    env_id: str

    @property
    def n_layers(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.keep.shape[1])

    def kept_steps(self) -> np.ndarray:
        """``[L, T]`` int: steps after its own during which each observation stayed visible."""
        later = np.triu(np.ones((self.n_steps, self.n_steps), dtype=bool), k=1)  # t > i
        return ((self.keep > 0) & later).sum(-1)

    def kept_to_end(self) -> np.ndarray:
        """``[L, T]`` bool: the observation was still in memory at the episode's last step."""
        return self.keep[:, :, -1] > 0

    def arrays(self) -> dict[str, np.ndarray]:
        """What the ``.npz`` holds (``event_steps`` / ``event_codes``: the non-zero events)."""
        event_steps = np.flatnonzero(self.events)
        return {
            "keep": self.keep,
            "span": self.span,
            "write_step": np.arange(self.n_steps),
            "events": self.events,
            "event_steps": event_steps,
            "event_codes": self.events[event_steps],
            "actions": self.actions,
            "ramp": np.asarray(self.ramp),
            "seed": np.asarray(self.seed),
        }


@torch.no_grad()
def track_episode(
    policy: ActorCritic,
    env_id: str,
    device: torch.device | str,
    seed: int,
    max_steps: int = MAX_TRACKED_STEPS,
    env_kwargs: dict[str, Any] | None = None,
) -> EpisodeRetention | None:
    """Play one fresh episode (sampled actions) and record what each layer keeps.

    The env is a 1-env vector env from `agents.vec.make_vector_env`, reset with ``seed``;
    actions are sampled from a generator seeded with ``seed`` (the global RNGs are left
    alone, so training is not perturbed). The final observation goes through the policy too
    (as in training), so the arm entered and its event are part of the record. Stops after
    ``max_steps`` observations. Returns None for cores without slots. ``env_kwargs`` go to
    the env's constructor.
    """
    core = slot_core(policy)
    if core is None:
        return None
    device = torch.device(device)
    env = make_vector_env(env_id, 1, device, policy.reads_previous_action_reward, env_kwargs)
    try:
        obs, info = env.reset(seed=seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        state = policy.initial_state(1, device)
        start = torch.ones(1, dtype=torch.bool, device=device)
        zero_event = torch.zeros(1, dtype=torch.long, device=device)
        events = [info.get("event", zero_event).reshape(1).long()]
        actions = []
        masks, mask_writes, after_write, after_span, after_alive = [], [], [], [], []
        done = False
        for _ in range(max_steps):
            view = core.keep_mask(policy.policy_state(state))  # for the state entering this step
            masks.append(view.mask[0])  # [L, S]
            mask_writes.append(view.write_step[0])  # [L, S]
            logits, _, state = policy.step(obs, state, start)
            start = torch.zeros_like(start)
            kept = policy.policy_state(state)
            after_write.append(kept.write_step[0])  # [L, S]
            after_span.append(kept.span[0])
            after_alive.append(kept.alive[0])
            if done or len(masks) == max_steps:
                break
            probs = torch.softmax(logits.float(), -1)  # [1, A]
            action = torch.multinomial(probs, 1, generator=generator)[:, 0]  # [1]
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            events.append(info.get("event", zero_event).reshape(1).long())
            done = bool((terminated | truncated).any())
    finally:
        env.close()

    # One host copy of everything: [T, L, S] each.
    mask = torch.stack(masks).float().cpu().numpy()
    mask_write = torch.stack(mask_writes).cpu().numpy()
    write = torch.stack(after_write).cpu().numpy()
    span_after = torch.stack(after_span).float().cpu().numpy()
    alive = torch.stack(after_alive).cpu().numpy()
    event_codes = torch.cat(events)[: len(masks)].cpu().numpy().astype(np.int64)  # [T]
    steps, n_layers, _ = mask.shape
    taken = torch.cat(actions).cpu().numpy() if actions else np.zeros(0, np.int64)
    action_codes = np.full(steps, -1, dtype=np.int64)
    action_codes[: len(taken)] = taken[:steps]

    keep = np.zeros((n_layers, steps, steps), dtype=np.float32)
    t_index = np.broadcast_to(np.arange(steps)[:, None, None], mask.shape)
    l_index = np.broadcast_to(np.arange(n_layers)[None, :, None], mask.shape)
    held = mask > 0
    keep[l_index[held], mask_write[held], t_index[held]] = mask[held]
    keep[:, np.arange(steps), np.arange(steps)] = 1.0

    # Span of observation i: the slot written at step i, in the state right after step i.
    own = alive & (write == np.arange(steps)[:, None, None])  # [T, L, S]
    stored = own.any(-1)  # [T, L]
    own_span = np.where(own, span_after, 0.0).sum(-1)  # [T, L]
    span = np.where(stored, own_span, np.nan).T.astype(np.float32)  # [L, T]
    return EpisodeRetention(
        kind=core_kind(core),
        keep=keep,
        span=span,
        events=event_codes,
        actions=action_codes,
        ramp=float(core.ramp),
        seed=seed,
        env_id=env_id,
    )


def span_by_event(records: Sequence[EpisodeRetention]) -> dict[str, dict[str, float]]:
    """Mean predicted span per layer and event kind over recorded episodes.

    Returns ``{"layer0": {"none": mean, "cue_visible": mean, ...}, ...}``: every event kind
    that occurs, ``none`` being the steps without an event; also ``count/<kind>`` (how many
    stored observations each mean is over) and ``dropped/<kind>`` (how many were never stored,
    NaN span: the capacity dropped them on arrival, or their span was under one step). The
    means leave the dropped ones out.
    """
    result: dict[str, dict[str, float]] = {}
    if not records:
        return result
    for layer in range(records[0].n_layers):
        spans = np.concatenate([r.span[layer] for r in records])  # [sum T]
        events = np.concatenate([r.events for r in records])  # [sum T]
        stats: dict[str, float] = {}
        for code in np.unique(events):
            of_kind = events == code
            chosen = spans[of_kind & ~np.isnan(spans)]
            name = EVENT_NAMES.get(int(code), f"event_{int(code)}")
            stats[name] = float(chosen.mean()) if chosen.size else math.nan
            stats[f"count/{name}"] = float(chosen.size)
            stats[f"dropped/{name}"] = float(of_kind.sum() - chosen.size)
        result[f"layer{layer}"] = stats
    return result


# ---------------------------------------------------------------------------------- pictures
def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` index of every run of consecutive True values in ``flags [T]``."""
    padded = np.concatenate([[False], flags.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))  # starts, ends (exclusive) paired
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg canvas (no pyplot, no global backend change).

    Layouts are set by hand (constrained layout doubles the drawing time)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _event_handles(codes: Sequence[int]) -> list[Line2D]:
    handles = []
    for code in codes:
        colour, marker = EVENT_STYLE.get(code, ("#ffffff", "P"))
        handles.append(
            Line2D(
                [],
                [],
                color=colour,
                marker=marker,
                linestyle="",
                markeredgecolor="black",
                markersize=8,
                label=EVENT_NAMES.get(code, f"event {code}").replace("_", " "),
            )
        )
    return handles


#: below this many pixels per row of a heatmap, event rows are drawn over it as lines
MIN_ROW_PIXELS = 2.0


def plot_keep(record: EpisodeRetention, path: Path, title: str) -> Path:
    """Heatmaps of ``keep[i, t]`` per layer, side by side, the event steps marked."""
    keep_figure(record, title).savefig(path)
    return path


def keep_figure(record: EpisodeRetention, title: str) -> Figure:
    """`plot_keep`'s figure.

    Each event step gets its marker on the diagonal, where it was written. Where a row of the
    heatmap gets under `MIN_ROW_PIXELS` (long episodes, such as a 1,000-step corridor), one
    observation's row would be lost to the image's resampling, so the rows of the event steps
    are drawn again as lines in the event's colour over the steps they were kept: the cue held
    for 1,000 steps is a line along the bottom.
    """
    n_layers, steps = record.n_layers, record.n_steps
    width, height = 4.4 * n_layers + 1.6, 4.8
    right = 1.0 - 1.25 / width  # room for the colour bar
    axes = (fig := _figure(width, height)).subplots(
        1,
        n_layers,
        squeeze=False,
        gridspec_kw={
            "left": 0.75 / width,
            "right": right,
            "bottom": 0.55 / height,
            "top": 1.0 - 0.75 / height,
            "wspace": 0.55 / 4.4,
        },
    )[0]
    codes = sorted(int(c) for c in np.unique(record.events) if c != 0)
    marker_size = float(np.clip(6000.0 / max(steps, 1), 30.0, 60.0))
    future = np.tril(np.ones((steps, steps), dtype=bool), k=-1)  # [i, t]: i > t, not yet written
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#f2f2f2")
    row_pixels = (height - 1.3) * fig.dpi / max(steps, 1)  # the axes' height over the rows
    image = None
    for layer, ax in enumerate(axes):
        image = ax.imshow(
            np.ma.masked_array(record.keep[layer], mask=future),
            origin="lower",
            aspect="auto",
            cmap=cmap,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            extent=(-0.5, steps - 0.5, -0.5, steps - 0.5),
        )
        for code in codes:
            at = np.flatnonzero(record.events == code)
            colour, marker = EVENT_STYLE.get(code, ("#ffffff", "P"))
            # on the diagonal: where the observation was written; row: how long it lived
            ax.scatter(
                at, at, s=marker_size, c=colour, marker=marker, edgecolors="black", linewidths=0.5
            )
            if row_pixels < MIN_ROW_PIXELS:
                kept = [(i, a, b) for i in at for a, b in _runs(record.keep[layer, i] > 0)]
                if kept:
                    rows, starts, ends = np.asarray(kept, dtype=float).T
                    ax.hlines(  # unclipped: row 0's line lies on the frame
                        rows, starts - 0.5, ends + 0.5, colors=colour, linewidth=2.5, clip_on=False
                    )
        ax.set_xlim(-0.5, steps - 0.5)
        ax.set_ylim(-0.5, steps - 0.5)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("agent step t")
        if layer == 0:
            ax.set_ylabel("observation step i (when written)")
    if image is not None:
        bar = fig.add_axes((right + 0.25 / width, 0.55 / height, 0.18 / width, 1 - 1.3 / height))
        fig.colorbar(image, cax=bar, label="keep mask (1 kept, 0 dropped)")
    if codes:
        axes[0].legend(
            handles=_event_handles(codes),
            loc="upper left",
            fontsize=8,
            framealpha=0.85,
            title="event of step i",
            title_fontsize=8,
        )
    fig.suptitle(title, fontsize=12 if n_layers > 1 else 9, wrap=True)  # one layer: narrow
    return fig


def plot_spans(record: EpisodeRetention, path: Path, title: str) -> Path:
    """Predicted span of each stored observation by write step (events marked), and a
    histogram of the spans, per layer."""
    fig = _figure(11.0, 4.2)
    ax_line, ax_hist = fig.subplots(
        1,
        2,
        width_ratios=(2.2, 1.0),
        gridspec_kw={"left": 0.07, "right": 0.98, "bottom": 0.13, "top": 0.84, "wspace": 0.18},
    )
    steps = np.arange(record.n_steps)
    codes = sorted(int(c) for c in np.unique(record.events) if c != 0)
    finite_any = False
    for layer in range(record.n_layers):
        span = record.span[layer]
        finite = np.isfinite(span)
        if not finite.any():
            continue
        finite_any = True
        style = ("-", "--", ":", "-.")[layer % 4]
        ax_line.plot(
            steps[finite],
            span[finite],
            marker=".",
            markersize=3,
            lw=1.2,
            ls=style,
            label=f"layer {layer}",
        )
        ax_hist.hist(
            span[finite], bins=30, histtype="step", lw=1.5, ls=style, label=f"layer {layer}"
        )
    if finite_any:
        for code in codes:
            colour, _ = EVENT_STYLE.get(code, ("#888888", "P"))
            for first, last in _runs(record.events == code):
                ax_line.axvspan(first - 0.5, last + 0.5, color=colour, alpha=0.25, lw=0)
        event_patches = [
            Line2D(
                [],
                [],
                color=EVENT_STYLE.get(c, ("#888888", ""))[0],
                alpha=0.5,
                lw=6,
                label=EVENT_NAMES.get(c, f"event {c}").replace("_", " "),
            )
            for c in codes
        ]
        handles, _ = ax_line.get_legend_handles_labels()
        ax_line.legend(handles=handles + event_patches, fontsize=8, loc="best", framealpha=0.85)
        ax_hist.legend(fontsize=8)
    else:
        for ax, message in (
            (
                ax_line,
                "every span is infinite: the full memory expires nothing\n"
                "(it drops the oldest memory only past --max-memory)",
            ),
            (ax_hist, "no finite span"),
        ):
            ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax_line.set_xlim(-0.5, record.n_steps - 0.5)
    ax_line.set_xlabel("write step i (observation)")
    ax_line.set_ylabel("predicted span (steps)")
    ax_line.set_title("span of each stored observation")
    ax_hist.set_xlabel("predicted span (steps)")
    ax_hist.set_ylabel("observations")
    ax_hist.set_title("histogram of spans")
    fig.suptitle(title)
    fig.savefig(path)
    return path


def write_retention_files(
    record: EpisodeRetention, out_dir: Path, stem: str, title: str
) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """``keep_<stem>.png``, ``spans_<stem>.png`` and ``retention_<stem>.npz`` in ``out_dir``.

    Returns ``({"retention/keep": png, "retention/spans": png}, {"retention/span_layer{l}":
    finite spans})``, the arguments of `RunLogger.log_media`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / f"retention_{stem}.npz", **record.arrays())
    images = {
        "retention/keep": plot_keep(record, out_dir / f"keep_{stem}.png", title),
        "retention/spans": plot_spans(record, out_dir / f"spans_{stem}.png", title),
    }
    histograms = {
        f"retention/span_layer{layer}": record.span[layer][np.isfinite(record.span[layer])]
        for layer in range(record.n_layers)
    }
    return images, histograms


def episode_title(record: EpisodeRetention, what: str) -> str:
    """``<kind> memory, <env>, seed s, T steps: <what>``."""
    return (
        f"{record.kind} memory on {record.env_id}, episode seed {record.seed}, "
        f"{record.n_steps} steps: {what}"
    )


def retention_snapshot(
    policy: ActorCritic,
    env_id: str,
    device: torch.device | str,
    out_dir: Path,
    global_step: int,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Track one fresh episode with the current policy and write its pictures and arrays.

    Files in ``out_dir`` (the trainer passes ``RUN_DIR/retention/``), named by ``global_step``:
    ``keep_step<N>.png`` (retention heatmaps, layers side by side, events marked),
    ``spans_step<N>.png`` (span by write step and its histogram) and ``retention_step<N>.npz``
    (`EpisodeRetention.arrays`). Returns the images and span histograms for
    `RunLogger.log_media`; ``({}, {})`` for gru / lstm / none.
    """
    record = track_episode(policy, env_id, device, seed, env_kwargs=env_kwargs)
    if record is None:
        return {}, {}
    title = episode_title(record, f"training step {global_step:,}")
    return write_retention_files(record, Path(out_dir), f"step{global_step:09d}", title)
