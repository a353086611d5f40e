"""MOPO end to end at a tiny budget on a real (small) generated dataset, its CLI, presets,
resume and bad input."""

import json
from dataclasses import replace

import pytest
import torch

from algos import mopo
from engine import data as datasets
from engine.cli import parse_cli
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
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 20
    # Pretend the run was meant to go on: resume with a longer budget from the saved checkpoint.
    ckpt["cfg"] = replace(ckpt["cfg"], num_updates=30)
    torch.save(ckpt, tmp_path / "run" / "checkpoint.pt")
    # ... and that it logged step 30 before it was killed, after its last checkpoint (step 20).
    csv_path = tmp_path / "run" / "metrics.csv"
    lines = csv_path.read_text().splitlines()
    stale = "30" + ",-123.0" * (len(lines[0].split(",")) - 1)
    csv_path.write_text("\n".join([*lines, stale]) + "\n")
    summary = mopo.train(cfg, resume=str(tmp_path / "run"))
    assert summary["num_updates"] == 30
    rows = csv_path.read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows]
    assert max(steps) == 30 and 10 in steps  # rows from before the resume are kept
    # the interrupted run's row after the checkpoint is gone
    assert stale not in rows and "-123.0" not in csv_path.read_text()


def test_a_fresh_run_refuses_a_directory_holding_a_run(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20, checkpoint_interval=20)
    mopo.train(cfg)
    before = {n: (tmp_path / "run" / n).read_bytes() for n in ("checkpoint.pt", "metrics.csv", "config.json")}
    with pytest.raises(FileExistsError, match=r"already holds a run \(metrics.csv, checkpoint.pt\).*--resume"):
        mopo.train(cfg)
    assert before == {n: (tmp_path / "run" / n).read_bytes() for n in before}  # nothing overwritten


def test_presets_cover_the_dataset_registry():
    for key, cfg in mopo.PRESETS.items():
        if key != "fast":
            assert key in datasets.DATASETS and cfg.dataset == key
    assert set(datasets.DATASETS) <= set(mopo.PRESETS)
    assert mopo.PRESETS["simloop/halfcheetah/medium-v0"].rollout == RolloutConfig(horizon=5, penalty_coef=0.5)
    fast = mopo.PRESETS["fast"]
    assert fast.dataset == mopo.DEFAULT_DATASET and fast.num_updates < mopo.Config().num_updates


def test_cli_presets_and_overrides():
    cfg, resume = parse_cli(["--fast", "--num-updates", "123"], mopo.PRESETS, "mopo")
    assert cfg.num_updates == 123 and cfg.rollout_batch_size == mopo.PRESETS["fast"].rollout_batch_size
    assert resume is None
    cfg, _ = parse_cli(["--dataset", "simloop/hopper/medium-v0"], mopo.PRESETS, "mopo")
    assert cfg.rollout.penalty_coef == 5.0 and cfg.dataset == "simloop/hopper/medium-v0"
    cfg, resume = parse_cli(["--resume", "runs/x"], mopo.PRESETS, "mopo")
    assert resume == "runs/x"
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid presets: fast, simloop/"):
        parse_cli(["--preset", "nope"], mopo.PRESETS, "mopo")


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


def test_cli_checkpoint_loads_from_any_entry_point(tiny_dataset, tmp_path):
    """A checkpoint written by ``python -m algos.mopo`` holds ``algos.mopo.Config`` (not ``__main__.Config``),
    so a sweep worker or a notebook can load and resume it."""
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
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert type(ckpt["cfg"]) is mopo.Config and ckpt["step"] == 20
    ckpt["cfg"] = replace(ckpt["cfg"], num_updates=30)
    torch.save(ckpt, out / "checkpoint.pt")
    assert mopo.train(ckpt["cfg"], resume=str(out))["num_updates"] == 30


def test_a_slim_checkpoint_resumes_with_a_fresh_rollout_phase(tiny_dataset, tmp_path):
    from engine.trainer import slim_checkpoint

    cfg = tiny_config(tiny_dataset, tmp_path / "run", num_updates=20, checkpoint_interval=10)
    mopo.train(cfg)
    full = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    slim_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "moved" / "checkpoint.pt")
    slim = torch.load(tmp_path / "moved" / "checkpoint.pt", weights_only=False)
    assert "model_buffer" not in slim and slim["step"] == full["step"] == 20
    for k, v in full["agent"]["actor"].items():
        assert torch.equal(v, slim["agent"]["actor"][k])
    slim["cfg"] = replace(slim["cfg"], num_updates=30)
    torch.save(slim, tmp_path / "moved" / "checkpoint.pt")
    with pytest.warns(UserWarning, match="no model buffer"):
        summary = mopo.train(cfg, resume=str(tmp_path / "moved"))
    assert summary["num_updates"] == 30
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        slim_checkpoint(tmp_path / "nowhere.pt", tmp_path / "x.pt")
    torch.save({"not": "a checkpoint"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        slim_checkpoint(tmp_path / "other.pt", tmp_path / "x.pt")
