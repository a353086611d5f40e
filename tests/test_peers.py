"""The simloop side of the peer adapters (peers/): the dataset export and the scoring of TorchScript snapshots.
The peer scripts themselves run in the peers' own venvs and are not exercised here."""

import csv
import json

import numpy as np
import pytest
import torch

from engine import data
from peers import export_data, score
from peers.peer_common import (
    PeerRecord,
    load_dataset,
    resume_args,
    rng_state,
    save_atomic,
    set_rng_state,
    snapshot_path,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is the exchange format

EPISODE_COLUMNS = ["step", "episode", "seed", "return", "length", "normalized_score"]
SUMMARY_KEYS = {
    "algo",
    "dataset",
    "env",
    "seed",
    "normalized_score",
    "normalized_score_std",
    "return_mean",
    "return_std",
    "eval_episodes",
    "behavior_normalized_score",
    "num_updates",
    "wall_s",
    "run_dir",
    "code",
    "machine",
}


def test_export_data_writes_transitions_and_episode_flags(tiny_dataset, tmp_path):
    out = export_data.main([tiny_dataset, str(tmp_path / "tiny.npz")])
    d = load_dataset(out)
    ref = data.load(tiny_dataset)
    assert d.obs.shape == (600, 17) and d.act.shape == (600, 6) and d.rew.shape == (600,)
    assert all(a.dtype == np.float32 for a in (d.obs, d.act, d.rew, d.next_obs, d.terminal, d.timeout))
    np.testing.assert_array_equal(d.obs, ref.obs.numpy())
    np.testing.assert_array_equal(d.next_obs, ref.next_obs.numpy())
    np.testing.assert_array_equal(d.rew, ref.rew.numpy())
    # 3 episodes of 200 steps on HalfCheetah (never terminal): a timeout on each episode's last row
    assert not d.terminal.any()
    assert np.flatnonzero(d.timeout).tolist() == [199, 399, 599]
    assert d.num_episodes == 3
    inside = np.ones(600, bool)
    inside[[199, 399, 599]] = False
    np.testing.assert_array_equal(d.next_obs[:-1][inside[:-1]], d.obs[1:][inside[:-1]])
    assert (d.dataset_id, d.env, d.gym_id, d.level) == (tiny_dataset, "halfcheetah", "HalfCheetah-v5", "random")
    assert d.behavior_normalized_score == pytest.approx(ref.behavior_normalized_score)


def test_episode_flags_terminal_and_errors():
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    next_obs = obs + 2  # rows chain: next_obs[i] == obs[i + 1]
    next_obs[2] = [-1, -1]  # episode 0 ends at row 2 (terminal), episode 1 at row 5 (timeout)
    terminal = np.zeros(6, np.float32)
    terminal[2] = 1
    assert export_data.episode_flags(obs, next_obs, terminal, 2).tolist() == [0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="episode ends"):
        export_data.episode_flags(obs, next_obs, terminal, 3)
    terminal[1] = 1
    with pytest.raises(ValueError, match="terminal rows"):
        export_data.episode_flags(obs, next_obs, terminal, 2)


def test_export_data_refuses_bad_output_and_load_refuses_bad_files(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"\.npz"):
        export_data.export(tiny_dataset, tmp_path / "tiny.h5")
    with pytest.raises(FileNotFoundError, match="export_data"):
        load_dataset(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        load_dataset(tmp_path / "other.npz")


class _LinearPolicy(torch.nn.Module):
    """obs [B, 17] -> tanh(W obs) [B, 6]: a stand-in for a peer's exported policy."""

    def __init__(self, scale: float):
        super().__init__()
        self.lin = torch.nn.Linear(17, 6)
        torch.nn.init.constant_(self.lin.weight, 0.0)
        torch.nn.init.constant_(self.lin.bias, scale)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(obs))


def _peer_run(run_dir, steps=(10, 20), finished=True, algo="d3rlpy-iql"):
    """A peer run directory as the peer scripts leave it: snapshots and peer_run.json."""
    for i, step in enumerate(steps):
        path = snapshot_path(run_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.script(_LinearPolicy(0.1 * i)).save(str(path))
    PeerRecord(
        algo=algo,
        dataset="simloop/halfcheetah/medium-v0",
        env="halfcheetah",
        seed=3,
        num_updates=steps[-1],
        behavior_normalized_score=36.8,
        code={"library": "d3rlpy", "repository": "https://github.com/takuseno/d3rlpy", "version": "2.8.1"},
        settings={"source": "test"},
        data_file="tiny.npz",
        torch_threads=1,
        finished=finished,
        updates_done=steps[-1],
        wall_s=12.5,
    ).write(run_dir)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_score_writes_metrics_episodes_and_summary(tmp_path):
    run = tmp_path / "run"
    _peer_run(run)
    args = [str(run), "--algo", "d3rlpy-iql", "--dataset", "simloop/halfcheetah/medium-v0", "--seed", "3"]
    summary = score.main(args + ["--eval-episodes", "2"])

    metrics = _read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in metrics] == [10, 20]
    assert {"eval/normalized_score", "eval/return_mean", "eval/episode_length", "perf/eval_steps_per_s"} <= set(
        metrics[0]
    )
    episodes = _read_csv(run / "episodes.csv")
    assert list(episodes[0]) == EPISODE_COLUMNS
    # the intermediate snapshot gets 2 // 2 = 1 episode, the last one 2; seeds from seed + 10,000
    assert [(int(r["step"]), int(r["episode"]), int(r["seed"])) for r in episodes] == [
        (10, 0, 10_003),
        (20, 0, 10_003),
        (20, 1, 10_004),
    ]
    assert all(int(r["length"]) == 1000 for r in episodes)

    on_disk = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk)
    assert on_disk == json.loads(json.dumps(summary))
    assert (on_disk["algo"], on_disk["seed"], on_disk["num_updates"], on_disk["eval_episodes"]) == (
        "d3rlpy-iql",
        3,
        20,
        2,
    )
    assert on_disk["wall_s"] == 12.5 and on_disk["behavior_normalized_score"] == 36.8
    config = json.loads((run / "config.json").read_text())  # what ran, for the run's record in bench/results
    assert config["code"]["version"] == "2.8.1" and config["settings"] == {"source": "test"}
    assert (config["algo"], config["seed"], config["num_updates"], config["torch_threads"]) == ("d3rlpy-iql", 3, 20, 1)
    assert on_disk["code"]["version"] == "2.8.1" and on_disk["machine"]["torch_threads"] == 1
    final = [float(r["normalized_score"]) for r in episodes if r["step"] == "20"]
    assert on_disk["normalized_score"] == pytest.approx(np.mean(final))
    assert float(metrics[1]["eval/normalized_score"]) == pytest.approx(on_disk["normalized_score"])

    with pytest.raises(FileExistsError, match="--overwrite"):
        score.main(args)
    score.main(args + ["--eval-episodes", "2", "--overwrite"])
    assert len(_read_csv(run / "episodes.csv")) == 3


