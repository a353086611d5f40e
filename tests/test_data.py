"""engine.data: Minari round trip, recipes, determinism, scores and the errors on bad data.

Every test writes under a fresh ``MINARI_DATASETS_PATH`` and a fresh policy/run folder, so the
user's datasets and the shipped checkpoints are never touched; datasets are a few short episodes.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import minari
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer

from engine import data, policy_io
from engine.batch import Batch
from engine.buffer import ReplayBuffer
from engine.data import generate
from engine.envs import ENVS, get_env_spec, make_env, normalize_return
from engine.nets import TanhGaussianActor


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch):
    """Isolated Minari root, policy folder and behaviour-run folder."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setattr(policy_io, "POLICY_DIR", tmp_path / "policies")
    monkeypatch.setattr(generate, "BEHAVIOR_RUN_DIR", tmp_path / "runs")
    return tmp_path


def fake_policy(env: str, level: str, seed: int = 0, **meta) -> None:
    """A small random-weight SAC actor saved as ``<POLICY_DIR>/<env>-<level>.pt``."""
    spec = get_env_spec(env)
    torch.manual_seed(seed)
    actor = TanhGaussianActor(spec.obs_dim, spec.act_dim, (13,))
    policy_io.save_policy(actor, policy_io.POLICY_DIR / f"{env}-{level}.pt", env, **meta)


def raw_episodes(dataset_id: str) -> list:
    return list(minari.load_dataset(dataset_id).iterate_episodes())


def hopper_healthy(obs: np.ndarray) -> bool:
    """Hopper-v5's health test on an observation (z = obs[0], torso angle = obs[1]); the state-range
    test uses unclipped velocities, but the clipped ones in obs (|v| <= 10) cannot fail it."""
    return bool(obs[0] > 0.7 and -0.2 < obs[1] < 0.2 and np.all(np.abs(obs[1:]) < 100.0))


def test_registry_covers_every_env_and_level():
    expected = {f"simloop/{e}/{lv}-v0" for e, lv in itertools.product(ENVS, data.LEVELS)}
    assert set(data.DATASETS) == expected
    for dataset_id, recipe in data.DATASETS.items():
        assert data.get_recipe(dataset_id) is recipe
        assert recipe.dataset_id == dataset_id == f"simloop/{recipe.env}/{recipe.level}-v0"
        assert (recipe.policy is None) == (recipe.level in ("random", "medium-expert"))
        if recipe.level in ("random", "medium", "expert"):
            assert recipe.num_transitions == 1_000_000 and recipe.seed is not None
        if recipe.level == "medium-expert":
            assert all(c in data.DATASETS for c in recipe.components) and len(recipe.components) == 2


def test_random_hopper_round_trip_terminations():
    """Random actions topple Hopper: every episode ends in a real terminal state, and only there."""
    data.make_dataset("simloop/hopper/random-v0", num_episodes=3, num_envs=2, progress=False)
    episodes = raw_episodes("simloop/hopper/random-v0")
    assert len(episodes) == 3
    for ep in episodes:
        T = len(ep.actions)
        assert ep.observations.shape == (T + 1, 11) and ep.actions.shape == (T, 3)
        assert ep.rewards.shape == ep.terminations.shape == ep.truncations.shape == (T,)
        assert 1 < T < 1000 and np.all(np.abs(ep.actions) <= 1.0)
        assert ep.terminations[-1] and not ep.terminations[:-1].any() and not ep.truncations.any()
        assert all(hopper_healthy(o) for o in ep.observations[:-1]) and not hopper_healthy(ep.observations[-1])

    td = data.load("simloop/hopper/random-v0")
    N = sum(len(ep.actions) for ep in episodes)
    assert (td.obs.shape, td.next_obs.shape, td.act.shape) == ((N, 11), (N, 11), (N, 3))
    assert td.rew.shape == td.terminal.shape == (N,) and td.obs.dtype == torch.float32
    assert (td.obs_dim, td.act_dim, len(td), td.env_name) == (11, 3, N, "hopper")
    obs = np.concatenate([ep.observations[:-1] for ep in episodes])
    nxt = np.concatenate([ep.observations[1:] for ep in episodes])
    # float64 on disk -> float32 tensors: exact equality after the same cast.
    assert torch.equal(td.obs, torch.from_numpy(obs.astype(np.float32)))
    assert torch.equal(td.next_obs, torch.from_numpy(nxt.astype(np.float32)))
    ends = np.cumsum([len(ep.actions) for ep in episodes]) - 1
    assert td.terminal.nonzero().squeeze(-1).tolist() == ends.tolist()
    np.testing.assert_allclose(td.episode_returns, [ep.rewards.sum() for ep in episodes], rtol=1e-12)
    batch = td.as_batch()
    assert batch.obs is td.obs and batch.terminal is td.terminal


