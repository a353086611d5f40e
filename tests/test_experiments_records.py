"""experiments.records: run records in the repository and the README table generated from them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from algos import mopo
from experiments import records, scores
from experiments.curves import eval_curve
from tests.conftest import TINY_RUN


def test_the_readme_block_and_the_records_page_match_the_records():
    """CI's drift check: README's results block and bench/results/README.md are exactly what ``python -m
    experiments.records table`` writes (text only; the figures' bytes are not compared), and the profile exists."""
    assert records.stale() == [], "run `python -m experiments.records table`"


def test_every_record_is_complete_and_small():
    for rec in records.load_records():
        for name in records.RECORD_FILES:
            assert (rec["dir"] / name).is_file(), (rec["dir"], name)
        size = sum(p.stat().st_size for p in rec["dir"].iterdir())
        assert size < 400_000, (rec["dir"], size)  # records, not weights
        assert not list(rec["dir"].glob("*.pt")), rec["dir"]


def test_add_copies_a_finished_run_and_the_table_lists_it(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = replace(
        mopo.Config(dataset=tiny_dataset, out=str(run), **TINY_RUN),
        sac=replace(mopo.Config().sac, hidden_dims=(16, 16)),
    )
    summary = mopo.train(cfg)
    root = tmp_path / "results"
    dest = records.add(run, note="a tiny run", root=root)
    assert dest == root / "mopo" / tiny_dataset.replace("/", "_") / "seed0"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*records.RECORD_FILES, "record.json"])
    assert json.loads((dest / "record.json").read_text())["note"] == "a tiny run"
    with pytest.raises(FileExistsError, match="--tag"):
        records.add(run, root=root)
    with pytest.raises(ValueError, match="give 'again'"):  # the name already starts with seed0-
        records.add(run, tag="seed0-again", root=root)
    records.add(run, tag="again", root=root)
    page = records.records_readme(root)
    rows = [line for line in page.splitlines() if line.startswith(f"| `{tiny_dataset}`")]
    assert len(rows) == 2 and "a tiny run" in rows[0] and "| 0 (again) |" in rows[1]
    assert f"| {summary['normalized_score']:.1f} ± " in rows[0]
    tail = scores.last_evals_mean(eval_curve(run / "metrics.csv"))
    assert tail is not None and f"| **{tail[0]:.1f} (" in rows[0]
    block = records.readme_block(root)  # the tagged copy is not a second seed
    assert f"| **{tail[0]:.1f} (1 seed)** |" in block
    curves = records.write_curves(root, tmp_path / "figures")
    assert [p.name for p in curves] == [f"results_{tiny_dataset.replace('/', '_')}.png"]
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished run: no summary.json"):
        records.add(unfinished, root=root)


def test_last_evals_mean_averages_the_tail_of_the_curve():
    curve = [(10_000, 4.0), (20_000, 80.0), (30_000, 10.0), (40_000, 20.0)]
    assert scores.last_evals_mean(curve, k=2) == (15.0, 30_000, 40_000)
    assert scores.last_evals_mean(curve, k=10) == (28.5, 10_000, 40_000)  # fewer than k: all of them
    assert scores.last_evals_mean([]) is None
    with pytest.raises(ValueError, match="at least 1"):
        scores.last_evals_mean(curve, k=0)


def test_a_step_evaluated_twice_counts_once_with_its_final_evaluation(tmp_path):
    """A run finished by ``--resume DIR --num-updates S`` at a step S that already had an intermediate evaluation
    holds two evaluations at S: the curve keeps the later (the final one), so the last-5 mean counts S once."""
    rows = ["step,eval/normalized_score,train/x", "1000,,0.5", "10000,30.0,", "20000,50.0,", "20000,44.0,", "21000,,1"]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert eval_curve(tmp_path / "metrics.csv") == [(10_000, 30.0), (20_000, 44.0)]
    assert scores.last_evals_mean(eval_curve(tmp_path / "metrics.csv")) == (37.0, 10_000, 20_000)


