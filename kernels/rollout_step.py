"""One step of a learned-model rollout, fused: ensemble forward, uncertainty, sample, penalised
reward and termination. This file holds the plain torch reference and the dispatch function; the
parameter type and the helpers every backend shares are in ``kernels/params.py``, the faster backends
live beside it and are checked against the reference.

Math (shape letters of ARCHITECTURE.md: E members, N rows, D obs dim, A act dim, K hidden width):

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

import torch

from kernels.params import UNCERTAINTIES, EnsembleParams, StepOutput, Uncertainty, check_inputs, ensemble_forward
from kernels.rollout_step_cpu import rollout_step_cpu
from kernels.rollout_step_triton import rollout_step_triton, rollout_step_triton_tf32
from kernels.rollout_step_triton import unsupported_reason as triton_unsupported_reason


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


BACKENDS = {
    "reference": rollout_step_reference,
    "cpu": rollout_step_cpu,
    "triton": rollout_step_triton,
    "triton-tf32": rollout_step_triton_tf32,
}
"""Backend name -> implementation with ``rollout_step_reference``'s signature: the plain torch reference,
"cpu" (``kernels/rollout_step_cpu.py``), "triton" and "triton-tf32" (``kernels/rollout_step_triton.py``)."""


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