def test_time_limit_is_truncation_not_terminal():
    """HalfCheetah never terminates: every episode hits the (odd, 17-step) limit, a truncation."""
    data.make_dataset("simloop/halfcheetah/random-v0", num_episodes=3, num_envs=2, max_episode_steps=17, progress=False)
    for ep in raw_episodes("simloop/halfcheetah/random-v0"):
        assert ep.observations.shape == (18, 17) and ep.actions.shape == (17, 6)
        assert not ep.terminations.any() and ep.truncations[-1] and not ep.truncations[:-1].any()
    td = data.load("simloop/halfcheetah/random-v0")
    assert len(td) == 51 and td.terminal.sum() == 0


def test_transition_budget_cuts_open_episodes():
    """D4RL sizing: exactly ``num_transitions`` rows; episodes open at the budget end truncated there."""
    data.make_dataset("simloop/hopper/random-v0", num_transitions=101, num_envs=7, progress=False)
    episodes = raw_episodes("simloop/hopper/random-v0")
    assert sum(len(ep.actions) for ep in episodes) == 101
    for ep in episodes:
        assert ep.terminations[-1] != ep.truncations[-1]  # each ends exactly one way
        assert not ep.terminations[:-1].any() and not ep.truncations[:-1].any()
        if ep.truncations[-1]:  # a cut, not a time limit, and not a fall
            assert len(ep.actions) < 1000 and hopper_healthy(ep.observations[-1])
    assert sum(ep.truncations[-1] for ep in episodes) >= 1


def test_medium_from_checkpoint_is_deterministic(sandbox, monkeypatch):
    fake_policy("hopper", "medium", train_step=7)
    kwargs = dict(num_episodes=3, num_envs=2, max_episode_steps=29, progress=False)
    data.make_dataset("simloop/hopper/medium-v0", seed=5, **kwargs)
    first = data.load("simloop/hopper/medium-v0")
    meta = minari.load_dataset("simloop/hopper/medium-v0").storage.metadata
    assert "hopper-medium.pt" in meta["algorithm_name"] and "train_step 7" in meta["algorithm_name"]
    assert meta["author"] == {"simloop"} and "simloop/hopper/medium-v0" in meta["description"]
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(sandbox / "minari2"))
    data.make_dataset("simloop/hopper/medium-v0", seed=5, **kwargs)
    again = data.load("simloop/hopper/medium-v0")
    data.make_dataset("simloop/hopper/medium-v0", seed=6, overwrite=True, **kwargs)
    other = data.load("simloop/hopper/medium-v0")
    for name in ("obs", "act", "rew", "next_obs", "terminal"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.act[:10], other.act[:10])


