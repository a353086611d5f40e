"""Sweeps: algorithms x datasets x seeds x hyperparameter overrides on Ray, one trial per CPU (or GPU)
slot, collected into one results table (Markdown and CSV) with learning-curve and throughput plots.

    python -m bench.sweep --algos mopo combo bc --datasets simloop/halfcheetah/medium-v0 --seeds 0 1 2 --preset fast
    python -m bench.sweep --algos mopo --preset fast --set rollout.penalty_coef=0.5,1.0 num_updates=2000
    python -m bench.sweep --address auto ...               # a running Ray cluster (`ray start --head`)
    python -m bench.sweep table --sweep-dir runs/sweep     # rebuild results.md/.csv and the plots only

Each trial is one ``train(cfg)`` of an algorithm module (``algos/<algo>.py``), its ``out`` set to
``<sweep_dir>/<algo>/<dataset id>/seed<k>``, with ``_<key>=<value>`` appended for every override that
takes several values in the grid. The trial directory is the run directory: ``config.json``,
``metrics.csv``, ``summary.json``, checkpoints; the sweep adds ``trial.json`` (what the trial is) and,
for a trial that raised, ``failed.json`` (the error and its traceback).

Resuming: the sweep's state is the files in ``--sweep-dir``. Rerunning the same command skips trials
that have ``summary.json``, resumes those that have a ``checkpoint.pt`` (``train(cfg, resume=dir)``),
and starts the others afresh (BC keeps no checkpoints, so an unfinished BC trial reruns from the
start). A trial directory whose ``trial.json`` records other settings is never reused: that trial is
reported as failed and the directory is left alone.

Failures: a trial that raises, whose config is invalid, or whose Ray worker dies is reported as
failed (console, ``failed.json``, the trials table); the sweep finishes the other trials and exits
with status 1.

Why Ray core tasks and not Ray Tune: every trial is an independent ``train(cfg)`` that already
checkpoints itself and writes its own summary and metrics; what a fixed grid needs from Ray is
placement (one trial per slot, on this machine or a cluster) and failure reporting. Tune would add
a second experiment state (its trial directories, ``tune.report`` checkpoints, ``Tuner.restore``)
to keep consistent with ours, and its schedulers and search algorithms (early stopping, adaptive
search) do not apply to a grid whose every seed must finish. With tasks, resuming is "look at the
directory", and a task's Python exception arrives in the driver as itself.

Two preparation tasks run before the trials that need them, so that concurrent trials never build
the same file at once: generating a missing ``simloop`` dataset, and fitting a dynamics model that
several trials share (same dataset and dynamics config; cached by ``engine.dynamics.fit_or_load``
under ``runs/dynamics`` of the driver's working directory).

On a cluster, ``--sweep-dir`` and the driver's working directory should be on a filesystem every
node shares (trials write their directories there; resuming reads them). Without one, the driver
still writes each finished trial's ``summary.json`` and ``metrics.csv`` into its own sweep directory,
so the table and plots are complete, but checkpoints stay on the nodes. The package must be
installed on every node; the driver's ``MINARI_DATASETS_PATH`` is set in every trial's worker.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from algos import ALGOS, algo_module, resolve_config
from engine.data import DEFAULT_DATASET

AlgoName = Literal["mopo", "combo", "armor", "bc"]

_OBJECT_STORE_BYTES = 200 * 1024**2
"""Object store of a local Ray instance: trials exchange only configs and summaries (kilobytes)."""


@dataclass(frozen=True)
class Config:
    """A sweep: every algorithm x dataset x seed x combination of override values is one trial."""

    algos: tuple[AlgoName, ...] = ("mopo",)
    """Algorithm modules to run (``algos/<name>.py``)."""
    datasets: tuple[str, ...] = (DEFAULT_DATASET,)
    """Minari dataset ids; a missing ``simloop`` id is generated once, before its trials start."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each is one trial per algorithm, dataset and override combination."""
    preset: Literal["dataset", "fast"] = "dataset"
    """``dataset``: each dataset's own preset (full budget). ``fast``: that preset with the algorithm's
    ``--fast`` budget (``python -m algos.<name> --fast --dataset X`` resolves to the same config)."""
    set: tuple[str, ...] = ()
    """Config overrides ``KEY=V1[,V2...]`` (dotted keys for nested fields: ``rollout.penalty_coef=0.5,1.0``;
    tuples space-separated: ``"dynamics.weight_decays=1e-5 1e-5 1e-5"``; ``none`` for None). Several values
    make a grid axis. A key applies to every selected algorithm whose Config has it and must exist in one."""
    sweep_dir: str = "runs/sweep"
    """Directory of the trials and the results; rerunning with the same one resumes the sweep."""
    address: str | None = None
    """Ray cluster to join (``auto`` or ``host:port``); None starts a local Ray instance."""
    num_cpus: int | None = None
    """CPUs of the local Ray instance (default: all of this machine's); ignored with ``--address``."""
    cpus_per_trial: int = 1
    """CPUs Ray reserves per trial; also the trial's torch threads."""
    gpus_per_trial: float = 0.0
    """GPUs Ray reserves per trial (use with ``--set device=cuda``)."""
    dynamics_per_seed: bool = True
    """Each seed fits its own dynamics model (it follows the trial's seed, as in every run), so the spread
    over seeds includes the model's; off, all seeds of a dataset share the seed-0 model (faster)."""
    max_retries: int = 0
    """Ray retries of a trial whose worker process died (out of memory, crash); a retry resumes from
    the trial's checkpoint. Python exceptions are never retried."""
    plots: bool = True
    """Write the learning-curve and throughput plots with the table."""
    benchmark_json: str | None = None
    """pytest-benchmark JSON for the throughput plot; default: the newest under ./.benchmarks, if any."""

    def __post_init__(self):
        bad = []
        if not self.algos or not self.datasets or not self.seeds:
            bad.append("--algos, --datasets and --seeds each need at least one value")
        if self.cpus_per_trial < 1 or self.gpus_per_trial < 0 or self.max_retries < 0:
            bad.append("cpus_per_trial must be >= 1, gpus_per_trial and max_retries >= 0")
        if self.num_cpus is not None and self.num_cpus < self.cpus_per_trial:
            bad.append(f"num_cpus={self.num_cpus} is less than cpus_per_trial={self.cpus_per_trial}")
        if bad:
            raise ValueError("; ".join(bad))


