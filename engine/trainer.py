"""The training loop every model-based offline algorithm here shares (MBPO-style; Janner et al.
2019, Algorithm 2; MOPO Algorithm 2; COMBO Algorithm 1):

    load data -> fit (or reuse) the dynamics ensemble -> repeat:
        every rollout_interval updates: roll the current policy out in the model from dataset
            states (H steps, fixed shapes) into a ring buffer keeping the last few rollouts
        one update on a real batch (real_ratio of the rows) and a model batch (the rest)
    -> periodic evaluation on the true environment, metrics, checkpoints (resumable)
    -> final evaluation, summary.json

Algorithms supply their Config (a ``ModelBasedConfig``), a constructor for their agent and
their update rule; everything else lives here, once.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from tqdm import tqdm

from engine import data as datasets
from engine.buffer import Batch, ReplayBuffer
from engine.dynamics import DynamicsConfig, EnsembleDynamics, fit_or_load
from engine.evaluate import evaluate
from engine.logger import RunLogger, default_run_dir
from engine.nets import TanhGaussianActor
from engine.rollout import RolloutConfig, RolloutEngine, rollout_metrics
from engine.termination import termination_params

DEFAULT_DATASET = datasets.DEFAULT_DATASET


@dataclass(frozen=True)
class ModelBasedConfig:
    """Fields every model-based algorithm shares (each is a CLI flag: ``--num-updates``)."""

    dataset: str = DEFAULT_DATASET
    """Minari dataset id (simloop ids are generated locally when missing)."""
    seed: int = 0
    """Seed of the networks, sampling and evaluation."""
    device: str = "cpu"
    """torch device."""
    num_threads: int = 1
    """torch intra-op threads on the CPU. 1 by default: the SAC update's small matmuls gain little from
    a second thread on an idle 2-core machine (60 vs 50 updates/s) and collapse when other work shares
    the cores (measured here under load: 5.8 updates/s with 2 threads, 59 with 1)."""
    num_updates: int = 1_000_000
    """Gradient steps of the agent (MOPO/COMBO: 1,000 epochs x 1,000 steps)."""
    batch_size: int = 256
    """Minibatch size (real + model rows)."""
    real_ratio: float = 0.05
    """Fraction of each minibatch drawn from the dataset; the rest from model rollouts."""
    rollout: RolloutConfig = RolloutConfig(horizon=5, penalty_coef=0.0)
    """Model rollout horizon h and reward penalty coefficient lambda."""
    rollout_batch_size: int = 50_000
    """N: start states per rollout phase, drawn from the dataset."""
    rollout_interval: int = 1_000
    """Gradient steps between rollout phases."""
    model_retain_rollouts: int = 5
    """Rollout phases the model buffer keeps (capacity = this x rollout_batch_size x horizon)."""
    dynamics: DynamicsConfig = DynamicsConfig()
    """Dynamics ensemble (7 members, 5 elites, 4x200 SiLU)."""
    dynamics_path: str | None = None
    """Use this saved ensemble instead of the cache (must match the dataset)."""
    eval_interval: int = 10_000
    """Gradient steps between evaluations on the true environment."""
    eval_episodes: int = 10
    """Episodes of the final evaluation (intermediate ones use half, at least 1)."""
    eval_backend: Literal["cpu", "mjx"] = "cpu"
    """True-environment evaluation: "cpu" (Gymnasium MuJoCo, the default without a GPU) or "mjx" (all
    episodes in parallel in one compiled JAX loop; fast on a GPU, compiles for ~30-80 s first)."""
    log_interval: int = 1_000
    """Gradient steps between metric rows."""
    checkpoint_interval: int = 10_000
    """Gradient steps between checkpoints (resumable with --resume)."""
    out: str | None = None
    """Run directory; default runs/<algo>/<dataset>/<time>/."""
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
            "num_threads": self.num_threads >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"bad config value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                "(counts and intervals must be >= 1, real_ratio in [0, 1])"
            )


class Agent(Protocol):
    """What the loop needs of an algorithm's agent. An agent may also define
    ``rollout_policies(generator) -> list of (obs [N, D] -> act [N, A])``: the rollout batch is then
    split evenly among them (ARMOR rolls out its policy and the reference policy); by default the
    loop rolls out ``actor``'s stochastic policy. It may define ``prepare(generator, progress) -> metrics``:
    work before the first update (ARMOR's critic pretraining), run once before the loop and returning ``{}``
    when there is nothing (left) to do; when it did work, the loop logs its metrics and ``perf/prepare_s``
    at the current step and writes a checkpoint, so the work is kept and is not counted in the first
    row's ``perf/updates_per_s``."""

    actor: TanhGaussianActor

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


UpdateFn = Callable[[Agent, Batch, Batch, torch.Generator, ModelBasedConfig], dict]
"""``update(agent, real_batch, model_batch, generator, cfg) -> metrics`` (0-d tensors, no host sync)."""


def train_model_based(
    algo: str,
    cfg: ModelBasedConfig,
    make_agent: Callable[[datasets.TransitionData, ModelBasedConfig, torch.device, EnsembleDynamics], Agent],
    update: UpdateFn,
    resume: str | None = None,
) -> dict:
    """Run one model-based offline algorithm; returns the summary (also ``<out>/summary.json``).

    Args:
        algo: name used in the run directory and summary ("mopo", "combo").
        cfg: the algorithm's config (a ModelBasedConfig subclass).
        make_agent: builds the agent from the loaded data (dims), the config in force, the device and
            the trained dynamics (an agent may keep training it, as ARMOR's adversarial model does).
        update: one gradient step on a real and a model batch, given the config in force.
        resume: a run directory to continue from its ``checkpoint.pt`` with its saved config.
    Raises:
        ValueError: unknown dataset id, bad config, a dataset from an unsupported env.
        FileNotFoundError: ``resume`` holds no checkpoint.
        FileExistsError: a fresh run whose ``out`` already holds a run (``engine.logger.RunLogger``).
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
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(algo, cfg.dataset)
    torch.set_num_threads(cfg.num_threads)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    data = datasets.load(cfg.dataset, device=dev)
    real = data.as_batch()
    env_name = data.env_name
    if env_name is None:
        raise ValueError(f"dataset {cfg.dataset!r} is not from a supported environment; cannot evaluate it")
    logger = RunLogger(run_dir, resume_step=None if ckpt is None else ckpt["step"])
    if ckpt is None:
        logger.write_json("config.json", {"algo": algo, "command": " ".join(sys.argv), **dataclasses.asdict(cfg)})

    dyn, dyn_info = fit_or_load(
        real, cfg.dataset, cfg.dynamics, path=cfg.dynamics_path, device=dev, progress=cfg.progress
    )
    agent = make_agent(data, cfg, dev, dyn)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    term = termination_params(env_name).to(dev)
    if hasattr(agent, "rollout_policies"):
        policies = agent.rollout_policies(gen)
    else:
        policies = [lambda o: agent.actor(o, gen)[0]]
    engines = [RolloutEngine(dyn.params(), p, term.obs_low, term.obs_high, cfg.rollout, gen) for p in policies]
    starts_per_engine = cfg.rollout_batch_size // len(engines)
    capacity = cfg.model_retain_rollouts * cfg.rollout_batch_size * cfg.rollout.horizon
    model_buffer = ReplayBuffer(capacity, data.obs_dim, data.act_dim, dev)
    num_real = int(round(cfg.batch_size * cfg.real_ratio))
    num_model = cfg.batch_size - num_real
    step, prior_wall = 0, 0.0
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        if "model_buffer" in ckpt:
            model_buffer.load_state_dict(ckpt["model_buffer"])
        else:  # a slim checkpoint (``slim_checkpoint``): the loop's first rollout phase refills the buffer
            warnings.warn(
                f"{ckpt_path} holds no model buffer (a slim checkpoint): the run continues from one fresh "
                f"rollout phase instead of the last {cfg.model_retain_rollouts}",
                stacklevel=2,
            )
        gen.set_state(ckpt["gen"])
        step, prior_wall = ckpt["step"], ckpt["wall_s"]

    def evaluate_now(num_episodes: int):
        if cfg.eval_backend == "mjx":
            return evaluate(agent.actor, env_name, num_episodes, seed=cfg.seed + 10_000, backend="mjx")
        policy = lambda o: agent.actor.act(o, deterministic=True)  # noqa: E731
        return evaluate(policy, env_name, num_episodes, seed=cfg.seed + 10_000)

    def save_checkpoint(wall_s: float) -> None:
        tmp = run_dir / "checkpoint.tmp"
        state = {
            "cfg": cfg,
            "agent": agent.state_dict(),
            "model_buffer": model_buffer.state_dict(),
            "gen": gen.get_state(),
            "step": step,
            "wall_s": wall_s,
        }
        torch.save(state, tmp)
        tmp.replace(run_dir / "checkpoint.pt")

    prepare = getattr(agent, "prepare", None)
    if prepare is not None:
        t0 = time.perf_counter()
        prepared = prepare(gen, cfg.progress)
        if prepared:
            logger.log(step, {**prepared, "perf/prepare_s": time.perf_counter() - t0})
            save_checkpoint(prior_wall + time.perf_counter() - t_start)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    t_log = time.perf_counter()
    bar = tqdm(total=cfg.num_updates, initial=step, desc=f"{algo} updates", unit="upd", disable=not cfg.progress)
    while step < cfg.num_updates:
        if step % cfg.rollout_interval == 0 or len(model_buffer) == 0:
            t0 = time.perf_counter()
            for i, engine in enumerate(engines):
                start = real.obs[torch.randint(len(real), (starts_per_engine,), generator=gen, device=dev)]
                tr = engine.rollout(start)
                model_buffer.add(*tr.flat())
                if i == 0:  # metrics of the agent's own policy
                    sums.update(rollout_metrics(tr, cfg.rollout.penalty_coef))
            sums["perf/rollout_s"] = torch.tensor(time.perf_counter() - t0)
        real_batch = real.index(torch.randint(len(real), (num_real,), generator=gen, device=dev))
        metrics = update(agent, real_batch, model_buffer.sample(num_model, gen), gen, cfg)
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
            if cfg.progress and "eval/normalized_score" in values:
                bar.write(f"step {step}: normalized score {values['eval/normalized_score']:.1f}")
            sums, count, t_log = {}, 0, time.perf_counter()
        if step % cfg.checkpoint_interval == 0 and step != cfg.num_updates:
            save_checkpoint(prior_wall + time.perf_counter() - t_start)
    bar.close()
    final = evaluate_now(cfg.eval_episodes)
    logger.log(step, final.metrics())
    wall = prior_wall + time.perf_counter() - t_start
    torch.save(agent.actor.state_dict(), run_dir / "actor.pt")
    summary = {
        "algo": algo,
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
    save_checkpoint(wall)
    logger.close()
    return summary


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a run's ``checkpoint.pt`` without its model buffer (ARMOR on HalfCheetah: 218 MB -> ~9 MB), so that a
    long run can be carried to another machine (or kept in a repository) and continued there with
    ``--resume``: put the file as ``checkpoint.pt`` in a run directory. The agent, its optimisers, the random
    generator and the step are kept; the resumed run starts with one fresh rollout phase in the model buffer
    instead of the last ``model_retain_rollouts``. Returns ``dst``.

    Raises:
        FileNotFoundError: no file at ``src``.
        ValueError: ``src`` is not a training checkpoint of this loop (no ``agent`` / ``step``).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {src}")
    ckpt = torch.load(src, weights_only=False)
    if not isinstance(ckpt, dict) or not {"cfg", "agent", "gen", "step"} <= set(ckpt):
        raise ValueError(f"{src} is not a training checkpoint (expected the keys cfg, agent, gen, step)")
    ckpt.pop("model_buffer", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(dst)
    return dst