def _fake_record(root, algo, seed_dir, last5, dataset="simloop/hopper/medium-v0", tag=None, updates=200_000, **extra):
    """A synthetic record under ``root``: five evaluations that all score ``last5`` after a peak of 90.0, a final
    evaluation of ``last5 + 1`` and a behaviour policy of 40.0."""
    d = root / algo / dataset.replace("/", "_") / seed_dir
    d.mkdir(parents=True)
    evals = [(1_000, 90.0)] + [(k * 1_000, last5) for k in range(2, 7)]
    rows = ["step,eval/normalized_score,perf/updates_per_s"] + [f"{s},{v}," for s, v in evals]
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    seed = int(seed_dir.removeprefix("seed").split("-")[0])
    summary = {
        "algo": algo, "dataset": dataset, "seed": seed, "normalized_score": last5 + 1.0,
        "normalized_score_std": 0.5, "behavior_normalized_score": 40.0, "num_updates": updates, "wall_s": 60.0,
        **extra,
    }  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "record.json").write_text(json.dumps({"tag": tag, "note": f"{algo} {seed_dir}"}))
    for name in ("config.json", "episodes.csv"):
        (d / name).write_text("{}" if name.endswith(".json") else "step\n")
    return d


def test_a_cell_of_several_seeds_is_their_iqm_with_a_bootstrap_interval(tmp_path):
    for k, score in enumerate([10.0, 20.0, 30.0, 80.0]):
        _fake_record(tmp_path, "mopo", f"seed{k}", score)
    state = np.random.get_state()
    (cell,) = scores.headline_cells(records.load_records(tmp_path))
    assert np.array_equal(np.random.get_state()[1], state[1])  # NumPy's global generator left as it was
    assert cell.iqm == pytest.approx(25.0)  # 25% trimmed mean of 10, 20, 30, 80: the mean of 20 and 30
    assert [r.last5 for r in cell.runs] == [10.0, 20.0, 30.0, 80.0]  # the peak of 90.0 is not in the tail
    low, high = cell.interval
    assert 10.0 <= low < 25.0 < high <= 80.0
    assert scores.iqm_interval([10.0, 20.0, 30.0, 80.0]) == (cell.iqm, cell.interval)  # seeded: deterministic
    row = next(line for line in records.readme_block(tmp_path).splitlines() if line.startswith("| `"))
    assert f"| **25.0 [{low:.1f}, {high:.1f}] (4 seeds)** | 11.0, 21.0, 31.0, 81.0 |" in row
    assert "| 90.0 (1k), 90.0 (1k), 90.0 (1k), 90.0 (1k) |" in row  # best evaluations: a column, not the headline


def test_one_seed_says_so_and_tagged_runs_are_not_seeds(tmp_path):
    _fake_record(tmp_path, "combo", "seed0", 44.0)
    _fake_record(tmp_path, "combo", "seed1-fast", 80.0, updates=35_000)
    _fake_record(tmp_path, "combo", "seed2", 70.0, tag="ablation")  # a tag in record.json, even without a suffix
    (cell,) = scores.headline_cells(records.load_records(tmp_path))
    assert (cell.iqm, cell.interval, [r.seed for r in cell.runs]) == (44.0, None, [0])
    block = records.readme_block(tmp_path)
    assert "| **44.0 (1 seed)** | 45.0 |" in block and "[" not in block.split("| **44.0")[1].split("|")[0]
    page = records.records_readme(tmp_path)
    assert "combo/simloop_hopper_medium-v0/seed1-fast) |" in page and "| 2 (ablation) |" in page  # listed there
    assert "Above the behaviour policy: 1 of 1." in " ".join(block.split())


def test_seeds_of_different_budgets_are_refused(tmp_path):
    _fake_record(tmp_path, "mopo", "seed0", 44.0)
    _fake_record(tmp_path, "mopo", "seed1", 44.0, updates=100_000)
    with pytest.raises(ValueError, match="different numbers of updates.*tag"):
        scores.headline_cells(records.load_records(tmp_path))


def test_unrecorded_runs_are_history_not_headline(tmp_path):
    _fake_record(tmp_path, "mopo", "seed0", 30.0)
    lost = [{"algo": "armor", "dataset": "simloop/hopper/medium-v0", "seed": 0, "normalized_score": 88.8,
             "normalized_score_std": 0.3, "behavior_normalized_score": 40.0, "num_updates": 200_000, "wall_s": None,
             "machine": "?", "date": "2026-11-01", "note": "directory lost"}]  # fmt: skip
    (tmp_path / "unrecorded.json").write_text(json.dumps(lost))
    block = records.readme_block(tmp_path)
    assert "88.8" not in block and "ARMOR" not in block.split("Per dataset")[0]
    page = records.records_readme(tmp_path)
    table, history = page.split("## History")
    assert "88.8" not in table and "unverifiable" in history
    assert (
        "- `simloop/hopper/medium-v0`, ARMOR (simloop), seed 0, 200,000 updates, 2026-11-01: final evaluation 88.8"
        in history
    )


