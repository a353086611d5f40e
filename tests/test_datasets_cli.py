"""``python -m engine.datasets list``: every registered id appears; a present one shows its size and score."""

from engine import data, datasets


def test_list_rows_report_present_and_missing(tiny_dataset):
    rows = {r["id"]: r for r in datasets.rows(scores=True)}
    assert set(data.DATASETS) <= set(rows)
    present = rows[tiny_dataset]
    assert present["present"] and present["transitions"] == 600 and present["episodes"] == 3
    assert abs(present["behavior_score"]) < 5  # random actions: near D4RL's 0
    assert not rows["simloop/hopper/expert-v0"]["present"]