def test_score_refuses_mismatched_or_unfinished_runs(tmp_path):
    run = tmp_path / "run"
    _peer_run(run, finished=False)
    base = dict(run_dir=run, algo="d3rlpy-iql", dataset="simloop/halfcheetah/medium-v0", seed=3, eval_episodes=1)
    with pytest.raises(ValueError, match="algo"):
        score.score(**{**base, "algo": "d3rlpy-td3plusbc"})
    with pytest.raises(ValueError, match="seed"):
        score.score(**{**base, "seed": 0})
    with pytest.raises(ValueError, match="did not finish"):
        score.score(**base)
    summary = score.score(**base, partial=True)
    assert summary["finished"] is False and summary["num_updates"] == 20
    with pytest.raises(FileNotFoundError, match="peer_run.json"):
        score.score(**{**base, "run_dir": tmp_path / "nothing"})
    empty = tmp_path / "empty"
    _peer_run(empty)
    for p in (empty / "policies").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="no step_"):
        score.score(**{**base, "run_dir": empty})


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    """What the peer adapters save in ``resume.pt``: after restoring, python, numpy and torch draw the same."""
    import random

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    random.random(), np.random.rand(3), torch.rand(3)  # mid-stream, not at a seed
    save_atomic({"rng": rng_state()}, tmp_path / "resume.pt")
    first = (random.random(), np.random.rand(4).tolist(), np.random.randn(2).tolist(), torch.rand(4).tolist())
    set_rng_state(torch.load(tmp_path / "resume.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.rand(4).tolist(), np.random.randn(2).tolist(), torch.rand(4).tolist())
    assert first == again
    assert not (tmp_path / "resume.pt.tmp").exists()


def test_resume_args_refuses_finished_runs_and_runs_without_a_state(tmp_path):
    _peer_run(tmp_path / "done", finished=True)
    with pytest.raises(ValueError, match="finished at 20 updates; nothing to resume"):
        resume_args(tmp_path / "done")
    _peer_run(tmp_path / "killed", finished=False)
    with pytest.raises(FileNotFoundError, match="stopped before its first snapshot"):
        resume_args(tmp_path / "killed")
    save_atomic({"step": 20}, tmp_path / "killed" / "resume.pt")
    assert resume_args(tmp_path / "killed")["updates_done"] == 20
    with pytest.raises(FileNotFoundError, match="not a peer run directory"):
        resume_args(tmp_path / "nowhere")


def test_mark_resumed_forgets_later_snapshots_and_notes_the_resume(tmp_path):
    _peer_run(tmp_path, steps=(10, 20, 30), finished=False)
    record = PeerRecord(**json.loads((tmp_path / "peer_run.json").read_text()))
    record.snapshots = [{"step": s, "file": f"policies/step_{s:07d}.pt", "wall_s": float(s)} for s in (10, 20, 30)]
    record.mark_resumed(tmp_path, 20)
    assert [x["step"] for x in record.snapshots] == [10, 20]
    assert [r["step"] for r in record.extra["resumed"]] == [20]
