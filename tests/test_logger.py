"""engine.logger.RunLogger: metrics.csv is complete after every ``log`` call, with one column per key ever logged,
and a resumed run drops the rows logged after its checkpoint."""

import csv
import math

import pytest
import torch

from engine.logger import RunLogger, drop_rows_after


def _read(path) -> tuple[list[str], list[dict]]:
    with open(path) as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_log_writes_every_key_so_far_and_returns_floats(tmp_path):
    run = tmp_path / "run"
    logger = RunLogger(run)
    try:
        values = logger.log(10, {"train/b": torch.tensor(1.5), "train/a": 2})
        assert values == {"train/b": 1.5, "train/a": 2.0}
        assert _read(run / "metrics.csv") == (
            ["step", "train/a", "train/b"],
            [{"step": "10", "train/a": "2.0", "train/b": "1.5"}],
        )
        values = logger.log(20, {"train/a": 0.5, "eval/score": torch.tensor(math.inf)})
        assert values["eval/score"] == math.inf  # returned as it is; the caller decides
        header, rows = _read(run / "metrics.csv")
        assert header == ["step", "eval/score", "train/a", "train/b"]  # a new key adds a column
        assert rows == [
            {"step": "10", "eval/score": "", "train/a": "2.0", "train/b": "1.5"},
            {"step": "20", "eval/score": "inf", "train/a": "0.5", "train/b": ""},
        ]
        assert not (run / "metrics.tmp").exists()
    finally:
        logger.close()
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunLogger(run)


def test_a_resumed_logger_drops_the_rows_after_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    logger = RunLogger(run)
    for step in (10, 20, 30):
        logger.log(step, {"train/a": float(step)})
    logger.close()
    resumed = RunLogger(run, resume_step=20)
    try:
        resumed.log(30, {"train/a": -1.0})
    finally:
        resumed.close()
    assert [(r["step"], r["train/a"]) for r in _read(run / "metrics.csv")[1]] == [
        ("10", "10.0"),
        ("20", "20.0"),
        ("30", "-1.0"),
    ]


def test_drop_rows_after_keeps_the_rows_up_to_the_step(tmp_path):
    path = tmp_path / "evals.csv"
    drop_rows_after(path, 20)  # no file: nothing to do
    assert not path.exists()
    path.write_text("step,return\n10,1.5\n20,2.5\n30,-1.0\n")
    drop_rows_after(path, 20)
    assert path.read_text().splitlines() == ["step,return", "10,1.5", "20,2.5"]
