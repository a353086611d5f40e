"""Sweeps (experiments.sweep): a two-trial sweep at tiny budget on local Ray that produces the
table, a trial that raises, resuming and skipping, and the pieces (override parsing, grid, table)."""

import csv
import dataclasses
import json
import math

import pytest
import torch
import tyro

from algos import algo_module, mopo
from experiments import published, throughput
from experiments.sweep import grid, ray_run, report
from experiments.sweep.__main__ import main
from tests.conftest import TINY_RUN

ray = pytest.importorskip("ray")


def _text(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def tiny_set(*algos: str) -> list[str]:
    """TINY_RUN (its dynamics config field by field) and a 2-step rollout horizon as ``--set`` items,
    keeping those some of ``algos`` have (the sweep rejects a key none of its algorithms has)."""
    items = ["rollout.horizon=2"]
    for key, value in TINY_RUN.items():
        if dataclasses.is_dataclass(value):
            items += [f"{key}.{f.name}={_text(getattr(value, f.name))}" for f in dataclasses.fields(value)]
        else:
            items.append(f"{key}={_text(value)}")
    configs = [algo_module(a).Config for a in algos]
    return [i for i in items if any(grid.field_type(c, i.split("=")[0]) is not None for c in configs)]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; the sweep uses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=ray_run.OBJECT_STORE_BYTES)
    yield
    ray.shutdown()


def test_two_trial_sweep_on_local_ray_writes_the_table_and_a_rerun_skips_it(tiny_dataset, tmp_path, local_ray):
    out = tmp_path / "sweep"
    argv = ["--algos", "mopo", "bc", "--datasets", tiny_dataset, "--seeds", "0", "--sweep-dir", str(out)]
    argv += ["--set", *tiny_set("mopo", "bc")]
    assert main(argv) == 0
    rows = read_csv(out / "results.csv")
    assert [(r["algo"], r["dataset"], r["num_seeds"], r["num_failed"]) for r in rows] == [
        ("mopo", tiny_dataset, "1", "0"),
        ("bc", tiny_dataset, "1", "0"),
    ]
    for r in rows:
        summary = json.loads((out / r["algo"] / tiny_dataset / "seed0" / "summary.json").read_text())
        assert float(r["score_mean"]) == pytest.approx(summary["normalized_score"])
        assert float(r["score_std"]) == 0.0 and r["num_updates"] == "40"  # the tiny budget reached the trial
        assert math.isfinite(float(r["behavior_score"]))
    trial = json.loads((out / "mopo" / tiny_dataset / "seed0" / "trial.json").read_text())
    assert trial["overrides"]["rollout.horizon"] == "2" and trial["seed"] == 0
    markdown = (out / "results.md").read_text()
    assert f"| {tiny_dataset} | mopo |" in markdown and f"| {tiny_dataset} | bc |" in markdown
    assert "35.4 ± 2.5 (MOPO paper)" in markdown  # halfcheetah-random has a published MOPO figure
    curve = out / "plots" / f"curves_{tiny_dataset.replace('/', '_')}.png"
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "failed.json").read_text()) == []

    # The same command again: both trials are finished, so nothing runs and nothing is rewritten.
    mtime = (out / "mopo" / tiny_dataset / "seed0" / "summary.json").stat().st_mtime_ns
    records = ray_run.run_sweep(tyro.cli(grid.Config, args=argv))
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert (out / "mopo" / tiny_dataset / "seed0" / "summary.json").stat().st_mtime_ns == mtime


