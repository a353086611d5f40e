"""Networks shared by every algorithm: MLPs, stacked ensemble layers, the tanh-Gaussian actor
and the twin critic held as one batched ensemble.

Shape letters (ARCHITECTURE.md): E ensemble members (or critics), B batch, D observation dim,
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


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam over ``params`` (tensors or param-group dicts) with the fused implementation (one kernel
    for all parameters of a step, L2 ``weight_decay`` included) where this torch build supports it on
    the parameters' device, the default implementation otherwise; the same update rule either way
    (bench/RESULTS.md has what fused gains)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # fused Adam is not available for this device or torch version
        return torch.optim.Adam(params, lr=lr)


def adam_step(opt: torch.optim.Adam) -> None:
    """``opt.step()`` for a fused Adam without ``torch.optim``'s per-step Python bookkeeping (step
    hooks, lazy-state checks, grouping tensors by device and dtype): per param group, one
    ``torch._fused_adam_`` call on the optimiser's own state tensors, the kernel ``opt.step()`` calls,
    so the update and the state_dict are exactly those of ``opt.step()``. Anything else (not fused,
    AMSGrad, maximize, a tensor lr, a grad scaler, the first step before the state exists) goes to
    ``opt.step()``, and so does a torch without ``torch._fused_adam_`` (a private function:
    ``tests/test_sac.py`` checks it against ``opt.step()`` on the installed torch). bench/RESULTS.md has
    what it saves."""
    fused_adam = getattr(torch, "_fused_adam_", None)
    scaled = getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None
    if fused_adam is None or scaled:
        opt.step()
        return
    todo = []
    for group in opt.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        states = [opt.state.get(p) for p in params]
        simple = group.get("fused") and not (group["amsgrad"] or group["maximize"] or group["differentiable"])
        simple = simple and not group.get("decoupled_weight_decay") and not isinstance(group["lr"], torch.Tensor)
        if not simple or not all(states):
            opt.step()
            return
        if params:
            todo.append((group, params, states))
    for group, params, states in todo:
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        fused_adam(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


def clear_grads(opt: torch.optim.Optimizer) -> None:
    """``opt.zero_grad(set_to_none=True)`` without its per-call bookkeeping (bench/RESULTS.md has the saving)."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = None


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

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """``x: [E', B, in] -> [E', B, out]`` for the ``members`` slice of the E members (all by default)."""
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        if weight.shape[-1] == 1:
            # One output column (a critic's Q head): a dot product per row. As a [E, B, in] @ [E, in, 1]
            # baddbmm it runs MKL's batched GEMM, which is slow for one column; multiply-and-sum is the same
            # sum and faster forward and backward (bench/RESULTS.md).
            return (x * weight.transpose(1, 2)).sum(-1, keepdim=True) + bias
        return torch.baddbmm(bias, x, weight)


class EnsembleMLP(nn.Module):
    """E MLPs evaluated together: ``[E, B, in] -> [E, B, out]``, hidden activation ``act``."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int, hidden: tuple[int, ...], act=nn.ReLU):
        super().__init__()
        dims = (in_dim, *hidden)
        self.hidden = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(num_members, dims[-1], out_dim)
        self.act = act()

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """``x: [E', B, in] -> [E', B, out]``, E' the size of the ``members`` slice (all E by default).

        A ReLU runs in place on its layer's output, a fresh tensor that nothing else holds (the layer's backward
        needs its input, not its output), which saves one activation-sized allocation and write per hidden layer;
        the values and gradients are those of ``nn.ReLU()`` (tests/test_sac.py)."""
        relu = type(self.act) is nn.ReLU
        for layer in self.hidden:
            x = torch.relu_(layer(x, members)) if relu else self.act(layer(x, members))
        return self.out(x, members)


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

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> TanhGaussianActor:
        """An actor shaped like ``state`` (another actor's ``state_dict()``: obs and action dims and hidden widths
        read from its ``trunk.<i>.weight`` shapes) with those weights loaded, on their device.

        Raises:
            ValueError: ``state`` holds no ``trunk.<i>.weight``, or does not fit the shape read from it.
        """
        layers = sorted(
            (int(k.split(".")[1]), v) for k, v in state.items() if k.startswith("trunk.") and k.endswith(".weight")
        )
        if not layers:
            raise ValueError(f"not a TanhGaussianActor state_dict: no trunk.<i>.weight among {sorted(state)[:6]}")
        w = [v for _, v in layers]
        actor = cls(w[0].shape[1], w[-1].shape[0] // 2, tuple(v.shape[0] for v in w[:-1])).to(w[0].device)
        try:
            actor.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"not a TanhGaussianActor state_dict: {e}") from e
        return actor

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

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Log-density of given actions: ``(obs [B, D], act [B, A] in [-1, 1]) -> [B]`` float32.

        The same tanh change of variables as ``forward`` (Haarnoja et al. 2018, Eq. 21) at
        ``u = atanh(a)``. Actions are first clipped to ``[-1 + eps, 1 - eps]``, as ATAC's
        behaviour pretraining clips dataset actions (Cheng et al. 2022, lightATAC), because a
        dataset action of exactly +-1 has an infinite ``u``.
        """
        mu, log_std = self.dist_params(obs)
        a = act.clamp(-1.0 + eps, 1.0 - eps)
        u = torch.atanh(a)
        z = (u - mu) * torch.exp(-log_std)
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_prob - torch.log1p(-a.pow(2)).sum(-1)

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

    def forward(self, obs: torch.Tensor, act: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """``(obs [B, D], act [B, A]) -> [E', B]`` Q-values of the ``members`` slice of the critics (all by
        default; ``slice(0, 1)``: f1 alone, at half the cost). ``obs, act`` may also be ``[E', B, .]``."""
        x = torch.cat([obs, act], dim=-1)
        if x.dim() == 2:
            n = len(range(self.num_critics)[members]) if members is not None else self.num_critics
            x = x.unsqueeze(0).expand(n, -1, -1)
        return self.net(x, members).squeeze(-1)
