"""The simloop side of the peer adapters (peers/): the dataset export and the scoring of TorchScript snapshots,
and the OfflineRL-Kit adapters' parts that run without OfflineRL-Kit (settings, arguments, resume state, slim
copies). The peer libraries themselves run in the peers' own venvs and are not exercised here."""

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import data
from peers import d3rlpy_run, export_data, offlinerlkit_combo, offlinerlkit_mopo, score
from peers import offlinerlkit_common as okit
from peers import offlinerlkit_fit as okfit
from peers.peer_common import (
    ARRAY_KEYS,
    RESUME_FILE,
    PeerDataset,
    PeerRecord,
    check_same_data,
    data_sha256,
    load_dataset,
    resume_args,
    rng_state,
    save_atomic,
    save_dataset,
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
    with pytest.raises(FileNotFoundError, match="no resume.pt in .* stopped before it saved any state"):
        resume_args(tmp_path / "killed")
    save_atomic({"epoch": 3}, tmp_path / "killed" / "fit_state.pt")  # killed while fitting its ensemble
    with pytest.raises(FileNotFoundError, match="no resume.pt in"):
        resume_args(tmp_path / "killed")
    assert resume_args(tmp_path / "killed", state_files=("resume.pt", "fit_state.pt"))["updates_done"] == 20
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


def test_offlinerlkit_suggested_settings_follow_the_run_scripts():
    """run_combo.py's and run_mopo.py's "suggested hypers" (rollout length, cql weight / penalty coef)."""
    combo, mopo = offlinerlkit_combo.PEER, offlinerlkit_mopo.PEER
    assert okit.suggested_setting(combo, "hopper", "medium", None, None) == (5, 5.0)
    assert okit.suggested_setting(combo, "walker2d", "medium", None, None) == (1, 5.0)
    assert okit.suggested_setting(combo, "halfcheetah", "medium", None, None) == (5, 0.5)
    assert okit.suggested_setting(combo, "hopper", "medium-replay", None, None) == (5, 0.5)
    assert okit.suggested_setting(mopo, "walker2d", "medium", None, None) == (5, 0.5)
    assert len(combo.suggested) == len(mopo.suggested) == 9
    assert okit.suggested_setting(combo, "hopper", "medium", 3, None) == (3, 5.0)  # a flag overrides one of them
    assert okit.suggested_setting(combo, "hopper", "medium", None, 1.0) == (5, 1.0)
    with pytest.raises(ValueError, match="run_combo.py suggests no setting for hopper-random; pass --rollout-length "):
        okit.suggested_setting(combo, "hopper", "random", None, 5.0)
    with pytest.raises(ValueError, match="and --penalty-coef"):
        okit.suggested_setting(mopo, "hopper", "random", 5, None)
    assert okit.suggested_setting(combo, "hopper", "random", 2, 1.5) == (2, 1.5)
    assert combo.source.endswith(f"run_example/run_combo.py at commit {okit.COMMIT}")
    c = combo.settings
    assert (c["hidden_dims"], c["real_ratio"], c["with_lagrange"], c["rho_s"]) == ([256, 256, 256], 0.5, False, "mix")
    assert (mopo.settings["hidden_dims"], mopo.settings["real_ratio"]) == ([256, 256], 0.05)
    assert not combo.coef_is_dynamics_penalty and mopo.coef_is_dynamics_penalty


def test_offlinerlkit_adapters_parse_their_flags_and_check_budgets():
    import tyro

    base = ["--data", "d.npz", "--out", "o", "--rollout-length", "1"]
    a = tyro.cli(offlinerlkit_combo.Args, args=[*base, "--cql-weight", "2.5", "--dynamics-max-epochs", "3"])
    assert (a.cql_weight, a.rollout_length, a.dynamics_max_epochs, a.num_updates) == (2.5, 1, 3, 200_000)
    m = tyro.cli(offlinerlkit_mopo.Args, args=[*base, "--penalty-coef", "0.5"])
    assert m.penalty_coef == 0.5 and m.step_per_epoch == 1000 and m.snapshot_interval == 10_000
    assert {f for f in offlinerlkit_mopo.Args.__dataclass_fields__} == {
        *("data", "out", "resume", "slim_to", "seed", "num_updates", "step_per_epoch", "snapshot_interval"),
        *("rollout_length", "penalty_coef", "dynamics_max_epochs", "load_dynamics_path", "num_threads"),
    }
    with pytest.raises(SystemExit):
        tyro.cli(offlinerlkit_mopo.Args, args=[*base, "--cql-weight", "1"])
    with pytest.raises(ValueError, match="multiples of step_per_epoch"):
        okit.check_args(offlinerlkit_combo.Args(num_updates=1500))
    with pytest.raises(ValueError, match=">= 1"):
        okit.check_args(offlinerlkit_combo.Args(num_updates=0, snapshot_interval=0))
    okit.check_args(offlinerlkit_combo.Args(num_updates=2000, snapshot_interval=1000))
    with pytest.raises(ValueError, match="--data and --out are required"):
        offlinerlkit_combo.main(["--seed", "1"])


class _SACLike(torch.nn.Module):
    """What ``training_state`` reads of an OfflineRL-Kit policy: SAC's networks, optimisers and alpha, and
    CQL's ``cql_log_alpha`` with its optimiser."""

    def __init__(self):
        super().__init__()
        self.actor, self.critic1, self.critic2 = (torch.nn.Linear(3, 2) for _ in range(3))
        self._log_alpha = torch.zeros(1, requires_grad=True)
        self._alpha = self._log_alpha.detach().exp()
        self.cql_log_alpha = torch.zeros(1, requires_grad=True)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=0.1)
        self.critic1_optim = torch.optim.Adam(self.critic1.parameters(), lr=0.1)
        self.critic2_optim = torch.optim.Adam(self.critic2.parameters(), lr=0.1)
        self.alpha_optim = torch.optim.Adam([self._log_alpha], lr=0.1)
        self.cql_alpha_optim = torch.optim.Adam([self.cql_log_alpha], lr=0.1)

    def step(self, buffer) -> list[float]:
        """One update of everything, on a batch drawn as the trainer draws (numpy) and noise from torch."""
        x = torch.from_numpy(buffer.observations[np.random.randint(0, buffer._size, 4)]) + torch.randn(4, 3)
        losses = (self.actor(x).sum(), self.critic1(x).pow(2).sum(), self.critic2(x).pow(2).sum())
        losses += ((self._log_alpha * x.sum()).sum(), (self.cql_log_alpha * x.mean()).sum())
        names = ("actor_optim", "critic1_optim", "critic2_optim", "alpha_optim", "cql_alpha_optim")
        for name, loss in zip(names, losses):
            getattr(self, name).zero_grad()
            loss.backward()
            getattr(self, name).step()
        self._alpha = self._log_alpha.detach().exp()
        return torch.cat([p.flatten() for p in self.parameters()] + [self._alpha, self.cql_log_alpha]).tolist()


