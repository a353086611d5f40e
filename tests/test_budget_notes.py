"""The notes ``python -m algos.<name>`` prints beside a budget preset: printed where they should be, and every
figure they quote is the named record's."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import pytest

from algos import armor, combo, mopo
from engine.cli import run_cli
from experiments.curves import eval_curve
from experiments.scores import last_evals_mean

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _stub(note: str, summaries: list) -> types.ModuleType:
    """An algorithm module whose train records its config and returns a fixed summary."""

    def train(cfg, resume=None):
        summaries.append(cfg)
        return {
            "dataset": cfg.dataset,
            "algo": "stub",
            "behavior_normalized_score": 36.8,
            "normalized_score": 1.0,
            "normalized_score_std": 0.5,
            "eval_episodes": 2,
            "num_updates": cfg.num_updates,
            "wall_s": 3.0,
            "run_dir": "runs/stub",
        }

    return types.SimpleNamespace(
        ALGO="stub",
        Config=mopo.Config,
        PRESETS=mopo.PRESETS,
        BUDGETS={"fast": mopo.BUDGETS["fast"], "other": lambda cfg: cfg},
        BUDGET_NOTES={"fast": note},
        train=train,
        __doc__="a stub",
    )


@pytest.mark.parametrize("args", [["--fast"], ["--preset", "fast"], ["--preset=fast", "--seed", "3"]])
def test_a_budget_with_a_note_prints_it_before_training_and_under_the_result(args, capsys):
    configs = []
    run_cli(_stub("THIS IS A PIPELINE CHECK", configs), args)
    out = capsys.readouterr().out
    assert out.count("THIS IS A PIPELINE CHECK") == 2
    assert out.index("THIS IS A PIPELINE CHECK") == 0  # before the run's own output
    assert out.rstrip().endswith("THIS IS A PIPELINE CHECK")  # and last, under the table
    assert configs[0].num_updates == 35_000  # the fast budget was applied, not just noticed


@pytest.mark.parametrize("args", [[], ["--preset", "other"], ["--num-updates", "7"]])
def test_other_budgets_print_no_note(args, capsys):
    run_cli(_stub("THIS IS A PIPELINE CHECK", []), args)
    assert "PIPELINE CHECK" not in capsys.readouterr().out


def _record(algo: str, dataset: str, tag: str) -> tuple[dict, dict, list]:
    d = RESULTS / algo / dataset / tag
    return (
        json.loads((d / "summary.json").read_text()),
        json.loads((d / "config.json").read_text()),
        eval_curve(d / "metrics.csv"),
    )


def test_combos_fast_note_quotes_its_record():
    note = combo.BUDGET_NOTES["fast"]
    summary, config, curve = _record("combo", "simloop_halfcheetah_medium-v0", "seed0")
    assert "bench/results/combo/simloop_halfcheetah_medium-v0/seed0" in note
    assert dict(curve)[40_000] == pytest.approx(40.0, abs=0.05) and "40.0 at 40k" in note
    assert f"{last_evals_mean(curve)[0]:.1f} over its last 5" in note
    assert f"behaviour policy {summary['behavior_normalized_score']:.1f}" in note
    assert f"{summary['wall_s'] / 3600:.1f} h" in note and summary["machine"]["cpu"] in note
    assert config["num_updates"] == 200_000 and "--num-updates 200000 --rho-states model`" in note
    assert config["rho_states"] == "model" and combo.PRESETS[summary["dataset"]].rho_states == "mix"
    assert (config["num_threads"], summary["machine"]["torch_threads"]) == (1, 2) and "1 thread" in note
    # the first evaluation above the behaviour policy is the one the note names
    assert next(s for s, v in curve if v > summary["behavior_normalized_score"]) == 40_000


def test_armors_fast_note_quotes_its_records():
    note = armor.BUDGET_NOTES["fast"]
    summary, config, curve = _record("armor", "simloop_hopper_medium-v0", "seed0")
    ref, ref_config, ref_curve = _record("bc", "simloop_hopper_medium-v0", "seed0-ablation-reference")
    assert "bench/results/armor/simloop_hopper_medium-v0/seed0," in note
    assert f"{last_evals_mean(curve)[0]:.1f} over its last 5 evaluations" in note
    assert f"against its BC reference's {last_evals_mean(ref_curve)[0]:.1f}" in note
    assert f"behaviour policy {summary['behavior_normalized_score']:.1f}" in note
    metrics = RESULTS / "armor" / "simloop_hopper_medium-v0"
    prepare_s = {
        tag: float(_first(metrics / tag / "metrics.csv", "perf/prepare_s")) for tag in ("seed0-ablation-none", "seed0")
    }
    assert prepare_s["seed0"] < 1.0  # it loaded the critics the other run pretrained
    updates_s = summary["wall_s"] - prepare_s["seed0"]
    assert (
        f"{ref['wall_s'] / 60:.0f} min of BC, {prepare_s['seed0-ablation-none'] / 60:.0f} min of critic pretraining "
        f"and {updates_s / 3600:.1f} h of updates" in note
    )
    assert summary["machine"]["cpu"].split("(")[0] in note and summary["machine"]["torch_threads"] == 1
    assert config["num_updates"] == 200_000 and "--num-updates 200000`" in note
    assert ref_config["hidden_dims"] == [256, 256, 256] and "--hidden-dims 256 256 256" in note
    # the command in the note runs the record's settings: the record's config equals today's defaults there
    defaults = armor.PRESETS["simloop/hopper/medium-v0"]
    for field in ("critic_norm_bound", "twin_min_target", "clip_value_targets", "model_lr", "state_fit_coef"):
        assert config[field] == getattr(defaults, field), field
    # the other two datasets' confirmations, each against its own reference
    for dataset, figures in (("walker2d", "69.6 against 60.1"), ("halfcheetah", "40.1 against 38.2")):
        _, _, run = _record("armor", f"simloop_{dataset}_medium-v0", "seed0")
        _, _, bc = _record("bc", f"simloop_{dataset}_medium-v0", "seed0")
        assert f"{last_evals_mean(run)[0]:.1f} against {last_evals_mean(bc)[0]:.1f}" == figures and figures in note
        assert last_evals_mean(run)[0] >= last_evals_mean(bc)[0]


def _first(metrics_csv: Path, key: str) -> str:
    """The first non-empty value of ``key`` in a metrics.csv."""
    with open(metrics_csv) as f:
        return next(row[key] for row in csv.DictReader(f) if row.get(key))