@dataclass(frozen=True)
class TableConfig:
    """Rebuild the results table (and plots) of a sweep directory from the files in it; runs nothing."""

    sweep_dir: str = "runs/sweep"
    """Directory of the trials (every summary.json and failed.json under it is read)."""
    plots: bool = True
    """Write the learning-curve and throughput plots too."""
    benchmark_json: str | None = None
    """pytest-benchmark JSON for the throughput plot; default: the newest under ./.benchmarks, if any."""


# --- config overrides ---------------------------------------------------------------------------


def parse_set(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["a.b=1,2", "c=x"]`` -> ``[("a.b", ["1", "2"]), ("c", ["x"])]`` (hyphens in keys become underscores).

    Raises:
        ValueError: an item without ``=``, an empty key or value, a key given twice.
    """
    out: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        vals = [v.strip() for v in values.split(",")]
        if not sep or not key or any(not v for v in vals):
            raise ValueError(f"bad --set item {item!r}: expected KEY=VALUE or KEY=V1,V2,... (no empty values)")
        if key in {k for k, _ in out}:
            raise ValueError(f"--set key {key!r} given twice; list its values in one item: {key}=V1,V2")
        out.append((key, vals))
    return out


def field_type(cls: type, path: str):
    """Type of the field at dotted ``path`` of dataclass ``cls``, or None if there is no such field."""
    tp = cls
    for part in path.split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        if part not in {f.name for f in dataclasses.fields(tp)}:
            return None
        tp = typing.get_type_hints(tp)[part]
    return tp


def override_flags(key: str, text: str, tp) -> list[str]:
    """A ``--set`` value as the command-line flags tyro parses for the field of type ``tp`` at dotted ``key``:
    ``rollout.penalty_coef=0.5`` -> ``["--rollout.penalty-coef", "0.5"]``; bools as ``--key``/``--no-key``;
    tuples space-separated; ``none`` as None."""
    head, _, name = key.rpartition(".")
    prefix = "--" + (head + "." if head else "")
    name = name.replace("_", "-")
    if tp is bool and text.lower() in ("true", "false"):
        return [prefix + ("" if text.lower() == "true" else "no-") + name]
    return [prefix + name, *("None" if v.lower() in ("none", "null") else v for v in text.split())]


# --- the grid ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One slot of the grid."""

    algo: str
    dataset: str
    seed: int
    overrides: tuple[tuple[str, str], ...]
    """The ``--set`` values that apply to this algorithm, as typed."""
    variant: str
    """The overrides that vary in the grid, ``key=value, ...`` ("" when none): a row of the table."""
    out: Path

    @property
    def label(self) -> str:
        return " ".join(x for x in (self.algo, self.dataset, f"seed {self.seed}", self.variant) if x)

    def spec(self, cfg: Config) -> dict:
        """What ``trial.json`` records: the settings that make this trial's result."""
        return {
            "algo": self.algo,
            "dataset": self.dataset,
            "seed": self.seed,
            "preset": cfg.preset,
            "overrides": dict(self.overrides),
            "variant": self.variant,
            "dynamics_per_seed": cfg.dynamics_per_seed,
        }


def _dir_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)


