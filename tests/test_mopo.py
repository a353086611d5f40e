"""MOPO end to end at a tiny budget on a real (small) generated dataset, its CLI, presets,
resume and bad input."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from algos import mopo
from engine.cli import parse_cli
from engine.data import DATASETS, DEFAULT_DATASET
from engine.rollout import RolloutConfig
from tests.conftest import TINY_RUN


def tiny_config(dataset, out, **kw):
    return replace(
        mopo.Config(dataset=dataset, out=str(out), rollout=RolloutConfig(horizon=2, penalty_coef=0.5), **TINY_RUN), **kw
    )


def test_smoke_run_writes_a_valid_summary(tiny_dataset, tmp_path):
    summary = mopo.train(tiny_config(tiny_dataset, tmp_path / "run"))
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in (
        "algo",
        "dataset",
        "normalized_score",
        "normalized_score_std",
        "behavior_normalized_score",
        "num_updates",
        "wall_s",
    ):
        assert key in on_disk, key
    assert on_disk["algo"] == "mopo" and on_disk["num_updates"] == 40 and on_disk["dataset"] == tiny_dataset
    assert summary["normalized_score"] == on_disk["normalized_score"]
    # HalfCheetah returns are finite; a random-action dataset scores near 0 (D4RL: 0 by definition).
    assert abs(on_disk["behavior_normalized_score"]) < 5
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    for key in ("train/critic_loss", "rollout/penalty_mean", "eval/normalized_score", "perf/updates_per_s"):
        assert key in header, key
    assert len(metrics) >= 5
    assert (tmp_path / "run" / "config.json").is_file() and list((tmp_path / "run" / "tb").iterdir())


def test_resume_continues_from_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20, checkpoint_interval=10)
    mopo.train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)  # plain data
    assert ckpt["step"] == 20 and ckpt["algo"] == "mopo" and ckpt["config"]["num_updates"] == 20
    # Pretend it logged step 30 before it was killed, after its last checkpoint (step 20).
    csv_path = tmp_path / "run" / "metrics.csv"
    lines = csv_path.read_text().splitlines()
    stale = "30" + ",-123.0" * (len(lines[0].split(",")) - 1)
    csv_path.write_text("\n".join([*lines, stale]) + "\n")
    # Extend the run: the saved config with a larger budget.
    summary = mopo.train(replace(cfg, num_updates=30), resume=str(tmp_path / "run"))
    assert summary["num_updates"] == 30
    rows = csv_path.read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows]
    assert max(steps) == 30 and 10 in steps  # rows from before the resume are kept
    # the interrupted run's row after the checkpoint is gone
    assert stale not in rows and "-123.0" not in csv_path.read_text()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["num_updates"] == 30


def test_resume_keeps_the_saved_config(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20)
    mopo.train(cfg)
    other = replace(cfg, num_updates=30, rollout=RolloutConfig(horizon=2, penalty_coef=1.0))
    with pytest.raises(ValueError, match=r"fields differ from it: rollout.penalty_coef \(only num_updates"):
        mopo.train(other, resume=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"at step 20, past --num-updates 10; give at least 20"):
        mopo.train(replace(cfg, num_updates=10), resume=str(tmp_path / "run"))
    from algos import combo

    with pytest.raises(ValueError, match=r"checkpoint of a 'mopo' run, not 'combo'.*python -m algos.mopo"):
        combo.train(None, resume=str(tmp_path / "run"))
    assert mopo.train(None, resume=str(tmp_path / "run"))["num_updates"] == 20  # None: the saved config


def test_a_fresh_run_refuses_a_directory_holding_a_run(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20, checkpoint_interval=20)
    mopo.train(cfg)
    before = {n: (tmp_path / "run" / n).read_bytes() for n in ("checkpoint.pt", "metrics.csv", "config.json")}
    with pytest.raises(
        FileExistsError,
        match=r"already holds a run: continue it with --resume .*\(it holds metrics.csv, checkpoint.pt\)",
    ):
        mopo.train(cfg)
    assert before == {n: (tmp_path / "run" / n).read_bytes() for n in before}  # nothing overwritten


def parse(args):
    return parse_cli(
        args, mopo.Config, mopo.PRESETS, mopo.BUDGETS, "mopo", algo="mopo", default_dataset=DEFAULT_DATASET
    )


def test_presets_cover_the_dataset_registry():
    for key, cfg in mopo.PRESETS.items():
        assert key in DATASETS and cfg.dataset == key
    assert set(DATASETS) <= set(mopo.PRESETS)
    assert mopo.PRESETS["simloop/halfcheetah/medium-v0"].rollout == RolloutConfig(horizon=5, penalty_coef=0.5)
    fast = mopo.BUDGETS["fast"](mopo.PRESETS[DEFAULT_DATASET])
    assert fast.dataset == DEFAULT_DATASET and fast.num_updates < mopo.Config().num_updates


def test_cli_presets_and_overrides():
    cfg, resume = parse(["--fast", "--num-updates", "123"])
    fast = mopo.BUDGETS["fast"](mopo.PRESETS[DEFAULT_DATASET])
    assert cfg.num_updates == 123 and cfg.rollout_batch_size == fast.rollout_batch_size and resume is None
    cfg, _ = parse(["--dataset", "simloop/hopper/medium-v0"])
    assert cfg.rollout.penalty_coef == 5.0 and cfg.dataset == "simloop/hopper/medium-v0"
    # --fast on another dataset: that dataset's hyperparameters, the fast budget
    cfg, _ = parse(["--fast", "--dataset", "simloop/hopper/medium-v0"])
    assert cfg.rollout.penalty_coef == 5.0 and cfg.num_updates == fast.num_updates
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid presets: fast"):
        parse(["--preset", "nope"])
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        parse(["--resume", "runs/nowhere"])
    with pytest.raises(ValueError, match="takes no --fast"):
        parse(["--resume", "runs/nowhere", "--fast"])


def test_help_shows_the_resolved_values(capsys):
    with pytest.raises(SystemExit):
        parse(["--fast", "--dataset", "simloop/hopper/medium-v0", "--help"])
    out = capsys.readouterr().out
    assert "(default: 5.0)" in out.split("--rollout.penalty-coef")[1].split("--")[0]


def test_bad_input_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    with pytest.raises(ValueError, match="real_ratio=1.5"):
        mopo.Config(real_ratio=1.5)
    with pytest.raises(ValueError, match="num_updates=0"):
        mopo.Config(num_updates=0)
    with pytest.raises(ValueError, match="simloop/halfcheetah/medium-v0"):
        mopo.train(tiny_config("simloop/cartpole/medium-v0", tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        mopo.train(tiny_config("x", tmp_path / "run"), resume=str(tmp_path / "empty"))


def dynamics_flags(cfg) -> list[str]:
    """``--dynamics.*`` CLI flags for the fields of ``cfg`` that differ from ``DynamicsConfig()``."""
    from dataclasses import fields

    from engine.dynamics import DynamicsConfig

    flags = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(DynamicsConfig(), f.name):
            values = value if isinstance(value, tuple) else (value,)
            flags += [f"--dynamics.{f.name.replace('_', '-')}", *map(str, values)]
    return flags


def test_dynamics_command_fits_once_and_mopo_reuses_it(tiny_dataset, tmp_path, capsys):
    from engine import dynamics

    argv = ["--dataset", tiny_dataset, "--num-threads", "1", *dynamics_flags(TINY_RUN["dynamics"])]
    info = dynamics.main(argv)
    assert not info["reused"] and info["dataset_id"] == tiny_dataset and info["dynamics/epochs"] == 2
    assert json.loads(capsys.readouterr().out)["path"] == info["path"]
    summary = mopo.train(tiny_config(tiny_dataset, tmp_path / "run"))
    assert summary["dynamics"]["reused"] and summary["dynamics"]["path"] == info["path"]
    with pytest.raises(ValueError, match="unknown dataset|not a known|valid"):
        dynamics.main(["--dataset", "simloop/ant/medium-v0", "--dynamics.max-epochs", "1"])


def test_cli_run_writes_plain_data_and_resumes_from_the_cli(tiny_dataset, tmp_path):
    """A checkpoint written by ``python -m algos.mopo`` holds plain data (``weights_only=True``), and
    ``--resume DIR --num-updates N`` extends the run from the command line."""
    import os
    import subprocess
    import sys

    out = tmp_path / "cli_run"
    args = ["--dataset", tiny_dataset, "--out", str(out), "--num-updates", "20", "--batch-size", "32",
            "--rollout-batch-size", "64", "--rollout-interval", "10", "--eval-interval", "20",
            "--eval-episodes", "1", "--checkpoint-interval", "10", "--no-progress", "--rollout.horizon", "2",
            *dynamics_flags(replace(TINY_RUN["dynamics"], max_epochs=1))]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(mopo.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-m", "algos.mopo", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["algo"] == "mopo" and ckpt["step"] == 20 and ckpt["config"]["rollout"]["horizon"] == 2
    resume = ["--resume", str(out), "--num-updates", "30", "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "algos.mopo", *resume], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["num_updates"] == 30
    bad = subprocess.run(
        [sys.executable, "-m", "algos.mopo", "--resume", str(out), "--num-updates", "40", "--rollout.horizon", "3"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "rollout.horizon" in bad.stderr and "Traceback" not in bad.stderr


def test_a_checkpoint_written_before_plain_data_resumes(tiny_dataset, tmp_path):
    """tests/data/legacy_mopo_run: a run stopped at step 20 of 40 by the code of commit 6bb3289, whose
    checkpoint pickles ``algos.mopo.Config``; it resumes, converted on load, and finishes."""
    import shutil

    run = tmp_path / "legacy"
    shutil.copytree(Path(__file__).parent / "data" / "legacy_mopo_run", run)
    with pytest.raises(Exception):  # noqa: B017 - what any weights_only load of it does
        torch.load(run / "checkpoint.pt", weights_only=True)
    with pytest.warns(UserWarning) as caught:
        summary = mopo.train(None, resume=str(run))
    messages = " | ".join(str(w.message) for w in caught)
    assert "before checkpoints held plain data" in messages and "names no data hash" in messages
    assert summary["num_updates"] == 40 and summary["dataset"] == tiny_dataset
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 40 and ckpt["config"]["sac"]["hidden_dims"] == [16, 16]
    steps = [int(r.split(",")[0]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps[:2] == [10, 20] and steps[-1] == 40


def test_a_slim_checkpoint_resumes_with_a_fresh_rollout_phase(tiny_dataset, tmp_path):
    from engine.checkpoint import slim as slim_checkpoint

    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20, checkpoint_interval=10)
    mopo.train(cfg)
    full = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    slim_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "moved" / "checkpoint.pt")
    slim = torch.load(tmp_path / "moved" / "checkpoint.pt", weights_only=True)
    assert "model_buffer" not in slim and slim["step"] == full["step"] == 20
    for k, v in full["agent"]["actor"].items():
        assert torch.equal(v, slim["agent"]["actor"][k])
    with pytest.warns(UserWarning, match="no model buffer"):
        summary = mopo.train(replace(cfg, num_updates=30), resume=str(tmp_path / "moved"))
    assert summary["num_updates"] == 30
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        slim_checkpoint(tmp_path / "nowhere.pt", tmp_path / "x.pt")
    torch.save({"not": "a checkpoint"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        slim_checkpoint(tmp_path / "other.pt", tmp_path / "x.pt")


def test_a_resumed_run_refuses_data_other_than_the_data_it_trained_on(tiny_dataset, tmp_path):
    """Checkpoints name their data's content hash; resuming over a dataset of the same id with other bytes (as
    another CPU kind generates) stops before any training and leaves the checkpoint as it was."""
    from engine.data import load, make_dataset
    from engine.dynamics import data_hash

    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20, checkpoint_interval=10)
    mopo.train(cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    trained_on = data_hash(load(tiny_dataset).as_batch())
    assert ckpt["data_hash"] == trained_on
    make_dataset(tiny_dataset, num_episodes=3, max_episode_steps=200, seed=7, progress=False, overwrite=True)
    other = data_hash(load(tiny_dataset).as_batch())
    assert other != trained_on
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"content hash {trained_on}.*has hash {other}"):
        mopo.train(replace(cfg, num_updates=30), resume=str(tmp_path / "run"))
    assert path.read_bytes() == before
    # A checkpoint from before checkpoints named their data: it resumes, with a warning that it cannot be checked.
    del ckpt["data_hash"]
    torch.save(ckpt, path)
    with pytest.warns(UserWarning, match="names no data hash"):
        summary = mopo.train(replace(cfg, num_updates=30), resume=str(tmp_path / "run"))
    assert summary["num_updates"] == 30 and torch.load(path, weights_only=True)["data_hash"] == other
