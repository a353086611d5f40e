"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
arXiv:1812.05905, Algorithm 1 with automatic entropy tuning, Eq. 17-18), the policy optimiser
inside MOPO and the online trainer of the behaviour policies.

The twin critics are one batched ensemble (``[2, B]`` Q-values, one optimiser); an update
returns its metrics as 0-d tensors so that nothing synchronises with the host inside the step.

The update is written for speed on the CPU (fused Adam through ``adam_step``, a multiply-and-sum Q head,
no weight gradients for the critic in the actor step); bench/RESULTS.md records what each choice gained and
what was measured and dropped.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch

from engine.batch import Batch
from engine.nets import EnsembleCritic, TanhGaussianActor, adam_step, clear_grads, make_adam


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's automatic temperature objective (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
    Applications", Eq. 18), written in log alpha as common implementations do:
    ``-mean(log_alpha * (log_prob + target_entropy))``, a 0-d tensor.

    ``log_alpha``: 0-d, requires grad; ``log_prob: [B]`` log pi(a|s) of fresh policy samples (detached here);
    ``target_entropy``: the entropy floor, -|A| by default. Minimising it raises alpha while the policy's
    entropy is below the target and lowers it above.
    """
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (defaults: Haarnoja et al. 2018, Table 1; MOPO's official code)."""

    actor_lr: float = 3e-4
    """Actor learning rate (Adam)."""
    critic_lr: float = 3e-4
    """Critic learning rate (Adam)."""
    alpha_lr: float = 3e-4
    """Learning rate of log(alpha), the entropy temperature."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden widths of actor and critics."""
    num_critics: int = 2
    """Critics in the ensemble; the target is the minimum over them (clipped double Q)."""
    target_entropy: float | None = None
    """Target entropy; None means -A (the action dimension), the paper's heuristic."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""
    backup_entropy: bool = True
    """Keep -alpha log pi in the critic target; False gives the "deterministic backup" of CQL/COMBO's code."""
    actor_lr_schedule: Literal["constant", "cosine"] = "constant"
    """``constant``: ``actor_lr`` throughout (MOPO's and MBPO's SAC). ``cosine``: annealed from ``actor_lr`` to 0
    over the run, one step per block of updates: ``actor_lr * (1 + cos(pi k / K)) / 2`` for block k of K
    (``SAC.schedule_lr``), i.e. ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped once per epoch, as
    OfflineRL-Kit's ``run_mopo.py`` and ``run_combo.py`` anneal their actor (1e-4, one epoch = 1,000 updates)."""


class SAC:
    """Actor, twin critic ensemble, target critics and temperature, with one ``update`` step.

    Args:
        obs_dim, act_dim: D and A.
        cfg: SACConfig.
        device: torch device of all parameters.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig = SACConfig(), device="cpu"):
        self.cfg = cfg
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden_dims).to(device)
        self.critic = EnsembleCritic(obs_dim, act_dim, cfg.hidden_dims, cfg.num_critics).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(torch.tensor(cfg.init_alpha).log()), device=device, requires_grad=True)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.actor_opt = make_adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = make_adam(self.critic.parameters(), cfg.critic_lr)
        self.alpha_opt = make_adam([self.log_alpha], cfg.alpha_lr)

    def schedule_lr(self, step: int, num_updates: int, block: int) -> None:
        """Set the actor's learning rate for the updates from ``step`` on, in a run of ``num_updates`` updates whose
        schedule steps every ``block`` updates (``actor_lr_schedule``; nothing to do for ``constant``). A function
        of ``step`` alone, so a resumed run sets the rate an unbroken one had."""
        if self.cfg.actor_lr_schedule == "constant":
            return
        blocks = max(1, num_updates // block)
        lr = self.cfg.actor_lr * 0.5 * (1.0 + math.cos(math.pi * min(step // block, blocks) / blocks))
        for group in self.actor_opt.param_groups:
            group["lr"] = lr

    def critic_target_value(self, batch: Batch, generator=None) -> torch.Tensor:
        """Soft Bellman target ``r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, [B]."""
        with torch.no_grad():
            next_act, next_logp = self.actor(batch.next_obs, generator)
            q_next = self.critic_target(batch.next_obs, next_act).min(0).values
            v_next = q_next - self.log_alpha.exp() * next_logp if self.cfg.backup_entropy else q_next
            return batch.rew + self.cfg.gamma * (1.0 - batch.terminal) * v_next

    def update_critic(self, batch: Batch, extra_loss=None, generator=None) -> dict[str, torch.Tensor]:
        """One critic step on the mean squared Bellman error of every critic (Eq. 5), summed over the E critics.

        Args:
            batch: the update's rows (``Batch`` of ``[B, ...]`` tensors).
            extra_loss: ``extra_loss(batch, q) -> (loss, metrics)`` with ``q: [E, B]`` the critics' Q-values on
                ``batch`` (with their graph): ``loss`` (0-d tensor) is added to the Bellman loss before the step
                and ``metrics`` (a dict of 0-d tensors, detached) joins the returned metrics. COMBO's
                conservative term plugs in here.
            generator: draws the next actions of the target (``critic_target_value``).
        Returns:
            ``train/critic_loss`` (the Bellman loss alone), ``train/q_mean`` and ``extra_loss``'s metrics, 0-d tensors.
        """
        target = self.critic_target_value(batch, generator)
        q = self.critic(batch.obs, batch.act)  # [E, B]
        loss = (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        metrics = {"train/critic_loss": loss.detach(), "train/q_mean": q.detach().mean()}
        if extra_loss is not None:
            extra, extra_metrics = extra_loss(batch, q)
            loss = loss + extra
            metrics.update(extra_metrics)
        clear_grads(self.critic_opt)
        loss.backward()
        adam_step(self.critic_opt)
        return metrics

    def update_actor_and_alpha(self, obs: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """One actor step (Eq. 7, min over critics) and one temperature step (Eq. 18)."""
        act, logp = self.actor(obs, generator)
        # Gradients flow through the critic to the action only; its weights get none (saves the
        # weight-gradient matmuls, about a tenth of an update's FLOPs).
        self.critic.requires_grad_(False)
        q = self.critic(obs, act).min(0).values
        self.critic.requires_grad_(True)
        alpha = self.log_alpha.exp().detach()
        actor_loss = (alpha * logp - q).mean()
        clear_grads(self.actor_opt)
        actor_loss.backward()
        adam_step(self.actor_opt)
        alpha_loss = temperature_loss(self.log_alpha, logp, self.target_entropy)
        clear_grads(self.alpha_opt)
        alpha_loss.backward()
        adam_step(self.alpha_opt)
        return {"train/actor_loss": actor_loss.detach(), "train/alpha": alpha, "train/entropy": -logp.detach().mean()}

    @torch.no_grad()
    def update_target(self) -> None:
        """Polyak averaging ``theta' <- (1 - tau) theta' + tau theta``."""
        torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.cfg.tau)

    def update(self, batch: Batch, generator=None) -> dict[str, torch.Tensor]:
        """A full SAC update on ``batch``; returns 0-d tensor metrics (no host sync)."""
        metrics = self.update_critic(batch, generator=generator)
        metrics.update(self.update_actor_and_alpha(batch.obs, generator))
        self.update_target()
        return metrics

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