def expand_grid(cfg: Config) -> list[Trial]:
    """Every trial of the sweep, seeds outermost (so the first trials to finish cover every algorithm).

    Raises:
        ValueError: unknown algorithm, bad ``--set`` syntax, or a ``--set`` key no selected algorithm has.
    """
    overrides = parse_set(cfg.set)
    config_cls = {algo: algo_module(algo).Config for algo in cfg.algos}
    for key, _ in overrides:
        if not any(field_type(c, key) is not None for c in config_cls.values()):
            fields = sorted({f.name for c in config_cls.values() for f in dataclasses.fields(c)})
            raise ValueError(
                f"--set {key}: no field {key!r} in the Config of {', '.join(cfg.algos)}; "
                f"fields: {', '.join(fields)} (nested fields with dots, e.g. rollout.penalty_coef)"
            )
    root = Path(cfg.sweep_dir).resolve()
    trials: list[Trial] = []
    seen: set[Path] = set()
    for seed, dataset, algo in itertools.product(cfg.seeds, cfg.datasets, cfg.algos):
        applicable = [(k, vals) for k, vals in overrides if field_type(config_cls[algo], k) is not None]
        for combo in itertools.product(*[vals for _, vals in applicable]):
            chosen = tuple((k, v) for (k, _), v in zip(applicable, combo))
            varying = [(k, v) for (k, vals), (_, v) in zip(applicable, chosen) if len(vals) > 1]
            name = f"seed{seed}" + "".join(f"_{_dir_part(f'{k}={v}')}" for k, v in varying)
            out = root / algo / dataset / name
            if out not in seen:
                seen.add(out)
                variant = ", ".join(f"{k}={v}" for k, v in varying)
                trials.append(Trial(algo, dataset, seed, chosen, variant, out))
    return trials


def build_config(trial: Trial, cfg: Config):
    """The trial's algorithm Config, by the rule of every entry point (``algos.resolve_config``): the dataset's
    preset, the sweep's budget preset, then as flags: seed, out, threads, the shared model (without
    ``dynamics_per_seed``), and the trial's overrides.

    Raises:
        ValueError: an override value of the wrong type, or a combination the Config rejects.
    """
    config_cls = algo_module(trial.algo).Config
    flags = ["--seed", str(trial.seed), "--out", str(trial.out), "--num-threads", str(cfg.cpus_per_trial)]
    flags.append("--no-progress")  # progress bars of parallel trials interleave in the driver's console
    if not cfg.dynamics_per_seed and field_type(config_cls, "dynamics") is not None:
        flags += ["--dynamics.seed", "0"]
    for key, text in trial.overrides:
        flags += override_flags(key, text, field_type(config_cls, key))
    preset = None if cfg.preset == "dataset" else cfg.preset
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            return resolve_config(trial.algo, trial.dataset, preset, flags)
    except SystemExit as e:  # tyro's message, without its box drawing
        text = " ".join(re.sub(r"[\u2500-\u257f]", " ", message.getvalue()).split())
        raise ValueError(f"{trial.label}: bad --set value(s) {dict(trial.overrides)}: {text}") from e


# --- Ray tasks ----------------------------------------------------------------------------------


PASSED_ENV = ("MINARI_DATASETS_PATH",)
"""Environment variables of the driver that every task sets in its worker."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a task sets up in its Ray worker before it runs: the driver's working directory (where it
    exists on that node: relative paths such as the dynamics cache resolve as in the driver), torch
    threads, and the driver's ``PASSED_ENV`` variables (None: unset). A task argument rather than a
    Ray ``runtime_env``, so that one pool of workers (torch already imported) serves every trial."""

    cwd: str | None = None
    num_threads: int = 1
    env: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def of_driver(cls, num_threads: int) -> WorkerSetup:
        return cls(os.getcwd(), num_threads, tuple((k, os.environ.get(k)) for k in PASSED_ENV))

    def apply(self) -> None:
        import torch

        for key, value in self.env:
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.cwd is not None and os.path.isdir(self.cwd):
            os.chdir(self.cwd)
        torch.set_num_threads(self.num_threads)


def prepare_dataset(dataset: str, setup: WorkerSetup) -> None:
    """Generate a missing ``simloop`` dataset once, before the trials that load it.

    Raises:
        RuntimeError: generation failed (the message carries the cause, e.g. a missing behaviour policy).
    """
    from engine import data

    setup.apply()
    try:
        if not (data._datasets_root() / dataset / "data").exists():
            data.make_dataset(dataset, progress=False)
    except Exception as e:  # noqa: BLE001 - reported on every trial of this dataset
        raise RuntimeError(f"preparing dataset {dataset!r} failed: {type(e).__name__}: {e}") from e


def prepare_dynamics(algo_cfg, setup: WorkerSetup, *after) -> None:
    """Fit (or find cached) the dynamics model that several trials share, as ``train`` would."""
    import torch

    from engine import data
    from engine.dynamics import fit_or_load

    setup.apply()
    try:
        dev = torch.device(algo_cfg.device)
        real = data.load(algo_cfg.dataset, device=dev).as_batch()
        fit_or_load(real, algo_cfg.dataset, algo_cfg.dynamics, device=dev, progress=False)
    except Exception as e:  # noqa: BLE001 - reported on every trial sharing this model
        raise RuntimeError(f"fitting the dynamics model of {algo_cfg.dataset!r} failed: {type(e).__name__}: {e}") from e


