"""Score a peer run with simloop's evaluator: every TorchScript snapshot in ``RUN_DIR/policies/`` is loaded with
``torch.jit.load`` (no peer library needed) and run on the Gymnasium MuJoCo v5 environment by
``engine.evaluate.evaluate``, deterministic, episode k reset with seed ``seed + 10_000 + k`` as in simloop's own
runs; intermediate snapshots get ``eval_episodes // 2`` episodes (at least 1), the last one ``eval_episodes``.

    python -m peers.score runs/peers/d3rlpy-iql/halfcheetah-medium/seed0 --algo d3rlpy-iql \\
        --dataset simloop/halfcheetah/medium-v0 --seed 0

Writes into the run directory, through ``engine.logger.RunLogger``: ``config.json`` (``peer_config``: what ran),
``metrics.csv`` (one row per snapshot: step and ``EvalResult.metrics()``), ``episodes.csv`` (step, episode, seed,
return, length, normalized_score) and ``summary.json`` with the keys of simloop's runs
(``engine.harness.RunHarness.summary``) plus ``code`` (library, repository, commit or version) and
``eval_wall_s``. ``wall_s`` is the peer's own training time (data loading, model fitting, updates and snapshot
export, from ``peer_run.json``); the evaluations here are ``eval_wall_s``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from peers.peer_common import list_snapshots, read_record

ALGOS = ("offlinerlkit-mopo", "offlinerlkit-combo", "d3rlpy-iql", "d3rlpy-td3plusbc")
EVAL_SEED_OFFSET = 10_000
"""Evaluation episodes use seeds ``seed + 10_000 + k``, as simloop's trainer does."""
OUTPUTS = ("config.json", "metrics.csv", "episodes.csv", "summary.json", "tb")


@dataclass(frozen=True)
class Args:
    """Evaluate a peer run's policy snapshots with simloop's evaluator and write simloop's run records."""

    run_dir: tyro.conf.Positional[Path]
    """The peer run directory (holds peer_run.json and policies/)."""
    algo: Literal["offlinerlkit-mopo", "offlinerlkit-combo", "d3rlpy-iql", "d3rlpy-td3plusbc"]
    """Algorithm name written into the summary; must match the run's peer_run.json."""
    dataset: str
    """Dataset id; must match the run's."""
    seed: int
    """The run's seed; evaluation episode k uses seed + 10000 + k."""
    eval_episodes: int = 10
    """Episodes for the last snapshot; the others get eval_episodes // 2 (at least 1)."""
    partial: bool = False
    """Score a run that did not finish (its last snapshot stands for the final policy)."""
    overwrite: bool = False
    """Replace earlier scoring outputs (metrics.csv, episodes.csv, summary.json, tb/) in the run directory."""