def _buffer(n: int = 10):
    from types import SimpleNamespace

    rows = {"observations": (n, 3), "next_observations": (n, 3), "actions": (n, 2), "rewards": (n, 1)}
    arrays = {k: np.zeros(shape, np.float32) for k, shape in {**rows, "terminals": (n, 1)}.items()}
    return SimpleNamespace(**arrays, _ptr=0, _size=0)


def test_offlinerlkit_training_state_resumes_exactly(tmp_path):
    """``resume.pt`` as the OfflineRL-Kit adapters write it: after loading it into fresh objects, the next
    updates equal those of the process that wrote it (CQL's extra state included)."""
    torch.manual_seed(0), np.random.seed(0)
    policy, buffer = _SACLike(), _buffer()
    buffer.observations[:] = np.random.randn(10, 3)
    buffer._ptr, buffer._size = 7, 10
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(policy.actor_optim, 10)
    for _ in range(3):
        policy.step(buffer), schedule.step()
    extra = offlinerlkit_combo.PEER.extra_state
    save_atomic(okit.training_state(policy, schedule, buffer, 3, extra), tmp_path / "resume.pt")
    want = [policy.step(buffer) for _ in range(3)]

    torch.manual_seed(1), np.random.seed(1)  # elsewhere in the streams
    fresh, fresh_buffer = _SACLike(), _buffer()
    fresh_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(fresh.actor_optim, 10)
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert okit.load_training_state(state, fresh, fresh_schedule, fresh_buffer) == 3
    assert (fresh_buffer._ptr, fresh_buffer._size) == (7, 10)
    assert fresh.actor_optim.param_groups[0]["lr"] == policy.actor_optim.param_groups[0]["lr"] < 0.1
    assert fresh.cql_alpha_optim.param_groups[0]["params"][0] is fresh.cql_log_alpha  # restored in place
    assert [fresh.step(fresh_buffer) for _ in range(3)] == want
    del state["extra"]  # a resume.pt written before CQL's state was saved (MOPO's) loads all the same
    okit.load_training_state(state, _SACLike(), fresh_schedule, _buffer())