def run_trial(algo: str, algo_cfg, setup: WorkerSetup | None = None, *after) -> dict:
    """One trial: resume from ``<out>/checkpoint.pt`` if there is one, else train from the start
    (first removing a previous attempt's partial ``metrics.csv`` and ``tb/``, so the curve holds one run).

    ``after``: results of the preparation tasks this trial waits for (Ray resolves them first).
    Returns ``{"status": "done", "summary", "metrics_csv", "resumed"}`` or ``{"status": "failed", "error",
    "traceback"}``: the trial's exception is caught and returned, never raised.
    """
    if setup is not None:
        setup.apply()
    out = Path(algo_cfg.out)
    resume = (out / "checkpoint.pt").is_file()  # BC writes none: an unfinished BC trial starts again
    try:
        if not resume:
            (out / "metrics.csv").unlink(missing_ok=True)
            shutil.rmtree(out / "tb", ignore_errors=True)
        summary = algo_module(algo).train(algo_cfg, resume=str(out) if resume else None)
    except Exception as e:  # noqa: BLE001 - a failed trial is reported, never raised into the sweep
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    metrics = out / "metrics.csv"
    return {
        "status": "done",
        "summary": summary,
        "metrics_csv": metrics.read_text() if metrics.is_file() else None,
        "resumed": resume,
    }


