"""One step of a learned-model rollout, fused: ensemble forward, uncertainty, sample, penalised
reward and termination. This file holds the parameter type, the plain torch reference and the
dispatch function; faster backends live beside it and are checked against the reference.

Math (shape letters of DESIGN.md: E members, N rows, D obs dim, A act dim, K hidden width):

    x       = (concat(obs, act) - in_mean) / in_std                       [N, D+A]
    h_0     = x;  h_l = silu(h_{l-1} @ W_l[e] + b_l[e])                    [E, N, K]
    mean, raw_logvar = split(h_L @ W_out[e] + b_out[e])                   [E, N, D+1] each
    logvar  = max_lv - softplus(max_lv - raw_logvar)
    logvar  = min_lv + softplus(logvar - min_lv)                          (soft clamp, PETS App. A.1)
    std     = exp(logvar / 2)
    u       = max_e ||std_e||_2                 ("aleatoric", MOPO Eq. 8 / official code), or
              max_e ||mean_e - mean_bar||_2     ("disagreement", MOReL-style)
    y       = mean[member] + std[member] * noise                          [N, D+1] = [delta obs, reward]
    next_obs = obs + y[:, :D];  reward = y[:, D] - penalty_coef * u
    terminal = not (obs_low < next_obs < obs_high) or any non-finite prediction

References: Chua et al. 2018 (PETS) for the probabilistic ensemble and the log-variance soft
clamp; Janner et al. 2019 (MBPO) and Yu et al. 2020 (MOPO, Algorithm 2 and Eq. 8) for sampling
one member per row and the max-over-members std penalty. As in MOPO's official code
(tianheyu927/mopo, ``fake_env.py``), the penalty is taken over all E members, the sample from
the member the caller picks (normally among the elites).

Rows whose prediction is non-finite (NaN/inf anywhere in the chosen sample or the uncertainty)
are made safe for a replay buffer: ``next_obs = obs``, ``reward = 0``, ``uncertainty = inf``,
``terminal = True``; callers drop them by ``isfinite(uncertainty)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import torch
from torch.nn import functional as F

Uncertainty = Literal["aleatoric", "disagreement"]
UNCERTAINTIES = ("aleatoric", "disagreement")


@dataclass(frozen=True)
class EnsembleParams:
    """The weights of a Gaussian dynamics ensemble, stacked over members.

    Fields (all float32, on one device):
        weights: per layer ``[E, in, out]``; layer 0 has ``in = D + A``, the last has ``out = 2 (D + 1)``
            (first half mean, second half raw log-variance, each ordered [delta obs (D), reward]).
        biases: per layer ``[E, out]``.
        in_mean, in_std: ``[D + A]`` input normaliser.
        max_logvar, min_logvar: ``[D + 1]`` learned soft-clamp bounds of the log-variance.
        elites: ``[num_elites]`` int64 indices of the elite members.
    Hidden layers use SiLU. Build from your own stacked weights, or ``EnsembleParams.random``.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    in_mean: torch.Tensor
    in_std: torch.Tensor
    max_logvar: torch.Tensor
    min_logvar: torch.Tensor
    elites: torch.Tensor

    @property
    def num_members(self) -> int:
        return self.weights[0].shape[0]

    @property
    def obs_dim(self) -> int:
        return self.max_logvar.shape[0] - 1

    @property
    def act_dim(self) -> int:
        return self.weights[0].shape[1] - self.obs_dim

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def to(self, device) -> EnsembleParams:
        def move(v):
            return tuple(t.to(device) for t in v) if isinstance(v, tuple) else v.to(device)

        return EnsembleParams(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def validate(self) -> None:
        """Check shapes and dtypes agree. Raises ValueError naming the first inconsistency."""
        if len(self.weights) != len(self.biases) or len(self.weights) < 1:
            raise ValueError(f"need as many biases as weights (>= 1), got {len(self.weights)} / {len(self.biases)}")
        e, d = self.num_members, self.obs_dim
        prev = d + self.act_dim
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.dim() != 3 or w.shape[0] != e or w.shape[1] != prev:
                raise ValueError(f"weights[{i}] has shape {tuple(w.shape)}, expected [{e}, {prev}, out]")
            if b.shape != (e, w.shape[2]):
                raise ValueError(f"biases[{i}] has shape {tuple(b.shape)}, expected [{e}, {w.shape[2]}]")
            prev = w.shape[2]
        if prev != 2 * (d + 1):
            raise ValueError(f"last layer outputs {prev}, expected 2 * (obs_dim + 1) = {2 * (d + 1)}")
        for name in ("in_mean", "in_std"):
            if getattr(self, name).shape != (d + self.act_dim,):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected [{d + self.act_dim}]")
        if self.min_logvar.shape != self.max_logvar.shape:
            raise ValueError("min_logvar and max_logvar shapes differ")
        if self.elites.numel() < 1 or int(self.elites.max()) >= e or int(self.elites.min()) < 0:
            raise ValueError(f"elites {self.elites.tolist()} must be non-empty indices in [0, {e})")

    @staticmethod
    def random(
        num_members: int,
        obs_dim: int,
        act_dim: int,
        hidden_dim: int = 200,
        num_layers: int = 4,
        seed: int = 0,
        num_elites: int | None = None,
        device="cpu",
    ) -> EnsembleParams:
        """Random parameters for tests and benchmarks: ``num_layers`` hidden layers of
        ``hidden_dim`` (SiLU), Kaiming-uniform weights, bounds max/min logvar = 0.5 / -10
        (MOPO's init), a random input normaliser."""
        g = torch.Generator().manual_seed(seed)
        dims = [obs_dim + act_dim] + [hidden_dim] * num_layers + [2 * (obs_dim + 1)]
        ws, bs = [], []
        for a, b in zip(dims[:-1], dims[1:]):
            bound = a**-0.5
            ws.append((torch.rand(num_members, a, b, generator=g) * 2 - 1) * bound)
            bs.append((torch.rand(num_members, b, generator=g) * 2 - 1) * bound)
        din = obs_dim + act_dim
        params = EnsembleParams(
            weights=tuple(ws),
            biases=tuple(bs),
            in_mean=torch.randn(din, generator=g),
            in_std=torch.rand(din, generator=g) + 0.5,
            max_logvar=torch.full((obs_dim + 1,), 0.5),
            min_logvar=torch.full((obs_dim + 1,), -10.0),
            elites=torch.arange(num_elites or num_members),
        )
        return params.to(device)


class StepOutput(NamedTuple):
    """``next_obs: [N, D]``, ``reward: [N]`` (penalised), ``uncertainty: [N]``, ``terminal: [N] bool``."""

    next_obs: torch.Tensor
    reward: torch.Tensor
    uncertainty: torch.Tensor
    terminal: torch.Tensor


def soft_clamp_logvar(raw: torch.Tensor, max_logvar: torch.Tensor, min_logvar: torch.Tensor) -> torch.Tensor:
    """PETS' differentiable log-variance bounds (Chua et al. 2018, Appendix A.1)."""
    logvar = max_logvar - F.softplus(max_logvar - raw)
    return min_logvar + F.softplus(logvar - min_logvar)


def ensemble_forward(params: EnsembleParams, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian ensemble forward on normalised inputs.

    Args:
        x: ``[N, D+A]`` (shared by all members) or ``[E, N, D+A]`` (one batch per member), normalised.
    Returns:
        ``(mean, logvar)``, each ``[E, N, D+1]`` float32, log-variance soft-clamped.
    """
    h = x.unsqueeze(0).expand(params.num_members, -1, -1) if x.dim() == 2 else x
    last = len(params.weights) - 1
    for i, (w, b) in enumerate(zip(params.weights, params.biases)):
        h = torch.baddbmm(b.unsqueeze(1), h, w)  # [E, N, in] @ [E, in, out]
        if i < last:
            h = F.silu(h)
    mean, raw = h.chunk(2, dim=-1)
    return mean, soft_clamp_logvar(raw, params.max_logvar, params.min_logvar)


def check_inputs(params, obs, act, noise, member, obs_low, obs_high) -> None:
    """Shape/dtype checks shared by every backend. Raises ValueError naming the mismatch."""
    d, a = params.obs_dim, params.act_dim
    if obs.dim() != 2:
        raise ValueError(f"obs has shape {tuple(obs.shape)}, expected [N, {d}]")
    n = obs.shape[0]
    expected = {"obs": (obs, (n, d)), "act": (act, (n, a)), "noise": (noise, (n, d + 1)), "member": (member, (n,))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {list(shape)} (N={n}, D={d}, A={a})")
    if member.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"member must be int32/int64 member indices, got {member.dtype}")
    for name, t in (("obs_low", obs_low), ("obs_high", obs_high)):
        if t is not None and tuple(t.shape) != (d,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected [{d}]")


def rollout_step_reference(
    params: EnsembleParams,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    penalty_coef: float = 0.0,
    obs_low: torch.Tensor | None = None,
    obs_high: torch.Tensor | None = None,
    uncertainty: Uncertainty = "aleatoric",
) -> StepOutput:
    """The plain torch reference of ``rollout_step`` (see the module docstring for the math)."""
    x = (torch.cat([obs, act], -1) - params.in_mean) / params.in_std
    mean, logvar = ensemble_forward(params, x)  # [E, N, D+1]
    std = (0.5 * logvar).exp()
    if uncertainty == "aleatoric":
        u = std.norm(dim=-1).amax(0)
    elif uncertainty == "disagreement":
        u = (mean - mean.mean(0, keepdim=True)).norm(dim=-1).amax(0)
    else:
        raise ValueError(f"unknown uncertainty {uncertainty!r}; valid: {UNCERTAINTIES}")
    rows = torch.arange(obs.shape[0], device=obs.device)
    y = mean[member, rows] + std[member, rows] * noise  # [N, D+1]
    d = params.obs_dim
    next_obs = obs + y[:, :d]
    reward = y[:, d] - penalty_coef * u
    finite = torch.isfinite(y).all(-1) & torch.isfinite(u) & torch.isfinite(obs).all(-1)
    terminal = ~finite
    if obs_low is not None:
        terminal = terminal | ~(next_obs > obs_low).all(-1)
    if obs_high is not None:
        terminal = terminal | ~(next_obs < obs_high).all(-1)
    next_obs = torch.where(finite.unsqueeze(-1), next_obs, obs.nan_to_num(0.0, 0.0, 0.0))
    reward = torch.where(finite, reward, torch.zeros_like(reward))
    u = torch.where(finite, u, torch.full_like(u, float("inf")))
    return StepOutput(next_obs, reward, u, terminal)


BACKENDS = {"reference": rollout_step_reference}
"""Backend name -> implementation with ``rollout_step_reference``'s signature. The fast ones are
registered at the end of this module: "cpu" (``kernels/rollout_step_cpu.py``), "triton" and
"triton-tf32" (``kernels/rollout_step_triton.py``)."""


def rollout_step(
    params: EnsembleParams,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    penalty_coef: float = 0.0,
    obs_low: torch.Tensor | None = None,
    obs_high: torch.Tensor | None = None,
    uncertainty: Uncertainty = "aleatoric",
    backend: str | None = None,
) -> StepOutput:
    """One fused step of a learned-model rollout for N rows (a pure function of its inputs).

    Args:
        params: the ensemble (``EnsembleParams``).
        obs: ``[N, D]`` float32 current observations.
        act: ``[N, A]`` float32 actions.
        noise: ``[N, D+1]`` float32 standard-normal draws (the caller's generator).
        member: ``[N]`` int64 member index per row (normally drawn from ``params.elites``).
        penalty_coef: lambda of MOPO (Eq. 8), reward units per unit of uncertainty; 0 = no penalty.
        obs_low, obs_high: ``[D]`` healthy box on next_obs (``engine.termination``); None = unbounded.
        uncertainty: "aleatoric" (max_e ||std_e||, MOPO) or "disagreement" (max_e ||mean_e - mean||).
        backend: None picks the fastest for the device: "triton" for CUDA tensors (when Triton is
            installed and covers the ensemble's shape), "cpu" otherwise. Or force one of ``BACKENDS``:
            "reference" (plain torch, differentiable), "cpu", "triton" (IEEE float32 matmuls),
            "triton-tf32" (TF32 tensor cores); "triton*" on CPU tensors needs ``TRITON_INTERPRET=1``.
    Returns:
        ``StepOutput(next_obs [N, D], reward [N], uncertainty [N], terminal [N] bool)``.
    Raises:
        ValueError: mismatched shapes, bad member dtype, unknown uncertainty or backend, or a forced
            backend that cannot run here (the message says why).
    """
    check_inputs(params, obs, act, noise, member, obs_low, obs_high)
    if backend is None:
        backend = "triton" if obs.is_cuda and triton_unsupported_reason(params, obs.device) is None else "cpu"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available here: {sorted(BACKENDS)}")
    return BACKENDS[backend](params, obs, act, noise, member, penalty_coef, obs_low, obs_high, uncertainty)


# The backends import the parameter type and helpers defined above, so they are registered last.
from kernels.rollout_step_cpu import rollout_step_cpu  # noqa: E402
from kernels.rollout_step_triton import rollout_step_triton, rollout_step_triton_tf32  # noqa: E402
from kernels.rollout_step_triton import unsupported_reason as triton_unsupported_reason  # noqa: E402

BACKENDS.update({"cpu": rollout_step_cpu, "triton": rollout_step_triton, "triton-tf32": rollout_step_triton_tf32})