def test_offlinerlkit_slim_copy_drops_the_rollout_buffer(tmp_path):
    run, dest = tmp_path / "run", tmp_path / "slim"
    args = offlinerlkit_combo.Args(data=tmp_path / "d.npz", out=run, cql_weight=2.5)
    _peer_run(run, steps=(1000, 2000), finished=False, algo="offlinerlkit-combo")
    record = json.loads((run / "peer_run.json").read_text())
    record["extra"] = {"args": {k: str(v) if hasattr(v, "parts") else v for k, v in vars(args).items()}}
    (run / "peer_run.json").write_text(json.dumps(record))
    save_atomic({"epochs_done": 2, "fake_buffer": {"ptr": 3, "observations": torch.ones(5, 3)}}, run / "resume.pt")
    model = run / "offlinerlkit" / "model"
    model.mkdir(parents=True)
    for name in ("dynamics.pth", "mu.npy", "std.npy"):
        (model / name).write_bytes(name.encode())

    assert okit.slim_copy(offlinerlkit_combo.Args, run, dest) == dest
    state = torch.load(dest / "resume.pt", weights_only=True)
    assert state == {"epochs_done": 2, "refill_buffer": True}
    assert sorted(p.name for p in (dest / "policies").iterdir()) == ["step_0001000.pt", "step_0002000.pt"]
    assert (dest / "offlinerlkit" / "model" / "mu.npy").read_bytes() == b"mu.npy"
    resumed, rec = okit.resumed_args(offlinerlkit_combo.Args, dest)
    assert (resumed.out, resumed.data, resumed.cql_weight, resumed.resume) == (dest, tmp_path / "d.npz", 2.5, None)
    assert rec["extra"]["slim_copy_of"] == str(run) and rec["algo"] == "offlinerlkit-combo"
    with pytest.raises(FileExistsError, match="already holds a peer run"):
        okit.slim_copy(offlinerlkit_combo.Args, run, dest)


def test_score_knows_the_offlinerlkit_combo_adapter(tmp_path):
    import tyro

    args = tyro.cli(score.Args, args=[str(tmp_path), "--algo", "offlinerlkit-combo", "--dataset", "x", "--seed", "0"])
    assert args.algo == "offlinerlkit-combo" and set(score.ALGOS) >= {"offlinerlkit-combo", "offlinerlkit-mopo"}


