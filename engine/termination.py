"""Termination of learned-model rollouts, held as parameters (per-dimension healthy bounds on the
observation) rather than Python callbacks, so that a fused rollout kernel can apply them.

A transition is terminal iff its next observation leaves the open box ``obs_low < obs < obs_high``
in any dimension, or holds a non-finite element. The boxes reproduce the ``is_healthy`` property
of Gymnasium's v5 MuJoCo environments with their default arguments
(gymnasium/envs/mujoco/{hopper,walker2d,half_cheetah}_v5.py, Gymnasium 1.4; the ranges are the
``healthy_*_range`` fields of each ``engine.envs.EnvSpec``), the rule MOPO's
static termination functions encode for the D4RL tasks (tianheyu927/mopo, static_fns/*.py; also
mbrl-lib's termination_fns.py). One departure: MOPO's hopper writes ``np.abs(next_obs[:, 1:] < 100)``
(abs of a bool), so it checks only the upper state bound; here both sides are checked, as Gymnasium does.

Mapping from the simulator state to the observation (``exclude_current_positions_from_observation=True``,
the default: the observation is ``concat(qpos[1:], clip(qvel, -10, 10))``, so ``obs[0] = qpos[1]``
is the torso height z and ``obs[1] = qpos[2]`` the torso angle):

- HalfCheetah-v5: never terminates (no ``is_healthy``); all bounds are +-inf.
- Hopper-v5 (D = 11): ``is_healthy`` checks ``0.7 < qpos[1] < inf`` (z, ``obs[0]``),
  ``-0.2 < qpos[2] < 0.2`` (angle, ``obs[1]``) and ``-100 < state_vector()[2:] < 100``, i.e.
  ``qpos[2:]`` (``obs[1:5]``) and all of ``qvel`` (``obs[5:11]``). The bounds are intersected per
  dimension: ``obs[0]`` in (0.7, inf), ``obs[1]`` in (-0.2, 0.2), ``obs[2:]`` in (-100, 100).
  The height z is not part of the state-range check (it starts at index 2 of the state vector).
  Approximation: Gymnasium checks the *unclipped* ``qvel`` but the observation holds ``qvel``
  clipped to [-10, 10], so the (-100, 100) bound can never fire on ``obs[5:11]``; a true episode
  that ends because a joint velocity reached 100 is judged healthy here. The test suite measures
  this on real simulator states (tests/test_termination.py).
- Walker2d-v5 (D = 17): ``is_healthy`` checks ``0.8 < qpos[1] < 2.0`` (z, ``obs[0]``) and
  ``-1 < qpos[2] < 1`` (angle, ``obs[1]``); every other dimension is unbounded. (The
  walker2d_v5.py docstring swaps the observation indices for the angle; the code reads qpos[2].)

The comparisons are strict, as in Gymnasium's code (its docs say "closed interval"; the code is
``min < x < max``). Bounds are stored in float32, so a value within one float32 rounding step of
a bound (about 6e-8 at 0.7) may be judged differently from Gymnasium's float64 check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.envs import get_env_spec


@dataclass(frozen=True, eq=False)
class TerminationParams:
    """Per-dimension healthy bounds of the observation: healthy iff ``obs_low < obs < obs_high``
    elementwise (strict), in every dimension. ``eq=False``: tensors have no boolean ``==``.

    Raises:
        ValueError: bounds not both ``[D]``; or, for CPU tensors (others are not read, to avoid a
            device sync), containing NaN or with ``obs_low >= obs_high`` somewhere.
    """

    obs_low: torch.Tensor
    """``[D]`` float32: lower bound per observation dimension (``-inf`` where unbounded)."""
    obs_high: torch.Tensor
    """``[D]`` float32: upper bound per observation dimension (``+inf`` where unbounded)."""

    def __post_init__(self):
        low, high = self.obs_low, self.obs_high
        if low.dim() != 1 or low.shape != high.shape:
            raise ValueError(f"obs_low and obs_high must both be [D]; got {tuple(low.shape)} and {tuple(high.shape)}")
        if low.device.type != "cpu" or high.device.type != "cpu":
            return  # values were checked where they were built; checking here would sync the device
        if torch.isnan(low).any() or torch.isnan(high).any() or not bool((low < high).all()):
            raise ValueError("bounds must be non-NaN with obs_low < obs_high in every dimension")

    @property
    def obs_dim(self) -> int:
        """D: the observation dimension the bounds apply to."""
        return self.obs_low.shape[0]

    def to(self, device: torch.device | str) -> TerminationParams:
        """The same bounds on ``device``."""
        return TerminationParams(self.obs_low.to(device), self.obs_high.to(device))


def termination_params(env_name: str) -> TerminationParams:
    """Healthy bounds of a supported env (short name or Gymnasium id), from its EnvSpec's
    ``healthy_*_range`` (Gymnasium v5's defaults); see the module docstring for the index mapping.

    Raises:
        ValueError: unsupported env (lists the supported ones, from ``engine.envs.get_env_spec``).
    """
    spec = get_env_spec(env_name)
    low = torch.full((spec.obs_dim,), -math.inf)
    high = torch.full((spec.obs_dim,), math.inf)
    # The observation is concat(qpos[1:], clipped qvel): state_vector()[2:] = obs[1:], z = qpos[1] = obs[0],
    # angle = qpos[2] = obs[1]; where two ranges cover one dimension the box is their intersection.
    for index, bounds in (
        (slice(1, None), spec.healthy_state_range),
        (0, spec.healthy_z_range),
        (1, spec.healthy_angle_range),
    ):
        if bounds is not None:
            low[index] = low[index].clamp(min=bounds[0])
            high[index] = high[index].clamp(max=bounds[1])
    return TerminationParams(low, high)


def is_terminal(params: TerminationParams, next_obs: torch.Tensor) -> torch.Tensor:
    """Reference termination: ``next_obs: [N, D]`` (any float dtype, on ``params``' device) ->
    ``[N]`` bool, True where the row is not healthy or holds a NaN/inf element.

    Non-finite rows need no separate test: every bound is finite or +-inf and the comparisons are
    strict, so ``NaN < x``, ``x < NaN``, ``inf < inf`` and ``-inf > -inf`` are all False and fail
    the healthy check in whichever dimension they occur.

    Raises:
        ValueError: ``next_obs`` is not ``[N, D]`` with D = ``params.obs_dim``.
    """
    if next_obs.dim() != 2 or next_obs.shape[1] != params.obs_dim:
        raise ValueError(f"next_obs must be [N, {params.obs_dim}]; got {tuple(next_obs.shape)}")
    healthy = ((next_obs > params.obs_low) & (next_obs < params.obs_high)).all(dim=-1)
    return ~healthy
