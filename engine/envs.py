"""The environments simloop supports: Gymnasium MuJoCo v5 locomotion tasks, with D4RL's
reference returns for normalised scores (Fu et al. 2020, "D4RL", Table 4 / d4rl/infos.py:
REF_MIN_SCORE = random policy, REF_MAX_SCORE = expert policy).
"""

from __future__ import annotations

from dataclasses import dataclass


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


ENVS: dict[str, EnvSpec] = {
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetah-v5", 17, 6, -280.178953, 12135.0),
    "hopper": EnvSpec("hopper", "Hopper-v5", 11, 3, -20.272305, 3234.3),
    "walker2d": EnvSpec("walker2d", "Walker2d-v5", 17, 6, 1.629008, 4592.3),
}


def get_env_spec(name: str) -> EnvSpec:
    """The EnvSpec for a short name or Gymnasium id. Raises ValueError listing the supported ones."""
    for spec in ENVS.values():
        if name in (spec.name, spec.gym_id):
            return spec
    valid = ", ".join(f"{s.name} ({s.gym_id})" for s in ENVS.values())
    raise ValueError(f"unsupported environment {name!r}; supported: {valid}")


def make_env(name: str, **kwargs):
    """``gymnasium.make`` for a supported env (short name or Gymnasium id)."""
    import gymnasium as gym

    return gym.make(get_env_spec(name).gym_id, **kwargs)


def normalize_return(env: str, returns):
    """D4RL normalised score ``100 * (R - R_random) / (R_expert - R_random)``; works on floats and arrays."""
    spec = get_env_spec(env)
    return 100.0 * (returns - spec.ref_min_score) / (spec.ref_max_score - spec.ref_min_score)
