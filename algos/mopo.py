"""MOPO: Model-based Offline Policy Optimization (Yu et al., NeurIPS 2020, arXiv:2005.13239).

SAC trained on a mix of real transitions and short rollouts of a learned dynamics ensemble whose
reward is penalised by the model's uncertainty: r~(s, a) = r^(s, a) - lambda * u(s, a),
u = max_e ||std_e(s, a)||_2 (Algorithm 2, Eq. 8; the "max aleatoric" penalty of the official
code tianheyu927/mopo). Hyperparameter defaults follow the official code and OfflineRL-Kit's
D4RL-v2 settings (yihaosun1124/OfflineRL-Kit, run_example/run_mopo.py).

    python -m algos.mopo --fast                       # the quick end-to-end job
    python -m algos.mopo --dataset simloop/hopper/medium-v0 --num-updates 200000
    python -m algos.mopo --resume runs/mopo/.../<time>   # continue a killed run
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from engine import data as datasets
from engine.buffer import ReplayBuffer, cat_batches
from engine.cli import parse_cli, print_summary
from engine.dynamics import DynamicsConfig, fit_or_load
from engine.evaluate import evaluate
from engine.logger import RunLogger, default_run_dir
from engine.rollout import RolloutConfig, RolloutEngine, rollout_metrics
from engine.sac import SAC, SACConfig
from engine.termination import termination_params

DEFAULT_DATASET = "simloop/halfcheetah/medium-v0"


@dataclass(frozen=True)
class Config:
    """MOPO run configuration (every field is a CLI flag: ``--num-updates``, ``--rollout.horizon``)."""

    dataset: str = DEFAULT_DATASET
    """Minari dataset id (simloop ids are generated locally when missing)."""
    seed: int = 0
    """Seed of the networks, sampling and evaluation."""
    device: str = "cpu"
    """torch device."""
    num_threads: int = 2
    """torch intra-op threads on the CPU."""
    num_updates: int = 1_000_000
    """Gradient steps of SAC (MOPO: 1,000 epochs x 1,000 steps)."""
    batch_size: int = 256
    """SAC minibatch size (real + model rows)."""
    real_ratio: float = 0.05
    """Fraction of each minibatch drawn from the dataset; the rest from model rollouts."""
    rollout: RolloutConfig = RolloutConfig(horizon=5, penalty_coef=0.5)
    """Model rollout horizon h and penalty coefficient lambda."""
    rollout_batch_size: int = 50_000
    """N: start states per rollout phase, drawn from the dataset."""
    rollout_interval: int = 1_000
    """Gradient steps between rollout phases."""
    model_retain_rollouts: int = 5
    """Rollout phases the model buffer keeps (capacity = this x rollout_batch_size x horizon)."""
    sac: SACConfig = SACConfig()
    """SAC hyperparameters (2x256 networks, lr 3e-4, twin Q, automatic entropy)."""
    dynamics: DynamicsConfig = DynamicsConfig()
    """Dynamics ensemble (7 members, 5 elites, 4x200 SiLU)."""
    dynamics_path: str | None = None
    """Use this saved ensemble instead of the cache (must match the dataset)."""
    eval_interval: int = 10_000
    """Gradient steps between evaluations on the true environment."""
    eval_episodes: int = 10
    """Episodes of the final evaluation (intermediate ones use half, at least 1)."""
    log_interval: int = 1_000
    """Gradient steps between metric rows."""
    checkpoint_interval: int = 10_000
    """Gradient steps between checkpoints (resumable with --resume)."""
    out: str | None = None
    """Run directory; default runs/mopo/<dataset>/<time>/."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        checks = {
            "num_updates": self.num_updates >= 1,
            "batch_size": self.batch_size >= 1,
            "real_ratio": 0.0 <= self.real_ratio <= 1.0,
            "rollout_batch_size": self.rollout_batch_size >= 1,
            "rollout_interval": self.rollout_interval >= 1,
            "model_retain_rollouts": self.model_retain_rollouts >= 1,
            "eval_interval": self.eval_interval >= 1,
            "eval_episodes": self.eval_episodes >= 1,
            "log_interval": self.log_interval >= 1,
            "checkpoint_interval": self.checkpoint_interval >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"bad config value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                "(counts and intervals must be >= 1, real_ratio in [0, 1])"
            )


