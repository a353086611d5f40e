"""The figures the results table reports, computed from run records (``experiments.records.load_records``).

The headline of an (algorithm, dataset) cell follows Agarwal et al. 2021 ("Deep Reinforcement Learning at the
Edge of the Statistical Precipice", NeurIPS 2021; the ``rliable`` library): the interquartile mean (IQM) over
seeds of each run's score, with a 95% stratified-bootstrap confidence interval. A run's score is the mean of its
last ``LAST_EVALS`` evaluations, never its final or best single evaluation (hopper and walker2d curves swing
between evaluations, so one evaluation can land on a peak or a trough).

Which runs are seeds of a cell: the records in plain ``seed<k>`` directories (no tag). Tagged records
(``seed0-fast``, ``seed0-ablation-*``, ...) ran another budget or configuration; they stay in the full records
table, never in a headline. All seeds of a cell must have run the same number of updates.

Wall times compare like with like: the model fit and the update loop (gradient updates with their model rollouts,
without the model fit, pretraining or evaluations) are reported apart, for simloop and for the peers alike.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.curves import Curve, eval_curve

LAST_EVALS = 5
"""A run's score: the mean of its last this-many evaluations."""
BOOTSTRAP_REPS = 10_000
"""Bootstrap resamples of a cell's confidence interval."""
PROFILE_REPS = 2_000
"""Bootstrap resamples of the performance profile's bands (rliable's default for profiles)."""
BOOTSTRAP_SEED = 0
"""The bootstrap's random state, fixed so that the generated table is the same on every machine and every run
(rliable 1.2's ``StratifiedBootstrap`` draws from NumPy's global generator, which is seeded here and restored)."""
CONFIDENCE = 0.95
ALGO_NAMES = {"mopo": "MOPO", "combo": "COMBO", "armor": "ARMOR", "bc": "BC"}
DATASET_ORDER = ("halfcheetah", "hopper", "walker2d")
SEED_DIR = re.compile(r"^seed(\d+)$")


def last_evals_mean(curve: Curve, k: int = LAST_EVALS) -> tuple[float, int, int] | None:
    """``(mean score, first step, last step)`` of the last ``k`` evaluations of ``curve`` (``eval_curve``'s
    ``(step, normalised score)`` pairs, in step order; all of them when there are fewer); None when empty.

    Raises:
        ValueError: ``k`` < 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    tail = curve[-k:]
    if not tail:
        return None
    return sum(score for _, score in tail) / len(tail), tail[0][0], tail[-1][0]


def algo_label(rec: dict) -> str:
    """``"MOPO (simloop)"`` for simloop's runs; a peer's library and commit or version for a peer's run
    (``"IQL (d3rlpy 2.8.1)"``, ``"MOPO (OfflineRL-Kit e3ce697)"``)."""
    code = rec.get("code")
    if code:
        name = rec["algo"].split("-", 1)[-1].upper().replace("TD3PLUSBC", "TD3+BC")
        pin = code.get("commit", code.get("version", ""))
        return f"{name} ({code['library']} {pin[:7] if 'commit' in code else pin})"
    return f"{ALGO_NAMES.get(rec['algo'], rec['algo'])} (simloop)"


def dataset_rank(dataset: str) -> tuple[int, str]:
    """Sort key of a dataset id: halfcheetah, hopper, walker2d first, then by name."""
    env = dataset.split("/")[1] if dataset.count("/") >= 2 else dataset
    return (DATASET_ORDER.index(env) if env in DATASET_ORDER else len(DATASET_ORDER), dataset)


def sort_key(rec: dict) -> tuple:
    """Records by dataset, simloop's before the peers', algorithm, seed, tag."""
    tag = (rec.get("record") or {}).get("tag") or ""
    return (*dataset_rank(rec["dataset"]), "code" in rec, rec["algo"], rec.get("seed", 0), tag)


def is_headline_seed(rec: dict) -> bool:
    """Whether a record is a seed of its cell's headline: its directory is a plain ``seed<k>`` and it has no tag."""
    return SEED_DIR.match(Path(rec["dir"]).name) is not None and not (rec.get("record") or {}).get("tag")


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """NumPy's global generator seeded with ``seed`` inside the block, its previous state restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_interval(
    scores: Sequence[float], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> tuple[float, tuple[float, float] | None]:
    """The IQM of ``scores`` (one per seed) and its 95% percentile stratified-bootstrap interval, both from
    ``rliable`` (``metrics.aggregate_iqm``: a 25% trimmed mean, so with fewer than 4 seeds it trims nothing and
    is the mean; ``library.get_interval_estimates``); the interval is None for a single score.

    Raises:
        ValueError: ``scores`` is empty.
    """
    if not scores:
        raise ValueError("no scores")
    from rliable import library, metrics

    matrix = np.asarray(scores, dtype=np.float64).reshape(-1, 1)  # [runs, tasks = 1]
    iqm = float(metrics.aggregate_iqm(matrix))
    if len(scores) == 1:
        return iqm, None
    with _seeded_numpy(seed):
        _, intervals = library.get_interval_estimates(
            {"cell": matrix},
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
        )
    low, high = intervals["cell"][:, 0]
    return iqm, (float(low), float(high))


@dataclass(frozen=True)
class Run:
    """One seed of a cell: its record's summary and the figures read from its curve."""

    seed: int
    last5: float
    """The mean of its last ``LAST_EVALS`` evaluations (normalised score)."""
    final: float
    """Its final evaluation (``summary.json``'s ``normalized_score``)."""
    best: float
    best_step: int