class _FakeEnsemble(torch.nn.Module):
    """What ``fit_dynamics`` uses of OfflineRL-Kit's ``EnsembleDynamicsModel``: a linear ensemble with saved best
    weights (``update_save``/``load_save``), elites and the sizes."""

    def __init__(self, n_in: int, n_out: int, num_ensemble: int = 3, num_elites: int = 2):
        super().__init__()
        self.num_ensemble, self.num_elites = num_ensemble, num_elites
        self.weight = torch.nn.Parameter(0.1 * torch.randn(num_ensemble, n_in, n_out))
        self.saved_weight = torch.nn.Parameter(self.weight.detach().clone(), requires_grad=False)
        self.elites = torch.nn.Parameter(torch.arange(num_elites), requires_grad=False)

    def forward(self, x):
        return torch.einsum(
            "ebi,eio->ebo",
            torch.as_tensor(x, dtype=torch.float32).expand(self.num_ensemble, -1, -1)
            if np.ndim(x) == 2
            else torch.as_tensor(x, dtype=torch.float32),
            self.weight,
        )

    def update_save(self, indexes):
        self.saved_weight.data[indexes] = self.weight.data[indexes]

    def load_save(self):
        self.weight.data.copy_(self.saved_weight.data)

    def set_elites(self, indexes):
        self.elites = torch.nn.Parameter(torch.tensor(indexes), requires_grad=False)


class _FakeDynamics:
    """What ``fit_dynamics`` calls of OfflineRL-Kit's ``EnsembleDynamics``, on a real (linear) ensemble fitted by
    Adam: the formatting, the scaler, ``learn`` (minibatches in order, one Adam step each), ``validate`` (a list of
    ``np.float32`` per member, as the peer's), ``select_elites`` and ``save``."""

    def __init__(self):
        from types import SimpleNamespace

        self.model = _FakeEnsemble(4, 3)
        self.optim = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.scaler = SimpleNamespace(fit=self._fit_scaler, transform=lambda x: (x - self.mu) / self.std)

    def _fit_scaler(self, x):
        self.mu, self.std = x.mean(0), x.std(0) + 1e-6

    def format_samples_for_training(self, data):
        return np.concatenate([data["observations"], data["actions"]], 1), data["targets"]

    def learn(self, inputs, targets, batch_size, logvar_loss_coef):
        losses = []
        for i in range(0, inputs.shape[1], batch_size):
            loss = (self.model(inputs[:, i : i + batch_size]) - torch.as_tensor(targets[:, i : i + batch_size])).pow(2)
            self.optim.zero_grad()
            loss.mean((1, 2)).sum().backward()
            self.optim.step()
            losses.append(loss.mean().item())
        return float(np.mean(losses))

    @torch.no_grad()
    def validate(self, inputs, targets):
        return list((self.model(inputs) - torch.as_tensor(targets)).pow(2).mean((1, 2)).numpy())

    def select_elites(self, metrics):
        return [int(i) for i in np.argsort(metrics)[: self.model.num_elites]]

    def save(self, path):
        torch.save(self.model.state_dict(), Path(path) / "dynamics.pth")


class _FakeLogger:
    def __init__(self, model_dir):
        self.model_dir, self.lines, self.rows = str(model_dir), [], 0
        Path(model_dir).mkdir(parents=True, exist_ok=True)

    def log(self, line):
        self.lines.append(line)

    def logkv(self, *_):
        pass

    def set_timestep(self, *_):
        pass

    def dumpkvs(self, **_):
        self.rows += 1


def _fit_data(n: int = 1_300):
    g = np.random.default_rng(0)
    obs, act = g.normal(size=(n, 3)).astype(np.float32), g.normal(size=(n, 1)).astype(np.float32)
    w = g.normal(size=(4, 3)).astype(np.float32)
    targets = np.concatenate([obs, act], 1) @ w + 0.3 * g.normal(size=(n, 3)).astype(np.float32)
    return {"observations": obs, "actions": act, "targets": targets}


def _fresh_fit_run(seed: int = 0):
    """A rebuilt run: the seeding and objects before the fit, as the adapter builds them."""
    torch.manual_seed(seed), np.random.seed(seed)
    return _FakeDynamics()