def _preset(dataset: str, horizon: int, penalty_coef: float) -> Config:
    return Config(dataset=dataset, rollout=RolloutConfig(horizon=horizon, penalty_coef=penalty_coef))


# (horizon, penalty_coef) per dataset: OfflineRL-Kit's D4RL-v2 MOPO settings, which reproduce the
# paper; "expert" has no published MOPO setting and takes the medium-expert one.
_MOPO_HPARAMS = {
    "halfcheetah": {"random": (5, 0.5), "medium": (5, 0.5), "medium-replay": (5, 0.5), "medium-expert": (5, 2.5)},
    "hopper": {"random": (5, 1.0), "medium": (5, 5.0), "medium-replay": (5, 2.5), "medium-expert": (5, 5.0)},
    "walker2d": {"random": (5, 1.0), "medium": (5, 0.5), "medium-replay": (1, 2.5), "medium-expert": (1, 2.5)},
}
PRESETS: dict[str, Config] = {
    f"simloop/{env}/{level}-v0": _preset(
        f"simloop/{env}/{level}-v0", *hp[level if level != "expert" else "medium-expert"]
    )
    for env, hp in _MOPO_HPARAMS.items()
    for level in ("random", "medium", "medium-replay", "medium-expert", "expert")
}
PRESETS["fast"] = replace(
    PRESETS[DEFAULT_DATASET],
    num_updates=5_000,
    rollout_batch_size=5_000,
    eval_interval=5_000,
    eval_episodes=5,
    checkpoint_interval=2_500,
    dynamics=replace(DynamicsConfig(), max_epochs=3, max_steps_per_epoch=400),
)
"""``--fast``: the whole job (data generation, dynamics, 5,000 SAC updates, evaluation) in minutes."""