def test_a_trial_that_raises_is_reported_and_the_other_result_kept(tiny_dataset, tmp_path, local_ray):
    out = tmp_path / "sweep"
    bad = "simloop/nowhere/medium-v0"
    argv = ["--algos", "bc", "--datasets", tiny_dataset, bad, "--sweep-dir", str(out), "--no-plots"]
    assert main(argv + ["--set", *tiny_set("bc")]) == 1  # non-zero: a trial failed
    failed = json.loads((out / "bc" / bad / "seed0" / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("ValueError: unknown dataset")
    assert "Traceback" in failed["traceback"]
    rows = {r["dataset"]: r for r in read_csv(out / "results.csv")}
    assert rows[tiny_dataset]["num_seeds"] == "1" and rows[tiny_dataset]["score_mean"] != ""
    assert rows[bad]["num_seeds"] == "0" and rows[bad]["num_failed"] == "1"
    trials = {r["dataset"]: r for r in read_csv(out / "trials.csv")}
    assert trials[bad]["status"] == "failed" and "unknown dataset" in trials[bad]["error"]
    assert [f["dataset"] for f in json.loads((out / "failed.json").read_text())] == [bad]
    assert "| bc | simloop/nowhere/medium-v0 | 0 |  | failed |" in (out / "results.md").read_text()


def test_run_trial_resumes_from_a_checkpoint_and_restarts_without_one(tiny_dataset, tmp_path):
    sweep_dir = str(tmp_path / "sweep")
    cfg = grid.Config(algos=("mopo",), datasets=(tiny_dataset,), sweep_dir=sweep_dir, set=tuple(tiny_set("mopo")))
    (trial,) = grid.expand_grid(cfg)
    algo_cfg = dataclasses.replace(grid.build_config(trial, cfg), num_updates=20, checkpoint_interval=10)
    trial.out.mkdir(parents=True)
    (trial.out / "metrics.csv").write_text("step,train/stale\n999,1.0\n")  # a killed attempt's partial curve
    result = ray_run.run_trial("mopo", algo_cfg)
    assert result["status"] == "done" and not result["resumed"]
    metrics = (trial.out / "metrics.csv").read_text()
    # the fresh start dropped the stale rows
    assert "train/stale" not in metrics and not metrics.splitlines()[1].startswith("999,")
    # A driver crash after the checkpoint at step 20: no summary, and the run was meant to go to 30.
    (trial.out / "summary.json").unlink()
    assert torch.load(trial.out / "checkpoint.pt", weights_only=True)["step"] == 20
    result = ray_run.run_trial("mopo", dataclasses.replace(algo_cfg, num_updates=30))
    assert result["status"] == "done" and result["resumed"] and result["summary"]["num_updates"] == 30


def test_a_trial_dir_with_other_settings_is_not_reused(tmp_path):
    cfg = grid.Config(algos=("bc",), sweep_dir=str(tmp_path), set=("num_updates=10",))
    (trial,) = grid.expand_grid(cfg)
    trial.out.mkdir(parents=True)
    (trial.out / "trial.json").write_text(json.dumps({**trial.spec(cfg), "overrides": {"num_updates": "20"}}))
    (record,) = ray_run.run_sweep(cfg)  # nothing to run: no Ray is started
    assert record["status"] == "failed" and "other settings" in record["error"]
    assert not (trial.out / "failed.json").exists()  # the other run's directory is left alone


def test_parse_set_and_values():
    assert grid.parse_set(["rollout.penalty-coef=0.5,1.0", "seed=3"]) == [
        ("rollout.penalty_coef", ["0.5", "1.0"]),
        ("seed", ["3"]),
    ]
    for bad in (["novalue"], ["=1"], ["a=1,"], ["a=1", "a=2"]):
        with pytest.raises(ValueError):
            grid.parse_set(bad)
    t = lambda key: grid.field_type(mopo.Config, key)  # noqa: E731
    assert grid.override_flags("rollout.penalty_coef", "0.25", t("rollout.penalty_coef")) == [
        "--rollout.penalty-coef",
        "0.25",
    ]
    assert grid.override_flags("progress", "false", t("progress")) == ["--no-progress"]
    assert grid.override_flags("dynamics_path", "none", t("dynamics_path")) == ["--dynamics-path", "None"]
    assert grid.override_flags("dynamics.weight_decays", "1e-5 2e-5", t("dynamics.weight_decays"))[1:] == [
        "1e-5",
        "2e-5",
    ]
    assert grid.field_type(mopo.Config, "rollout.nope") is None


def test_set_values_are_parsed_by_the_cli_rule(tmp_path):
    """--set values become the flags of ``python -m algos.<name>`` and go through the same resolution."""
    cfg = grid.Config(
        algos=("mopo",), sweep_dir=str(tmp_path), set=("dynamics.weight_decays=1e-5 1e-5 1e-5 1e-5 1e-5",)
    )
    (trial,) = grid.expand_grid(cfg)
    assert grid.build_config(trial, cfg).dynamics.weight_decays == (1e-5,) * 5
    for item in ("num_updates=1.5", "real_ratio=x"):
        (trial,) = grid.expand_grid(dataclasses.replace(cfg, set=(item,)))
        with pytest.raises(ValueError, match="bad --set value"):
            grid.build_config(trial, cfg)


def test_grid_names_applicability_presets_and_config_errors(tmp_path):
    cfg = grid.Config(
        algos=("mopo", "combo"),
        datasets=("simloop/hopper/medium-v0",),
        seeds=(0, 1),
        preset="fast",
        set=("rollout.penalty_coef=0.5,1.0", "conservative_coef=2.0"),
        sweep_dir=str(tmp_path),
    )
    trials = grid.expand_grid(cfg)
    names = sorted(str(t.out.relative_to(tmp_path)) for t in trials)
    assert names == [
        "combo/simloop/hopper/medium-v0/seed0_rollout.penalty_coef=0.5",
        "combo/simloop/hopper/medium-v0/seed0_rollout.penalty_coef=1.0",
        "combo/simloop/hopper/medium-v0/seed1_rollout.penalty_coef=0.5",
        "combo/simloop/hopper/medium-v0/seed1_rollout.penalty_coef=1.0",
        "mopo/simloop/hopper/medium-v0/seed0_rollout.penalty_coef=0.5",
        "mopo/simloop/hopper/medium-v0/seed0_rollout.penalty_coef=1.0",
        "mopo/simloop/hopper/medium-v0/seed1_rollout.penalty_coef=0.5",
        "mopo/simloop/hopper/medium-v0/seed1_rollout.penalty_coef=1.0",
    ]
    by_name = {(t.algo, t.seed, t.variant): t for t in trials}
    m = grid.build_config(by_name[("mopo", 1, "rollout.penalty_coef=1.0")], cfg)
    assert m.rollout.penalty_coef == 1.0 and m.seed == 1 and m.num_threads == 1
    assert m.dynamics.seed is None  # the model follows the trial's seed (engine.model_based_config.with_dynamics_seed)
    hopper = mopo.PRESETS["simloop/hopper/medium-v0"]
    fast = mopo.BUDGETS["fast"](
        dataclasses.replace(
            hopper, seed=1, out=m.out, progress=False, rollout=dataclasses.replace(hopper.rollout, penalty_coef=1.0)
        )
    )  # fast budget on the dataset's preset, as `python -m algos.mopo --fast --dataset ...` resolves it
    assert m == dataclasses.replace(fast, num_threads=1)  # the trial's CPU slots (cpus_per_trial) as threads
    shared = grid.build_config(
        by_name[("mopo", 1, "rollout.penalty_coef=1.0")], dataclasses.replace(cfg, dynamics_per_seed=False)
    )
    assert shared.dynamics.seed == 0
    assert m.rollout.horizon == mopo.PRESETS["simloop/hopper/medium-v0"].rollout.horizon  # ... on the dataset's preset
    assert not hasattr(m, "conservative_coef")
    with pytest.raises(ValueError, match="COMBO uses no reward penalty"):  # a failed trial, not a failed sweep
        grid.build_config(by_name[("combo", 0, "rollout.penalty_coef=0.5")], cfg)
    with pytest.raises(ValueError, match="no field 'nope'"):
        grid.expand_grid(dataclasses.replace(cfg, set=("nope=1",)))
    with pytest.raises(ValueError, match="unknown algorithm"):
        algo_module("sac")


def test_aggregate_and_published_lookup():
    records = [
        {"dataset": "d", "algo": "mopo", "variant": "", "status": "done", "normalized_score": s,
         "behavior_normalized_score": 10.0, "num_updates": 5}
        for s in (1.0, 3.0)
    ]  # fmt: skip
    records.append({**records[0], "status": "failed", "normalized_score": None})
    (row,) = report.aggregate(records)
    assert (row["score_mean"], row["score_std"], row["num_seeds"], row["num_failed"]) == (2.0, 1.0, 2, 1)
    assert published.published_for("mopo", "simloop/hopper/medium-replay-v0") == [(92.7, 20.7, "OfflineRL-Kit")]
    assert published.published_for("armor", "simloop/hopper/medium-v0") == []
    assert published.published_for("mopo", "not-a-d4rl-name") == []
    assert published.published_for("mopo", "simloop/halfcheetah/random-v0") == [(35.4, 2.5, "MOPO paper")]


def test_published_figure_without_std_shows_the_mean_alone(monkeypatch):
    table = {
        ("armor", "paper"): {("hopper", "medium"): (12.3, float("nan"))},
        ("armor", "kit"): {("hopper", "medium"): (4.0, 0.5)},
    }
    monkeypatch.setattr(published, "PUBLISHED", table)
    record = {"dataset": "simloop/hopper/medium-v0", "algo": "armor", "variant": "", "status": "done",
              "normalized_score": 1.0, "behavior_normalized_score": None, "num_updates": 5}  # fmt: skip
    (row,) = report.aggregate([record])
    assert row["published"] == "12.3 (paper); 4.0 ± 0.5 (kit)"


def test_throughput_plot_reads_pytest_benchmark_json_and_skips_without_one(tmp_path, monkeypatch, capsys):
    def entry(name, median, **info):
        return {"name": name, "stats": {"median": median}, "extra_info": {"machine": "test cpu", **info}}

    run = {
        "benchmarks": [
            entry("test_engine_rollout", 0.5, N=1000, transitions_per_s=10_000.0),
            entry("test_update_throughput", 2.0, simloop_updates_per_s=400.0, plain_updates_per_s=100.0),
            entry("test_other", 0.25),
        ]
    }
    rates = [r for b in run["benchmarks"] for r in throughput.benchmark_rates(b)]
    assert rates == [
        ("test_engine_rollout (N=1,000)", "transitions/s", 10_000.0),
        ("test_update_throughput [simloop]", "updates/s", 400.0),
        ("test_update_throughput [plain]", "updates/s", 100.0),
        ("test_other", "calls/s (1 / median)", 4.0),
    ]
    (tmp_path / "run.json").write_text(json.dumps(run))
    png = throughput.throughput_plot(tmp_path, str(tmp_path / "run.json"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.chdir(tmp_path)  # no ./.benchmarks here
    assert throughput.throughput_plot(tmp_path) is None and "throughput plot skipped" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        throughput.throughput_plot(tmp_path, str(tmp_path / "missing.json"))