def test_offlinerlkit_fit_resumes_exactly_after_a_kill(tmp_path):
    """``fit_dynamics`` stopped after some epochs (the process killed), the run rebuilt from its seed and the fit
    resumed from ``fit_state.pt``, ends with the ensemble, elites, losses and random states of an unbroken fit;
    it stops on the peer's rule (5 epochs without a 1% holdout gain on any member)."""
    data = _fit_data()
    dyn = _fresh_fit_run()
    log = _FakeLogger(tmp_path / "whole")
    want = okfit.fit_dynamics(dyn, data, log, tmp_path / "whole.pt", max_epochs=60)
    want_state, want_rng = dyn.model.state_dict(), rng_state()
    assert want["finished"] and 6 <= want["epochs"] < 60  # the early stop, not the cap, ended it
    assert log.rows == want["epochs"] and log.lines[-1].startswith("elites:")
    assert (tmp_path / "whole" / "dynamics.pth").is_file()
    assert torch.equal(dyn.model.weight, dyn.model.saved_weight)  # the members' best weights are loaded

    for kill_after in (1, 4):
        path = tmp_path / f"killed{kill_after}.pt"
        part = okfit.fit_dynamics(
            _fresh_fit_run(), data, _FakeLogger(tmp_path / "k"), path, max_epochs=60, stop_after=kill_after
        )
        assert part == {"epochs": kill_after, "finished": False, "wall_s": part["wall_s"]}
        assert torch.load(path, weights_only=True)["epoch"] == kill_after
        np.random.seed(7), torch.manual_seed(7)  # the killed process's streams are gone
        dyn = _fresh_fit_run()
        log = _FakeLogger(tmp_path / "resumed")
        got = okfit.fit_dynamics(dyn, data, log, path, max_epochs=60)
        assert got["resumed_at_epoch"] == kill_after and got["wall_s"] >= part["wall_s"]
        assert {k: got[k] for k in ("epochs", "holdout_losses", "elites")} == {
            k: want[k] for k in ("epochs", "holdout_losses", "elites")
        }
        assert all(torch.equal(v, want_state[k]) for k, v in dyn.model.state_dict().items())
        assert np.array_equal(np.random.get_state()[1], want_rng["numpy"][1].numpy().astype(np.uint32))
        assert torch.equal(torch.get_rng_state(), want_rng["torch"])
        assert log.lines[0] == f"Training dynamics: resumed after epoch {kill_after} ({path})"

    # A finished fit's state (kept until the run's first resume.pt) resumes into a fit that ends at once.
    again = okfit.fit_dynamics(_fresh_fit_run(), data, _FakeLogger(tmp_path / "a"), tmp_path / "whole.pt")
    assert again["epochs"] == want["epochs"] and again["elites"] == want["elites"]


def test_offlinerlkit_fit_keeps_the_peers_loss_types_and_refuses_another_run(tmp_path):
    """The members' best losses come back as ``train`` holds them (``np.float32`` from ``validate``, the float
    ``1e10`` where none improved: the type sets the precision of the next 1% test), and a resume into a run that
    was rebuilt differently (another seed: another split and bootstrap) fails instead of mixing two fits."""
    values = torch.tensor([0.25, 1e10], dtype=torch.float64)
    losses = okfit._losses_from_tensors(values, torch.tensor([True, False]))
    assert type(losses[0]) is np.float32 and type(losses[1]) is float and losses == [0.25, 1e10]
    data = _fit_data()
    okfit.fit_dynamics(_fresh_fit_run(), data, _FakeLogger(tmp_path / "a"), tmp_path / "s.pt", stop_after=2)
    before = (tmp_path / "s.pt").read_bytes()
    with pytest.raises(RuntimeError, match="did not reach the saved random state"):
        okfit.fit_dynamics(_fresh_fit_run(seed=1), data, _FakeLogger(tmp_path / "b"), tmp_path / "s.pt")
    assert (tmp_path / "s.pt").read_bytes() == before  # nothing saved is lost