def test_random_is_deterministic(sandbox, monkeypatch):
    kwargs = dict(num_episodes=2, num_envs=3, max_episode_steps=11, seed=3, progress=False)
    data.make_dataset("simloop/walker2d/random-v0", **kwargs)
    a = data.load("simloop/walker2d/random-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(sandbox / "minari2"))
    data.make_dataset("simloop/walker2d/random-v0", **kwargs)
    b = data.load("simloop/walker2d/random-v0")
    assert torch.equal(a.obs, b.obs) and torch.equal(a.act, b.act) and torch.equal(a.rew, b.rew)


def test_policy_for_another_env_rejected():
    fake_policy("halfcheetah", "medium")
    (policy_io.POLICY_DIR / "halfcheetah-medium.pt").rename(policy_io.POLICY_DIR / "walker2d-medium.pt")
    with pytest.raises(ValueError, match="policy for 'halfcheetah'"):
        data.make_dataset("simloop/walker2d/medium-v0", num_episodes=1, progress=False)


def test_missing_checkpoint_names_file_and_commands():
    with pytest.raises(data.MissingArtifactError) as err:
        data.load("simloop/walker2d/medium-v0")
    msg = str(err.value)
    assert str(policy_io.POLICY_DIR / "walker2d-medium.pt") in msg
    assert "python -m engine.behavior train --env walker2d" in msg
    assert "python -m engine.behavior export" in msg and "--name walker2d-medium" in msg
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    assert not data._datasets_root().joinpath("simloop/walker2d/medium-v0").exists()


def test_medium_expert_concatenates_halves():
    fake_policy("hopper", "medium", seed=0)
    fake_policy("hopper", "expert", seed=1)
    kwargs = dict(num_episodes=2, num_envs=2, max_episode_steps=13, seed=9, progress=False)
    data.make_dataset("simloop/hopper/medium-expert-v0", **kwargs)
    both = raw_episodes("simloop/hopper/medium-expert-v0")
    data.make_dataset("simloop/hopper/medium-v0", **kwargs)
    data.make_dataset("simloop/hopper/expert-v0", **{**kwargs, "seed": 10})
    halves = raw_episodes("simloop/hopper/medium-v0") + raw_episodes("simloop/hopper/expert-v0")
    assert len(both) == 4
    for x, y in zip(both, halves):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)


def test_medium_replay_from_training_run():
    """The run's replay buffer, cut at the medium snapshot's train_step, split into episodes at
    terminals and at resets (time limits: truncations; the cut episode: truncated)."""
    data.make_dataset("simloop/hopper/random-v0", num_episodes=5, num_envs=2, max_episode_steps=20, progress=False)
    source = raw_episodes("simloop/hopper/random-v0")
    buf = ReplayBuffer(1000, 11, 3)
    for ep in source:
        o = torch.from_numpy(ep.observations.astype(np.float32))
        buf.add(
            Batch(
                o[:-1],
                torch.from_numpy(ep.actions),
                torch.from_numpy(ep.rewards.astype(np.float32)),
                o[1:],
                torch.from_numpy(ep.terminations.astype(np.float32)),
            )
        )
    cut = len(buf) - 3
    run = generate.BEHAVIOR_RUN_DIR / "hopper"
    run.mkdir(parents=True)
    torch.save({"buffer": buf.state_dict(), "step": len(buf)}, run / "checkpoint.pt")
    fake_policy("hopper", "medium", train_step=cut)

    data.make_dataset("simloop/hopper/medium-replay-v0", progress=False)
    replay = raw_episodes("simloop/hopper/medium-replay-v0")
    assert len(replay) == len(source) and sum(len(ep.actions) for ep in replay) == cut
    for got, want in zip(replay, source):
        n = len(got.actions)
        np.testing.assert_array_equal(got.observations, want.observations[: n + 1].astype(np.float32))
        np.testing.assert_array_equal(got.terminations, want.terminations[:n])
    for got, want in zip(replay[:-1], source[:-1]):
        np.testing.assert_array_equal(got.truncations, want.truncations)
    assert replay[-1].truncations[-1] and not replay[-1].terminations.any()


