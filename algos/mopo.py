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

import sys
from dataclasses import dataclass

import torch

from engine.agent import SACAgent
from engine.batch import Batch, cat_batches
from engine.budgets import RECORDED_DYNAMICS, fast_budget
from engine.cli import run_cli
from engine.model_based_config import ModelBasedConfig
from engine.rollout import RolloutConfig
from engine.sac import SACConfig
from engine.trainer import train_model_based

ALGO = "mopo"


@dataclass(frozen=True)
class Config(ModelBasedConfig):
    """MOPO run configuration (every field is a CLI flag: ``--num-updates``, ``--rollout.horizon``)."""

    real_ratio: float = 0.05
    """Fraction of each minibatch drawn from the dataset; the rest from model rollouts."""
    rollout: RolloutConfig = RolloutConfig(horizon=5, penalty_coef=0.5)
    """Model rollout horizon h and penalty coefficient lambda (MOPO Eq. 8)."""
    sac: SACConfig = SACConfig()
    """SAC hyperparameters (2x256 networks, lr 3e-4, twin Q, automatic entropy)."""


# (horizon, penalty_coef) per dataset: OfflineRL-Kit's D4RL-v2 MOPO settings, which reproduce the
# paper; "expert" has no published MOPO setting and takes the medium-expert one.
_MOPO_HPARAMS = {
    "halfcheetah": {"random": (5, 0.5), "medium": (5, 0.5), "medium-replay": (5, 0.5), "medium-expert": (5, 2.5)},
    "hopper": {"random": (5, 1.0), "medium": (5, 5.0), "medium-replay": (5, 2.5), "medium-expert": (5, 5.0)},
    "walker2d": {"random": (5, 1.0), "medium": (5, 0.5), "medium-replay": (1, 2.5), "medium-expert": (1, 2.5)},
}
PRESETS: dict[str, Config] = {
    f"simloop/{env}/{level}-v0": Config(
        dataset=f"simloop/{env}/{level}-v0",
        rollout=RolloutConfig(*hp[level if level != "expert" else "medium-expert"]),
        dynamics=RECORDED_DYNAMICS,
    )
    for env, hp in _MOPO_HPARAMS.items()
    for level in ("random", "medium", "medium-replay", "medium-expert", "expert")
}
"""Per-dataset hyperparameters (``--dataset ID`` picks them)."""
BUDGETS = {"fast": fast_budget(num_updates=35_000, num_threads=2)}
"""``--fast``: the whole job in minutes on an idle 2-core machine (data generation, the dataset's shipped
ensemble or a short fit, 35,000 updates at 2 threads, a 10-episode evaluation); bench/RESULTS.md has its time
and README its scores."""


class MOPOAgent(SACAgent):
    """SAC (``engine.sac``) trained on real rows and model rows whose rewards the rollout already penalised."""

    def update(self, real: Batch, model: Batch, generator: torch.Generator) -> dict:
        """MOPO's step (Algorithm 2, line 10): one SAC update on the union of real and model rows, whose
        rewards are r~ = r^ - lambda * u(s, a) (Eq. 8, applied in ``kernels.rollout_step``)."""
        return self.sac.update(cat_batches(real, model), generator)


def make_agent(data, cfg: Config, device, dyn, saved: dict | None = None) -> MOPOAgent:
    """The agent for ``data``'s dims (``engine.agent.MakeAgent``; the dynamics are not part of it, and ``saved``
    changes nothing: the caller loads it)."""
    return MOPOAgent(data.obs_dim, data.act_dim, cfg.sac, device)


def train(cfg: Config | None, resume: str | None = None) -> dict:
    """Run MOPO; returns the summary dict (also written to ``<out>/summary.json``).

    With ``resume`` (a run directory) the run continues from its last checkpoint with its saved config
    (``cfg`` None, or the saved config with a larger ``num_updates``). Raises ValueError for an unknown
    dataset id or bad config values, FileExistsError when ``cfg.out`` already holds a run and ``resume``
    is not given, FloatingPointError when training diverges.
    """
    return train_model_based(ALGO, Config, cfg, make_agent, resume)


def main(argv: list[str] | None = None) -> dict:
    return run_cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