def test_offlinerlkit_slim_copy_of_a_run_still_fitting(tmp_path):
    """A run killed during its ensemble fit (no ``resume.pt`` yet) is carried as its ``fit_state.pt`` and
    record, and the copy resumes."""
    run, dest = tmp_path / "run", tmp_path / "carry"
    _peer_run(run, steps=(0,), finished=False, algo="offlinerlkit-mopo")
    (run / "policies" / "step_0000000.pt").unlink()
    record = json.loads((run / "peer_run.json").read_text())
    args = offlinerlkit_mopo.Args(data=tmp_path / "d.npz", out=run)
    record["extra"] = {"args": {k: str(v) if hasattr(v, "parts") else v for k, v in vars(args).items()}}
    (run / "peer_run.json").write_text(json.dumps(record))
    save_atomic({"epoch": 3}, run / "fit_state.pt")
    assert okit.slim_copy(offlinerlkit_mopo.Args, run, dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["fit_state.pt", "peer_run.json", "policies"]
    assert torch.load(dest / "fit_state.pt", weights_only=True) == {"epoch": 3} and not any(dest.glob("policies/*"))
    resumed, rec = okit.resumed_args(offlinerlkit_mopo.Args, dest)
    assert resumed.out == dest and rec["extra"]["slim_copy_of"] == str(run)


def _peer_dataset(seed: int) -> PeerDataset:
    g = np.random.default_rng(seed)
    obs, act = g.normal(size=(6, 3)).astype(np.float32), g.uniform(-1, 1, (6, 2)).astype(np.float32)
    flags = np.zeros(6, np.float32)
    timeout = flags.copy()
    timeout[-1] = 1
    meta = dict(dataset_id="simloop/hopper/medium-v0", env="hopper", gym_id="Hopper-v5", level="medium")
    return PeerDataset(
        obs, act, g.normal(size=6).astype(np.float32), obs + 1, flags, timeout, **meta, behavior_normalized_score=41.7
    )


def test_a_resumed_peer_run_refuses_other_data():
    """A run carried to a machine whose export of the same dataset id differs (simloop generates its data on each
    machine) must not go on training on it: the record's data digest decides, and a record without one (written
    before the check existed) takes the digest of the data it resumes on."""
    a, b = _peer_dataset(0), _peer_dataset(1)
    assert data_sha256(a) == data_sha256(_peer_dataset(0)) != data_sha256(b)
    record = {"data_file": "hopper-medium.npz", "extra": {"args": {}, "data_sha256": data_sha256(a)}}
    assert check_same_data(record, data_sha256(a)) is record
    with pytest.raises(ValueError, match="hopper-medium.npz: its data .* is not the data this run started on"):
        check_same_data(record, data_sha256(b))
    old = {"data_file": "x.npz", "extra": {"args": {}}}
    assert check_same_data(old, data_sha256(b))["extra"]["data_sha256"] == data_sha256(b)


def test_a_resumed_d3rlpy_run_refuses_other_data(tmp_path):
    """The d3rlpy adapter checks the data before it imports d3rlpy or touches the run: a run whose record names
    another export's digest stops with the data error, and its record and state stay as they were."""
    a, b = _peer_dataset(0), _peer_dataset(1)
    path = tmp_path / "hopper-medium.npz"
    meta = dict(dataset_id=b.dataset_id, env=b.env, gym_id=b.gym_id, behavior_normalized_score=41.7)
    save_dataset(path, {k: getattr(b, k) for k in ARRAY_KEYS}, **meta)
    run = tmp_path / "run"
    _peer_run(run, steps=(10,), finished=False)
    record = json.loads((run / "peer_run.json").read_text())
    args = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(d3rlpy_run.Args(data=path, out=run)).items()}
    record.update(data_file=str(path), extra={"args": args, "data_sha256": data_sha256(a)})
    (run / "peer_run.json").write_text(json.dumps(record))
    torch.save({"step": 10}, run / RESUME_FILE)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="is not the data this run started on"):
        d3rlpy_run.main(["--resume", str(run)])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
