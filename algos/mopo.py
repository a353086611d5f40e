"""MOPO: Model-based Offline Policy Optimization (Yu et al., NeurIPS 2020, arXiv:2005.13239).

SAC trained on a mix of real transitions and short rollouts of a learned dynamics ensemble whose
reward is penalised by the model's uncertainty: r~(s, a) = r^(s, a) - lambda * u(s, a),
u = max_e ||std_e(s, a)||_2 (Algorithm 2, Eq. 8; the "max aleatoric" penalty of the official
code tianheyu927/mopo). Hyperparameter defaults follow the official code and OfflineRL-Kit's
D4RL-v2 settings (yihaosun1124/OfflineRL-Kit, run_example/run_mopo.py).

    python -m algos.mopo --fast                       # the quick end-to-end job
    python -m algos.mopo --dataset simloop/hopper/medium-v0 --num-updates 200000
    python -m algos.mopo --resume runs/mopo/.../<time>   # continue a killed run
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from engine.buffer import Batch, cat_batches
from engine.cli import run_cli
from engine.dynamics import DynamicsConfig
from engine.rollout import RolloutConfig
from engine.sac import SAC, SACConfig
from engine.trainer import DEFAULT_DATASET, ModelBasedConfig, train_model_based


@dataclass(frozen=True)
class Config(ModelBasedConfig):
    """MOPO run configuration (every field is a CLI flag: ``--num-updates``, ``--rollout.horizon``)."""

    real_ratio: float = 0.05
    """Fraction of each minibatch drawn from the dataset; the rest from model rollouts."""
    rollout: RolloutConfig = RolloutConfig(horizon=5, penalty_coef=0.5)
    """Model rollout horizon h and penalty coefficient lambda (MOPO Eq. 8)."""
    sac: SACConfig = SACConfig()
    """SAC hyperparameters (2x256 networks, lr 3e-4, twin Q, automatic entropy)."""


def _preset(dataset: str, horizon: int, penalty_coef: float) -> Config:
    return Config(dataset=dataset, rollout=RolloutConfig(horizon=horizon, penalty_coef=penalty_coef))


# (horizon, penalty_coef) per dataset: OfflineRL-Kit's D4RL-v2 MOPO settings, which reproduce the
# paper; "expert" has no published MOPO setting and takes the medium-expert one.
_MOPO_HPARAMS = {
    "halfcheetah": {"random": (5, 0.5), "medium": (5, 0.5), "medium-replay": (5, 0.5), "medium-expert": (5, 2.5)},
    "hopper": {"random": (5, 1.0), "medium": (5, 5.0), "medium-replay": (5, 2.5), "medium-expert": (5, 5.0)},
    "walker2d": {"random": (5, 1.0), "medium": (5, 0.5), "medium-replay": (1, 2.5), "medium-expert": (1, 2.5)},
}
PRESETS: dict[str, Config] = {
    f"simloop/{env}/{level}-v0": _preset(
        f"simloop/{env}/{level}-v0", *hp[level if level != "expert" else "medium-expert"]
    )
    for env, hp in _MOPO_HPARAMS.items()
    for level in ("random", "medium", "medium-replay", "medium-expert", "expert")
}
PRESETS["fast"] = replace(
    PRESETS[DEFAULT_DATASET],
    num_updates=5_000,
    rollout_batch_size=5_000,
    eval_interval=5_000,
    eval_episodes=5,
    checkpoint_interval=2_500,
    dynamics=replace(DynamicsConfig(), max_epochs=3, max_steps_per_epoch=400),
)
"""``--fast``: the whole job (data generation, dynamics, 5,000 SAC updates, evaluation) in minutes."""


def mopo_update(agent: SAC, real: Batch, model: Batch, generator: torch.Generator, cfg: Config) -> dict:
    """MOPO's step (Algorithm 2, line 10): one SAC update on the union of real rows and model rows,
    whose rewards the rollout already penalised by lambda * u(s, a)."""
    return agent.update(cat_batches(real, model), generator)


def train(cfg: Config, resume: str | None = None) -> dict:
    """Run MOPO; returns the summary dict (also written to ``<out>/summary.json``).

    With ``resume`` (a run directory), the run continues from its last checkpoint with its own
    saved config. Raises ValueError for an unknown dataset id or bad config values, FileExistsError
    when ``cfg.out`` already holds a run and ``resume`` is not given.
    """
    return train_model_based(
        "mopo", cfg, lambda data, c, dev, dyn: SAC(data.obs_dim, data.act_dim, c.sac, dev), mopo_update, resume
    )


def main(argv: list[str] | None = None) -> dict:
    return run_cli(train, PRESETS, "python -m algos.mopo", __doc__, argv)


if __name__ == "__main__":
    # Run the imported module, not __main__, so that checkpoints pickle algos.mopo.Config and load
    # from any entry point (a resume, a sweep worker, a notebook).
    from algos.mopo import main as _main

    _main()
