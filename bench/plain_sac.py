"""The plain baseline of the update benchmarks: a SAC update written the way common PyTorch
implementations write it (OfflineRL-Kit's ``SACPolicy.learn``, CleanRL's ``sac_continuous_action``):
two separate critic ``nn.Module``s with their own optimisers, an actor built on
``torch.distributions.Normal``, an automatic temperature, Polyak averaging with a Python loop over
parameters, default (per-tensor) Adam, and ``.item()`` metrics.

Kept only as the benchmark's baseline: simloop's ``engine.sac.SAC.update`` must beat it in the
same run. Sizes and hyperparameters match ``engine.sac.SACConfig``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributions import Normal

from engine.batch import Batch


def _mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class PlainCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = _mlp(obs_dim + act_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


class PlainActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = _mlp(obs_dim, 2 * act_dim, hidden)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.net(obs).chunk(2, -1)
        log_std = -5.0 + 3.5 * (torch.tanh(log_std) + 1.0)
        dist = Normal(mu, log_std.exp())
        u = dist.rsample()
        act = torch.tanh(u)
        log_prob = (dist.log_prob(u) - torch.log(1.0 - act.pow(2) + 1e-6)).sum(-1)
        return act, log_prob


class PlainSAC:
    """SAC as OfflineRL-Kit writes it (twin critics as two modules and two optimisers)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), lr=3e-4, gamma=0.99, tau=0.005):
        self.actor = PlainActor(obs_dim, act_dim, hidden)
        self.critic1, self.critic2 = PlainCritic(obs_dim, act_dim, hidden), PlainCritic(obs_dim, act_dim, hidden)
        self.critic1_old, self.critic2_old = copy.deepcopy(self.critic1), copy.deepcopy(self.critic2)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic1_optim = torch.optim.Adam(self.critic1.parameters(), lr=lr)
        self.critic2_optim = torch.optim.Adam(self.critic2.parameters(), lr=lr)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=lr)
        self.alpha = self.log_alpha.detach().exp()
        self.target_entropy = -float(act_dim)
        self.gamma, self.tau = gamma, tau

    def sync_weight(self) -> None:
        for old, new in ((self.critic1_old, self.critic1), (self.critic2_old, self.critic2)):
            for o, n in zip(old.parameters(), new.parameters()):
                o.data.copy_(o.data * (1.0 - self.tau) + n.data * self.tau)

    def update(self, batch: Batch) -> dict[str, float]:
        obs, act, rew, next_obs, terminal = batch
        q1, q2 = self.critic1(obs, act), self.critic2(obs, act)
        with torch.no_grad():
            next_act, next_logp = self.actor(next_obs)
            next_q = torch.min(self.critic1_old(next_obs, next_act), self.critic2_old(next_obs, next_act))
            target_q = rew + self.gamma * (1.0 - terminal) * (next_q - self.alpha * next_logp)
        critic1_loss = (q1 - target_q).pow(2).mean()
        self.critic1_optim.zero_grad()
        critic1_loss.backward()
        self.critic1_optim.step()
        critic2_loss = (q2 - target_q).pow(2).mean()
        self.critic2_optim.zero_grad()
        critic2_loss.backward()
        self.critic2_optim.step()

        a, logp = self.actor(obs)
        actor_loss = (self.alpha * logp - torch.min(self.critic1(obs, a), self.critic2(obs, a))).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optim.zero_grad()
        alpha_loss.backward()
        self.alpha_optim.step()
        self.alpha = self.log_alpha.detach().exp()

        self.sync_weight()
        return {
            "loss/actor": actor_loss.item(),
            "loss/critic1": critic1_loss.item(),
            "loss/critic2": critic2_loss.item(),
            "alpha": self.alpha.item(),
        }
