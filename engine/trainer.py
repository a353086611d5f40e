"""The training loop every model-based offline algorithm here shares (MBPO-style; Janner et al.
2019, Algorithm 2; MOPO Algorithm 2; COMBO Algorithm 1):

    load data -> fit (or reuse) the dynamics ensemble -> repeat:
        every rollout_interval updates: roll the current policy out in the model from dataset
            states (H steps, fixed shapes) into a ring buffer keeping the last few rollouts
        one update on a real batch (real_ratio of the rows) and a model batch (the rest)
    -> periodic evaluation on the true environment, metrics, checkpoints (resumable)
    -> final evaluation, summary.json

Algorithms supply their Config (a ``ModelBasedConfig``, ``engine.model_based_config``) and a constructor for
their agent (an ``engine.agent.Agent``); the loop lives here, once, and what a run needs around it (run
directory, resume, threads, logging, checkpoints, the non-finite stop, the summary) is the run harness's
(``engine.harness``).

Seeding: ``cfg.seed`` decides every random choice of a run. The dynamics ensemble is fitted with
``cfg.dynamics.seed``, which follows ``cfg.seed`` unless set; the global torch generator is seeded once,
right before the agent is built (its network initialisation); sampling, rollouts and the actor's noise
draw from one ``torch.Generator`` seeded with ``cfg.seed``; evaluation episode k is reset with seed
``cfg.seed + 10_000 + k``.
"""

from __future__ import annotations

import time
import warnings

import torch

from engine import data
from engine.agent import MakeAgent
from engine.buffer import ReplayBuffer
from engine.dynamics import data_hash, fit_or_load
from engine.evaluate import evaluate
from engine.harness import RunHarness
from engine.model_based_config import RUN_CONTROL_FIELDS, ModelBasedConfig, with_dynamics_seed
from engine.off_data import UncertaintyProbe, off_data_warning
from engine.rollout import RolloutEngine, rollout_metrics
from engine.termination import termination_params