def test_medium_replay_missing_run_is_clear():
    fake_policy("hopper", "medium", train_step=10)
    with pytest.raises(ValueError, match="checkpoint.pt.*python -m engine.behavior train --env hopper"):
        data.make_dataset("simloop/hopper/medium-replay-v0", progress=False)


def test_normalized_score_matches_d4rl_reference_returns():
    # Hopper, d4rl/infos.py: REF_MIN_SCORE -20.272305 (random), REF_MAX_SCORE 3234.3 (expert).
    expected = 100.0 * (1000.0 + 20.272305) / (3234.3 + 20.272305)  # = 31.3487...
    assert data.normalized_score("simloop/hopper/medium-v0", 1000.0) == pytest.approx(expected, rel=1e-12)
    returns = np.array([-280.178953, 12135.0, 5927.41])  # halfcheetah random, expert, midpoint
    np.testing.assert_allclose(
        data.normalized_score("simloop/halfcheetah/random-v0", returns), [0.0, 100.0, 50.0], atol=1e-4
    )
    data.make_dataset("simloop/hopper/random-v0", num_episodes=3, num_envs=2, progress=False)
    td = data.load("simloop/hopper/random-v0")
    mean = td.episode_returns.mean()
    assert td.behavior_normalized_score == pytest.approx(100.0 * (mean + 20.272305) / 3254.572305, rel=1e-12)


D4RL_REFERENCE_RETURNS = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
}
"""(REF_MIN_SCORE, REF_MAX_SCORE) per environment, copied from d4rl/infos.py (random and expert policy returns):
written here, not read from ``engine.envs``, so that a changed constant there fails this test."""


@pytest.mark.parametrize("env", sorted(D4RL_REFERENCE_RETURNS))
def test_every_environment_scores_the_d4rl_reference_returns_0_and_100(env):
    assert set(ENVS) == set(D4RL_REFERENCE_RETURNS)  # a new environment needs its reference returns here
    lo, hi = D4RL_REFERENCE_RETURNS[env]
    spec = get_env_spec(env)
    assert (spec.ref_min_score, spec.ref_max_score) == (lo, hi)
    # Exact: (lo - lo) is 0 and (hi - lo) / (hi - lo) is 1 in floating point, whatever the constants.
    assert normalize_return(env, lo) == 0.0 and normalize_return(env, hi) == 100.0
    ids = [i for i, recipe in data.DATASETS.items() if recipe.env == env]
    assert ids  # every environment has registered datasets
    for dataset_id in ids:
        assert data.normalized_score(dataset_id, lo) == 0.0, dataset_id
        assert data.normalized_score(dataset_id, hi) == 100.0, dataset_id