def test_the_profile_figure_is_generated_and_deterministic(tmp_path):
    _fake_record(tmp_path, "mopo", "seed0", 50.0)  # behaviour 40.0: +10
    _fake_record(tmp_path, "mopo", "seed1", 30.0)  # -10
    _fake_record(tmp_path, "bc", "seed0", 41.0, dataset="simloop/walker2d/medium-v0")  # +1
    cells = scores.headline_cells(records.load_records(tmp_path))
    taus, profiles, bands, counts = scores.improvement_profiles(cells, reps=200)
    assert counts == {"MOPO (simloop)": (2, 1), "BC (simloop)": (1, 1)}
    at = {t: int(np.argmin(np.abs(taus - t))) for t in (-15.0, 0.0, 5.0, 15.0)}
    assert [profiles["MOPO (simloop)"][at[t]] for t in (-15.0, 0.0, 5.0, 15.0)] == [1.0, 0.5, 0.5, 0.0]
    assert [profiles["BC (simloop)"][at[t]] for t in (0.0, 5.0)] == [1.0, 0.0]
    assert bands["BC (simloop)"].shape == (2, len(taus))
    first = records.write_profile(tmp_path, tmp_path / "a.png", reps=200)
    second = records.write_profile(tmp_path, tmp_path / "b.png", reps=200)
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first.read_bytes() == second.read_bytes()


def test_wall_times_split_the_model_fit_from_the_update_loop(tmp_path):
    d = _fake_record(tmp_path, "armor", "seed0", 30.0, dynamics={"dynamics/train_s": 500.0, "reused": True})
    rows = ["step,perf/prepare_s,perf/updates_per_s", "0,30.0,", "1000,,10.0", "2000,,20.0"]
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")  # 100 s (30 of them pretraining), then 50 s
    rec = records.load_records(tmp_path)[0]
    assert scores.update_loop_s(rec) == (120.0, 30.0)
    assert scores.model_fit_s(rec) == (500.0, True)
    code = {"library": "OfflineRL-Kit", "commit": "e3ce697"}
    peer = _fake_record(tmp_path, "offlinerlkit-mopo", "seed0", 30.0, code=code, dynamics={"wall_s": 2000.0})
    (peer / "peer_run.json").write_text(json.dumps({"phases_s": {"dynamics": 2000.0, "updates": 9000.0}}))
    rec = next(r for r in records.load_records(tmp_path) if r["algo"] == "offlinerlkit-mopo")
    assert (scores.update_loop_s(rec), scores.model_fit_s(rec)) == ((9000.0, 0.0), (2000.0, False))
    assert "| 33 min | 2.5 h |" in records.records_readme(tmp_path)


def test_stale_names_what_the_table_command_would_change(tmp_path):
    _fake_record(tmp_path, "mopo", "seed0", 30.0)
    readme = tmp_path / "top" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"# x\n{records.BEGIN}\nold\n{records.END}\n")
    figure = tmp_path / "profile.png"
    assert records.stale(tmp_path, readme, figure) == [
        "README.md's results block",
        str(tmp_path / "README.md"),
        "profile.png (missing)",
    ]


def test_the_summary_names_the_behaviour_policys_range_when_the_machines_data_differ(tmp_path):
    """Runs on two CPU kinds' data each carry their own behaviour-policy score; the summary gives the range."""
    _fake_record(tmp_path, "mopo", "seed0", 50.0)
    _fake_record(tmp_path, "armor", "seed0", 45.0, behavior_normalized_score=41.7)
    text = " ".join(records.readme_block(tmp_path).split())
    assert "(behaviour policy 40.0-41.7 across CPU kinds' data)" in text
    assert "| 41.7 | 200,000 |" in text and "| 40.0 | 200,000 |" in text  # each row keeps its own
    _fake_record(tmp_path, "combo", "seed0", 44.0, dataset="simloop/walker2d/medium-v0")
    assert "`simloop/walker2d/medium-v0` (behaviour policy 40.0):" in " ".join(records.readme_block(tmp_path).split())