class ModelBasedRun:
    """One run of the loop, in the order ``train_model_based`` drives it: ``__init__`` (setup: the run's harness,
    data, dynamics, agent, rollout engines, buffers, resume), ``prepare``, then per update ``rollout_phase``
    (every ``rollout_interval`` steps), ``update``, ``log_and_evaluate``, ``checkpoint``; finally ``finish``.
    The run directory, resume, threads, logging, checkpoints, the non-finite stop and the summary are the
    harness's (``engine.harness.RunHarness``, ``self.harness``)."""

    def __init__(
        self,
        algo: str,
        config_cls: type[ModelBasedConfig],
        cfg: ModelBasedConfig | None,
        make_agent: MakeAgent,
        resume: str | None = None,
    ):
        self.harness = RunHarness(
            algo,
            config_cls,
            cfg,
            resume,
            RUN_CONTROL_FIELDS,
            "num_updates",
            normalize=with_dynamics_seed,
            validate=lambda c: data.check_id(c.dataset),
        )
        try:
            self._setup(make_agent)
        except BaseException:
            self.harness.close()
            raise

    def _setup(self, make_agent: MakeAgent) -> None:
        cfg, ckpt = self.cfg, self.harness.ckpt
        dev = self.device = torch.device(cfg.device)
        self.data = data.load(cfg.dataset, device=dev)
        self.real = self.data.as_batch()
        if self.data.env_name is None:
            raise ValueError(f"dataset {cfg.dataset!r} is not from a supported environment; cannot evaluate it")
        self.harness.bind_data(data_hash(self.real))
        self.dyn, self.dyn_info = fit_or_load(
            self.real, cfg.dataset, cfg.dynamics, path=cfg.dynamics_path, device=dev, progress=cfg.progress
        )
        torch.manual_seed(cfg.seed)  # the one seeding of the global generator: the agent's initialisation
        self.agent = make_agent(self.data, cfg, dev, self.dyn, saved=None if ckpt is None else ckpt["agent"])
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        term = termination_params(self.data.env_name).to(dev)
        self.engines = [
            RolloutEngine(self.dyn.params(), p, term.obs_low, term.obs_high, cfg.rollout, self.gen)
            for p in self.agent.rollout_policies(self.gen)
        ]
        capacity = cfg.model_retain_rollouts * cfg.rollout_batch_size * cfg.rollout.horizon
        self.model_buffer = ReplayBuffer(capacity, self.data.obs_dim, self.data.act_dim, dev)
        self.num_real = int(round(cfg.batch_size * cfg.real_ratio))
        if ckpt is not None:
            self.agent.load_state_dict(ckpt["agent"])
            if "model_buffer" in ckpt:
                self.model_buffer.load_state_dict(ckpt.pop("model_buffer"))
            else:  # a slim checkpoint (``engine.checkpoint.slim``): the first rollout phase refills the buffer
                warnings.warn(
                    f"{self.dir / 'checkpoint.pt'} holds no model buffer (a slim checkpoint): the run continues from "
                    f"one fresh rollout phase instead of the last {cfg.model_retain_rollouts}",
                    stacklevel=4,
                )
            self.gen.set_state(ckpt["gen"])
        self.probe = UncertaintyProbe(
            self.dyn.params(), self.real, cfg.rollout.uncertainty, torch.Generator(device=dev).manual_seed(cfg.seed)
        )
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.t_log = 0, time.perf_counter()

    @property
    def cfg(self) -> ModelBasedConfig:
        """The config in force (the saved one on resume, with ``dynamics.seed`` filled in)."""
        return self.harness.cfg

    @property
    def dir(self):
        """The run directory (``pathlib.Path``)."""
        return self.harness.dir

    @property
    def step(self) -> int:
        """Agent updates done so far, earlier stretches of a resumed run included."""
        return self.harness.step

    @step.setter
    def step(self, value: int) -> None:
        self.harness.step = value

    def prepare(self) -> None:
        """The agent's work before the loop (``Agent.prepare``); logged and checkpointed when there was any."""
        t0 = time.perf_counter()
        prepared = self.agent.prepare(self.gen, self.cfg.progress)
        if prepared:
            self.harness.log({**prepared, "perf/prepare_s": time.perf_counter() - t0})
            self.checkpoint()

    def rollout_phase(self) -> None:
        """Roll each rollout policy out from dataset start states into the model buffer (fixed shapes), after
        setting the agent's learning rates for the block of updates it starts (``Agent.schedule``)."""
        cfg, dev = self.cfg, self.device
        self.agent.schedule(self.step, cfg.num_updates, cfg.rollout_interval)  # learning rates for this block
        t0 = time.perf_counter()
        starts = cfg.rollout_batch_size // len(self.engines)
        for i, engine in enumerate(self.engines):
            start = self.real.obs[torch.randint(len(self.real), (starts,), generator=self.gen, device=dev)]
            tr = engine.rollout(start)
            self.model_buffer.add(*tr.flat())
            if i == 0:  # metrics of the agent's own policy
                self.sums.update(rollout_metrics(tr, cfg.rollout.penalty_coef))
        self.sums["perf/rollout_s"] = torch.tensor(time.perf_counter() - t0)

    def update(self) -> None:
        """One agent update on ``num_real`` dataset rows and ``batch_size - num_real`` model rows."""
        cfg, dev = self.cfg, self.device
        idx = torch.randint(len(self.real), (self.num_real,), generator=self.gen, device=dev)
        model = self.model_buffer.sample(cfg.batch_size - self.num_real, self.gen)
        for k, v in self.agent.update(self.real.index(idx), model, self.gen).items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.step += 1

    def evaluate(self, num_episodes: int) -> dict[str, float]:
        """The deterministic policy on the true environment (episode k reset with ``seed + 10_000 + k``); logs its
        episodes and returns its metrics, with the model's uncertainty along the way on the CPU backend
        (``UncertaintyProbe``)."""
        cfg, actor = self.cfg, self.agent.actor
        if cfg.eval_backend == "mjx":
            result = evaluate(actor, self.data.env_name, num_episodes, seed=cfg.seed + 10_000, backend="mjx")
            extra = {}
        else:
            policy = self.probe.wrap(lambda o: actor.act(o, deterministic=True))
            result = evaluate(policy, self.data.env_name, num_episodes, seed=cfg.seed + 10_000)
            extra = self.probe.metrics()
            message = off_data_warning(self.step, extra, self.dir)
            if message is not None:
                warnings.warn(message, stacklevel=2)
        self.harness.logger.log_episodes(self.step, result)
        return {**result.metrics(), **extra}

    def log_and_evaluate(self) -> None:
        """Every ``log_interval`` steps a metrics row (``train/*`` averaged over the interval); every
        ``eval_interval`` steps an evaluation on ``eval_episodes // 2`` episodes (at least 1).

        Raises:
            FloatingPointError: a ``train/*`` metric is NaN or +-inf (``RunHarness.log``); the message names it and
                the steps, and the last checkpoint (before it) is left as it was.
        """
        cfg, step = self.cfg, self.step
        do_eval = step % cfg.eval_interval == 0 and step != cfg.num_updates
        if not (step % cfg.log_interval == 0 or step == cfg.num_updates or do_eval):
            return
        row = {k: (v / self.count if k.startswith("train/") else v) for k, v in self.sums.items()}
        row["perf/updates_per_s"] = self.count / (time.perf_counter() - self.t_log)
        if do_eval:
            row.update(self.evaluate(max(1, cfg.eval_episodes // 2)))
        self.harness.log(row)
        self.sums, self.count, self.t_log = {}, 0, time.perf_counter()

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (``RunHarness.checkpoint``): the agent, the model buffer and the generator.

        Raises:
            FloatingPointError: the agent's state holds NaN or +-inf; nothing is written, the last checkpoint stays.
        """
        self.harness.checkpoint(
            {
                "agent": self.agent.state_dict(),
                "model_buffer": self.model_buffer.state_dict(),
                "gen": self.gen.get_state(),
            }
        )

    def finish(self) -> dict:
        """Final evaluation on ``eval_episodes``, ``actor.pt``, ``summary.json`` (with the ensemble's ``dynamics``
        info) and a last checkpoint."""
        final_metrics = self.evaluate(self.cfg.eval_episodes)
        torch.save(self.agent.actor.state_dict(), self.dir / "actor.pt")
        summary = self.harness.summary(
            final_metrics, self.data.env_name, self.data.behavior_normalized_score, {"dynamics": dict(self.dyn_info)}
        )
        self.checkpoint()
        return summary

    def close(self) -> None:
        """Close the run's harness (its logger; torch's thread count as it was)."""
        self.harness.close()


def train_model_based(
    algo: str,
    config_cls: type[ModelBasedConfig],
    cfg: ModelBasedConfig | None,
    make_agent: MakeAgent,
    resume: str | None = None,
) -> dict:
    """Run one model-based offline algorithm; returns the summary (also ``<out>/summary.json``).

    Args:
        algo: the algorithm's name, written into the run directory, checkpoints and summary ("mopo").
        config_cls: the algorithm's Config class (a resumed run's saved config is rebuilt as one).
        cfg: the algorithm's config (a ModelBasedConfig subclass). With ``resume`` it may be None (the saved
            config), or the saved config with other ``RUN_CONTROL_FIELDS`` (a larger ``num_updates`` extends the run).
        make_agent: builds the agent (``engine.agent.MakeAgent``) from the loaded data (dims), the config in force,
            the device and the trained dynamics; on resume it is also given the checkpoint's agent state.
        resume: a run directory to continue from its ``checkpoint.pt``.
    Raises:
        ValueError: unknown dataset id, bad config, a dataset from an unsupported env, a resume whose config
            differs from the saved one outside ``RUN_CONTROL_FIELDS`` or a checkpoint of another algorithm.
        FileNotFoundError: ``resume`` holds no checkpoint.
        FileExistsError: a fresh run whose ``out`` already holds a run (``engine.harness.RunHarness``).
        FloatingPointError: a loss or parameter became NaN/inf (the message names the step; the last
            checkpoint is kept).
    """
    run = ModelBasedRun(algo, config_cls, cfg, make_agent, resume)
    try:
        run.prepare()
        cfg = run.cfg
        bar = run.harness.progress(f"{algo} updates")
        while run.step < cfg.num_updates:
            if run.step % cfg.rollout_interval == 0 or len(run.model_buffer) == 0:
                run.rollout_phase()
            run.update()
            bar.update(1)
            run.log_and_evaluate()
            if run.step % cfg.checkpoint_interval == 0 and run.step != cfg.num_updates:
                run.checkpoint()
        bar.close()
        return run.finish()
    finally:
        run.close()
