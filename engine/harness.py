"""The run harness: everything a training run needs around its loop, in one place, so that an algorithm brings
only its loop body. Model-based runs (``engine.trainer``), BC (``algos.bc``) and behaviour training
(``engine.behavior``) all run in one.

It owns the run directory (a fresh run refuses a directory that holds a run), ``config.json``, resume (the
one rule of every run, ``engine.checkpoint.resume``), the torch thread count (set on entry, restored on
close), the progress bar, logging (``engine.logger.RunLogger``), checkpoints (plain data, written atomically),
the stop on non-finite values, the wall time across resumed stretches and ``summary.json``::

    with RunHarness(ALGO, Config, cfg, resume, RUN_CONTROL_FIELDS) as run:
        cfg = run.cfg                                   # the config in force (the saved one on resume)
        learner = ...
        if run.ckpt is not None:                        # resumed: restore what the loop keeps
            learner.load_state_dict(run.ckpt["agent"])
        bar = run.progress("bc")
        while run.step < cfg.num_updates:
            ...one update...
            run.step += 1
            bar.update(1)
            if run.step % cfg.log_interval == 0:
                run.log({"train/loss": loss})           # raises FloatingPointError on NaN or inf
            if run.step % cfg.checkpoint_interval == 0:
                run.checkpoint({"agent": learner.state_dict(), "gen": gen.get_state()})
        return run.summary(final_eval_metrics, env_name, behavior_score)
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from engine import checkpoint
from engine.config import to_dict
from engine.logger import RunLogger, default_run_dir, machine_info


def nonfinite_key(state, prefix: str = "") -> str | None:
    """The key path (``actor/trunk.0.weight``) of the first floating tensor in a nested state (dicts, lists,
    tensors) holding NaN, +inf or -inf, or None when every one is finite. Other values are not looked at."""
    if isinstance(state, torch.Tensor):
        return None if not state.is_floating_point() or bool(torch.isfinite(state).all()) else prefix
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else ()
    for k, v in items:
        bad = nonfinite_key(v, f"{prefix}/{k}" if prefix else str(k))
        if bad is not None:
            return bad
    return None


class RunInUseError(FileExistsError):
    """Another process is training in the run directory (it holds the directory's lock, ``RunHarness.LOCK``)."""


def lock_run_dir(run_dir: Path):
    """Create ``run_dir`` if needed and take its exclusive lock (``fcntl.flock`` on ``run_dir/.lock``, released when
    the returned file is closed or the process ends, however it ends). The file holds the owner's pid.

    Raises:
        RunInUseError: another process holds the lock (names its pid): two processes training into one
            directory would interleave its checkpoints and logs.
    """
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / RunHarness.LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        raise RunInUseError(
            f"{run_dir} is in use: process {owner} is training there; wait for it to end (or stop it) before "
            "resuming, or pass another --out"
        ) from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


class RunHarness:
    """One training run's bookkeeping around the caller's loop. Usable as a context manager (``close`` on exit).

    On construction: resolves the config and the checkpoint (``resume`` given: ``engine.checkpoint.resume``, with
    ``run_control_fields`` and ``budget_field``; else ``cfg`` through ``normalize``), picks the run directory
    (``resume``; else ``cfg.out``; else ``runs/<algo>/<dataset>/<time>``), sets torch's thread count to
    ``cfg.num_threads``, flushes subnormal floats to zero (``torch.set_flush_denormal``), opens the logger and,
    for a fresh run, writes ``config.json`` (``algo``, ``command`` and the config's fields). A config whose ``out``
    is a run-control field gets ``out`` = the resumed directory.

    Args:
        algo: the algorithm's name ("mopo"), written into config.json, checkpoints and the summary.
        config_cls: the config's dataclass (a resumed run's saved config is rebuilt as one).
        cfg: the config; with ``resume`` it may be None (the saved one) or differ from it in run-control fields.
        resume: a run directory holding ``checkpoint.pt`` to continue from.
        run_control_fields: the fields a resumed run may change (how long and where it runs, not what).
        budget_field: the config field holding the run's length in steps (``num_updates``); it is the
            progress bar's total, and a resumed run refuses one below the checkpoint's step.
        normalize: ``cfg -> cfg`` applied to a fresh config and to both configs compared on resume (e.g.
            ``engine.model_based_config.with_dynamics_seed``).
        validate: ``cfg -> None``, called with the config in force before anything is written; what it raises
            (say, ``engine.data.check_id``'s ValueError for an unknown dataset) stops the run with no directory made.
    Attributes:
        dir: the run directory.
        cfg: the config in force.
        ckpt: the checkpoint resumed from (plain data: the caller's state dict plus ``algo``, ``config``, ``step``
            and, when written here, ``wall_s`` and ``data_hash``), or None for a fresh run; a caller may ``pop``
            large entries from it once restored.
        step: the run's step (the checkpoint's on resume, else 0); the caller advances it.
        logger: the ``engine.logger.RunLogger`` (metrics.csv, episodes.csv, TensorBoard).
        data_hash: the content hash of the run's training data once ``bind_data`` was called, else None.
        evals: ``(step, normalized score)`` of every evaluation logged so far, a resumed run's earlier ones included.
        flush_denormal: whether subnormals are flushed (False where the CPU lacks x86's FTZ/DAZ). Adam's moments of
            units whose gradient stays zero decay geometrically into the subnormal range (below 1.2e-38), and so do
            some gradients; x86 computes on subnormals many times slower, which slowed late updates of long runs
            (bench/RESULTS.md). The setting is per thread: it covers the calling thread and intra-op threads
            started after it (one-thread runs entirely). ``close`` turns subnormals back on.
    Raises:
        ValueError: ``cfg`` None for a fresh run, a bad resume (``engine.checkpoint.resume``), or from ``validate``.
        FileNotFoundError: ``resume`` holds no checkpoint.
        FileExistsError: a fresh run into a directory that holds a run (``engine.logger.RunLogger``).
        RunInUseError: (a FileExistsError) another process is training in the directory (``lock_run_dir``).
    """

    LOCK = ".lock"
    """The run directory's lock file (``lock_run_dir``), held from construction to ``close``."""

    def __init__(
        self,
        algo: str,
        config_cls: type,
        cfg,
        resume: str | Path | None = None,
        run_control_fields: tuple[str, ...] = (),
        budget_field: str = "num_updates",
        normalize=None,
        validate=None,
    ):
        self.t_start = time.perf_counter()
        self.algo, self.budget_field = algo, budget_field
        self.ckpt = None
        self._lock = None
        try:
            if resume is not None:
                self.dir = Path(resume)
                if self.dir.is_dir():  # locked before the checkpoint is read (a missing one: FileNotFoundError)
                    self._lock = lock_run_dir(self.dir)
                cfg, self.ckpt = checkpoint.resume(
                    resume, algo, config_cls, cfg, run_control_fields, budget_field, normalize
                )
                if "out" in run_control_fields and "out" in {f.name for f in fields(cfg)}:
                    cfg = replace(cfg, out=str(self.dir))
            elif cfg is None:
                raise ValueError("a fresh run needs a config (cfg=None is only for resume)")
            else:
                cfg = normalize(cfg) if normalize is not None else cfg
                self.dir = Path(cfg.out) if cfg.out else default_run_dir(algo, cfg.dataset)
            if validate is not None:
                validate(cfg)
            if self._lock is None:
                self._lock = lock_run_dir(self.dir)
            self.cfg = cfg
            self.step = 0 if self.ckpt is None else self.ckpt["step"]
            self.prior_wall = 0.0 if self.ckpt is None else float(self.ckpt.get("wall_s", 0.0))
            self.last_checkpoint = None if self.ckpt is None else self.step
            self.last_logged = self.step
            self.prior_threads = torch.get_num_threads()
            torch.set_num_threads(cfg.num_threads)
            self.flush_denormal = torch.set_flush_denormal(True)
            try:
                self.logger = RunLogger(self.dir, resume_step=None if self.ckpt is None else self.step)
            except BaseException:
                self._restore_cpu_settings()
                raise
        except BaseException:
            if self._lock is not None:
                self._lock.close()
            raise
        self.closed = False
        self.data_hash: str | None = None
        if self.ckpt is None:
            self.logger.write_json("config.json", {"algo": algo, "command": " ".join(sys.argv), **to_dict(cfg)})
        self.evals: list[tuple[int, float]] = [
            (int(float(r["step"])), float(r["eval/normalized_score"]))
            for r in self.logger.rows
            if r.get("eval/normalized_score") not in (None, "")
        ]

    def __enter__(self) -> RunHarness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wall_s(self) -> float:
        """Seconds of this run so far, earlier stretches of a resumed run included."""
        return self.prior_wall + time.perf_counter() - self.t_start

    def progress(self, desc: str, unit: str = "upd") -> tqdm:
        """A progress bar from ``step`` to the budget (``cfg.<budget_field>``); hidden unless ``cfg.progress``."""
        total = getattr(self.cfg, self.budget_field)
        show = getattr(self.cfg, "progress", False)
        return tqdm(total=total, initial=self.step, desc=desc, unit=unit, disable=not show)

    def _kept(self) -> str:
        return "none" if self.last_checkpoint is None else f"step {self.last_checkpoint}"

    def log(self, row: dict) -> dict[str, float]:
        """Log ``row`` (flat, namespaced keys; floats or 0-d tensors) at ``step``; returns it as floats. An
        ``eval/normalized_score`` joins ``evals`` (and is printed above the progress bar when it is shown).

        Raises:
            FloatingPointError: a ``train/*`` value is NaN or +-inf (after the row is written); the message names
                the keys and the steps since the previous row, and the last checkpoint is left as it was.
        """
        values = self.logger.log(self.step, row)
        bad = [k for k, v in values.items() if k.startswith("train/") and not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} in the updates of steps {self.last_logged + 1}-{self.step}: the run "
                f"stopped; its last checkpoint ({self._kept()}) is kept in {self.dir}"
            )
        self.last_logged = self.step
        if "eval/normalized_score" in values:
            self.evals.append((self.step, values["eval/normalized_score"]))
            if getattr(self.cfg, "progress", False):
                tqdm.write(f"step {self.step}: normalized score {values['eval/normalized_score']:.1f}")
        return values

    def bind_data(self, digest: str) -> None:
        """Tie the run to the content of the data it trains on: ``digest`` is its hash (``engine.dynamics.data_hash``),
        written into every checkpoint from now on. simloop generates its datasets on each machine, and other CPU kinds
        write other bytes under the same id (docs/datasets.md), so a run carried to another machine may find other
        data there; continuing would train the rest of the run on it. Call it before any work that uses the data.

        Raises:
            ValueError: a resumed run whose checkpoint names another digest (the message names both); nothing is
                written and the checkpoint stays as it was. A checkpoint written before checkpoints named their data
                cannot be checked: a warning says so and the run goes on.
        """
        saved = None if self.ckpt is None else self.ckpt.get("data_hash")
        if saved is not None and saved != digest:
            raise ValueError(
                f"{self.dir} trained on {self.cfg.dataset} with content hash {saved}, but the local dataset of that id "
                f"has hash {digest} (datasets are generated on each machine, and another CPU kind writes other bytes): "
                f"continuing here would train on other data. Resume it where the data has hash {saved}, or start a "
                "fresh run here"
            )
        if self.ckpt is not None and saved is None:
            warnings.warn(
                f"{self.dir / 'checkpoint.pt'} names no data hash (written before checkpoints did): whether "
                f"{self.cfg.dataset} here is the data the run trained on cannot be checked",
                stacklevel=2,
            )
        self.data_hash = digest

    def checkpoint(self, state: dict) -> None:
        """Write ``dir/checkpoint.pt`` (``engine.checkpoint.save``: plain data, one rename): the caller's ``state``
        (tensors and plain data; it must hold ``agent`` and ``gen``) with ``algo``, ``config``, ``step``,
        ``wall_s`` and, once ``bind_data`` was called, ``data_hash`` added.

        Raises:
            FloatingPointError: ``state["agent"]`` holds NaN or +-inf (the message names the tensor and the step);
                nothing is written and the last checkpoint stays.
        """
        bad = nonfinite_key(state["agent"])
        if bad is not None:
            raise FloatingPointError(
                f"non-finite values in the agent's {bad} at step {self.step}: the run stopped without writing a "
                f"checkpoint; its last checkpoint ({self._kept()}) is kept in {self.dir}"
            )
        extra = {"algo": self.algo, "config": to_dict(self.cfg), "step": self.step, "wall_s": self.wall_s()}
        if self.data_hash is not None:
            extra["data_hash"] = self.data_hash
        checkpoint.save({**state, **extra}, self.dir / "checkpoint.pt")
        self.last_checkpoint = self.step

    def summary(
        self, final: dict[str, float], env: str, behavior_normalized_score: float | None, extra: dict | None = None
    ) -> dict:
        """Log the final evaluation's metrics ``final`` (``EvalResult.metrics()``: ``eval/normalized_score``,
        ``eval/normalized_score_std``, ``eval/return_mean``, ``eval/return_std``) at ``step``, write
        ``summary.json`` and return it: the keys every run shares (algo, dataset, env, seed, the final scores,
        eval_episodes, the best evaluation of the whole run and its step, the behaviour policy's score,
        num_updates (= ``step``), wall_s, machine, run_dir) and the caller's ``extra`` keys.

        Raises:
            KeyError: ``final`` lacks one of the metrics above.
        """
        cfg = self.cfg
        scores = {
            "normalized_score": final["eval/normalized_score"],
            "normalized_score_std": final["eval/normalized_score_std"],
            "return_mean": final["eval/return_mean"],
            "return_std": final["eval/return_std"],
        }
        self.log(final)
        best_step, best = max(self.evals, key=lambda e: e[1])
        summary = {
            "algo": self.algo,
            "dataset": cfg.dataset,
            "env": env,
            "seed": cfg.seed,
            **scores,
            "eval_episodes": cfg.eval_episodes,
            "best_eval_normalized_score": best,
            "best_eval_step": best_step,
            "behavior_normalized_score": behavior_normalized_score,
            "num_updates": self.step,
            "wall_s": self.wall_s(),
            "machine": machine_info(cfg.num_threads),
            **(extra or {}),
            "run_dir": str(self.dir),
        }
        self.logger.write_json("summary.json", summary)
        return summary

    def close(self) -> None:
        """Close the logger, restore torch's thread count as it was before the run, turn subnormals back on and
        release the directory's lock (idempotent)."""
        if not self.closed:
            self.closed = True
            self.logger.close()
            self._restore_cpu_settings()
            self._lock.close()

    def _restore_cpu_settings(self) -> None:
        """Torch's thread count as it was before the run; subnormal floats back on (torch's default)."""
        torch.set_num_threads(self.prior_threads)
        if self.flush_denormal:
            torch.set_flush_denormal(False)
