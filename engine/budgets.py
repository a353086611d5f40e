"""Budget presets of the model-based algorithms: the ensemble budget of the dataset presets and recorded runs
(``RECORDED_DYNAMICS``) and the ``--fast`` preset builder (``fast_budget``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engine.dynamics import DynamicsConfig, shipped_ensemble
from engine.model_based_config import ModelBasedConfig

RECORDED_DYNAMICS = DynamicsConfig(max_epochs=60, max_steps_per_epoch=1000)
"""The ensemble budget of the dataset presets and the recorded runs: 60 epochs of at most 1,000 minibatches
(15.4M samples, ~19 passes over 800k training rows) with early stopping, instead of MOPO's full passes to
early stop, which take hours on a CPU."""


def fast_budget(num_updates: int, **fields) -> Callable[[ModelBasedConfig], ModelBasedConfig]:
    """A ``--fast`` budget preset: ``cfg -> cfg`` with ``num_updates`` updates, 5,000 rollout start states, one
    evaluation at the end, and an ensemble that costs little: the dataset's shipped one where the package has
    it (``engine.dynamics.shipped_ensemble``; its seed 0 for every run seed), else a 3 x 400-minibatch fit.
    ``fields`` override any of these. The algorithm's hyperparameters (horizon, lambda, beta, learning rates,
    ...) stay the dataset's."""

    def budget(cfg: ModelBasedConfig) -> ModelBasedConfig:
        shipped = replace(cfg.dynamics, seed=0)
        if shipped_ensemble(cfg.dataset, shipped) is not None:
            dynamics = shipped
        else:
            dynamics = replace(cfg.dynamics, max_epochs=3, max_steps_per_epoch=400)
        values = dict(
            num_updates=num_updates,
            rollout_batch_size=5_000,
            eval_interval=num_updates,
            checkpoint_interval=max(1, num_updates // 2),
            dynamics=dynamics,
        )
        return replace(cfg, **{**values, **fields})

    return budget
