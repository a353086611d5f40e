"""The contract between an algorithm's agent and the model-based training loop (``engine.trainer``).

An algorithm subclasses ``Agent`` and implements ``update`` and ``state_dict`` / ``load_state_dict``;
the other members have defaults that fit SAC-style agents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from engine.batch import Batch
from engine.nets import TanhGaussianActor
from engine.sac import SAC, SACConfig

Policy = Callable[[torch.Tensor], torch.Tensor]
"""``obs: [N, D] float32 -> act: [N, A]`` in [-1, 1]."""


class Agent:
    """What ``engine.trainer.train_model_based`` drives.

    Attributes:
        actor: the policy being learned; evaluated deterministically (``actor.act(obs, deterministic=True)``).
    """

    actor: TanhGaussianActor

    def update(self, real: Batch, model: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One gradient step on a real batch ``[B_real, ...]`` and a model batch ``[B_model, ...]``.
        Returns namespaced 0-d tensor metrics (``train/critic_loss``), never synchronising with the host."""
        raise NotImplementedError

    def rollout_policies(self, generator: torch.Generator) -> list[Policy]:
        """The policies rolled out in the model; the rollout batch is split evenly among them.
        Default: the actor's stochastic policy, drawing from ``generator``."""
        return [lambda obs: self.actor(obs, generator)[0]]

    def prepare(self, generator: torch.Generator, progress: bool = False) -> dict[str, torch.Tensor]:
        """Work before the first update (ARMOR's critic pretraining), run once by the loop; it returns ``{}``
        when there is nothing (left) to do. When it did work, the loop logs its metrics and checkpoints."""
        return {}

    def schedule(self, step: int, num_updates: int, block: int) -> None:
        """Set learning rates for the updates from ``step`` on (called at every rollout phase, ``block`` =
        ``rollout_interval`` updates apart). Default: nothing (constant rates)."""

    def state_dict(self) -> dict:
        """Everything needed to continue training (weights, optimiser states), as tensors and plain data."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` output."""
        raise NotImplementedError


class MakeAgent(Protocol):
    """An algorithm's ``make_agent(data, cfg, device, dyn, saved=None) -> Agent``: the agent for the loaded
    ``data`` (its dims), the config in force, the device and the trained dynamics (an agent may keep training
    them, as ARMOR's adversarial model does). ``saved``: the ``Agent.state_dict()`` the caller loads next (a
    resumed run, ``experiments.diagnose``), so work whose result it holds can be skipped (ARMOR's BC reference
    is neither fitted nor read from ``--reference`` then)."""

    def __call__(self, data, cfg, device: torch.device, dyn, saved: dict | None = None) -> Agent: ...


class SACAgent(Agent):
    """An agent whose learner is one ``engine.sac.SAC`` (MOPO, COMBO): its actor, and its state as the checkpoint.
    Subclasses write ``update``."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device):
        self.sac = SAC(obs_dim, act_dim, cfg, device)
        self.actor = self.sac.actor

    def schedule(self, step: int, num_updates: int, block: int) -> None:
        self.sac.schedule_lr(step, num_updates, block)

    def state_dict(self) -> dict:
        return self.sac.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sac.load_state_dict(state)
