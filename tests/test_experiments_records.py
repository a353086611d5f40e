"""experiments.records: run records in the repository and the README table generated from them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from algos import mopo
from experiments import records
from experiments.curves import eval_curve
from tests.conftest import TINY_RUN


def test_the_readme_table_matches_the_records():
    """CI's drift check: README's results table is exactly what ``python -m experiments.records table`` writes."""
    assert records.readme_table() == records.table_markdown(), "run `python -m experiments.records table`"


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
    records.add(run, tag="again", root=root)
    table = records.table_markdown(root).splitlines()
    assert len(table) == 4  # header, rule, two records
    assert f"**{summary['normalized_score']:.1f}**" in table[2] and "a tiny run" in table[2]
    tail = records.last_evals_mean(eval_curve(run / "metrics.csv"))
    assert tail is not None and f"| {tail[0]:.1f} (" in table[2]
    assert "0 (again)" in table[3]
    curves = records.write_curves(root, tmp_path / "figures")
    assert [p.name for p in curves] == [f"results_{tiny_dataset.replace('/', '_')}.png"]
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished run: no summary.json"):
        records.add(unfinished, root=root)


def test_last_evals_mean_averages_the_tail_of_the_curve():
    curve = [(10_000, 4.0), (20_000, 80.0), (30_000, 10.0), (40_000, 20.0)]
    assert records.last_evals_mean(curve, k=2) == (15.0, 30_000, 40_000)
    assert records.last_evals_mean(curve, k=10) == (28.5, 10_000, 40_000)  # fewer than k: all of them
    assert records.last_evals_mean([]) is None
    with pytest.raises(ValueError, match="at least 1"):
        records.last_evals_mean(curve, k=0)


def test_python_m_bench_report_is_an_alias():
    from bench import report as alias

    assert alias.main is records.main
