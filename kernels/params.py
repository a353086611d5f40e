"""The types and helpers shared by the rollout step's torch reference (``kernels/rollout_step.py``) and its
backends (``rollout_step_cpu.py``, ``rollout_step_triton.py``): the stacked ensemble parameters, the step's
output, the uncertainty kinds, the ensemble forward with PETS' log-variance soft clamp (Chua et al. 2018,
App. A.1), and the input checks every backend shares.
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
