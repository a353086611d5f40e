"""One config rule for every entry point (engine.config.resolve): the dataset's preset, then the budget preset,
then flags; the CLI and the sweep resolve the same request to the same config, for every algorithm and dataset;
configs round-trip through plain data."""

from __future__ import annotations

import dataclasses

import pytest

from algos import ALGOS, algo_module, resolve_config
from engine.cli import parse_cli
from engine.config import from_dict, to_dict
from engine.data import DATASETS, DEFAULT_DATASET
from experiments.sweep import grid


def _cli(algo: str, args: list[str]):
    mod = algo_module(algo)
    return parse_cli(args, mod.Config, mod.PRESETS, mod.BUDGETS, algo, algo=algo, default_dataset=DEFAULT_DATASET)[0]


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_preset_key_is_a_dataset_and_every_dataset_has_a_preset(algo):
    mod = algo_module(algo)
    assert set(mod.PRESETS) == set(DATASETS)
    for key, cfg in mod.PRESETS.items():
        assert cfg.dataset == key
    assert set(mod.BUDGETS) == {"fast"}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_cli_and_sweep_resolve_the_same_config_for_every_dataset(algo, tmp_path):
    mod = algo_module(algo)
    for dataset in DATASETS:
        for preset in ("dataset", "fast"):
            sweep_cfg = grid.Config(
                algos=(algo,), datasets=(dataset,), seeds=(3,), preset=preset, sweep_dir=str(tmp_path)
            )
            (trial,) = grid.expand_grid(sweep_cfg)
            from_sweep = grid.build_config(trial, sweep_cfg)
            # The sweep gives each trial its CPU slots as threads (cpus_per_trial); the CLI the same flag.
            args = ["--dataset", dataset, "--seed", "3", "--out", str(trial.out), "--no-progress", "--num-threads", "1"]
            from_cli = _cli(algo, args + (["--fast"] if preset == "fast" else []))
            assert from_cli == from_sweep, (algo, dataset, preset)
            expected = mod.PRESETS[dataset] if preset == "dataset" else mod.BUDGETS["fast"](mod.PRESETS[dataset])
            assert from_cli == dataclasses.replace(expected, seed=3, out=str(trial.out), progress=False, num_threads=1)
            assert from_cli == resolve_config(algo, dataset, None if preset == "dataset" else "fast", args[2:])


def test_fast_keeps_the_datasets_hyperparameters():
    """--fast --dataset X: X's hyperparameters with the fast budget (not the default dataset's with X swapped in)."""
    for algo, field in (("mopo", "rollout"), ("combo", "conservative_coef"), ("combo", "rollout")):
        for dataset in DATASETS:
            fast = _cli(algo, ["--fast", "--dataset", dataset])
            assert getattr(fast, field) == getattr(algo_module(algo).PRESETS[dataset], field), (algo, dataset)
            assert fast.num_updates < algo_module(algo).PRESETS[dataset].num_updates


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_configs_round_trip_through_plain_data(algo):
    mod = algo_module(algo)
    for cfg in list(mod.PRESETS.values())[:3] + [mod.BUDGETS["fast"](mod.PRESETS[DEFAULT_DATASET])]:
        plain = to_dict(cfg)
        assert from_dict(mod.Config, plain) == cfg
    with pytest.raises(ValueError, match=r"unknown field\(s\) nope"):
        from_dict(mod.Config, {**to_dict(mod.Config()), "nope": 1})
    assert from_dict(mod.Config, {"num_updates": 7}) == dataclasses.replace(mod.Config(), num_updates=7)
