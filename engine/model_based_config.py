"""The config schema every model-based algorithm shares: ``ModelBasedConfig`` (each algorithm's Config extends
it), the fields a resumed run may change (``RUN_CONTROL_FIELDS``) and the rule that the dynamics ensemble's seed
follows the run's (``with_dynamics_seed``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from engine import data
from engine.dynamics import DynamicsConfig
from engine.rollout import RolloutConfig


@dataclass(frozen=True)
class ModelBasedConfig:
    """Fields every model-based algorithm shares (each is a CLI flag: ``--num-updates``)."""

    dataset: str = data.DEFAULT_DATASET
    """Minari dataset id (simloop ids are generated locally when missing)."""
    seed: int = 0
    """Seed of every random choice: network initialisation, sampling, rollouts, evaluation episodes, and the
    dynamics ensemble unless ``dynamics.seed`` or ``dynamics_path`` is given."""
    device: str = "cpu"
    """torch device."""
    num_threads: int = 1
    """torch intra-op threads on the CPU (1: one run per core; bench/RESULTS.md has the measurements)."""
    num_updates: int = 1_000_000
    """Gradient steps of the agent (MOPO/COMBO: 1,000 epochs x 1,000 steps)."""
    batch_size: int = 256
    """Minibatch size (real + model rows)."""
    real_ratio: float = 0.05
    """Fraction of each minibatch drawn from the dataset; the rest from model rollouts."""
    rollout: RolloutConfig = RolloutConfig(horizon=5, penalty_coef=0.0)
    """Model rollout horizon h and reward penalty coefficient lambda."""
    rollout_batch_size: int = 50_000
    """N: start states per rollout phase, drawn from the dataset."""
    rollout_interval: int = 1_000
    """Gradient steps between rollout phases."""
    model_retain_rollouts: int = 5
    """Rollout phases the model buffer keeps (capacity = this x rollout_batch_size x horizon)."""
    dynamics: DynamicsConfig = DynamicsConfig()
    """Dynamics ensemble (7 members, 5 elites, 4x200 SiLU); its seed follows ``seed`` unless given."""
    dynamics_path: str | None = None
    """Use this saved ensemble instead of the cache (trained on this dataset; its own seed applies)."""
    eval_interval: int = 10_000
    """Gradient steps between evaluations on the true environment."""
    eval_episodes: int = 10
    """Episodes of the final evaluation (intermediate ones use half, at least 1)."""
    eval_backend: Literal["cpu", "mjx"] = "cpu"
    """True-environment evaluation: "cpu" (Gymnasium MuJoCo, the default without a GPU) or "mjx" (all
    episodes in parallel in one compiled JAX loop; fast on a GPU once compiled, on first use in a process)."""
    log_interval: int = 1_000
    """Gradient steps between metric rows."""
    checkpoint_interval: int = 10_000
    """Gradient steps between checkpoints (resumable with --resume; a larger --num-updates extends the run)."""
    out: str | None = None
    """Run directory; default runs/<algo>/<dataset>/<time>/."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        checks = {
            "num_updates": self.num_updates >= 1,
            "batch_size": self.batch_size >= 1,
            "real_ratio": 0.0 <= self.real_ratio <= 1.0,
            "rollout_batch_size": self.rollout_batch_size >= 1,
            "rollout_interval": self.rollout_interval >= 1,
            "model_retain_rollouts": self.model_retain_rollouts >= 1,
            "eval_interval": self.eval_interval >= 1,
            "eval_episodes": self.eval_episodes >= 1,
            "log_interval": self.log_interval >= 1,
            "checkpoint_interval": self.checkpoint_interval >= 1,
            "num_threads": self.num_threads >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"bad config value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                "(counts and intervals must be >= 1, real_ratio in [0, 1])"
            )


RUN_CONTROL_FIELDS = ("num_updates", "num_threads", "progress", "checkpoint_interval", "device", "eval_backend")
"""Fields a resumed run may change (``--resume DIR --num-updates 400000``): how long and where it runs, not what."""


def with_dynamics_seed(cfg: ModelBasedConfig) -> ModelBasedConfig:
    """``cfg`` with ``dynamics.seed`` set to ``cfg.seed`` where it is None (the ensemble follows the run's seed)."""
    return replace(cfg, dynamics=cfg.dynamics.seeded(cfg.seed))
