"""Model rollouts with the policy in the loop: H steps from N start states inside the learned
ensemble, fixed shapes, no host round trip (MBPO Algorithm 2 / MOPO Algorithm 2, written the
fixed-shape way of unifloral: rows are masked after termination, never dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from engine.batch import Batch
from kernels import EnsembleParams, rollout_step
from kernels.params import UNCERTAINTIES


@dataclass(frozen=True)
class RolloutConfig:
    """How model rollouts are generated."""

    horizon: int = 5
    """H: model steps per rollout (MOPO's h)."""
    penalty_coef: float = 0.0
    """lambda: reward penalty per unit of uncertainty (MOPO Eq. 8); 0 = unpenalised."""
    uncertainty: str = "aleatoric"
    """Uncertainty estimate: "aleatoric" (max_e ||std_e||, MOPO) or "disagreement"."""
    backend: str | None = None
    """Force a kernels.rollout_step backend; None picks the fastest for the device."""

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if self.penalty_coef < 0:
            raise ValueError(f"penalty_coef must be >= 0, got {self.penalty_coef}")
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {self.uncertainty!r}")


class Transitions(NamedTuple):
    """A rollout with fixed shapes: ``obs, next_obs: [H, N, D]``, ``act: [H, N, A]``,
    ``rew, uncertainty: [H, N]`` (``rew`` penalised), ``terminal, valid: [H, N] bool``.
    ``valid`` is False for rows that terminated at an earlier step or whose prediction was
    non-finite."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor
    valid: torch.Tensor
    uncertainty: torch.Tensor

    def flat(self) -> tuple[Batch, torch.Tensor]:
        """``(Batch of [H*N, ...], valid [H*N])`` for ``ReplayBuffer.add(batch, mask=valid)``."""
        h, n = self.rew.shape
        batch = Batch(
            self.obs.reshape(h * n, -1),
            self.act.reshape(h * n, -1),
            self.rew.reshape(-1),
            self.next_obs.reshape(h * n, -1),
            self.terminal.reshape(-1).float(),
        )
        return batch, self.valid.reshape(-1)


class RolloutEngine:
    """Roll a policy out in the learned ensemble.

    Args:
        params: ``EnsembleParams`` (e.g. ``EnsembleDynamics.params()``); members are sampled
            uniformly among ``params.elites`` per row and step.
        policy: ``obs [N, D] -> act [N, A]``, called under ``torch.no_grad`` (stochastic policies
            draw from their own generator).
        obs_low, obs_high: ``[D]`` healthy box (``engine.termination``), or None.
        cfg: RolloutConfig.
        generator: the torch.Generator for noise and member draws (on the params' device).
    """

    def __init__(
        self,
        params: EnsembleParams,
        policy: Callable[[torch.Tensor], torch.Tensor],
        obs_low: torch.Tensor | None,
        obs_high: torch.Tensor | None,
        cfg: RolloutConfig,
        generator: torch.Generator | None = None,
    ):
        self.params, self.policy, self.cfg, self.generator = params, policy, cfg, generator
        self.obs_low, self.obs_high = obs_low, obs_high

    @torch.no_grad()
    def rollout(self, start_obs: torch.Tensor) -> Transitions:
        """H steps from ``start_obs: [N, D]``; returns ``Transitions`` of ``[H, N, ...]``.

        Raises ValueError if ``start_obs`` is not ``[N, D]`` for the ensemble's D.
        """
        p, cfg, g = self.params, self.cfg, self.generator
        d = p.obs_dim
        if start_obs.dim() != 2 or start_obs.shape[1] != d:
            raise ValueError(f"start_obs has shape {tuple(start_obs.shape)}, expected [N, {d}]")
        n, h, dev = start_obs.shape[0], cfg.horizon, start_obs.device
        obs_buf = torch.empty(h, n, d, device=dev)
        act_buf = torch.empty(h, n, p.act_dim, device=dev)
        next_buf = torch.empty(h, n, d, device=dev)
        rew_buf = torch.empty(h, n, device=dev)
        unc_buf = torch.empty(h, n, device=dev)
        term_buf = torch.empty(h, n, dtype=torch.bool, device=dev)
        valid_buf = torch.empty(h, n, dtype=torch.bool, device=dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)
        obs = start_obs
        num_elites = p.elites.numel()
        for t in range(h):
            act = self.policy(obs)
            noise = torch.randn(n, d + 1, generator=g, device=dev)
            member = p.elites[torch.randint(num_elites, (n,), generator=g, device=dev)]
            out = rollout_step(
                p, obs, act, noise, member, cfg.penalty_coef, self.obs_low, self.obs_high, cfg.uncertainty, cfg.backend
            )
            obs_buf[t], act_buf[t], next_buf[t] = obs, act, out.next_obs
            rew_buf[t], unc_buf[t], term_buf[t] = out.reward, out.uncertainty, out.terminal
            valid_buf[t] = alive & torch.isfinite(out.uncertainty)
            alive = alive & ~out.terminal
            obs = out.next_obs
        return Transitions(obs_buf, act_buf, rew_buf, next_buf, term_buf, valid_buf, unc_buf)


def rollout_metrics(tr: Transitions, penalty_coef: float) -> dict[str, torch.Tensor]:
    """Namespaced 0-d tensor metrics of a rollout (means over valid rows)."""
    v = tr.valid.float()
    count = v.sum().clamp_min(1.0)
    unc = torch.where(tr.valid, tr.uncertainty, torch.zeros_like(tr.uncertainty))
    return {
        "rollout/valid_frac": v.mean(),
        "rollout/terminal_frac": (tr.terminal & tr.valid).float().sum() / count,
        "rollout/reward_mean": (tr.rew * v).sum() / count,
        "rollout/uncertainty_mean": unc.sum() / count,
        "rollout/uncertainty_max": unc.max(),
        "rollout/penalty_mean": penalty_coef * unc.sum() / count,
    }
