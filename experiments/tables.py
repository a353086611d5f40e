"""The Markdown that ``python -m experiments.records table`` writes: README's results block (the headline table
per algorithm and dataset, its caption and a per-dataset summary) and ``bench/results/README.md`` (every record,
run by run, with wall times split like with like, and the history of runs without a record). The figures come
from ``experiments.scores``; this module only words and lays them out."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from experiments.curves import eval_curve
from experiments.scores import (
    BOOTSTRAP_REPS,
    LAST_EVALS,
    Cell,
    algo_label,
    last_evals_mean,
    model_fit_s,
    sort_key,
    update_loop_s,
)

POSTER_ORDER = (("armor", "ARMOR", 87.6), ("combo", "COMBO", 82.0), ("d3rlpy-iql", "IQL", 76.9), ("mopo", "MOPO", 42.1))
"""The ranking in the comparison poster's table (issue 32; averages over D4RL MuJoCo datasets), by the record
``algo`` that stands for each here (simloop's ARMOR, COMBO and MOPO, d3rlpy's IQL), its name and its figure."""
WIDTH = 115
"""Prose lines are wrapped at this width."""


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_on_hyphens=False, break_long_words=False)


def _steps(step: int) -> str:
    return f"{step // 1000}k" if step % 1000 == 0 and step else f"{step:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def headline(cell: Cell) -> str:
    """``"51.1 [47.8, 53.1] (3 seeds)"`` or ``"27.3 (1 seed)"``."""
    n = len(cell.runs)
    if cell.interval is None:
        return f"{cell.iqm:.1f} ({n} seed{'s' if n > 1 else ''})"
    low, high = cell.interval
    return f"{cell.iqm:.1f} [{low:.1f}, {high:.1f}] ({n} seeds)"


def headline_caption() -> str:
    """The paragraph above the headline table: what its figures are and which runs count."""
    return _wrap(
        f"Headline (bold): the interquartile mean (IQM) over seeds of each run's mean of its last {LAST_EVALS} "
        "evaluations, with its 95% stratified-bootstrap confidence interval (rliable, Agarwal et al. 2021; "
        f"{BOOTSTRAP_REPS:,} resamples, fixed random state). Seeds are the records in plain `seed<k>` directories; "
        "tagged runs (`seed0-fast`, ablations) are in the full records only. A cell with one seed says so and has "
        "no interval; with fewer than 4 seeds the IQM trims nothing and is the mean. The final and the best "
        "evaluation of each seed are shown beside it, in seed order. D4RL-normalised scores; every policy, the "
        "peers' included, is scored by simloop's evaluator on the Gymnasium v5 environment."
    )


def headline_table(cells: Sequence[Cell]) -> str:
    """One row per (dataset, algorithm): the headline, each seed's final and best evaluation, the behaviour
    policy and the budget."""
    rows = [
        f"| dataset | algorithm (code) | last-{LAST_EVALS} mean: IQM over seeds [95% CI] | final evaluation "
        "| best evaluation (updates) | behaviour policy | updates |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        finals = ", ".join(f"{r.final:.1f}" for r in c.runs)
        bests = ", ".join(f"{r.best:.1f} ({_steps(r.best_step)})" for r in c.runs)
        rows.append(
            f"| `{c.dataset}` | {c.label} | **{headline(c)}** | {finals} | {bests} | {c.behavior:.1f} "
            f"| {c.num_updates:,} |"
        )
    return "\n".join(rows)


def _poster_sentence(cells: Sequence[Cell]) -> str:
    by_algo = {c.algo: c for c in cells}
    present = [(algo, name) for algo, name, _ in POSTER_ORDER if algo in by_algo]
    missing = [name for algo, name, _ in POSTER_ORDER if algo not in by_algo]
    order = " > ".join(name for _, name, _ in POSTER_ORDER)
    without = f"; no record of {', '.join(missing)}" if missing else ""
    if len(present) < 2:
        return f"The poster's order {order} cannot be checked here{without}."
    ours = sorted(present, key=lambda p: -by_algo[p[0]].iqm)
    verdict = "holds" if ours == present else "does not hold"
    return f"The poster's order {order} {verdict} on these IQMs ({' > '.join(n for _, n in ours)}{without})."


def summary(cells: Sequence[Cell]) -> str:
    """Per dataset, generated from the cells: which algorithm leads on the headline, whether the next one lies
    inside its interval, which algorithms end above the behaviour policy, and whether the poster's ranking
    (``POSTER_ORDER``) holds among the algorithms recorded there."""
    out = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        group = [c for c in cells if c.dataset == dataset]  # highest IQM first (headline_cells' order)
        lead = group[0]
        low, high = min(c.behavior for c in group), max(c.behavior for c in group)
        # Each run is compared with the behaviour policy on its own machine's data: the generated datasets differ
        # between CPU kinds (docs/datasets.md, first paragraph), so the behaviour policy's score does too.
        behavior = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f} across CPU kinds' data"
        text = f"`{dataset}` (behaviour policy {behavior}): {lead.label} leads with {headline(lead)}"
        if len(group) > 1:
            nxt = group[1]
            inside = lead.interval is not None and lead.interval[0] <= nxt.iqm <= lead.interval[1]
            holds = nxt.interval is not None and nxt.interval[0] <= lead.iqm <= nxt.interval[1]
            where = ", inside the leader's interval" if inside else ""
            where = where or (", whose interval holds the leader's IQM" if holds else "")
            text += f"; next {nxt.label}, {headline(nxt)}{where}"
        below = [c.label for c in group if c.iqm <= c.behavior]
        text += (
            f". Above the behaviour policy: {len(group) - len(below)} of {len(group)}"
            + (f" (below: {', '.join(below)})" if below else "")
            + f". {_poster_sentence(group)}"
        )
        out.append(textwrap.fill(text, WIDTH, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False))
    return "\n".join(out)


def readme_block(cells: Sequence[Cell]) -> str:
    """What README holds between its results markers: the caption, the headline table and the summary."""
    poster = ", ".join(f"{name} {score}" for _, name, score in POSTER_ORDER)
    lead = _wrap(
        f"Per dataset, from the same figures; the poster's order is the ranking of the comparison poster ({poster}; "
        "averages over D4RL MuJoCo datasets), checked among the algorithms recorded on each dataset:"
    )
    return f"{headline_caption()}\n\n{headline_table(cells)}\n\n{lead}\n\n{summary(cells)}"


def _record_row(rec: dict, root: Path) -> str:
    curve = eval_curve(Path(rec["dir"]) / "metrics.csv")
    best_step, best = max(curve, key=lambda e: e[1]) if curve else (None, None)
    tail = last_evals_mean(curve)
    if tail is None:
        last = "—"
    else:
        mean, first, end = tail
        last = f"{mean:.1f} ({_steps(end) if first == end else f'{_steps(first)}-{_steps(end)}'})"
    tag = rec["record"].get("tag")
    run = f"{rec['seed']}" + (f" ({tag})" if tag else "")
    link = Path(rec["dir"]).relative_to(root).as_posix() if Path(rec["dir"]).is_relative_to(root) else rec["dir"]
    fit, cached = model_fit_s(rec)
    fit_cell = "—" if fit is None else _duration(fit) + (" (cached)" if cached else "")
    loop, pretrain = update_loop_s(rec)
    if loop is None:
        loop_cell = "—" if fit is not None else f"{_duration(rec.get('wall_s'))} (whole run)"
    else:
        loop_cell = _duration(loop) + (f" + {_duration(pretrain)} pretraining" if pretrain else "")
    machine = rec.get("machine") or {}
    where = f"{machine.get('gpu') or machine.get('cpu', '?')}, {machine.get('torch_threads', '?')} thr"
    return (
        f"| `{rec['dataset']}` | [{algo_label(rec)}]({link}) | {run} "
        f"| {rec['normalized_score']:.1f} ± {rec['normalized_score_std']:.1f} "
        f"| {'—' if best is None else f'{best:.1f} ({best_step:,})'} | **{last}** "
        f"| {rec['behavior_normalized_score']:.1f} | {rec['num_updates']:,} | {fit_cell} | {loop_cell} "
        f"| {where if machine else '—'} | {machine.get('date', '—')} | {rec['record'].get('note', '')} |"
    )


def records_table(records: Sequence[dict], root: Path) -> str:
    """Every record under ``root``, run by run (links relative to ``root``)."""
    rows = [
        "| dataset | algorithm (code) | seed | final evaluation (10 episodes) | best evaluation (updates) "
        f"| mean of the last {LAST_EVALS} evaluations (updates) | behaviour policy | updates | model fit "
        "| update loop | machine | date | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    rows += [_record_row(rec, root) for rec in sorted(records, key=sort_key)]
    return "\n".join(rows)


def history_list(lost: Sequence[dict]) -> str:
    """``unrecorded.json``'s runs, one line each, as the README reported them at the time."""
    lines = []
    for rec in sorted(lost, key=sort_key):
        lines.append(
            f"- `{rec['dataset']}`, {algo_label(rec)}, seed {rec['seed']}, {rec['num_updates']:,} updates, "
            f"{rec['date']}: final evaluation {rec['normalized_score']:.1f} ± {rec['normalized_score_std']:.1f} "
            f"(behaviour policy {rec['behavior_normalized_score']:.1f}). {rec['note']}"
        )
    return "\n".join(lines) if lines else "None."


