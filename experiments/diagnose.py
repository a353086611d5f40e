"""Where a model-based policy's learned simulator and the true environment part ways.

For a run's checkpoint, this plays the policy's deterministic episodes on the true environment and, along
each real trajectory, asks the run's dynamics model (its elites' mean prediction) what it thinks happens:

- one-step error: ``||mean(s_t, a_t) - (s_{t+1} - s_t)||^2 / D`` and the reward error, and the model's
  uncertainty ``u(s_t, a_t)`` against its 99th percentile on the dataset;
- termination: whether the model's mean next state leaves the healthy box where the real one does;
- the same episode in the model: from the real start state, the policy in the loop of the model's mean
  dynamics for as many steps as the real episode lasted, or until the model says it fell (or its prediction
  diverged to a non-finite state);
- the critic against the real outcome: ``min_i Q_i(s_t, a_t)`` of the run's critics beside the real discounted
  return-to-go ``G_t`` (exact where the episode ended by termination; a time-limit end is bootstrapped with the
  critic's value at the last state), over the first 10 steps and the last 20 (before the fall, if it fell); and
  how far the policy's action is from the critic's best: ``max_a Q(s_t, a) - Q(s_t, pi(s_t))`` over 256 uniform
  actions per state (0 when no sampled action beats the policy's).

If the model agrees with the real trajectory step by step but its own closed-loop episode does not fall, the
model's errors compound over the horizon; if its one-step errors and uncertainty are small while the real
policy falls, the failure is not one the uncertainty penalty can see; if, in addition, the critic's Q before the
fall stays near its Q at the start (far above ``G_t``), the critic does not see the fall coming and the policy
is not pushed away from it; if the critic sees the fall but its best sampled action is no better than the
policy's, the critic itself finds no way out, and a better actor would not help::

    python -m experiments.diagnose runs/mopo-hopper-medium-seed0 --episodes 5
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from algos import algo_module
from engine import checkpoint
from engine.config import from_dict
from engine.data import load
from engine.dynamics import fit_or_load, targets_of
from engine.envs import get_env_spec, make_env
from engine.model_based_config import with_dynamics_seed
from engine.off_data import UncertaintyProbe
from engine.termination import is_terminal, termination_params


@dataclass(frozen=True)
class Diagnose:
    """Compare a run's learned model with the true environment along the run's own policy's episodes."""

    run_dir: tyro.conf.Positional[str]
    """A run directory holding ``checkpoint.pt`` (its dynamics ensemble must be in this machine's cache)."""
    episodes: int = 5
    """Real episodes (seeds ``seed + 10,000 + k``, as the run's evaluations)."""
    out: str | None = None
    """Write the per-episode figures as JSON here (default: ``<run_dir>/diagnosis_step<step>.json``)."""


def _episode(env_name: str, policy, seed: int) -> dict:
    """One real episode: ``obs [T+1, D]``, ``act [T, A]``, ``rew [T]``, and whether it ended by termination."""
    env = make_env(env_name)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminated = [obs], [], [], False
    while True:
        act = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        obs, rew, terminated, truncated, _ = env.step(act)
        observations.append(obs)
        actions.append(act)
        rewards.append(rew)
        if terminated or truncated:
            break
    env.close()
    f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return {"obs": f32(observations), "act": f32(actions), "rew": f32(rewards), "terminated": bool(terminated)}


def discounted_return_to_go(rew: torch.Tensor, gamma: float, bootstrap: float = 0.0) -> torch.Tensor:
    """``G_t = sum_{k >= 0} gamma^k r_{t+k} + gamma^{T-t} bootstrap`` for ``rew: [T]``, returned as ``[T]`` float32
    (``bootstrap``: the value after the last step, 0 for a terminated episode)."""
    out, g = torch.empty_like(rew), float(bootstrap)
    for t in range(len(rew) - 1, -1, -1):
        g = float(rew[t]) + gamma * g
        out[t] = g
    return out


def _critic_and_gamma(agent, cfg):
    """The run's Q ensemble (``[E, N]`` from ``(obs, act)``) and its discount: SAC-based agents (MOPO, COMBO)
    keep both in ``agent.sac`` / ``cfg.sac``, ARMOR on the agent and its config."""
    if hasattr(agent, "sac"):
        return agent.sac.critic, cfg.sac.gamma
    return agent.critic, cfg.gamma


SAMPLED_ACTIONS = 256
"""Uniform actions per state for the critic's best (``critic_gap``)."""


