"""The plain baseline of the ARMOR update benchmark, and the reference of its gradient test: the same
ARMOR iteration (``algos.armor.ARMORAgent.update``) written the direct way, one set of critic passes per
loss, with the other player detached or frozen (``requires_grad_(False)``) and one backward of the sum;
default (per-tensor) Adam steps. The twin-min target, the clipped backups and Proj_F follow the config as in
``ARMORAgent``, and so does ``state_fit_coef``; a sampled reference action is not written here (the default only).
simloop's agent shares the passes between the critic and model losses and routes each gradient with a
restricted backward; it must give the same gradients (tests/test_armor.py) and beat this in the same run
(bench/test_update_bench.py).
"""

from __future__ import annotations

import torch

from algos.armor import ARMORAgent, bellman_error, model_fit_terms, project_weight_norms, relative_pessimism
from engine.batch import Batch, cat_batches
from engine.dynamics import targets_of
from engine.sac import temperature_loss


class PlainARMORAgent(ARMORAgent):
    """``ARMORAgent`` with the plain update: 9 passes of both critics per iteration, where ``ARMORAgent`` makes 5
    and one pass of f1 alone."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.slow_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.fast_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.fast_lr)
        self.model_opt = torch.optim.Adam(self.dyn.model.parameters(), lr=cfg.model_lr)

    def losses(self, real: Batch, model: Batch, generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(critic_loss, model_loss, metrics) with the same random draws, in the same order, as
        ``ARMORAgent.losses``; one backward of their sum gives each player its gradient."""
        cfg = self.cfg
        batch = cat_batches(real, model)
        with torch.no_grad():
            a_pi, _ = self.actor(batch.obs, generator)
            a_ref = self.reference.act(batch.obs, deterministic=True)
        noise = torch.randn(batch.obs.shape[0], batch.obs.shape[1] + 1, generator=generator, device=batch.obs.device)
        next_obs, rew, term, _, _ = self.model_step(batch.obs, batch.act, noise)
        with torch.no_grad():
            a_next, _ = self.actor(next_obs, generator)

        def bellman(n_obs, r):
            q = self.critic(batch.obs, batch.act)
            q_next_target = self.critic_target(n_obs, a_next)
            if cfg.twin_min_target:
                q_next_target = q_next_target.min(0, keepdim=True).values
            q_next = self.critic(n_obs, a_next)
            v_lo, v_hi = self.value_range
            return bellman_error(q, r, term, q_next_target, q_next, cfg.gamma, cfg.residual_weight, v_lo, v_hi)

        rel = relative_pessimism(self.critic(batch.obs, a_pi), self.critic(batch.obs, a_ref))
        critic_loss = (rel + cfg.bellman_coef * bellman(next_obs.detach(), rew.detach())).sum()
        self.critic.requires_grad_(False)
        bell_model = bellman(next_obs, rew)
        self.critic.requires_grad_(True)
        m = self.dyn.model
        fit_mean, fit_logvar = m(m.normalize(real.obs, real.act))
        nll, rew_err = model_fit_terms(fit_mean[0], fit_logvar[0], targets_of(real), self.v_max)
        model_loss = cfg.bellman_coef * (bell_model.sum() + cfg.state_fit_weight * nll + cfg.model_fit_coef * rew_err)
        return critic_loss, model_loss, {"train/critic_loss": critic_loss.detach()}

    def backward(self, critic_loss: torch.Tensor, model_loss: torch.Tensor) -> None:
        (critic_loss + model_loss).backward()

    def update(self, real: Batch, model: Batch, generator) -> dict:
        critic_loss, model_loss, metrics = self.losses(real, model, generator)
        self.critic_opt.zero_grad(set_to_none=True)
        self.model_opt.zero_grad(set_to_none=True)
        self.backward(critic_loss, model_loss)
        self.critic_opt.step()
        project_weight_norms(self.critic, self.cfg.critic_norm_bound)
        self.model_opt.step()
        obs = torch.cat([real.obs, model.obs], 0)
        act, logp = self.actor(obs, generator)
        alpha = self.log_alpha.exp().detach()
        self.critic.requires_grad_(False)
        actor_loss = (alpha * logp - self.critic(obs, act)[0]).mean()
        self.critic.requires_grad_(True)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.alpha_opt.zero_grad(set_to_none=True)
        temperature_loss(self.log_alpha, logp, self.target_entropy).backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.mul_(1.0 - self.cfg.tau).add_(p, alpha=self.cfg.tau)
        metrics["train/actor_loss"] = actor_loss.detach()
        return metrics
