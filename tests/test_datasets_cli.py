"""``python -m engine.data list``: every registered id appears; a present one shows its size and score."""

from engine import data
from engine.data import __main__ as data_cli


def test_list_rows_report_present_and_missing(tiny_dataset):
    rows = {r["id"]: r for r in data_cli.rows(scores=True)}
    assert set(data.DATASETS) <= set(rows)
    present = rows[tiny_dataset]
    assert present["present"] and present["transitions"] == 600 and present["episodes"] == 3
    assert abs(present["behavior_score"]) < 5  # random actions: near D4RL's 0
    assert not rows["simloop/hopper/expert-v0"]["present"]


def test_rows_report_returns_and_markdown_table(tiny_dataset, capsys, monkeypatch):
    import numpy as np

    loaded = data.load(tiny_dataset, generate_missing=False)
    rows = {r["id"]: r for r in data_cli.rows(scores=True)}
    row = rows[tiny_dataset]
    assert row["return_mean"] == np.mean(loaded.episode_returns)
    assert row["return_std"] == np.std(loaded.episode_returns)
    assert row["behavior_score"] == loaded.behavior_normalized_score
    assert rows["simloop/hopper/random-v0"]["missing"] == []  # random actions: needs no checkpoint

    monkeypatch.setattr("sys.argv", ["python -m engine.data", "list", "--markdown"])
    data_cli.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "| dataset id | transitions | episodes | return (mean ± std) | normalised score | "
        "D4RL -v2 dataset of the same name: score (return) |"
    )
    line = next(x for x in out if x.startswith(f"| `{tiny_dataset}` |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    ret = f"{row['return_mean']:.1f} ± {row['return_std']:.1f}"
    assert cells[1:5] == ["600", "3", ret, f"{row['behavior_score']:.1f}"]
    assert all(f"| `{i}` |" in "\n".join(out) for i in data.DATASETS)
    assert any("not generated" in x for x in out if x.startswith("| `simloop/hopper/expert-v0` |"))


def test_every_recipe_has_a_cited_d4rl_figure():
    """Each registered recipe is shown next to the D4RL -v2 dataset of its name, scored with D4RL's reference
    returns, and the table names the figures' source."""
    assert data_cli.d4rl_figure("simloop/halfcheetah/medium-v0") == "40.7 (4770.3 ± 355.8) [v2 logs]"
    assert data_cli.d4rl_figure("simloop/hopper/random-v0") == "1.2 (18.4 ± 17.5) [v2 logs]"
    assert data_cli.d4rl_figure("mujoco/halfcheetah/medium-v0") == "-"  # not a simloop recipe
    for dataset_id, recipe in data.DATASETS.items():
        assert data_cli.d4rl_figure(dataset_id) != "-", dataset_id
        assert data.D4RL_DATASETS[(recipe.env, recipe.level)][-1] in data.D4RL_SOURCES
    table = data_cli.markdown_table([])
    assert "D4RL figures' sources:" in table and "YuweiYin/UBC_CPSC_533V" in table
