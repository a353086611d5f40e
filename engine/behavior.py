"""Behaviour policies: online SAC on the true simulator, and the small policy checkpoints that
ship in ``engine/policies/`` to generate the datasets, D4RL style (Fu et al. 2020, Sec. 5:
"medium" = a SAC policy stopped early at about a third of expert return; "random" = uniform
random actions). The checkpoint file format is ``engine.policy_io``'s.

Train (resumable by the rule of every run, ``engine.checkpoint.resume``: ``--resume DIR`` continues a killed
run from its last checkpoint exactly as if it had not stopped; add a larger ``--total-steps`` to train longer)::

    python -m engine.behavior train --env halfcheetah --out artifacts/behavior/halfcheetah \
        --stop-return 6000
    python -m engine.behavior train --resume artifacts/behavior/halfcheetah --total-steps 1500000

Export the snapshot whose stochastic-policy return is closest to a target (``--candidates K``
re-measures the K closest over ``--verify-episodes`` each and ships the closest of those;
``--step S`` ships the snapshot of step S)::

    python -m engine.behavior export --run artifacts/behavior/halfcheetah \
        --target-return 4770 --name halfcheetah-medium
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from engine import policy_io
from engine.batch import Batch
from engine.buffer import ReplayBuffer
from engine.cli import parse_cli
from engine.envs import get_env_spec, make_env
from engine.harness import RunHarness
from engine.logger import append_rows, drop_rows_after
from engine.sac import SAC, SACConfig

ALGO = "behavior"


def run_episodes(env_name: str, policy, num_episodes: int, seed: int, deterministic: bool) -> np.ndarray:
    """Returns of ``num_episodes`` episodes of ``policy: [1, D] -> [1, A]`` on the true env."""
    env = make_env(env_name)
    gen = torch.Generator().manual_seed(seed)
    returns = []
    for ep in range(num_episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            act = policy.act(o, deterministic=deterministic, generator=gen)[0].numpy()
            obs, rew, term, trunc, _ = env.step(act)
            total += float(rew)
            done = term or trunc
        returns.append(total)
    return np.asarray(returns)


@dataclass(frozen=True)
class TrainConfig:
    """Online SAC training of a behaviour policy."""

    env: str = "halfcheetah"
    """Environment short name (halfcheetah, hopper, walker2d)."""
    out: str = "artifacts/behavior/halfcheetah"
    """Run directory: checkpoint, snapshots, evals.csv, replay buffer."""
    seed: int = 0
    """Seed of the environment, the networks and the sampling."""
    total_steps: int = 1_000_000
    """Environment steps at most."""
    stop_return: float | None = None
    """Stop once the stochastic policy's mean evaluation return reaches this."""
    start_steps: int = 5_000
    """Uniform random actions for this many first steps (SAC warm-up)."""
    batch_size: int = 256
    """SAC minibatch size."""
    eval_interval: int = 5_000
    """Environment steps between evaluations and snapshots."""
    eval_episodes: int = 3
    """Episodes per evaluation (each of the deterministic and the stochastic policy)."""
    num_threads: int = 1
    """torch intra-op threads (small networks: 1 is fastest here)."""
    progress: bool = True
    """Show the progress bar."""


def _time_limit(env):
    """The ``TimeLimit`` wrapper around a ``gymnasium.make`` env (None without one)."""
    import gymnasium as gym

    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def _env_state(env, obs: np.ndarray) -> dict:
    """The mid-episode state of a Gymnasium MuJoCo env, as tensors (plain checkpoint data): MuJoCo's full
    integration state (``mj_getState`` with ``mjSTATE_INTEGRATION``: time, qpos, qvel, actuator state, solver
    warm-start, ...) ``[S]`` float64, the time-limit counter and the current observation ``[D]``."""
    import mujoco

    base = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
    mujoco.mj_getState(base.model, base.data, state, spec)
    limit = _time_limit(env)
    elapsed = None if limit is None else limit._elapsed_steps
    return {"mujoco": torch.from_numpy(state), "elapsed_steps": elapsed, "obs": torch.as_tensor(np.asarray(obs).copy())}


