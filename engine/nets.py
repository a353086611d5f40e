"""Networks shared by every algorithm: MLPs, stacked ensemble layers, the tanh-Gaussian actor
and the twin critic held as one batched ensemble.

Shape letters follow DESIGN.md: E ensemble members (or critics), B batch, D observation dim,
A action dim. The critic ensemble computes all its members in one batched matmul
(``[E, B, in] @ [E, in, out]``), as in CORL's and unifloral's ensembles.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...], act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A plain MLP ``in_dim -> hidden... -> out_dim`` with ``act`` between layers."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """E independent linear layers held as one stacked weight.

    ``weight: [E, in, out]``, ``bias: [E, 1, out]``; ``forward(x: [E, B, in]) -> [E, B, out]``
    is one ``torch.baddbmm``. Initialised like ``nn.Linear`` (Kaiming-uniform bounds), per member.
    """

    def __init__(self, num_members: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """E MLPs evaluated together: ``[E, B, in] -> [E, B, out]``, hidden activation ``act``."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int, hidden: tuple[int, ...], act=nn.ReLU):
        super().__init__()
        dims = (in_dim, *hidden)
        self.hidden = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(num_members, dims[-1], out_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)


class TanhGaussianActor(nn.Module):
    """SAC's squashed Gaussian policy (Haarnoja et al. 2018, Appendix C).

    ``forward(obs: [B, D]) -> (action [B, A] in [-1, 1], log_prob [B])``: a reparameterised
    sample ``tanh(mu + sigma * eps)``, its log-density with the tanh change of variables (Eq. 21).
    ``act(obs, deterministic=True)`` returns ``tanh(mu)``. log-std is squashed to
    [LOG_STD_MIN, LOG_STD_MAX] with a tanh, as CleanRL's SAC does.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden_dims = obs_dim, act_dim, tuple(hidden)
        self.trunk = mlp(obs_dim, 2 * act_dim, hidden)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.trunk(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return mu, log_std

    def forward(self, obs: torch.Tensor, generator: torch.Generator | None = None):
        mu, log_std = self.dist_params(obs)
        std = log_std.exp()
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        u = mu + std * eps
        # log N(u; mu, std) - sum log(1 - tanh(u)^2), the latter written stably as
        # 2 * (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None):
        """``obs: [B, D] -> action [B, A]`` without gradients (mean action when deterministic)."""
        if deterministic:
            return torch.tanh(self.dist_params(obs)[0])
        return self(obs, generator)[0]


class EnsembleCritic(nn.Module):
    """``num_critics`` Q-functions as one batched ensemble: ``(obs [B, D], act [B, A]) -> [E, B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), num_critics: int = 2):
        super().__init__()
        self.num_critics = num_critics
        self.net = EnsembleMLP(num_critics, obs_dim + act_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_critics, -1, -1)
        return self.net(x).squeeze(-1)