def _ray_error_message(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


# --- the driver ---------------------------------------------------------------------------------


def _short(text: str, limit: int = 300) -> str:
    """An error message cut for the console (the whole message is in failed.json and results.md)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _record_failure(trial: Trial, spec: dict, error: str, tb: str = "", write: bool = True) -> dict:
    rec = {**spec, "status": "failed", "error": error, "traceback": tb, "run_dir": str(trial.out)}
    if write:
        _write_json(trial.out / "failed.json", {**rec, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    return rec


def run_sweep(cfg: Config) -> list[dict]:
    """Run (or resume) the sweep, then write the table and plots.

    Returns one record per trial: its ``trial.json`` fields plus ``status`` (``done``, ``resumed``,
    ``skipped`` = finished before, ``failed``) and ``error`` for failures. With Ray already initialised in
    this process, that Ray is used and left running; otherwise a local instance (or ``--address``) is
    started and shut down at the end. Raises ValueError for a bad grid (see ``expand_grid``).
    """
    trials = expand_grid(cfg)
    root = Path(cfg.sweep_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    pending: list[tuple[Trial, dict, object]] = []
    for trial in trials:
        spec = trial.spec(cfg)
        known = trial.out / "trial.json"
        if known.is_file():
            previous = {k: v for k, v in json.loads(known.read_text()).items() if k in spec}
            if previous != spec:
                diff = {k: (previous.get(k), spec[k]) for k in spec if previous.get(k) != spec[k]}
                msg = (
                    f"ValueError: {trial.out} holds a trial with other settings {diff} (was, now); "
                    "use another --sweep-dir or remove that directory"
                )
                records.append(_record_failure(trial, spec, msg, write=False))
                print(f"failed   {trial.label}: {_short(msg)}")
                continue
        if (trial.out / "summary.json").is_file():
            records.append({**spec, "status": "skipped", "run_dir": str(trial.out)})
            print(f"skipped  {trial.label} (finished before: {trial.out / 'summary.json'})")
            continue
        try:
            algo_cfg = build_config(trial, cfg)
        except Exception as e:  # noqa: BLE001 - a trial whose config is invalid is a failed trial
            records.append(_record_failure(trial, spec, f"{type(e).__name__}: {e}", traceback.format_exc()))
            print(f"failed   {trial.label}: {_short(records[-1]['error'])}")
            continue
        _write_json(known, spec)
        (trial.out / "failed.json").unlink(missing_ok=True)
        pending.append((trial, spec, algo_cfg))
    if pending:
        records += _run_on_ray(cfg, pending)
    write_results(root, plots=cfg.plots, benchmark_json=cfg.benchmark_json)
    order = {str(t.out): i for i, t in enumerate(trials)}
    records.sort(key=lambda r: order.get(r["run_dir"], len(order)))
    failed = [r for r in records if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "resumed", "skipped", "failed")}
    print(f"\n{len(records)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for r in failed:
        label = " ".join(x for x in (r["algo"], r["dataset"], f"seed {r['seed']}", r["variant"]) if x)
        print(f"  FAILED {label}: {_short(r['error'])}")
    print(f"results: {root / 'results.md'}")
    return records


def _dynamics_key(algo_cfg) -> tuple[str, str] | None:
    """What identifies the cached dynamics model a trial fits (None: it fits none, or loads a given one)."""
    if getattr(algo_cfg, "dynamics", None) is None or algo_cfg.dynamics_path is not None:
        return None
    return algo_cfg.dataset, json.dumps(dataclasses.asdict(algo_cfg.dynamics), sort_keys=True)


def _run_on_ray(cfg: Config, pending: list[tuple[Trial, dict, object]]) -> list[dict]:
    """Submit preparation tasks and trials, wait for every trial, record each result as it arrives."""
    import ray

    own_ray = not ray.is_initialized()
    if own_ray:
        if cfg.address is None:
            ray.init(
                num_cpus=cfg.num_cpus or os.cpu_count(),
                include_dashboard=False,
                object_store_memory=_OBJECT_STORE_BYTES,
            )
        else:
            ray.init(address=cfg.address)
    try:
        opts = {"num_cpus": cfg.cpus_per_trial, "num_gpus": cfg.gpus_per_trial, "max_retries": cfg.max_retries}
        setup = WorkerSetup.of_driver(cfg.cpus_per_trial)
        prep_data = ray.remote(prepare_dataset).options(**opts)
        prep_dyn = ray.remote(prepare_dynamics).options(**opts)
        task = ray.remote(run_trial).options(**opts)

        from engine import data

        dataset_refs = {}
        for ds in dict.fromkeys(c.dataset for _, _, c in pending):
            if ds in data.DATASETS and not (data._datasets_root() / ds / "data").exists():
                dataset_refs[ds] = prep_data.remote(ds, setup)
        shared: dict[tuple[str, str], list[object]] = {}
        for trial, _, algo_cfg in pending:
            key = _dynamics_key(algo_cfg)
            if key is not None and not (trial.out / "checkpoint.pt").is_file():
                shared.setdefault(key, []).append(algo_cfg)
        dyn_refs = {}
        for key, cfgs in shared.items():
            if len(cfgs) > 1:
                deps = [dataset_refs[key[0]]] if key[0] in dataset_refs else []
                dyn_refs[key] = prep_dyn.remote(cfgs[0], setup, *deps)

        refs = {}
        for trial, spec, algo_cfg in pending:
            deps = [dataset_refs[algo_cfg.dataset]] if algo_cfg.dataset in dataset_refs else []
            if _dynamics_key(algo_cfg) in dyn_refs:
                deps = [dyn_refs[_dynamics_key(algo_cfg)]]  # which waits for the dataset in turn
            refs[task.remote(trial.algo, algo_cfg, setup, *deps)] = (trial, spec)
        print(f"running {len(refs)} trials on Ray ({ray.available_resources().get('CPU', 0):.0f} CPUs free)")
        records, total = [], len(refs)
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            trial, spec = refs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - worker died, or a preparation task failed
                result = {"status": "failed", "error": _ray_error_message(e), "traceback": str(e)}
            records.append(_finish(trial, spec, result))
            r = records[-1]
            detail = f"score {r['normalized_score']:.1f}" if r["status"] != "failed" else _short(r["error"])
            print(f"[{total - len(refs)}/{total}] {r['status']:<8} {trial.label}: {detail}")
        return records
    finally:
        if own_ray:
            ray.shutdown()


def _finish(trial: Trial, spec: dict, result: dict) -> dict:
    """Record one trial's result in its directory (writing summary and metrics if the trial ran on a node
    without the shared filesystem)."""
    if result["status"] != "done":
        return _record_failure(trial, spec, result["error"], result.get("traceback", ""))
    summary = result["summary"]
    if not (trial.out / "summary.json").is_file():
        _write_json(trial.out / "summary.json", summary)
        if result.get("metrics_csv"):
            (trial.out / "metrics.csv").write_text(result["metrics_csv"])
    (trial.out / "failed.json").unlink(missing_ok=True)
    status = "resumed" if result.get("resumed") else "done"
    return {**spec, "status": status, "normalized_score": summary["normalized_score"], "run_dir": str(trial.out)}


# --- results table ------------------------------------------------------------------------------

PUBLISHED_SOURCES = {
    "OfflineRL-Kit": (
        "OfflineRL-Kit README (github.com/yihaosun1124/OfflineRL-Kit), table 'Benchmark Results (4 seeds)': "
        "D4RL -v2 datasets, normalised score, mean ± std over 4 seeds"
    ),
    "MOPO paper": (
        "Yu et al. 2020, MOPO (arXiv:2005.13239), Table 1: D4RL -v0 datasets, normalised score at the last "
        "iteration, mean ± std over 6 seeds (halfcheetah-random only)"
    ),
}
"""Where each published figure comes from (the keys label the figures in the table)."""

PUBLISHED: dict[tuple[str, str], dict[tuple[str, str], tuple[float, float]]] = {
    # OfflineRL-Kit README, "Benchmark Results (4 seeds)", MOPO column (D4RL -v2).
    ("mopo", "OfflineRL-Kit"): {
        ("halfcheetah", "medium"): (72.4, 4.2),
        ("hopper", "medium"): (62.8, 38.1),
        ("walker2d", "medium"): (84.1, 3.2),
        ("halfcheetah", "medium-replay"): (72.1, 3.8),
        ("hopper", "medium-replay"): (92.7, 20.7),
        ("walker2d", "medium-replay"): (85.9, 5.3),
        ("halfcheetah", "medium-expert"): (83.6, 12.5),
        ("hopper", "medium-expert"): (74.6, 44.2),
        ("walker2d", "medium-expert"): (108.2, 4.3),
    },
    # OfflineRL-Kit README, "Benchmark Results (4 seeds)", COMBO column (D4RL -v2).
    ("combo", "OfflineRL-Kit"): {
        ("halfcheetah", "medium"): (71.9, 8.5),
        ("hopper", "medium"): (84.7, 9.3),
        ("walker2d", "medium"): (83.9, 2.0),
        ("halfcheetah", "medium-replay"): (66.5, 6.5),
        ("hopper", "medium-replay"): (90.1, 25.2),
        ("walker2d", "medium-replay"): (89.4, 6.4),
        ("halfcheetah", "medium-expert"): (98.2, 0.2),
        ("hopper", "medium-expert"): (108.8, 2.6),
        ("walker2d", "medium-expert"): (110.0, 0.2),
    },
    # MOPO paper (Yu et al. 2020, arXiv:2005.13239), Table 1, D4RL -v0, mean ± std over 6 seeds. Only the
    # entry we could check against the paper's text is kept: the table's first row as extracted from the
    # PDF ("random halfcheetah 2.1 35.4 ± 2.5 ..."); the text of the later rows was not available to check.
    # The rest of this table, COMBO's Table 1 and ARMOR's Table 1 are left out (see PUBLISHED_NOTE): the
    # copies of them found were secondary (plotting scripts, baseline lists, another paper's table), not
    # attributed to a table or version, and disagree with one another (e.g. MOPO walker2d-medium 17.8 vs
    # 11.8 vs 14.0), so none was copied.
    ("mopo", "MOPO paper"): {
        ("halfcheetah", "random"): (35.4, 2.5),
    },
}
"""Published D4RL normalised scores: (algo, source) -> (env, level) -> (mean, std); std is ``nan`` where the
source gives none (the table then shows the mean alone)."""

PUBLISHED_NOTE = (
    "Published figures are for the D4RL datasets of the same name (MuJoCo-py environments, D4RL's "
    "behaviour policies); the simloop datasets are regenerated on Gymnasium v5 with their own "
    "behaviour policies, so they are comparable in level, not identical data. Included: OfflineRL-Kit's "
    "MOPO and COMBO columns (-v2; medium, medium-replay, medium-expert) and one entry of MOPO's Table 1 "
    "(-v0; halfcheetah-random). Not included: the other rows of MOPO's Table 1 (random, medium, mixed, "
    "medium-expert), COMBO's Table 1 and ARMOR's Table 1, whose text could not be checked against the "
    "papers; ARMOR has no published figure here."
)

_DATASET_RE = re.compile(r"^(?:[^/]+/)?(?P<env>[A-Za-z0-9]+)/(?P<level>[a-z-]+)-v\d+$")


def format_published(mean: float, std: float, source: str) -> str:
    """One published figure for the table: ``mean ± std (source)``, or ``mean (source)`` when std is nan."""
    return f"{mean:.1f} ({source})" if math.isnan(std) else f"{mean:.1f} ± {std:.1f} ({source})"


def published_for(algo: str, dataset: str) -> list[tuple[float, float, str]]:
    """Published ``(mean, std, source)`` figures for the D4RL dataset named like ``dataset``
    (``<namespace>/<env>/<level>-v<k>``); empty when none is known."""
    m = _DATASET_RE.match(dataset)
    if m is None:
        return []
    key = (m["env"].lower(), m["level"])
    return [(*table[key], src) for (a, src), table in PUBLISHED.items() if a == algo and key in table]


def collect(sweep_dir: Path) -> list[dict]:
    """One record per trial directory under ``sweep_dir``: every ``summary.json`` (status ``done``) and
    every ``failed.json`` without a summary beside it (status ``failed``), with ``trial.json``'s variant."""
    records = []
    for path in sorted(sweep_dir.rglob("summary.json")):
        summary = json.loads(path.read_text())
        spec_path = path.parent / "trial.json"
        spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
        records.append(
            {
                "algo": summary["algo"],
                "dataset": summary["dataset"],
                "seed": summary["seed"],
                "variant": spec.get("variant", ""),
                "status": "done",
                "normalized_score": summary["normalized_score"],
                "behavior_normalized_score": summary.get("behavior_normalized_score"),
                "num_updates": summary.get("num_updates"),
                "wall_s": summary.get("wall_s"),
                "error": "",
                "run_dir": str(path.parent),
            }
        )
    for path in sorted(sweep_dir.rglob("failed.json")):
        if path.parent.resolve() == sweep_dir.resolve() or (path.parent / "summary.json").is_file():
            continue
        f = json.loads(path.read_text())
        records.append(
            {
                **{k: f.get(k) for k in ("algo", "dataset", "seed")},
                "variant": f.get("variant", ""),
                "status": "failed",
                "normalized_score": None,
                "behavior_normalized_score": None,
                "num_updates": None,
                "wall_s": None,
                "error": f.get("error", ""),
                "run_dir": str(path.parent),
            }
        )
    algo_order = {a: i for i, a in enumerate(ALGOS)}
    records.sort(key=lambda r: (r["dataset"], algo_order.get(r["algo"], 99), r["variant"], r["seed"]))
    return records