@dataclass(frozen=True)
class Cell:
    """The headline of one (algorithm, dataset): its seeds and their IQM with its interval."""

    algo: str
    label: str
    dataset: str
    behavior: float
    """The behaviour policy's normalised score on the dataset."""
    num_updates: int
    runs: tuple[Run, ...]
    iqm: float
    interval: tuple[float, float] | None
    """The 95% bootstrap interval of ``iqm``; None with one seed."""


def _run(rec: dict) -> Run | None:
    curve = eval_curve(Path(rec["dir"]) / "metrics.csv")
    tail = last_evals_mean(curve)
    if tail is None:
        return None
    best_step, best = max(curve, key=lambda e: e[1])
    return Run(rec["seed"], tail[0], rec["normalized_score"], best, best_step)


def headline_cells(records: Sequence[dict], reps: int = BOOTSTRAP_REPS) -> list[Cell]:
    """One ``Cell`` per (algorithm, dataset) with at least one headline seed (``is_headline_seed``) that has
    evaluations, in table order: by dataset, then by IQM, highest first.

    Raises:
        ValueError: the seeds of a cell ran different numbers of updates (tag the odd one).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in sorted(records, key=sort_key):
        if is_headline_seed(rec):
            groups.setdefault((rec["algo"], rec["dataset"]), []).append(rec)
    cells = []
    for (algo, dataset), recs in groups.items():
        budgets = {r["num_updates"] for r in recs}
        if len(budgets) > 1:
            dirs = ", ".join(f"{Path(r['dir']).name} ({r['num_updates']:,})" for r in recs)
            raise ValueError(
                f"{algo} on {dataset}: the seeds ran different numbers of updates ({dirs}); record the odd run "
                "with a tag (`experiments.records add --tag ...`) so that it is not a seed of the headline"
            )
        runs = tuple(r for r in map(_run, recs) if r is not None)
        if not runs:
            continue
        iqm, interval = iqm_interval([r.last5 for r in runs], reps=reps)
        cells.append(
            Cell(
                algo,
                algo_label(recs[0]),
                dataset,
                recs[0]["behavior_normalized_score"],
                budgets.pop(),
                runs,
                iqm,
                interval,
            )
        )
    return sorted(cells, key=lambda c: (*dataset_rank(c.dataset), -c.iqm))


def _score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's run-score distribution (``library.run_score_deviation`` at every tau), vectorised over the taus:
    the fraction of all entries of ``scores`` [runs, tasks] above each tau -> [T]."""
    return (scores.reshape(-1, 1) > taus.reshape(1, -1)).mean(axis=0)


