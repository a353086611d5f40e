"""experiments.ablations: the change column from config differences and the figures from metrics.csv."""

import csv
import json

import pytest

from experiments import ablations


def _run(path, config, rows):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    keys = sorted({k for r in rows for k in r})
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def _rows(scores, rmse):
    rows = []
    for i, s in enumerate(scores, start=1):
        step = i * 1000
        rows.append({"step": step, "train/model_reward_rmse": rmse * i, "rollout/terminal_frac": 0.001 * i})
        rows.append({"step": step, "eval/normalized_score": s, "eval/episode_length": 100 * i})
    return rows


def test_ablation_table_names_the_change_and_reads_the_last_window(tmp_path):
    base_cfg = {"algo": "armor", "out": "a", "command": "x", "twin_min_target": False, "rollout": {"horizon": 5}}
    abl_cfg = {**base_cfg, "out": "b", "command": "y", "rollout": {"horizon": 1}, "twin_min_target": True}
    base = _run(tmp_path / "base", base_cfg, _rows([10, 20, 30, 40, 50, 60, 70], 0.1))
    abl = _run(tmp_path / "abl", abl_cfg, _rows([5, 5, 5, 5, 5, 5, 5], 0.2))
    assert ablations.config_changes(abl_cfg, base_cfg) == "rollout.horizon=1, twin_min_target=True"
    assert ablations.config_changes({**abl_cfg, "new_field": 1}, base_cfg) == "rollout.horizon=1, twin_min_target=True"
    row = ablations.read_row(base, base_cfg, until=6000, window=2000)
    assert row.change == "baseline"
    assert row.last5 == pytest.approx((20 + 30 + 40 + 50 + 60) / 5)
    assert (row.final, row.final_step) == (60.0, 6000)
    assert row.episode_length == pytest.approx((200 + 300 + 400 + 500 + 600) / 5)
    assert row.reward_rmse == pytest.approx((0.5 + 0.6) / 2)  # steps 5000 and 6000: the last 2,000 updates
    assert row.terminal_frac == pytest.approx((0.005 + 0.006) / 2)
    assert row.relative_pessimism is None
    text = ablations.table_markdown([base, abl])
    assert text.count("\n") == 3 and "| abl | rollout.horizon=1, twin_min_target=True | 5.0 |" in text
    with pytest.raises(ValueError, match="at least one run"):
        ablations.table_markdown([])