def train(cfg: Config, resume: str | None = None) -> dict:
    """Run MOPO; returns the summary dict (also written to ``<out>/summary.json``).

    With ``resume`` (a run directory), the run continues from its last checkpoint with its own
    saved config. Raises ValueError for an unknown dataset id or bad config values.
    """
    if resume is not None:
        run_dir = Path(resume)
        ckpt_path = run_dir / "checkpoint.pt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint.pt in {run_dir}")
        ckpt = torch.load(ckpt_path, weights_only=False)
        cfg = ckpt["cfg"]
    else:
        ckpt = None
        run_dir = Path(cfg.out) if cfg.out else default_run_dir("mopo", cfg.dataset)
    torch.set_num_threads(cfg.num_threads)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    data = datasets.load(cfg.dataset, device=dev)
    real = data.as_batch()
    env_name = data.env_name
    if env_name is None:
        raise ValueError(f"dataset {cfg.dataset!r} is not from a supported environment; cannot evaluate it")
    logger = RunLogger(run_dir, console=cfg.progress)
    if ckpt is None:
        logger.write_json("config.json", {"algo": "mopo", "command": " ".join(sys.argv), **dataclasses.asdict(cfg)})

    dyn, dyn_info = fit_or_load(
        real, cfg.dataset, cfg.dynamics, path=cfg.dynamics_path, device=dev, progress=cfg.progress
    )
    agent = SAC(data.obs_dim, data.act_dim, cfg.sac, dev)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    term = termination_params(env_name).to(dev)
    engine = RolloutEngine(
        dyn.params(), lambda o: agent.actor(o, gen)[0], term.obs_low, term.obs_high, cfg.rollout, gen
    )
    capacity = cfg.model_retain_rollouts * cfg.rollout_batch_size * cfg.rollout.horizon
    model_buffer = ReplayBuffer(capacity, data.obs_dim, data.act_dim, dev)
    num_real = int(round(cfg.batch_size * cfg.real_ratio))
    num_model = cfg.batch_size - num_real
    step = 0
    prior_wall = 0.0
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        model_buffer.load_state_dict(ckpt["model_buffer"])
        gen.set_state(ckpt["gen"])
        step, prior_wall = ckpt["step"], ckpt["wall_s"]

    def evaluate_now(num_episodes: int):
        return evaluate(
            lambda o: agent.actor.act(o, deterministic=True), env_name, num_episodes, seed=cfg.seed + 10_000
        )

    sums: dict[str, torch.Tensor] = {}
    count = 0
    t_log = time.perf_counter()
    bar = tqdm(total=cfg.num_updates, initial=step, desc="MOPO updates", unit="upd", disable=not cfg.progress)
    while step < cfg.num_updates:
        if step % cfg.rollout_interval == 0 or len(model_buffer) == 0:
            t0 = time.perf_counter()
            start = real.obs[torch.randint(len(real), (cfg.rollout_batch_size,), generator=gen, device=dev)]
            tr = engine.rollout(start)
            model_buffer.add(*tr.flat())
            for k, v in rollout_metrics(tr, cfg.rollout.penalty_coef).items():
                sums[k] = v
            sums["perf/rollout_s"] = torch.tensor(time.perf_counter() - t0)
        parts = model_buffer.sample(num_model, gen)
        if num_real > 0:
            parts = cat_batches(real.index(torch.randint(len(real), (num_real,), generator=gen, device=dev)), parts)
        metrics = agent.update(parts, gen)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        step += 1
        bar.update(1)
        do_eval = step % cfg.eval_interval == 0 and step != cfg.num_updates
        if step % cfg.log_interval == 0 or step == cfg.num_updates or do_eval:
            row = {k: (v / count if k.startswith("train/") else v) for k, v in sums.items()}
            row["perf/updates_per_s"] = count / (time.perf_counter() - t_log)
            if do_eval:
                row.update(evaluate_now(max(1, cfg.eval_episodes // 2)).metrics())
            values = logger.log(step, row)
            if "eval/normalized_score" in values:
                bar.write(f"step {step}: normalized score {values['eval/normalized_score']:.1f}")
            sums, count, t_log = {}, 0, time.perf_counter()
        if step % cfg.checkpoint_interval == 0 and step != cfg.num_updates:
            _save_checkpoint(run_dir, cfg, agent, model_buffer, gen, step, prior_wall + time.perf_counter() - t_start)
    bar.close()
    final = evaluate_now(cfg.eval_episodes)
    logger.log(step, final.metrics())
    wall = prior_wall + time.perf_counter() - t_start
    torch.save(agent.actor.state_dict(), run_dir / "actor.pt")
    summary = {
        "algo": "mopo",
        "dataset": cfg.dataset,
        "env": env_name,
        "seed": cfg.seed,
        "normalized_score": final.normalized_score,
        "normalized_score_std": final.normalized_score_std,
        "return_mean": final.return_mean,
        "return_std": final.return_std,
        "eval_episodes": cfg.eval_episodes,
        "behavior_normalized_score": data.behavior_normalized_score,
        "num_updates": step,
        "wall_s": wall,
        "dynamics": dict(dyn_info),
        "run_dir": str(run_dir),
    }
    logger.write_json("summary.json", summary)
    _save_checkpoint(run_dir, cfg, agent, model_buffer, gen, step, wall)
    logger.close()
    return summary


def _save_checkpoint(run_dir: Path, cfg, agent, model_buffer, gen, step: int, wall_s: float) -> None:
    """Atomic write of everything ``--resume`` needs."""
    tmp = run_dir / "checkpoint.tmp"
    torch.save(
        {
            "cfg": cfg,
            "agent": agent.state_dict(),
            "model_buffer": model_buffer.state_dict(),
            "gen": gen.get_state(),
            "step": step,
            "wall_s": wall_s,
        },
        tmp,
    )
    tmp.replace(run_dir / "checkpoint.pt")


def main(argv: list[str] | None = None) -> dict:
    cfg, resume = parse_cli(sys.argv[1:] if argv is None else argv, PRESETS, "python -m algos.mopo", __doc__)
    summary = train(cfg, resume)
    print_summary(summary, summary["run_dir"])
    return summary


if __name__ == "__main__":
    main()
