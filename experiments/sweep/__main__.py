"""Sweeps: algorithms x datasets x seeds x hyperparameter overrides on Ray, one trial per CPU (or GPU)
slot, collected into one results table (Markdown and CSV) with learning-curve and throughput plots.

    python -m experiments.sweep --algos mopo combo bc --datasets simloop/hopper/medium-v0 --seeds 0 1 2 --preset fast
    python -m experiments.sweep --algos mopo --preset fast --set rollout.penalty_coef=0.5,1.0 num_updates=2000
    python -m experiments.sweep --address auto ...               # a running Ray cluster (`ray start --head`)
    python -m experiments.sweep table --sweep-dir runs/sweep     # rebuild results.md/.csv and the plots only

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

On a cluster, ``--sweep-dir`` and the driver's working directory should be on a filesystem every
node shares (trials write their directories there; resuming reads them). Without one, the driver
still writes each finished trial's ``summary.json`` and ``metrics.csv`` into its own sweep directory,
so the table and plots are complete, but checkpoints stay on the nodes. The package must be
installed on every node; the driver's ``MINARI_DATASETS_PATH`` is set in every trial's worker.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from experiments.sweep.grid import Config
from experiments.sweep.ray_run import run_sweep
from experiments.sweep.report import write_results


@dataclass(frozen=True)
class TableConfig:
    """Rebuild the results table (and plots) of a sweep directory from the files in it; runs nothing."""

    sweep_dir: str = "runs/sweep"
    """Directory of the trials (every summary.json and failed.json under it is read)."""
    plots: bool = True
    """Write the learning-curve and throughput plots too."""
    benchmark_json: str | None = None
    """pytest-benchmark JSON for the throughput plot; default: the newest under ./.benchmarks, if any."""


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.sweep [flags]`` runs a sweep; ``python -m experiments.sweep table [flags]`` rebuilds
    its table. Returns the exit status: 1 if any trial failed or the grid is invalid (``table``: if the sweep
    directory or a given benchmark JSON is missing), else 0."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["table"]:
        prog = "python -m experiments.sweep table"
        tcfg = tyro.cli(TableConfig, args=args[1:], prog=prog, description=TableConfig.__doc__)
        try:
            rows = write_results(tcfg.sweep_dir, plots=tcfg.plots, benchmark_json=tcfg.benchmark_json)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{len(rows)} rows: {Path(tcfg.sweep_dir) / 'results.md'}")
        return 0
    try:
        cfg = tyro.cli(Config, args=args, prog="python -m experiments.sweep", description=__doc__)
        records = run_sweep(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 1 if any(r["status"] == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
