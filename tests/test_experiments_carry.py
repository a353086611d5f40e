"""experiments.carry: a run packed on one machine continues on another from the repository alone."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from algos import mopo
from engine.dynamics import EnsembleDynamics
from experiments import carry
from tests.test_trainer import Killed, _kill_after, _rows, tiny


def _stopped_run(tiny_dataset, monkeypatch, run):
    """A tiny MOPO run killed after its checkpoint at step 20 of 40."""
    with monkeypatch.context() as m:
        _kill_after(m, 20)
        with pytest.raises(Killed):
            mopo.train(tiny(mopo, tiny_dataset, run))


def test_a_packed_run_continues_on_a_fresh_machine_without_refitting_its_model(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "mopo-tiny"
    _stopped_run(tiny_dataset, monkeypatch, run)
    assert main_ok(["pack", str(run), "--dest", str(tmp_path / "checkpoints")])
    carried = tmp_path / "checkpoints" / "mopo-tiny"
    saved = torch.load(carried / "checkpoint.pt", weights_only=True)
    assert "model_buffer" not in saved and saved["step"] == 20
    info = json.loads((carried / "carry.json").read_text())
    assert (info["algo"], info["step"], info["num_updates"]) == ("mopo", 20, 40)
    assert info["resume"] == "python -m algos.mopo --resume runs/mopo-tiny"
    assert len(info["dynamics"]) == 1 and (carried / "dynamics" / info["dynamics"][0]).is_file()
    # packed again where the ensemble is not cached (another working directory): refused, the earlier packing kept
    with pytest.raises(FileNotFoundError, match="fitted ensemble"):
        carry.pack(run, tmp_path / "checkpoints", tmp_path / "elsewhere")
    assert (carried / "dynamics" / info["dynamics"][0]).is_file() and (carried / "carry.json").is_file()
    metrics_before = _rows(run / "metrics.csv")

    shutil.rmtree(tmp_path / "runs")  # the machine is gone; the repository (checkpoints/) is what is left
    monkeypatch.setattr(EnsembleDynamics, "fit", lambda *a, **k: pytest.fail("the carried model was fitted again"))
    assert carry.unpack(carried, tmp_path / "runs", tmp_path / "runs" / "dynamics") == info["resume"]
    assert _rows(run / "metrics.csv") == metrics_before
    with pytest.warns(UserWarning, match="slim checkpoint"):
        summary = mopo.train(None, resume=str(run))
    assert summary["num_updates"] == 40
    rows = _rows(run / "metrics.csv")
    assert rows[: len(metrics_before)] == metrics_before and {int(r["step"]) for r in rows} == {10, 20, 30, 40}

    with pytest.raises(FileExistsError, match="already holds a run"):  # nothing already there is overwritten
        carry.unpack(carried, tmp_path / "runs")
    with pytest.raises(ValueError, match="records add"):  # a finished run is recorded, not carried
        carry.pack(run, tmp_path / "checkpoints")


def test_a_run_carried_to_a_machine_with_other_data_is_not_unpacked(tiny_dataset, tmp_path, monkeypatch):
    """The carried run names its data's hash; where the local dataset of its id has other bytes (another CPU kind's
    generation), unpack refuses before writing anything, as the resume would after it."""
    from engine.data import load, make_dataset
    from engine.dynamics import data_hash

    run = tmp_path / "runs" / "mopo-tiny"
    _stopped_run(tiny_dataset, monkeypatch, run)
    carried = carry.pack(run, tmp_path / "checkpoints")
    info = json.loads((carried / "carry.json").read_text())
    assert info["data_hash"] == data_hash(load(tiny_dataset).as_batch())
    assert len(info["dynamics"]) == 1  # the ensemble fitted on that data only
    assert info["dynamics"][0].startswith(f"{tiny_dataset.replace('/', '_')}-{info['data_hash']}-")
    shutil.rmtree(tmp_path / "runs")
    make_dataset(tiny_dataset, num_episodes=3, max_episode_steps=200, seed=7, progress=False, overwrite=True)
    with pytest.raises(ValueError, match=f"content hash {info['data_hash']}.*Nothing was unpacked"):
        carry.unpack(carried, tmp_path / "runs", tmp_path / "runs" / "dynamics")
    assert not (tmp_path / "runs").exists()


def test_packing_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert carry.main(["pack", str(tmp_path / "empty")]) == 1
    assert "holds no checkpoint.pt" in capsys.readouterr().err
    assert carry.main(["unpack", str(tmp_path / "empty")]) == 1
    assert "holds no carry.json" in capsys.readouterr().err


def main_ok(argv: list[str]) -> bool:
    return carry.main(argv) == 0