def improvement_profiles(
    cells: Sequence[Cell], reps: int = PROFILE_REPS, seed: int = BOOTSTRAP_SEED, num_taus: int = 141
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """Performance profiles (score distributions, Agarwal et al. 2021; ``library.create_performance_profile``) of
    each algorithm's improvement over the behaviour policy: for a threshold tau, the fraction of its runs whose
    score (last-5 mean) exceeds the behaviour policy's by more than tau normalised points. An algorithm's runs on
    every dataset it ran are pooled (the datasets differ between algorithms and so do the seeds per dataset);
    at tau = 0 the profile is the fraction of its runs above the behaviour policy.

    Returns:
        ``(taus [T], profiles {label: [T]}, bands {label: [2, T]} (95% bootstrap over runs), counts {label:
        (runs, datasets)})``.

    Raises:
        ValueError: ``cells`` is empty.
    """
    if not cells:
        raise ValueError("no cells")
    from rliable import library

    gains: dict[str, list[float]] = {}
    datasets: dict[str, set[str]] = {}
    for cell in cells:
        gains.setdefault(cell.label, []).extend(r.last5 - cell.behavior for r in cell.runs)
        datasets.setdefault(cell.label, set()).add(cell.dataset)
    every = [g for v in gains.values() for g in v]
    low, high = math.floor(min(every) / 5) * 5 - 5, math.ceil(max(every) / 5) * 5 + 5
    taus = np.linspace(low, high, num_taus)
    with _seeded_numpy(seed):
        profiles, bands = library.create_performance_profile(
            {k: np.asarray(v).reshape(-1, 1) for k, v in gains.items()},
            taus,
            custom_profile_func=_score_distribution,
            reps=reps,
        )
    counts = {k: (len(v), len(datasets[k])) for k, v in gains.items()}
    return taus, profiles, bands, counts


def model_fit_s(rec: dict) -> tuple[float | None, bool]:
    """``(seconds, cached)`` of the run's dynamics fit: simloop's ``dynamics/train_s`` (``cached`` when the run
    loaded an ensemble fitted earlier, in another process), a peer's own fit (``dynamics.wall_s``); ``(None,
    False)`` for a model-free run."""
    dyn = rec.get("dynamics") or {}
    if "dynamics/train_s" in dyn:
        return float(dyn["dynamics/train_s"]), bool(dyn.get("reused"))
    if dyn.get("wall_s") is not None:
        return float(dyn["wall_s"]), False
    return None, False


def update_loop_s(rec: dict) -> tuple[float | None, float]:
    """``(update loop seconds, pretraining seconds)``: the gradient updates with their model rollouts and
    checkpoints, without the model fit, the agent's pretraining (ARMOR's critic pretraining, reported apart) or
    the evaluations. simloop's: the sum over its metrics rows of updates / ``perf/updates_per_s`` less
    ``perf/prepare_s`` (the first interval holds the pretraining); a peer's: ``peer_run.json``'s
    ``phases_s.updates`` (OfflineRL-Kit's includes its model rollouts). None where the record has neither (BC)."""
    run_dir = Path(rec["dir"])
    peer = run_dir / "peer_run.json"
    if peer.is_file():
        updates = json.loads(peer.read_text()).get("phases_s", {}).get("updates")
        return (None if updates is None else float(updates)), 0.0
    total, prepare, prev, found = 0.0, 0.0, 0, False
    if not (run_dir / "metrics.csv").is_file():
        return None, 0.0
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            if row.get("perf/prepare_s"):
                prepare += float(row["perf/prepare_s"])
            rate = row.get("perf/updates_per_s")
            if rate and float(rate) > 0:
                total += (step - prev) / float(rate)
                prev, found = step, True
    return (total - prepare if found else None), prepare
