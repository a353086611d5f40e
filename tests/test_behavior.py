"""engine.behavior: the online SAC run that makes the behaviour policies resumes exactly, and export
picks, re-measures and ships a snapshot (or says clearly why it cannot)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine import behavior, policy_io

TINY = dict(env="hopper", seed=3, start_steps=100, batch_size=32, eval_interval=200, eval_episodes=1)
"""Hopper: random and barely trained policies fall within tens of steps, so a run of a few hundred
steps holds many episodes and its checkpoints land mid-episode."""


def _evals(run: Path) -> list[dict]:
    with open(run / "evals.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same run twice: once straight to step 600, once stopped at 400 and resumed with a larger
    ``total_steps`` (as a user extending a run would)."""
    root = tmp_path_factory.mktemp("behavior")
    straight = behavior.train(behavior.TrainConfig(out=str(root / "straight"), total_steps=600, **TINY))
    cfg = behavior.TrainConfig(out=str(root / "resumed"), total_steps=400, **TINY)
    resumed = behavior.train(cfg)
    mid = torch.load(resumed / "checkpoint.pt", weights_only=True)  # plain data
    assert mid["step"] == 400 and mid["env_state"]["elapsed_steps"] > 0  # stopped mid-episode
    with pytest.raises(FileExistsError, match="already holds a run: continue it with --resume"):
        behavior.train(replace(cfg, total_steps=600))
    behavior.main(["train", "--resume", str(resumed), "--total-steps", "600"])  # the command line's way
    return straight, resumed


def test_resumed_run_is_identical_to_an_unstopped_one(runs):
    straight, resumed = runs
    assert [int(r["step"]) for r in _evals(straight)] == [200, 400, 600]
    assert _evals(resumed) == _evals(straight)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 600 and a["episode"] == b["episode"] > 5
    for fa, fb in zip(a["buffer"]["data"], b["buffer"]["data"]):
        assert torch.equal(fa, fb)  # the same transitions: the interrupted episode went on, not restarted
    for k, v in a["agent"].items():
        if isinstance(v, dict):
            continue  # optimiser states: compared through the weights they produced
        assert torch.equal(v, b["agent"][k]), k


def test_the_run_logs_evaluations_and_losses_and_its_checkpoint_its_wall_time(runs):
    """The harness's records: metrics.csv rows (evaluations and SAC losses averaged since the last row) equal
    across a resume, config.json names the algorithm and the command, the checkpoint holds the wall time."""
    straight, resumed = runs
    rows = {run: list(csv.DictReader((run / "metrics.csv").read_text().splitlines())) for run in (straight, resumed)}
    assert [r["step"] for r in rows[straight]] == ["200", "400", "600"]
    assert float(rows[straight][2]["eval/return_stoch"]) == pytest.approx(float(_evals(straight)[2]["return_stoch"]))
    assert rows[straight][0]["train/critic_loss"] and rows[resumed] == rows[straight]
    config = json.loads((resumed / "config.json").read_text())
    assert config["algo"] == "behavior" and config["seed"] == TINY["seed"] and "command" in config
    ckpt = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert ckpt["wall_s"] > 0 and ckpt["config"]["out"] == str(resumed)


def test_a_killed_run_resumes_to_the_same_end(runs, tmp_path, monkeypatch):
    """Killed between checkpoints (step 500 of 600, its last checkpoint at 400), then ``--resume``: the same
    evaluations, transitions and weights as the run that was never stopped."""
    straight, _ = runs
    killed = tmp_path / "killed"
    update = behavior.SAC.update
    calls = []

    def dying(self, batch, generator=None):  # one update per environment step after start_steps
        calls.append(1)
        if len(calls) > 500 - TINY["start_steps"]:
            raise KeyboardInterrupt
        return update(self, batch, generator)

    monkeypatch.setattr(behavior.SAC, "update", dying)
    with pytest.raises(KeyboardInterrupt):
        behavior.train(behavior.TrainConfig(out=str(killed), total_steps=600, **TINY))
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 400
    monkeypatch.setattr(behavior.SAC, "update", update)
    behavior.main(["train", "--resume", str(killed)])
    assert _evals(killed) == _evals(straight)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    for fa, fb in zip(a["buffer"]["data"], b["buffer"]["data"]):
        assert torch.equal(fa, fb)
    for k in ("actor", "critic"):
        for name, v in a["agent"][k].items():
            assert torch.equal(v, b["agent"][k][name]), (k, name)


def test_resume_refuses_a_budget_below_the_checkpoint(runs):
    _, resumed = runs
    with pytest.raises(ValueError, match=r"at step 600, past --total-steps 300.*at least 600"):
        behavior.train(behavior.TrainConfig(out=str(resumed), total_steps=300, **TINY), resume=str(resumed))
    with pytest.raises(ValueError, match="fields differ from it: batch_size"):
        behavior.train(
            behavior.TrainConfig(out=str(resumed), total_steps=700, **{**TINY, "batch_size": 64}), str(resumed)
        )


def test_export_re_measures_candidates_and_ships_one(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(policy_io, "POLICY_DIR", tmp_path / "policies")
    straight, _ = runs
    rows = _evals(straight)
    target = float(rows[1]["return_stoch"])
    dest = behavior.export(
        behavior.ExportConfig(run=str(straight), target_return=target, name="t", verify_episodes=2, candidates=2)
    )
    actor, info = policy_io.load_policy(dest)
    meta = info["meta"]
    by_train_eval = sorted(rows, key=lambda r: abs(float(r["return_stoch"]) - target))
    assert set(meta["candidate_returns"]) == {r["step"] for r in by_train_eval[:2]}
    best = min(meta["candidate_returns"], key=lambda s: abs(meta["candidate_returns"][s] - target))
    assert str(meta["train_step"]) == best
    assert meta["return_mean"] == pytest.approx(meta["candidate_returns"][best])
    snap, _ = policy_io.load_policy(straight / "snapshots" / f"step_{int(best):08d}.pt")
    for k, v in snap.state_dict().items():
        assert torch.equal(v, actor.state_dict()[k])
    # The shipped return is the 2-episode re-measurement at seed 123, not the training evaluation.
    rets = behavior.run_episodes("hopper", snap, 2, 123, deterministic=False)
    assert meta["return_mean"] == pytest.approx(float(rets.mean()))

    dest = behavior.export(behavior.ExportConfig(run=str(straight), name="t600", verify_episodes=1, step=600))
    assert policy_io.load_policy(dest)[1]["meta"]["train_step"] == 600


def test_export_bad_input(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(policy_io, "POLICY_DIR", tmp_path / "policies")
    straight, _ = runs
    with pytest.raises(ValueError, match=r"no snapshot at step 450; nearest evaluated steps: \[200, 400, 600\]"):
        behavior.export(behavior.ExportConfig(run=str(straight), step=450))
    with pytest.raises(ValueError, match="candidates and verify_episodes must be at least 1, got 0"):
        behavior.export(behavior.ExportConfig(run=str(straight), candidates=0))
    with pytest.raises(FileNotFoundError, match="not a training run"):
        behavior.export(behavior.ExportConfig(run=str(tmp_path / "nowhere")))
    assert not (tmp_path / "policies").exists()  # nothing written on bad input
