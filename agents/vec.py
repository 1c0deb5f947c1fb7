"""Vector environments for the learner, all behind one interface of torch tensors on a device.

- A Gymnasium id with a ``vector_entry_point`` (every ``Lethe/*`` id) gets its batched torch
  twin on the training device: a rollout never leaves it.
- Any other id gets Gymnasium's own vector env (async, one process per env, when the machine
  has more than one core and the env count is modest; sync otherwise); observations are moved to
  the device once per step.

Both use Gymnasium's default autoreset mode, ``NEXT_STEP``, which the learner relies on (see
`docs/architecture.md`). Observations are handed out as a dict of tensors: the keys of a
``Dict`` space (text entries such as MiniGrid's ``mission`` are dropped), or ``{"obs": x}``.
With ``previous_action_reward`` two entries join them: ``prev_action`` (0 at an episode's
first observation, else the action taken plus 1) and ``prev_reward`` (``[1]``, the reward as
the env gave it, unscaled; 0 at an episode's first observation), so that a memory holds what
the agent did and got.

Failures of a Gymnasium env (its own exception, in this process or in an async worker, or a
worker process that died) surface as one `EnvError` naming the env and the cause, never as a
hang: the workers are then terminated rather than waited for. Async workers ignore SIGINT, so
Ctrl-C at a terminal (which signals the whole process group) reaches the learner alone, which
checkpoints and then closes its workers.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.async_vector_env import AsyncState, AsyncVectorEnv, _async_worker

from agents.config import ConfigError
from envs.wrappers import with_previous_spaces

ObsDict = dict[str, torch.Tensor]
T = TypeVar("T")

#: Gymnasium's async vector env starts one process per env; past this many per core, sync is faster.
ASYNC_ENVS_PER_CORE = 4

#: keyword arguments the learner sets itself when it builds a vector env: not env kwargs
RESERVED_ENV_KWARGS = {
    "num_envs": "--num-envs",
    "device": "--device",
    "vectorization_mode": "the learner (the batched twin where there is one)",
    "vector_kwargs": "the learner",
    "wrappers": "the learner",
}


class EnvError(RuntimeError):
    """An environment failed while the run stepped or reset it; the message is one line."""


def _sigint_deaf_worker(*args: Any) -> None:
    """Gymnasium's async worker, ignoring SIGINT (the learner decides when workers stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _async_worker(*args)


def _import_registrations() -> None:
    """Register our ids and MiniGrid's (Gymnasium >= 1.0 loads no plugins by itself)."""
    import envs  # noqa: F401  (registers Lethe/*)

    try:
        import minigrid  # noqa: F401  (registers MiniGrid-*)
    except ImportError:  # pragma: no cover - minigrid is a dependency, but stay usable without it
        pass