def write_foreign(dataset_id: str, rewards: np.ndarray, obs: np.ndarray | None = None, **meta) -> None:
    """A one-episode Minari dataset written with Minari alone (not a simloop id)."""
    T = len(rewards)
    obs = np.random.default_rng(0).normal(size=(T + 1, 11)) if obs is None else obs
    env = make_env("hopper")
    ep = EpisodeBuffer(
        observations=obs,
        actions=np.zeros((T, 3), np.float32) + 0.25,
        rewards=rewards,
        terminations=np.zeros(T, bool),
        truncations=np.eye(1, T, T - 1, dtype=bool)[0],
    )
    minari.create_dataset_from_buffers(
        dataset_id, [ep], env=env.spec, algorithm_name="test", author="test", description="test", **meta
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_foreign_dataset_loads_and_scores():
    write_foreign("other/hopper/a-v0", np.linspace(0.0, 1.0, 7), ref_min_score=-1.0, ref_max_score=3.0)
    td = data.load("other/hopper/a-v0")
    assert len(td) == 7 and td.env_name == "hopper" and td.terminal.sum() == 0
    assert data.normalized_score("other/hopper/a-v0", 1.0) == pytest.approx(50.0, rel=1e-12)
    write_foreign("other/hopper/noref-v0", np.ones(5))
    with pytest.raises(ValueError, match="no ref_min_score"):
        data.normalized_score("other/hopper/noref-v0", 1.0)
    with pytest.raises(ValueError, match="no ref_min_score"):
        _ = data.load("other/hopper/noref-v0").behavior_normalized_score


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_non_finite_data_rejected():
    rewards = np.linspace(0.0, 1.0, 9)
    rewards[4] = np.nan
    write_foreign("other/hopper/nan-v0", rewards)
    with pytest.raises(ValueError, match=r"1 non-finite values \(NaN/inf\) in rewards"):
        data.load("other/hopper/nan-v0")
    obs = np.random.default_rng(1).normal(size=(10, 11))
    obs[[2, 7], [0, 5]] = np.inf
    write_foreign("other/hopper/inf-v0", np.ones(9), obs=obs)
    with pytest.raises(ValueError, match="2 non-finite values .* in observations"):
        data.load("other/hopper/inf-v0")


def test_unknown_id_lists_valid_ids():
    data.make_dataset("simloop/hopper/random-v0", num_episodes=1, progress=False)
    with pytest.raises(ValueError) as err:
        data.load("simloop/ant/medium-v0")
    msg = str(err.value)
    assert "'simloop/ant/medium-v0'" in msg and all(d in msg for d in data.DATASETS)
    assert "Local: simloop/hopper/random-v0" in msg
    with pytest.raises(ValueError, match="simloop/walker2d/expert-v0"):
        data.normalized_score("nope/x-v0", 1.0)
    with pytest.raises(ValueError, match="registered: simloop/halfcheetah/random-v0"):
        data.make_dataset("nope/x-v0")


def test_missing_simloop_id_without_generation():
    with pytest.raises(ValueError, match=r"not generated yet.*make_dataset\('simloop/hopper/random-v0'\)"):
        data.load("simloop/hopper/random-v0", generate_missing=False)


@pytest.mark.parametrize("damage", ["truncate", "garble", "no_metadata"])
def test_corrupt_dataset_rejected_and_kept(damage):
    dataset_id = "simloop/hopper/random-v0"
    data.make_dataset(dataset_id, num_episodes=2, num_envs=2, progress=False)
    folder = data._datasets_root() / dataset_id / "data"
    h5, meta = folder / "main_data.hdf5", folder / "metadata.json"
    raw = h5.read_bytes()
    if damage == "truncate":
        h5.write_bytes(raw[: len(raw) // 2])
    elif damage == "garble":
        h5.write_bytes(raw[:64] + bytes(b ^ 0x5A for b in raw[64:]))
    else:
        meta.unlink()
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ValueError) as err:
        data.load(dataset_id)
    msg = str(err.value)
    assert str(data._datasets_root() / dataset_id) in msg
    assert f"make_dataset({dataset_id!r}, overwrite=True)" in msg and "Nothing was deleted" in msg
    assert sorted(p.name for p in folder.iterdir()) == before and h5.exists()
    with pytest.raises(ValueError, match="already exists"):
        data.make_dataset(dataset_id, num_episodes=1, progress=False)
    data.make_dataset(dataset_id, num_episodes=1, progress=False, overwrite=True)
    assert len(data.load(dataset_id).episode_returns) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="not both"):
        data.make_dataset("simloop/hopper/random-v0", num_episodes=1, num_transitions=5)
    with pytest.raises(ValueError, match="num_episodes must be positive"):
        data.make_dataset("simloop/hopper/random-v0", num_episodes=0)
    with pytest.raises(ValueError, match="takes no size or seed"):
        data.make_dataset("simloop/hopper/medium-replay-v0", num_episodes=1)


def test_import_is_cheap():
    code = "import sys, engine.data; assert 'minari' not in sys.modules and 'gymnasium' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=generate.REPO_ROOT)
