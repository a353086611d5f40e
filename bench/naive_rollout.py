"""The naive baseline of the rollout benchmark: a model rollout written the way common
PyTorch implementations write it (OfflineRL-Kit's ``ModelBasedPolicy.rollout`` and
``EnsembleDynamics.step``): every step copies observations to the host, predicts with the
ensemble, samples with NumPy (noise drawn for every member), computes the penalty and the
termination in NumPy, and drops terminated rows so array sizes change every step.

Kept only as the benchmark's baseline: the engine must beat it in the same run.
"""

from __future__ import annotations

import numpy as np
import torch

from kernels import EnsembleParams, ensemble_forward


@torch.no_grad()
def naive_rollout(
    params: EnsembleParams,
    policy,
    start_obs: np.ndarray,
    horizon: int,
    penalty_coef: float,
    obs_low: np.ndarray,
    obs_high: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``start_obs: [N, D]`` float32 NumPy -> concatenated transitions (variable length)."""
    obs = start_obs
    elites = params.elites.cpu().numpy()
    d = params.obs_dim
    out = {k: [] for k in ("obs", "act", "rew", "next_obs", "terminal")}
    for _ in range(horizon):
        act = policy(torch.as_tensor(obs)).cpu().numpy()  # host round trip 1
        x = (torch.as_tensor(np.concatenate([obs, act], -1)) - params.in_mean) / params.in_std
        mean, logvar = ensemble_forward(params, x)
        mean, std = mean.cpu().numpy(), np.sqrt(np.exp(logvar.cpu().numpy()))  # host round trip 2
        samples = mean + rng.normal(size=mean.shape).astype(np.float32) * std  # [E, N, D+1]
        idx = rng.choice(elites, size=obs.shape[0])
        sample = samples[idx, np.arange(obs.shape[0])]
        next_obs = obs + sample[:, :d]
        penalty = np.amax(np.linalg.norm(std, axis=2), axis=0)
        rew = sample[:, d] - penalty_coef * penalty
        healthy = np.all((next_obs > obs_low) & (next_obs < obs_high), axis=-1)
        terminal = ~healthy
        for k, v in zip(out, (obs, act, rew, next_obs, terminal)):
            out[k].append(v)
        keep = ~terminal
        if not keep.any():
            break
        obs = next_obs[keep]  # rows dropped: the size changes every step
    return {k: np.concatenate(v, 0) for k, v in out.items()}
