"""The plain baseline of the dynamics benchmark: the MBPO/MOPO Gaussian ensemble trained the way a
common PyTorch implementation without batched ensemble layers writes it: E separate ``nn.Module``
MLPs (``nn.Linear`` + SiLU), each with its own Adam, its own forward, loss and backward per
minibatch, the L2 decay in the loss, and holdout evaluation member by member.

Same architecture, loss, decay, holdout split and early-stopping rule as
``engine.dynamics.EnsembleDynamics.fit`` (4x200 SiLU, learned log-variance bounds, patience 5,
1% improvement); kept only as the benchmark's baseline.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from engine.dynamics import DynamicsConfig


class PlainGaussianMLP(nn.Module):
    """One member: ``x [B, D+A] -> (mean, logvar) [B, D+1]``."""

    def __init__(self, in_dim: int, out_dim: int, cfg: DynamicsConfig):
        super().__init__()
        dims = [in_dim] + [cfg.hidden_dim] * cfg.num_layers
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.linears = [m for m in layers if isinstance(m, nn.Linear)]
        self.head = nn.Linear(dims[-1], 2 * out_dim)
        self.linears.append(self.head)
        self.trunk = nn.Sequential(*layers)
        self.max_logvar = nn.Parameter(torch.full((out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), -10.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.head(self.trunk(x)).chunk(2, -1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return mean, self.min_logvar + F.softplus(logvar - self.min_logvar)


class PlainEnsemble:
    """E independent members, trained one after the other on each minibatch."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DynamicsConfig = DynamicsConfig()):
        torch.manual_seed(cfg.seeded().seed)
        self.cfg = cfg
        self.members = [PlainGaussianMLP(obs_dim + act_dim, obs_dim + 1, cfg) for _ in range(cfg.num_members)]
        self.opts = [torch.optim.Adam(m.parameters(), lr=cfg.lr) for m in self.members]

    def member_loss(self, m: PlainGaussianMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, logvar = m(x)
        nll = ((mean - y).pow(2) * torch.exp(-logvar) + logvar).mean()
        bound = self.cfg.logvar_bound_coef * (m.max_logvar.sum() - m.min_logvar.sum())
        decay = sum(wd * 0.5 * lin.weight.pow(2).sum() for wd, lin in zip(self.cfg.weight_decays, m.linears))
        return nll + bound + decay

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One minibatch for every member: ``x: [E, B, D+A]``, ``y: [E, B, D+1]`` (member e's rows)."""
        for i, (m, opt) in enumerate(zip(self.members, self.opts)):
            loss = self.member_loss(m, x[i], y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([(m(x)[0] - y).pow(2).mean() for m in self.members])

    def fit(self, x: torch.Tensor, y: torch.Tensor, max_epochs: int | None = None) -> dict[str, float]:
        """Train on normalised inputs ``x: [N, D+A]`` and targets ``y: [N, D+1]`` until the early stop
        (or ``max_epochs``); returns ``dynamics/epochs`` and ``dynamics/train_s``."""
        cfg = self.cfg
        n = x.shape[0]
        num_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
        perm = torch.randperm(n)
        x_hold, y_hold = x[perm[:num_holdout]], y[perm[:num_holdout]]
        x_train, y_train = x[perm[num_holdout:]], y[perm[num_holdout:]]
        num_train, b, e = x_train.shape[0], cfg.batch_size, cfg.num_members
        steps = num_train // b
        if cfg.max_steps_per_epoch is not None:
            steps = min(steps, cfg.max_steps_per_epoch)
        best = self.holdout_mse(x_hold, y_hold)
        snapshots = [copy.deepcopy(m.state_dict()) for m in self.members]
        stale, epoch, t0 = 0, 0, time.perf_counter()
        while max_epochs is None or epoch < max_epochs:
            order = torch.argsort(torch.rand(e, num_train), dim=1)
            for s in range(steps):
                idx = order[:, s * b : (s + 1) * b]
                self.train_step(x_train[idx], y_train[idx])
            epoch += 1
            mse = self.holdout_mse(x_hold, y_hold)
            improved = (best - mse) / best > cfg.improvement
            for i in improved.nonzero().flatten().tolist():
                best[i] = mse[i]
                snapshots[i] = copy.deepcopy(self.members[i].state_dict())
            stale = 0 if improved.any() else stale + 1
            if stale >= cfg.patience:
                break
        for m, s in zip(self.members, snapshots):
            m.load_state_dict(s)
        return {"dynamics/epochs": float(epoch), "dynamics/train_s": time.perf_counter() - t0}