def resolve_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of `env_id` (``module:id`` allowed), or a one-line `ConfigError`."""
    _import_registrations()
    module, _, name = env_id.rpartition(":")
    if module:  # Gymnasium's module:id form: the module registers the id when imported
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"cannot import module {module!r} of env {env_id!r}: {error}"
            ) from None
    try:
        return gym.spec(name)
    except gym.error.Error as error:
        known = sorted(i for i in gym.registry if i.startswith("Lethe/"))
        raise ConfigError(
            f"unknown env id {env_id!r} ({str(error).splitlines()[0]}); "
            f"Lethe ids: {', '.join(known)}; or any registered Gymnasium id, or module:id"
        ) from None


def observation_keys(space: spaces.Space) -> dict[str, spaces.Space]:
    """The sub-spaces the policy reads, by key: tensors only (text is dropped)."""
    if isinstance(space, spaces.Dict):
        kept = {
            k: s for k, s in space.spaces.items() if isinstance(s, (spaces.Box, spaces.Discrete))
        }
        if not kept:
            raise ConfigError(
                f"observation space {space} has no Box or Discrete entry to learn from"
            )
        return kept
    if isinstance(space, (spaces.Box, spaces.Discrete)):
        return {"obs": space}
    raise ConfigError(
        f"observation space {type(space).__name__} is not supported; allowed: Box, Discrete, "
        "or a Dict of them"
    )


class TorchVectorEnv:
    """A vector env whose observations, rewards, flags and info are tensors on `device`.

    Wraps either a batched twin (already torch: passed through) or a Gymnasium numpy vector
    env (converted once per step).
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        device: torch.device,
        env_id: str | None = None,
        previous_action_reward: bool = False,
    ) -> None:
        self.env = env
        self.device = device
        self.env_id = env_id or getattr(getattr(env, "spec", None), "id", None) or "env"
        # Gymnasium (numpy) vector envs run user code: their errors become one EnvError.
        self.guarded = isinstance(env, (gym.vector.SyncVectorEnv, AsyncVectorEnv))
        self.failed = False
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        if not isinstance(self.single_action_space, spaces.Discrete):
            raise ConfigError(
                f"action space {self.single_action_space} is not supported; allowed: Discrete "
                "(continuous control is not implemented)"
            )
        self.action_start = int(self.single_action_space.start)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ConfigError(
                f"vector env autoreset mode {mode} is not supported; allowed: NEXT_STEP"
            )
        self.obs_spaces = observation_keys(self.single_observation_space)
        self.previous_action_reward = previous_action_reward
        if previous_action_reward:
            try:
                self.obs_spaces = with_previous_spaces(self.obs_spaces, self.single_action_space)
            except ValueError as error:
                raise ConfigError(
                    f"env {self.env_id!r} with --previous-action-reward: {error}"
                ) from None
            # NEXT_STEP autoreset: the step after a done returns the next episode's first obs
            self._resetting = torch.zeros(self.num_envs, dtype=torch.bool, device=device)
        self.is_torch = False  # set by reset(): a batched twin answers in tensors

    def _tensor(self, value: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(
            np.asarray(value) if not torch.is_tensor(value) else value,
            dtype=dtype,
            device=self.device,
        )

    def _obs(self, obs: Any) -> ObsDict:
        if isinstance(obs, dict):
            return {k: self._tensor(obs[k]) for k in self.obs_spaces}
        return {"obs": self._tensor(obs)}

    def _info(self, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in info.items():
            if isinstance(value, dict):
                continue  # nested infos (final_info of other modes) are not used
            if torch.is_tensor(value):
                out[key] = value.to(self.device)
            else:
                array = np.asarray(value)
                if array.dtype.kind in "biuf":
                    out[key] = torch.as_tensor(array, device=self.device)
        return out

    def _guard(self, what: str, call: Callable[[], T]) -> T:
        """Run `call`; an exception of a Gymnasium env becomes an `EnvError` saying what broke."""
        if not self.guarded:
            return call()
        try:
            return call()
        except Exception as error:
            self.failed = True
            raise EnvError(self._describe(what, error)) from error

    def _describe(self, what: str, error: Exception) -> str:
        if isinstance(self.env, AsyncVectorEnv) and isinstance(
            error, (EOFError, BrokenPipeError, ConnectionError)
        ):
            codes = []
            for index, process in enumerate(self.env.processes):
                process.join(timeout=1.0)
                if process.exitcode not in (None, 0):
                    codes.append(f"worker {index} exit code {process.exitcode}")
            dead = ", ".join(codes) or "a worker stopped answering"
            return f"env {self.env_id!r}: a worker process died during {what} ({dead})"
        message = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
        where = ""
        frames = error.__traceback__
        while frames is not None and frames.tb_next is not None:
            frames = frames.tb_next
        if frames is not None and not isinstance(self.env, AsyncVectorEnv):
            code = frames.tb_frame.f_code
            where = f" at {os.path.basename(code.co_filename)}:{frames.tb_lineno} in {code.co_name}"
        return f"env {self.env_id!r} failed in {what}: {detail}{where}"

    def _with_previous(
        self, obs: ObsDict, actions: torch.Tensor | None, reward: torch.Tensor | None
    ) -> ObsDict:
        """`obs` plus the previous action and reward (none at an episode's first step)."""
        if not self.previous_action_reward:
            return obs
        n, device = self.num_envs, self.device
        if actions is None or reward is None:  # after reset: every observation is a first one
            action = torch.zeros(n, dtype=torch.long, device=device)
            last = torch.zeros(n, device=device)
        else:
            action = torch.where(self._resetting, 0, actions.to(device).long() + 1)
            last = torch.where(self._resetting, 0.0, reward)
        return {**obs, "prev_action": action, "prev_reward": last.unsqueeze(-1)}

    def reset(self, seed: int | None = None) -> tuple[ObsDict, dict[str, torch.Tensor]]:
        obs, info = self._guard("reset", lambda: self.env.reset(seed=seed))
        first = next(iter(obs.values())) if isinstance(obs, dict) else obs
        self.is_torch = torch.is_tensor(first)
        if self.previous_action_reward:
            self._resetting.zero_()
        return self._with_previous(self._obs(obs), None, None), self._info(info)

    def step(
        self, actions: torch.Tensor
    ) -> tuple[ObsDict, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Step every env; `actions` is a ``[N]`` integer tensor on the device of indices
        ``0 .. n-1`` into the ``Discrete`` space (shifted by its ``start`` for the env)."""
        taken = actions
        if self.action_start:
            actions = actions + self.action_start
        if not self.is_torch:
            actions = actions.cpu().numpy()
        obs, reward, terminated, truncated, info = self._guard(
            "step", lambda: self.env.step(actions)
        )
        reward = self._tensor(reward, torch.float32)
        terminated = self._tensor(terminated, torch.bool)
        truncated = self._tensor(truncated, torch.bool)
        out = self._with_previous(self._obs(obs), taken, reward)
        if self.previous_action_reward:
            self._resetting = terminated | truncated
        return out, reward, terminated, truncated, self._info(info)

    def _curriculum_twin(self) -> Any:
        """The batched twin when it runs a curriculum (a true ``curriculum`` attribute), else
        None (no curriculum, or Gymnasium's own vector envs)."""
        has_one = not self.guarded and getattr(self.env, "curriculum", False)
        return self.env if has_one else None

    @property
    def curriculum_level(self) -> float | None:
        """Level of a batched twin's own curriculum (e.g. the length curriculum of
        `envs.corridor.CorridorVectorEnv`), None when it has none or for Gymnasium's envs;
        the trainer logs and checkpoints it. The twin's ``curriculum_level`` may be a number
        or a 0-dim tensor."""
        twin = self._curriculum_twin()
        return None if twin is None else float(twin.curriculum_level)

    @property
    def curriculum_last_level(self) -> int | None:
        """The last level of a batched twin's curriculum (the task it teaches: e.g. 100 for
        `Lethe/Corridor-L100-Curriculum-v0`, 4 rooms for the Portal's), None as for
        `curriculum_level`. Its ending episodes report their level as
        ``info["curriculum_level"]``."""
        twin = self._curriculum_twin()
        return None if twin is None else int(twin.curriculum_last)

    @curriculum_level.setter
    def curriculum_level(self, level: float) -> None:
        """Continue the twin's curriculum at ``level`` (on resume, before the first reset)."""
        twin = self._curriculum_twin()
        if twin is not None:
            twin.curriculum_level = torch.as_tensor(
                int(level), dtype=torch.long, device=twin.device
            )

    def close(self) -> None:
        """Close the envs; after a failure, terminate async workers instead of waiting on them."""
        if not self.failed:
            self.env.close()
            return
        try:  # the env's error is what the user must see: nothing raised here may mask it
            if isinstance(self.env, AsyncVectorEnv):
                self.env._state = AsyncState.DEFAULT  # no pending call to wait for: terminate
                self.env.close(terminate=True)
            else:
                self.env.close()
        except Exception:  # noqa: BLE001
            for process in getattr(self.env, "processes", []):
                if process.is_alive():
                    process.terminate()


def make_vector_env(
    env_id: str,
    num_envs: int,
    device: torch.device,
    previous_action_reward: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> TorchVectorEnv:
    """The best vector env for `env_id`: its batched twin when it has one, else Gymnasium's.

    ``previous_action_reward`` adds the `envs.wrappers.PREVIOUS_KEYS` observations (see
    `TorchVectorEnv`). ``env_kwargs`` go to the env's constructor, over the registered ones (as
    in ``gym.make(id, **kwargs)``); one it does not take, a value it refuses, or one the learner
    sets itself (`RESERVED_ENV_KWARGS`) is a one-line `ConfigError`.
    """
    spec = resolve_spec(env_id)
    if not env_kwargs:
        return _make_vector_env(spec, env_id, num_envs, device, previous_action_reward, {})
    for key in env_kwargs.keys() & RESERVED_ENV_KWARGS.keys():
        owner = RESERVED_ENV_KWARGS[key]
        raise ConfigError(f"env keyword argument {key!r} is not allowed: it is set by {owner}")
    try:
        return _make_vector_env(spec, env_id, num_envs, device, previous_action_reward, env_kwargs)
    except ConfigError:
        raise  # already one line, naming what is wrong
    except (TypeError, ValueError, AssertionError, gym.error.Error) as error:
        # AssertionError: MiniGrid checks its sizes with assert (size 2: "assert width >= 3")
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"env {env_id} refused the keyword arguments {json.dumps(env_kwargs)}: {reason}"
        ) from None


def _make_vector_env(
    spec: gym.envs.registration.EnvSpec,
    requested: str,
    num_envs: int,
    device: torch.device,
    previous_action_reward: bool,
    env_kwargs: dict[str, Any],
) -> TorchVectorEnv:
    env_id = spec.id
    if spec.vector_entry_point is not None:
        entry = spec.vector_entry_point  # "module:Class", or the class itself
        creator = entry if callable(entry) else gym.envs.registration.load_env_creator(entry)
        # torch twins take the device; other vector entry points (numpy) do not
        takes_device = "device" in inspect.signature(creator).parameters
        env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            **({"device": device} if takes_device else {}),
            **env_kwargs,
        )
    else:
        cores = os.cpu_count() or 1
        use_async = cores > 1 and 1 < num_envs <= ASYNC_ENVS_PER_CORE * cores
        if cores > 1 and num_envs > ASYNC_ENVS_PER_CORE * cores:
            warnings.warn(
                f"{num_envs} envs without a batched twin: using SyncVectorEnv, since the async "
                f"vector env would start {num_envs} processes on {cores} cores",
                stacklevel=2,
            )
        probe = gym.make(spec, **env_kwargs)
        space = probe.observation_space
        probe.close()
        wrappers = []
        if isinstance(space, spaces.Dict):
            keys = list(observation_keys(space))
            if len(keys) < len(space.spaces):  # drop text (MiniGrid's mission) in each env
                wrappers.append(lambda e: gym.wrappers.FilterObservation(e, keys))
        env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="async" if use_async else "sync",
            wrappers=wrappers,
            vector_kwargs={"worker": _sigint_deaf_worker} if use_async else None,
            **env_kwargs,
        )
    return TorchVectorEnv(env, device, requested, previous_action_reward)
