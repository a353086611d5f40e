"""Running a sweep on Ray: each trial is one ``train(cfg)`` of its algorithm module in a Ray task, one per CPU
(or GPU) slot of this machine or a cluster; the driver skips finished trials, resumes interrupted ones from
their checkpoints, records every result in its trial directory, and writes the results table at the end.

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
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from algos import algo_module
from experiments.sweep.grid import Config, Trial, build_config, expand_grid
from experiments.sweep.report import write_json, write_results

OBJECT_STORE_BYTES = 200 * 1024**2
"""Object store of a local Ray instance: trials exchange only configs and summaries (kilobytes)."""

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
        """This process's working directory and ``PASSED_ENV`` variables, with ``num_threads`` torch threads."""
        return cls(os.getcwd(), num_threads, tuple((k, os.environ.get(k)) for k in PASSED_ENV))

    def apply(self) -> None:
        """Set the environment variables, change to the working directory (where it exists) and set torch's
        threads, in the worker that runs the task."""
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


def _short(text: str, limit: int = 300) -> str:
    """An error message cut for the console (the whole message is in failed.json and results.md)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record_failure(trial: Trial, spec: dict, error: str, tb: str = "", write: bool = True) -> dict:
    rec = {**spec, "status": "failed", "error": error, "traceback": tb, "run_dir": str(trial.out)}
    if write:
        write_json(trial.out / "failed.json", {**rec, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
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
        write_json(known, spec)
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
                object_store_memory=OBJECT_STORE_BYTES,
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
        write_json(trial.out / "summary.json", summary)
        if result.get("metrics_csv"):
            (trial.out / "metrics.csv").write_text(result["metrics_csv"])
    (trial.out / "failed.json").unlink(missing_ok=True)
    status = "resumed" if result.get("resumed") else "done"
    return {**spec, "status": status, "normalized_score": summary["normalized_score"], "run_dir": str(trial.out)}
