"""The environments simloop supports, one ``EnvSpec`` each holding every fact about the task (Brax style):
Gymnasium MuJoCo v5 locomotion tasks, their dimensions, D4RL's reference returns for normalised scores
(Fu et al. 2020, "D4RL", Table 4 / d4rl/infos.py: REF_MIN_SCORE = random policy, REF_MAX_SCORE = expert
policy), and the constants of the Gymnasium task: model file, frame skip, reward weights, reset noise and
healthy ranges, the defaults of ``<Env>-v5.__init__`` (Gymnasium 1.4,
gymnasium/envs/mujoco/{half_cheetah,hopper,walker2d}_v5.py; checked against Gymnasium in
tests/test_mjx_eval.py). ``engine.termination`` builds the learned model's termination from the healthy
ranges and ``engine.mjx_eval`` re-states the task in JAX from the rest.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvSpec:
    """One supported task."""

    name: str
    """Short name used in dataset ids (``simloop/<name>/<level>-v0``)."""
    gym_id: str
    """Gymnasium id of the true simulator."""
    obs_dim: int
    """D: observation dimension."""
    act_dim: int
    """A: action dimension (actions lie in [-1, 1]^A)."""
    ref_min_score: float
    """D4RL random-policy return (normalised score 0)."""
    ref_max_score: float
    """D4RL expert-policy return (normalised score 100)."""
    xml_file: str
    """Model file name inside Gymnasium's mujoco assets folder."""
    frame_skip: int
    """Physics steps per environment step."""
    forward_reward_weight: float
    """Weight of the forward velocity (m/s) in the reward."""
    ctrl_cost_weight: float
    """Weight of ``sum(action^2)`` subtracted from the reward."""
    healthy_reward: float
    """Reward per healthy step (0: no healthy term)."""
    reset_noise_scale: float
    """s: half-width of the uniform reset noise (or std of HalfCheetah's Gaussian qvel noise)."""
    qvel_noise_normal: bool
    """True: qvel reset noise is ``s * N(0, 1)`` (HalfCheetah); False: ``U(-s, s)``."""
    qvel_clip: float | None
    """Observed qvel is clipped to ``[-qvel_clip, qvel_clip]`` (None: unclipped)."""
    healthy_z_range: tuple[float, float] | None
    """Open interval for the torso height qpos[1] (None: no health check, never terminates)."""
    healthy_angle_range: tuple[float, float] | None
    """Open interval for the torso angle qpos[2]."""
    healthy_state_range: tuple[float, float] | None
    """Open interval for every element of ``concat(qpos, qvel)[2:]`` (Hopper only)."""


_WALKER = dict(forward_reward_weight=1.0, ctrl_cost_weight=1e-3, healthy_reward=1.0, reset_noise_scale=5e-3)

ENVS: dict[str, EnvSpec] = {
    "halfcheetah": EnvSpec(
        "halfcheetah",
        "HalfCheetah-v5",
        obs_dim=17,
        act_dim=6,
        ref_min_score=-280.178953,
        ref_max_score=12135.0,
        xml_file="half_cheetah.xml",
        frame_skip=5,
        forward_reward_weight=1.0,
        ctrl_cost_weight=0.1,
        healthy_reward=0.0,
        reset_noise_scale=0.1,
        qvel_noise_normal=True,
        qvel_clip=None,
        healthy_z_range=None,
        healthy_angle_range=None,
        healthy_state_range=None,
    ),
    "hopper": EnvSpec(
        "hopper",
        "Hopper-v5",
        obs_dim=11,
        act_dim=3,
        ref_min_score=-20.272305,
        ref_max_score=3234.3,
        xml_file="hopper.xml",
        frame_skip=4,
        **_WALKER,
        qvel_noise_normal=False,
        qvel_clip=10.0,
        healthy_z_range=(0.7, math.inf),
        healthy_angle_range=(-0.2, 0.2),
        healthy_state_range=(-100.0, 100.0),
    ),
    "walker2d": EnvSpec(
        "walker2d",
        "Walker2d-v5",
        obs_dim=17,
        act_dim=6,
        ref_min_score=1.629008,
        ref_max_score=4592.3,
        xml_file="walker2d_v5.xml",
        frame_skip=4,
        **_WALKER,
        qvel_noise_normal=False,
        qvel_clip=10.0,
        healthy_z_range=(0.8, 2.0),
        healthy_angle_range=(-1.0, 1.0),
        healthy_state_range=None,
    ),
}


def get_env_spec(name: str) -> EnvSpec:
    """The EnvSpec for a short name or Gymnasium id. Raises ValueError listing the supported ones."""
    for spec in ENVS.values():
        if name in (spec.name, spec.gym_id):
            return spec
    valid = ", ".join(f"{s.name} ({s.gym_id})" for s in ENVS.values())
    raise ValueError(f"unsupported environment {name!r}; supported: {valid}")


@functools.cache
def _warn_once(message: str) -> None:
    """MuJoCo's warning handler inside ``make_env``: each distinct message is logged once (the cache remembers it)."""
    log.warning("MuJoCo (shown once per process): %s", message)


def make_env(name: str, **kwargs):
    """``gymnasium.make`` for a supported env (short name or Gymnasium id). Raises ValueError for others.

    While the model compiles, MuJoCo's warnings go to the ``engine.envs`` logger, each distinct message once
    per process (MuJoCo >= 4.0 warns that Gymnasium's ``half_cheetah.xml`` uses the deprecated
    ``settotalmass`` at every compile: once per evaluation env, ~100 times per run). The previous MuJoCo
    warning handler is restored afterwards, so warnings outside this call are MuJoCo's as usual.
    """
    import gymnasium as gym
    import mujoco

    gym_id = get_env_spec(name).gym_id
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_warn_once)
    try:
        return gym.make(gym_id, **kwargs)
    finally:
        mujoco.set_mju_user_warning(previous)


def d4rl_score(returns, ref_min_score: float, ref_max_score: float):
    """D4RL normalised score ``100 * (R - R_random) / (R_expert - R_random)`` (Fu et al. 2020, Sec. 5), with
    ``R_random = ref_min_score`` and ``R_expert = ref_max_score``: the one place this formula is written.

    ``returns``: undiscounted episode return(s), a float or an array of any shape (same shape out).
    """
    return 100.0 * (returns - ref_min_score) / (ref_max_score - ref_min_score)


def normalize_return(env: str, returns):
    """``d4rl_score`` with the reference returns of a supported env (short name or Gymnasium id); works on
    floats and arrays. Raises ValueError for an unsupported env."""
    spec = get_env_spec(env)
    return d4rl_score(returns, spec.ref_min_score, spec.ref_max_score)