def critic_gap(critic, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``max(0, max_k min_i Q_i(s_t, a_k) - min_i Q_i(s_t, a_t))`` for ``obs: [T, D]``, ``act: [T, A]`` and
    ``SAMPLED_ACTIONS`` uniform actions ``a_k`` in [-1, 1]^A per state: ``[T]`` float32."""
    k, out = SAMPLED_ACTIONS, []
    q_act = critic(obs, act).min(0).values
    for start in range(0, len(obs), 64):  # 64 states x 256 actions per call
        o = obs[start : start + 64]
        a = torch.rand(len(o) * k, act.shape[-1], generator=generator) * 2 - 1
        q = critic(o.repeat_interleave(k, 0), a).min(0).values.reshape(len(o), k)
        out.append(q.max(1).values)
    return (torch.cat(out) - q_act).clamp_min(0)


def load_run(run_dir: str | Path):
    """A run's checkpoint rebuilt on the CPU: ``(ckpt, cfg, data, dyn, agent)``: the checkpoint dict, the run's
    config (its dynamics seed filled in), the dataset, the dynamics ensemble (from this machine's cache, or fitted)
    and the agent with the checkpoint's weights.

    Raises:
        FileNotFoundError: no checkpoint in ``run_dir``.
        ValueError: the checkpoint's dataset or algorithm is unknown here.
    """
    ckpt = checkpoint.load(Path(run_dir) / "checkpoint.pt")
    mod = algo_module(ckpt["algo"])
    cfg = with_dynamics_seed(from_dict(mod.Config, ckpt["config"]))
    data = load(cfg.dataset)
    dyn, _ = fit_or_load(data.as_batch(), cfg.dataset, cfg.dynamics, path=cfg.dynamics_path, progress=False)
    torch.manual_seed(cfg.seed)
    agent = mod.make_agent(data, cfg, torch.device("cpu"), dyn, saved=ckpt["agent"])
    agent.load_state_dict(ckpt["agent"])  # ARMOR's adversarial model is in here too
    return ckpt, cfg, data, dyn, agent


@torch.no_grad()
def diagnose(run_dir: str | Path, num_episodes: int = 5) -> dict:
    """The comparison described in the module docstring; returns ``{"step", "episodes": [...], "summary"}``.

    Raises:
        FileNotFoundError: no checkpoint in ``run_dir``.
        ValueError: the checkpoint's dataset or algorithm is unknown here.
    """
    ckpt, cfg, data, dyn, agent = load_run(run_dir)
    real = data.as_batch()
    params, m = dyn.params(), dyn.model
    term = termination_params(data.env_name)
    probe = UncertaintyProbe(params, real, cfg.rollout.uncertainty, torch.Generator().manual_seed(cfg.seed))
    p99 = float(torch.quantile(probe.u(probe.data_obs, probe.data_act), 0.99))
    d = get_env_spec(data.env_name).obs_dim
    policy = lambda o: agent.actor.act(o, deterministic=True)  # noqa: E731
    critic, gamma = _critic_and_gamma(agent, cfg)

    def mean_step(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Elite-mean prediction ``[N, D+1]`` of ``[delta obs, reward]``."""
        mean, _ = m(m.normalize(obs, act))
        return mean[dyn.elites].mean(0)

    episodes = []
    for k in range(num_episodes):
        ep = _episode(data.env_name, policy, cfg.seed + 10_000 + k)
        obs, act = ep["obs"][:-1], ep["act"]
        pred = mean_step(obs, act)
        target = targets_of(type(real)(obs, act, ep["rew"], ep["obs"][1:], torch.zeros(len(obs))))
        state_err = (pred[:, :d] - target[:, :d]).pow(2).mean(-1)
        reward_err = (pred[:, d] - target[:, d]).abs()
        u = probe.u(obs, act)
        model_term = is_terminal(term, obs + pred[:, :d])
        # The same episode inside the model: closed loop from the real start state, mean dynamics.
        s, model_return, model_len = ep["obs"][:1], 0.0, 0
        for _ in range(len(act)):
            y = mean_step(s, policy(s))
            s = s + y[:, :d]
            model_len += 1
            if not bool(torch.isfinite(s).all()):  # the closed loop diverged (counted as a fall, as in rollouts)
                break
            model_return += float(y[0, d])
            if bool(is_terminal(term, s)[0]):
                break
        last = slice(max(0, len(obs) - 5), len(obs))
        q = critic(obs, act).min(0).values  # [T]
        tail = 0.0 if ep["terminated"] else float(critic(ep["obs"][-1:], policy(ep["obs"][-1:])).min(0).values[0])
        ret_to_go = discounted_return_to_go(ep["rew"], gamma, tail)
        last20 = slice(max(0, len(obs) - 20), len(obs))
        gap = critic_gap(critic, obs, act, torch.Generator().manual_seed(cfg.seed + k))
        episodes.append(
            {
                "real_length": len(act),
                "real_return": float(ep["rew"].sum()),
                "real_terminated": ep["terminated"],
                "model_closed_loop_length": model_len,
                "model_closed_loop_return": model_return,
                "model_closed_loop_diverged": not bool(torch.isfinite(s).all()),
                "one_step_state_mse_first10": float(state_err[:10].mean()),
                "one_step_state_mse_last5": float(state_err[last].mean()),
                "one_step_reward_abs_err": float(reward_err.mean()),
                "uncertainty_mean": float(u.mean()),
                "uncertainty_last5": float(u[last].mean()),
                "uncertainty_data_p99": p99,
                "model_predicts_the_fall": bool(model_term[-1]) if ep["terminated"] else None,
                "model_terminal_steps": int(model_term.sum()),
                "critic_q_first10": float(q[:10].mean()),
                "return_to_go_first10": float(ret_to_go[:10].mean()),
                "critic_q_last20": float(q[last20].mean()),
                "return_to_go_last20": float(ret_to_go[last20].mean()),
                "critic_gap_mean": float(gap.mean()),
                "critic_gap_last20": float(gap[last20].mean()),
            }
        )
    keys = [k for k, v in episodes[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {key: float(np.mean([e[key] for e in episodes])) for key in keys}
    falls = [e["model_predicts_the_fall"] for e in episodes if e["model_predicts_the_fall"] is not None]
    summary["real_falls_the_model_predicts"] = f"{sum(falls)}/{len(falls)}"
    return {
        "run_dir": str(run_dir),
        "step": ckpt["step"],
        "algo": ckpt["algo"],
        "episodes": episodes,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.cli(Diagnose, args=argv, prog="python -m experiments.diagnose", description=__doc__)
    try:
        result = diagnose(cmd.run_dir, cmd.episodes)
    except (FileNotFoundError, ValueError) as e:
        print(f"python -m experiments.diagnose: error: {e}", file=sys.stderr)
        return 1
    out = Path(cmd.out) if cmd.out else Path(cmd.run_dir) / f"diagnosis_step{result['step']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