def _set_env_state(env, state: dict) -> np.ndarray:
    """Put an env that has just been ``reset`` back into ``state`` from ``_env_state``; returns
    the observation to act on."""
    import mujoco

    base = env.unwrapped
    mujoco.mj_setState(base.model, base.data, state["mujoco"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
    return state["obs"].numpy().copy()


RUN_CONTROL_FIELDS = ("total_steps", "stop_return", "eval_episodes", "num_threads", "out", "progress")
"""Fields a resumed behaviour run may change: how long it trains and how many episodes its evaluations take
(they use their own seeds and leave training untouched); ``out`` is the resumed directory."""


def _evaluate(cfg: TrainConfig, actor, step: int) -> dict[str, float]:
    """``cfg.eval_episodes`` episodes each of the deterministic and the stochastic policy (seeds ``10_000 + step``
    and ``20_000 + step``): ``{"return_det", "return_stoch", "return_stoch_std"}`` (per-episode return)."""
    det = run_episodes(cfg.env, actor, cfg.eval_episodes, 10_000 + step, True)
    sto = run_episodes(cfg.env, actor, cfg.eval_episodes, 20_000 + step, False)
    return {"return_det": float(det.mean()), "return_stoch": float(sto.mean()), "return_stoch_std": float(sto.std())}


def train(cfg: TrainConfig | None, resume: str | None = None) -> Path:
    """Online SAC; every ``eval_interval`` steps evaluates (a row of ``evals.csv``, and of ``metrics.csv`` with the
    SAC losses averaged since the last one), saves an actor snapshot and a resumable checkpoint (plain data:
    agent, replay buffer, random-number states, counters and the env's mid-episode state). The run directory,
    resume, threads, logging and checkpoints are the run harness's (``engine.harness.RunHarness``, budget
    ``total_steps``). ``resume`` (a run directory) continues from the checkpoint by the rule of every run
    (``engine.checkpoint.resume``), and a run killed and resumed this way is identical to one that was never
    stopped: same transitions, same evaluations, same weights. ``total_steps`` may be raised on resume to
    train longer; the replay buffer's capacity is ``total_steps`` of the command that is running (nothing is
    overwritten). Returns the run directory.

    Raises:
        FileExistsError: a fresh run whose ``out`` already holds a run (continue it with ``resume``).
        FileNotFoundError / ValueError: a bad ``resume`` (``engine.checkpoint.resume``).
        FloatingPointError: a SAC loss or the agent's state became NaN or +-inf (the last checkpoint is kept).

    Source: SAC (Haarnoja et al. 2018); D4RL's behaviour policies were SAC runs (Fu et al. 2020)."""
    with RunHarness(ALGO, TrainConfig, cfg, resume, RUN_CONTROL_FIELDS, budget_field="total_steps") as run:
        cfg, ckpt, out = run.cfg, run.ckpt, run.dir
        spec = get_env_spec(cfg.env)
        (out / "snapshots").mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        agent = SAC(spec.obs_dim, spec.act_dim, SACConfig())
        buffer = ReplayBuffer(cfg.total_steps, spec.obs_dim, spec.act_dim)
        gen = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        episode, env_state = 0, None
        if ckpt is not None:
            agent.load_state_dict(ckpt["agent"])
            buffer.load_state_dict(ckpt.pop("buffer"))
            gen.set_state(ckpt["gen"])
            rng.bit_generator.state = ckpt["rng"]
            episode, env_state = ckpt["episode"], ckpt["env_state"]
            drop_rows_after(out / "evals.csv", run.step)  # evaluations of the interrupted run after its checkpoint
            print(f"resumed {out} at step {run.step}")
        env = make_env(cfg.env)
        obs, _ = env.reset(seed=cfg.seed + 1_000_003 * (episode + 1))
        if env_state is not None:
            obs = _set_env_state(env, env_state)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        bar = run.progress(f"SAC {spec.gym_id}", unit="step")
        while run.step < cfg.total_steps:
            if run.step < cfg.start_steps:
                act = rng.uniform(-1.0, 1.0, spec.act_dim).astype(np.float32)
            else:
                act = agent.actor.act(torch.as_tensor(obs).float().unsqueeze(0), False, gen)[0].numpy()
            next_obs, rew, term, trunc, _ = env.step(act)
            buffer.add(
                Batch(
                    torch.as_tensor(obs).float()[None],
                    torch.as_tensor(act)[None],
                    torch.tensor([rew], dtype=torch.float32),
                    torch.as_tensor(next_obs).float()[None],
                    torch.tensor([float(term)]),
                )
            )
            obs = next_obs
            if term or trunc:
                episode += 1
                obs, _ = env.reset(seed=cfg.seed + 1_000_003 * (episode + 1))
            run.step += 1
            if run.step >= cfg.start_steps:
                for k, v in agent.update(buffer.sample(cfg.batch_size, gen), gen).items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            bar.update(1)
            if run.step % cfg.eval_interval == 0:
                returns = _evaluate(cfg, agent.actor, run.step)
                train_means = {k: v / count for k, v in sums.items()}
                run.log({**train_means, **{f"eval/{k}": v for k, v in returns.items()}})
                sums, count = {}, 0
                row = {"step": run.step, **returns, "wall_s": run.wall_s()}
                bar.write(json.dumps(row))
                append_rows(out / "evals.csv", [row])
                policy_io.save_policy(agent.actor, out / "snapshots" / f"step_{run.step:08d}.pt", cfg.env, **row)
                state = {
                    "agent": agent.state_dict(),
                    "buffer": buffer.state_dict(),
                    "gen": gen.get_state(),
                    "rng": rng.bit_generator.state,
                    "episode": episode,
                    "env_state": _env_state(env, obs),
                }
                run.checkpoint(state)
                if cfg.stop_return is not None and row["return_stoch"] >= cfg.stop_return:
                    break
        bar.close()
    return out


@dataclass(frozen=True)
class ExportConfig:
    """Pick a snapshot of a training run by its stochastic-policy return and ship it."""

    run: str = "artifacts/behavior/halfcheetah"
    """Training run directory (``train --out``)."""
    target_return: float = 4770.0
    """Target mean return of the stochastic policy (D4RL halfcheetah-medium: about 4,770)."""
    name: str = "halfcheetah-medium"
    """Checkpoint name under engine/policies/."""
    verify_episodes: int = 10
    """Episodes to re-measure the chosen snapshot's stochastic return (seed 123)."""
    candidates: int = 1
    """Re-measure this many snapshots, those whose training evaluation is closest to the target,
    over ``verify_episodes`` each, and ship the one whose re-measured return is closest. The
    training evaluations are short (``--eval-episodes``, 3 by default) and noisy, so the single
    closest one is often a lucky one; 1 trusts the training evaluation."""
    step: int | None = None
    """Ship the snapshot of this training step instead of choosing one (overrides the two above)."""


def export(cfg: ExportConfig) -> Path:
    """Copy the chosen snapshot to ``engine/policies/<name>.pt`` with its provenance: training step,
    train and export commands, seed, and its re-measured stochastic return over ``verify_episodes``
    episodes (and every candidate's, under ``candidate_returns``).

    Raises:
        FileNotFoundError: ``run`` has no evals.csv (no evaluation yet), or a snapshot file is missing.
        ValueError: ``step`` is not an evaluated step of the run, or ``candidates`` / ``verify_episodes`` < 1.
    """
    if cfg.candidates < 1 or cfg.verify_episodes < 1:
        raise ValueError(
            f"candidates and verify_episodes must be at least 1, got {cfg.candidates} and {cfg.verify_episodes}"
        )
    run = Path(cfg.run)
    if not (run / "evals.csv").is_file():
        raise FileNotFoundError(f"{run / 'evals.csv'} not found: {run} is not a training run with an evaluation yet")
    with open(run / "evals.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    if cfg.step is not None:
        if cfg.step not in steps:
            near = sorted(steps, key=lambda s: abs(s - cfg.step))[:3]
            raise ValueError(f"{run} has no snapshot at step {cfg.step}; nearest evaluated steps: {sorted(near)}")
        chosen = [cfg.step]
    else:
        ranked = sorted(rows, key=lambda r: abs(float(r["return_stoch"]) - cfg.target_return))
        chosen = [int(r["step"]) for r in ranked[: cfg.candidates]]
    measured = {}
    for step in chosen:
        actor, info = policy_io.load_policy(run / "snapshots" / f"step_{step:08d}.pt")
        rets = run_episodes(info["env"], actor, cfg.verify_episodes, 123, deterministic=False)
        measured[step] = (actor, info, rets)
        if len(chosen) > 1:
            print(f"step {step}: stochastic return {rets.mean():.1f} +- {rets.std():.1f} over {len(rets)} episodes")
    step = min(chosen, key=lambda s: abs(float(measured[s][2].mean()) - cfg.target_return))
    actor, info, rets = measured[step]
    train_cfg = json.loads((run / "config.json").read_text())
    dest = policy_io.POLICY_DIR / f"{cfg.name}.pt"
    policy_io.save_policy(
        actor,
        dest,
        info["env"],
        train_step=step,
        train_command=train_cfg["command"],
        export_command=shlex.join(sys.argv),
        seed=train_cfg["seed"],
        return_mean=float(rets.mean()),
        return_std=float(rets.std()),
        verify_episodes=cfg.verify_episodes,
        candidate_returns={str(s): float(m[2].mean()) for s, m in measured.items()},
    )
    print(f"{dest}: step {step}, stochastic return {rets.mean():.1f} +- {rets.std():.1f}")
    return dest


def main(argv: list[str] | None = None) -> Path:
    """``train [--resume DIR] [flags]`` or ``export [flags]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["train"]:
        prog = "python -m engine.behavior train"
        try:
            cfg, resume = parse_cli(args[1:], TrainConfig, {}, {}, prog, TrainConfig.__doc__, algo=ALGO)
            return train(cfg, resume)
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            if argv is not None:
                raise
            sys.exit(f"{prog}: error: {e}")
    return export(tyro.extras.subcommand_cli_from_dict({"export": ExportConfig}, args=args))


if __name__ == "__main__":
    main()
