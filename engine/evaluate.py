"""Evaluation of a deterministic policy on the true simulator: Gymnasium MuJoCo v5 environments
on the CPU, stepped in lockstep with the policy batched over them, scored with D4RL's
normalised score (Fu et al. 2020, "D4RL", Sec. 5; reference returns in engine.envs).

The environments are a plain list stepped one after another in this process (what Gymnasium's
``SyncVectorEnv`` does), not a vector env: a list lets each episode be reset with its own seed
(``seed + episode index``) the moment it ends, and lets finished environments simply drop out of
the batch, with no autoreset bookkeeping and no idle steps at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from engine.envs import get_env_spec, make_env
from engine.eval_result import EvalResult
from engine.nets import TanhGaussianActor

MAX_DEFAULT_ENVS = 32
"""Default cap on the environments stepped together; batching the policy gains little beyond this
on a CPU and each environment holds its own MuJoCo state."""


def evaluate(
    policy: Callable[[torch.Tensor], torch.Tensor],
    env_name: str,
    num_episodes: int = 10,
    seed: int = 0,
    num_envs: int | None = None,
    max_episode_steps: int | None = None,
    device: torch.device | str = "cpu",
    backend: str = "cpu",
) -> EvalResult:
    """Run ``num_episodes`` episodes of ``policy`` on the true environment and score them.

    Args:
        policy: ``obs: [B, D] float32 -> act: [B, A]`` tensor, deterministic (e.g.
            ``lambda o: actor.act(o, deterministic=True)``); called under ``torch.no_grad`` with
            ``B`` = the number of environments still running (between 1 and ``num_envs``).
            Actions are passed to the env as they are (no clipping; MuJoCo clamps ``ctrl`` to
            the actuator range, the control cost sees the raw action).
        env_name: short name or Gymnasium id of a supported env (engine.envs.ENVS).
        num_episodes: episodes to run; episode k is reset with seed ``seed + k``.
        seed: seed of episode 0.
        num_envs: environments stepped together (default ``min(num_episodes, 32)``; capped at
            ``num_episodes``). Results do not depend on it except through floating-point
            rounding of the batched policy (BLAS results for one row can differ in the last bit
            with the batch size).
        max_episode_steps: time limit passed to ``gymnasium.make`` (default: the registered 1000).
        device: device the observations are moved to before calling ``policy``.
        backend: ``"cpu"`` (Gymnasium MuJoCo, above) or ``"mjx"`` (``engine.mjx_eval.evaluate_mjx``: every
            episode in one batch on JAX's default device; ``policy`` must then be the TanhGaussianActor
            itself, evaluated as ``act(obs, deterministic=True)``; ``num_envs`` and ``device`` are unused).

    Returns:
        EvalResult; an episode ends when the env reports ``terminated`` or ``truncated``.

    Raises:
        ValueError: ``num_episodes < 1``, ``num_envs < 1``, an unsupported env (from
            ``get_env_spec``), a policy output that is not a ``[B, A]`` tensor, an unknown ``backend``,
            or ``backend="mjx"`` with a ``policy`` that is not a TanhGaussianActor.
    """
    if backend == "mjx":
        from engine.mjx_eval import evaluate_mjx  # imports jax and MJX: only when asked for

        if not isinstance(policy, TanhGaussianActor):
            raise ValueError(f"backend='mjx' needs the TanhGaussianActor itself as policy; got {type(policy).__name__}")
        return evaluate_mjx(policy, env_name, num_episodes, seed, max_episode_steps)
    if backend != "cpu":
        raise ValueError(f"backend must be 'cpu' or 'mjx'; got {backend!r}")
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1; got {num_episodes}")
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"num_envs must be >= 1; got {num_envs}")
    spec = get_env_spec(env_name)
    num_envs = min(num_episodes, MAX_DEFAULT_ENVS if num_envs is None else num_envs)
    make_kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}

    t0 = time.perf_counter()
    # Small policy batches: one torch thread is far faster than several that spin against the
    # other work of the machine (bench/RESULTS.md).
    prior_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    envs = [make_env(spec.gym_id, **make_kwargs) for _ in range(num_envs)]
    try:
        returns = np.zeros(num_episodes, dtype=np.float64)
        lengths = np.zeros(num_episodes, dtype=np.int64)
        obs = np.zeros((num_envs, spec.obs_dim), dtype=np.float32)  # [num_envs, D]
        episode = np.arange(num_envs)  # episode index each env is running
        for i, env in enumerate(envs):
            obs[i] = env.reset(seed=seed + i)[0]
        next_episode = num_envs
        running = list(range(num_envs))
        while running:
            with torch.no_grad():
                act = policy(torch.from_numpy(obs[running]).to(device))  # [B, A]
            if not isinstance(act, torch.Tensor) or act.shape != (len(running), spec.act_dim):
                got = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
                raise ValueError(
                    f"policy must return a tensor of shape [B, A] = [{len(running)}, {spec.act_dim}] "
                    f"for obs of shape [{len(running)}, {spec.obs_dim}]; got {got}"
                )
            act_np = act.detach().cpu().numpy()
            still_running = []
            for j, i in enumerate(running):
                next_obs, rew, terminated, truncated, _ = envs[i].step(act_np[j])
                returns[episode[i]] += float(rew)
                lengths[episode[i]] += 1
                if terminated or truncated:
                    if next_episode == num_episodes:
                        continue
                    next_obs = envs[i].reset(seed=seed + next_episode)[0]
                    episode[i] = next_episode
                    next_episode += 1
                obs[i] = next_obs
                still_running.append(i)
            running = still_running
    finally:
        torch.set_num_threads(prior_threads)
        for env in envs:
            env.close()
    return EvalResult(spec.gym_id, returns, lengths, time.perf_counter() - t0, seed=seed)