def score(
    run_dir: str | Path,
    algo: str,
    dataset: str,
    seed: int,
    eval_episodes: int = 10,
    partial: bool = False,
    overwrite: bool = False,
) -> dict:
    """Evaluate every snapshot of ``run_dir`` and write its records; returns the summary dict.

    Raises:
        FileNotFoundError: no ``peer_run.json`` in ``run_dir``, or no snapshot in ``policies/``.
        ValueError: ``algo``, ``dataset`` or ``seed`` differing from the run's record; an unknown algo;
            ``eval_episodes < 1``; a run that did not finish, or whose last snapshot is not at its last update,
            without ``partial``; a snapshot name not ``step_<digits>.pt``; a policy output of the wrong shape.
        FileExistsError: the run directory already holds scoring outputs and ``overwrite`` is False.
    """
    from engine.evaluate import evaluate
    from engine.logger import RunLogger, machine_info

    run_dir = Path(run_dir)
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; expected one of {', '.join(ALGOS)}")
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1; got {eval_episodes}")
    rec = read_record(run_dir)
    for name, given in (("algo", algo), ("dataset", dataset), ("seed", seed)):
        if rec.get(name) != given:
            raise ValueError(f"{run_dir}: peer_run.json says {name} = {rec.get(name)!r}, the command {given!r}")
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise FileNotFoundError(f"{run_dir / 'policies'} holds no step_XXXXXXX.pt snapshot")
    last_step = snapshots[-1][0]
    if not partial and (not rec.get("finished") or last_step != rec["num_updates"]):
        raise ValueError(
            f"{run_dir}: the run did not finish (finished={rec.get('finished')}, last snapshot at step {last_step} "
            f"of {rec['num_updates']}); pass --partial to score it as it is"
        )
    held = [n for n in OUTPUTS if (run_dir / n).exists()]
    if held and not overwrite:
        raise FileExistsError(f"{run_dir} already holds {', '.join(held)}; pass --overwrite to score it again")
    for n in held:
        p = run_dir / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    torch.set_num_threads(1)
    logger = RunLogger(run_dir)
    t0 = time.perf_counter()
    evals: list[tuple[int, float]] = []
    try:
        for step, path in snapshots:
            n = eval_episodes if step == last_step else max(1, eval_episodes // 2)
            policy = torch.jit.load(str(path), map_location="cpu").eval()
            result = evaluate(policy, rec["env"], n, seed=seed + EVAL_SEED_OFFSET)
            logger.log(step, result.metrics())
            logger.log_episodes(step, result)
            evals.append((step, result.normalized_score))
            print(
                f"step {step:>7}: normalised score {result.normalized_score:6.1f} ± {result.normalized_score_std:4.1f} "
                f"({n} episodes, return {result.return_mean:.1f})",
                flush=True,
            )
        best_step, best = max(evals, key=lambda e: e[1])
        machine = machine_info(rec.get("torch_threads", 1))
        machine["torch"] = rec.get("torch_version", machine["torch"])  # the peer's torch ran the training
        summary = {
            "algo": algo,
            "dataset": dataset,
            "env": rec["env"],
            "seed": seed,
            "normalized_score": result.normalized_score,
            "normalized_score_std": result.normalized_score_std,
            "return_mean": result.return_mean,
            "return_std": result.return_std,
            "eval_episodes": eval_episodes,
            "best_eval_normalized_score": best,
            "best_eval_step": best_step,
            "behavior_normalized_score": rec["behavior_normalized_score"],
            "num_updates": last_step,
            "wall_s": rec["wall_s"],
            "eval_wall_s": time.perf_counter() - t0,
            "machine": machine,
            "code": rec["code"],
            "run_dir": str(run_dir),
        }
        if "dynamics" in rec.get("extra", {}):
            summary["dynamics"] = rec["extra"]["dynamics"]
        if not rec.get("finished"):
            summary["finished"] = False
        logger.write_json("config.json", peer_config(rec))
        logger.write_json("summary.json", summary)
    finally:
        logger.close()
    return summary


def peer_config(rec: dict) -> dict:
    """A peer run's ``config.json`` for its record: what ran, from ``peer_run.json`` (every hyperparameter with
    its source file and commit, the code, the adapter's arguments and the thread count)."""
    keys = ("algo", "dataset", "env", "seed", "num_updates", "code", "settings", "data_file", "torch_threads")
    return {k: rec[k] for k in keys} | {"adapter_args": rec.get("extra", {}).get("args", {})}


def main(argv: list[str] | None = None) -> dict:
    a = tyro.cli(Args, args=argv)
    summary = score(a.run_dir, a.algo, a.dataset, a.seed, a.eval_episodes, a.partial, a.overwrite)
    print(
        f"{summary['algo']} on {summary['dataset']}, seed {summary['seed']}: normalised score "
        f"{summary['normalized_score']:.1f} ± {summary['normalized_score_std']:.1f} ({summary['eval_episodes']} "
        f"episodes, step {summary['num_updates']}); behaviour {summary['behavior_normalized_score']:.1f}"
    )
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