def _mean_std(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def aggregate(records: list[dict]) -> list[dict]:
    """Rows per (dataset, algo, variant): mean ± std (population, over seeds) of the final normalised
    score, the number of seeds done and failed, the behaviour policy's score, updates, published figures."""
    rows = []
    key_of = lambda r: (r["dataset"], r["algo"], r["variant"])  # noqa: E731
    for (dataset, algo, variant), group in itertools.groupby(records, key=key_of):
        group = list(group)
        done = [r for r in group if r["status"] == "done"]
        scores = [r["normalized_score"] for r in done]
        behavior = [r["behavior_normalized_score"] for r in done if r["behavior_normalized_score"] is not None]
        updates = sorted({r["num_updates"] for r in done})
        mean, std = _mean_std(scores) if scores else (None, None)
        rows.append(
            {
                "dataset": dataset,
                "algo": algo,
                "variant": variant,
                "score_mean": mean,
                "score_std": std,
                "num_seeds": len(done),
                "num_failed": len(group) - len(done),
                "behavior_score": _mean_std(behavior)[0] if behavior else None,
                "num_updates": "/".join(str(u) for u in updates),
                "published": "; ".join(format_published(*fig) for fig in published_for(algo, dataset)),
            }
        )
    return rows


def _fmt(x, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def write_results(sweep_dir: str | Path, plots: bool = True, benchmark_json: str | None = None) -> list[dict]:
    """Write ``results.md``, ``results.csv`` (per dataset/algo/variant), ``trials.csv`` (per trial, with
    status and error) and ``failed.json`` (every failed trial) into ``sweep_dir``, and the plots into
    ``sweep_dir/plots``. Returns the aggregate rows. Raises FileNotFoundError if ``sweep_dir`` is missing."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no sweep directory {root}")
    records = collect(root)
    rows = aggregate(records)
    columns = list(rows[0]) if rows else ["dataset", "algo", "variant", "score_mean", "score_std", "num_seeds"]
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    trial_cols = ["algo", "dataset", "seed", "variant", "status", "normalized_score", "behavior_normalized_score"]
    trial_cols += ["num_updates", "wall_s", "error", "run_dir"]
    with open(root / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=trial_cols)
        w.writeheader()
        w.writerows(records)
    _write_json(root / "failed.json", [r for r in records if r["status"] == "failed"])
    figures = write_plots(root, records, benchmark_json) if plots else []
    (root / "results.md").write_text(results_markdown(root, rows, records, figures))
    return rows


def results_markdown(root: Path, rows: list[dict], records: list[dict], figures: list[Path]) -> str:
    """The Markdown report: the aggregate table, its notes, the per-trial table and the figures."""
    num_failed = sum(r["status"] == "failed" for r in records)
    lines = [
        "# Sweep results",
        "",
        f"{len(records)} trials under `{root}`: {len(records) - num_failed} done, {num_failed} failed. "
        "Score: D4RL normalised return (x100) of each seed's final policy, mean ± std over seeds.",
        "",
        "| dataset | algo | variant | normalised score | seeds | failed | behaviour policy | updates "
        "| published (D4RL) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        score = f"{r['score_mean']:.1f} ± {r['score_std']:.1f}" if r["score_mean"] is not None else "–"
        lines.append(
            f"| {r['dataset']} | {r['algo']} | {r['variant']} | {score} | {r['num_seeds']} | {r['num_failed']} "
            f"| {_fmt(r['behavior_score'])} | {r['num_updates']} | {r['published']} |"
        )
    lines += ["", "Published figures:", ""] + [f"- {k}: {v}." for k, v in PUBLISHED_SOURCES.items()]
    lines += ["", PUBLISHED_NOTE, "", "## Trials", ""]
    lines += ["| algo | dataset | seed | variant | status | score | updates | wall s | error |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        error = str(r["error"] or "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['algo']} | {r['dataset']} | {r['seed']} | {r['variant']} | {r['status']} "
            f"| {_fmt(r['normalized_score'])} | {r['num_updates'] or ''} | {_fmt(r['wall_s'], 0)} | {error} |"
        )
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(root).as_posix()})" for p in figures]
    return "\n".join(lines) + "\n"


# --- plots --------------------------------------------------------------------------------------


def _eval_curve(metrics_csv: Path) -> list[tuple[int, float]]:
    """``(step, eval/normalized_score)`` rows of a run's metrics.csv (rows without an evaluation skipped)."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv) as f:
        return [
            (int(float(row["step"])), float(row["eval/normalized_score"]))
            for row in csv.DictReader(f)
            if row.get("eval/normalized_score") not in (None, "")
        ]


def write_plots(root: Path, records: list[dict], benchmark_json: str | None = None) -> list[Path]:
    """Learning curves per dataset (mean over seeds, min-max band) and the throughput figure; PNG files
    under ``root/plots``. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = root / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    done = [r for r in records if r["status"] == "done"]
    for dataset in dict.fromkeys(r["dataset"] for r in done):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for (algo, variant), group in itertools.groupby(
            [r for r in done if r["dataset"] == dataset], key=lambda r: (r["algo"], r["variant"])
        ):
            group = list(group)
            by_step: dict[int, list[float]] = {}
            for r in group:
                for step, score in _eval_curve(Path(r["run_dir"]) / "metrics.csv"):
                    by_step.setdefault(step, []).append(score)
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
            label = f"{algo}{' ' + variant if variant else ''} ({len(group)} seed{'s' if len(group) > 1 else ''})"
            (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=label)
            low, high = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        behavior = [r["behavior_normalized_score"] for r in done if r["dataset"] == dataset]
        behavior = [b for b in behavior if b is not None]
        if behavior:
            ax.axhline(sum(behavior) / len(behavior), color="gray", linestyle="--", label="behaviour policy")
        ax.set(xlabel="gradient steps", ylabel="normalised score (D4RL, x100)", title=dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.99, 0.01, "line: mean over seeds; band: min-max", ha="right", fontsize=7, color="gray")
        fig.tight_layout()
        path = out_dir / f"curves_{dataset.replace('/', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    bench = throughput_plot(out_dir, benchmark_json)
    if bench is not None:
        written.append(bench)
    return written


def find_benchmark_json(benchmark_json: str | None) -> Path | None:
    """The given file, else the newest ``*.json`` under ./.benchmarks (pytest-benchmark's autosave folder)."""
    if benchmark_json is not None:
        return Path(benchmark_json)
    found = sorted(Path(".benchmarks").rglob("*.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


_RATE_RE = re.compile(r"^(?:(?P<provider>.+)_)?(?P<unit>[a-z]+)_per_s$")


def benchmark_rates(bench: dict) -> list[tuple[str, str, float]]:
    """``(label, unit, value)`` throughputs of one pytest-benchmark entry: each ``extra_info`` key
    ``[<provider>_]<unit>_per_s`` (wall clock; ``..._cpu`` keys are skipped), else 1 / median as calls/s."""
    info = bench.get("extra_info", {})
    size = f" (N={info['N']:,})" if isinstance(info.get("N"), int) else ""
    rates = []
    for key, value in info.items():
        m = _RATE_RE.match(key)
        if m is not None and isinstance(value, (int, float)):
            provider = f" [{m['provider']}]" if m["provider"] else ""
            rates.append((f"{bench['name']}{provider}{size}", f"{m['unit']}/s", float(value)))
    return rates or [(bench["name"] + size, "calls/s (1 / median)", 1.0 / bench["stats"]["median"])]


def throughput_plot(out_dir: Path, benchmark_json: str | None = None) -> Path | None:
    """Bar charts of one pytest-benchmark JSON run, one panel per benchmark group and unit
    (transitions/s, updates/s, ...): every benchmark's reported throughputs (``benchmark_rates``), each
    annotated with its ratio to the slowest bar of its panel (providers measured side by side). Prints a
    note and returns None when there is
    no JSON: bench/RESULTS.md is prose for people, the JSON is the machine-readable record.

    Raises:
        FileNotFoundError: a given ``benchmark_json`` that does not exist.
    """
    path = find_benchmark_json(benchmark_json)
    if path is None:
        print(
            "note: no pytest-benchmark JSON found (./.benchmarks is empty); throughput plot skipped. Make one with: "
            "python -m pytest bench --benchmark-enable --benchmark-only --benchmark-autosave"
        )
        return None
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark JSON at {path}")
    run = json.loads(path.read_text())
    benches = [b for b in run.get("benchmarks", []) if b.get("stats")]
    if not benches:
        print(f"note: {path} holds no timed benchmarks (run with --benchmark-enable); throughput plot skipped")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = run.get("machine_info", {}).get("cpu", {})
    panels: dict[str, list[tuple[str, float]]] = {}
    machines: dict[str, set[str]] = {}  # per panel: bench.conftest.machine() strings (they name the threads)
    for bench in benches:
        # One panel per benchmark group (pytest-benchmark's ``group``, else the test's name) and unit, so
        # each ratio compares providers measured side by side in one benchmark, never unrelated ones.
        group = bench.get("group") or bench["name"].split("[")[0]
        for label, unit, value in benchmark_rates(bench):
            if unit.startswith("calls/s"):  # a whole-procedure timing, not a throughput
                continue
            key = f"{unit} | {group}"
            panels.setdefault(key, []).append((label, value))
            machines.setdefault(key, set()).add(bench.get("extra_info", {}).get("machine") or cpu.get("brand_raw", ""))
    heights = [0.45 * len(bars) + 1.1 for bars in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, sum(heights) + 0.6), height_ratios=heights, squeeze=False)
    for ax, (unit, bars) in zip(axes[:, 0], panels.items()):
        labels, values = [b[0] for b in bars], [b[1] for b in bars]
        rects = ax.barh(labels, values, color="tab:blue")
        for rect, v in zip(rects, values):
            text = f" {v:,.0f} (x{v / min(values):.2f})"
            ax.text(rect.get_width(), rect.get_y() + rect.get_height() / 2, text, va="center", fontsize=8)
        ax.set_xlabel(unit.split(" | ")[0])
        ax.set_title(f"{unit.split(' | ')[1]}: " + "; ".join(sorted(machines[unit])), fontsize=8)
        ax.set_xlim(0, max(values) * 1.4)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"throughput, pytest-benchmark run {path.name}", fontsize=9)
    fig.tight_layout()
    out = out_dir / "throughput.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.sweep [flags]`` runs a sweep; ``python -m bench.sweep table [flags]`` rebuilds its
    table. Returns the exit status: 1 if any trial failed (or the grid is invalid), else 0."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["table"]:
        tcfg = tyro.cli(TableConfig, args=args[1:], prog="python -m bench.sweep table", description=TableConfig.__doc__)
        try:
            rows = write_results(tcfg.sweep_dir, plots=tcfg.plots, benchmark_json=tcfg.benchmark_json)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{len(rows)} rows: {Path(tcfg.sweep_dir) / 'results.md'}")
        return 0
    try:
        cfg = tyro.cli(Config, args=args, prog="python -m bench.sweep", description=__doc__)
        records = run_sweep(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 1 if any(r["status"] == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