def results_readme(records: Sequence[dict], lost: Sequence[dict], root: Path) -> str:
    """The whole of ``bench/results/README.md``."""
    intro = _wrap(
        "Generated by `python -m experiments.records table` from the records in this directory; do not edit (CI "
        "checks it with `--check`). One row per recorded run. A run's steadier figure is the mean of its last "
        f"{LAST_EVALS} evaluations (bold; intermediate evaluations on 5 episodes, the final one on 10); the "
        "headline per algorithm and dataset, over seeds, is README's results table. Runs whose directory is "
        "`seed<k>` with a tag (`seed0-fast`) ran another budget or configuration and are not seeds of the headline."
    )
    times = _wrap(
        "Wall times, like with like: *model fit* is the dynamics fit (simloop's `dynamics/train_s`, marked "
        "cached when the run loaded an ensemble fitted earlier in another process; OfflineRL-Kit's own fit; "
        "none for model-free runs). *Update loop* is the gradient updates with their model rollouts and "
        "checkpoints, without the fit, pretraining or evaluations (simloop: from `perf/updates_per_s` in "
        "metrics.csv; the peers: `phases_s.updates` in peer_run.json); ARMOR's critic pretraining is shown "
        "apart. A comparison of speed reads one column, or the sum of both, on both sides, at the same thread "
        "count (the machine column), never a run's total wall time against another's update loop."
    )
    history = _wrap(
        "Runs whose directories were lost before records were kept (`unrecorded.json`), with the figures the "
        "README reported at the time. They cannot be checked against any record and are in no table:"
    )
    return (
        "# Run records\n\n"
        f"{intro}\n\n{times}\n\n{records_table(records, root)}\n\n"
        f"## History: runs without a record (unverifiable)\n\n{history}\n\n{history_list(lost)}\n"
    )
