"""Behaviour policies: online SAC on the true simulator, and the small policy checkpoints that
ship in ``engine/policies/`` to generate the datasets, D4RL style (Fu et al. 2020, Sec. 5:
"medium" = a SAC policy stopped early at about a third of expert return; "random" = uniform
random actions).

Train (resumable: rerun the same command after a kill and it continues from its last checkpoint)::

    python -m engine.behavior train --env halfcheetah --out artifacts/behavior/halfcheetah \
        --stop-return 6000

Export the snapshot whose stochastic-policy return is closest to a target::

    python -m engine.behavior export --run artifacts/behavior/halfcheetah \
        --target-return 4770 --name halfcheetah-medium
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm

from engine.buffer import Batch, ReplayBuffer
from engine.envs import get_env_spec, make_env
from engine.nets import TanhGaussianActor
from engine.sac import SAC, SACConfig

POLICY_DIR = Path(__file__).parent / "policies"


def save_policy(actor: TanhGaussianActor, path: str | Path, env: str, **meta) -> None:
    """Write a policy checkpoint: the actor's weights plus ``env``, dims and ``meta`` (JSON-able)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
    torch.save(
        {
            "env": env,
            "obs_dim": actor.obs_dim,
            "act_dim": actor.act_dim,
            "hidden_dims": list(actor.hidden_dims),
            "actor": state,
            "meta": meta,
        },
        path,
    )


def load_policy(path: str | Path, device="cpu") -> tuple[TanhGaussianActor, dict]:
    """Load a checkpoint written by ``save_policy``; returns ``(actor, info)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a simloop policy checkpoint (corrupt or other format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        actor = TanhGaussianActor(ckpt["obs_dim"], ckpt["act_dim"], tuple(ckpt["hidden_dims"]))
        actor.load_state_dict(ckpt["actor"])
    except Exception as e:  # noqa: BLE001 - any failure here means a bad file; say which
        raise ValueError(f"{path} is not a readable simloop policy checkpoint: {e}") from e
    return actor.to(device).eval(), {k: v for k, v in ckpt.items() if k != "actor"}


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


def train(cfg: TrainConfig) -> Path:
    """Online SAC; every ``eval_interval`` steps evaluates, saves an actor snapshot and a resumable
    checkpoint (agent, replay buffer, counters). Returns the run directory."""
    torch.set_num_threads(cfg.num_threads)
    spec = get_env_spec(cfg.env)
    out = Path(cfg.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    agent = SAC(spec.obs_dim, spec.act_dim, SACConfig())
    buffer = ReplayBuffer(cfg.total_steps, spec.obs_dim, spec.act_dim)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    step, episode = 0, 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        agent.load_state_dict(ckpt["agent"])
        buffer.load_state_dict(ckpt["buffer"])
        gen.set_state(ckpt["gen"])
        rng = ckpt["rng"]
        step, episode = ckpt["step"], ckpt["episode"]
        print(f"resumed {out} at step {step}")
    else:
        (out / "config.json").write_text(json.dumps({**asdict(cfg), "command": shlex.join(sys.argv)}, indent=2))
    env = make_env(cfg.env)
    obs, _ = env.reset(seed=cfg.seed + 1_000_003 * (episode + 1))
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.total_steps, initial=step, desc=f"SAC {spec.gym_id}", unit="step")
    while step < cfg.total_steps:
        if step < cfg.start_steps:
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
        step += 1
        if step >= cfg.start_steps:
            agent.update(buffer.sample(cfg.batch_size, gen), gen)
        bar.update(1)
        if step % cfg.eval_interval == 0:
            det = run_episodes(cfg.env, agent.actor, cfg.eval_episodes, 10_000 + step, True)
            sto = run_episodes(cfg.env, agent.actor, cfg.eval_episodes, 20_000 + step, False)
            row = {
                "step": step,
                "return_det": float(det.mean()),
                "return_stoch": float(sto.mean()),
                "return_stoch_std": float(sto.std()),
                "wall_s": time.perf_counter() - t0,
            }
            bar.write(json.dumps(row))
            new = not (out / "evals.csv").exists()
            with open(out / "evals.csv", "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            save_policy(agent.actor, out / "snapshots" / f"step_{step:08d}.pt", cfg.env, **row)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(
                {
                    "agent": agent.state_dict(),
                    "buffer": buffer.state_dict(),
                    "gen": gen.get_state(),
                    "rng": rng,
                    "step": step,
                    "episode": episode,
                },
                tmp,
            )
            tmp.replace(ckpt_path)
            if cfg.stop_return is not None and row["return_stoch"] >= cfg.stop_return:
                break
    bar.close()
    return out


@dataclass(frozen=True)
class ExportConfig:
    """Pick the snapshot of a training run closest to a target return and ship it."""

    run: str = "artifacts/behavior/halfcheetah"
    """Training run directory (``train --out``)."""
    target_return: float = 4770.0
    """Target mean return of the stochastic policy (D4RL halfcheetah-medium: about 4,770)."""
    name: str = "halfcheetah-medium"
    """Checkpoint name under engine/policies/."""
    verify_episodes: int = 10
    """Episodes to re-measure the chosen snapshot's stochastic return."""


def export(cfg: ExportConfig) -> Path:
    """Copy the snapshot closest to ``target_return`` to ``engine/policies/<name>.pt``."""
    run = Path(cfg.run)
    with open(run / "evals.csv") as f:
        rows = list(csv.DictReader(f))
    best = min(rows, key=lambda r: abs(float(r["return_stoch"]) - cfg.target_return))
    step = int(best["step"])
    actor, info = load_policy(run / "snapshots" / f"step_{step:08d}.pt")
    rets = run_episodes(info["env"], actor, cfg.verify_episodes, 123, deterministic=False)
    train_cfg = json.loads((run / "config.json").read_text())
    dest = POLICY_DIR / f"{cfg.name}.pt"
    save_policy(
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
    )
    print(f"{dest}: step {step}, stochastic return {rets.mean():.1f} +- {rets.std():.1f}")
    return dest


if __name__ == "__main__":
    cfg = tyro.extras.subcommand_cli_from_dict({"train": TrainConfig, "export": ExportConfig})
    train(cfg) if isinstance(cfg, TrainConfig) else export(cfg)
