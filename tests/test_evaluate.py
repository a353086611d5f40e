"""Vectorised evaluation against a plain sequential Gymnasium loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from engine.evaluate import evaluate
from engine.nets import TanhGaussianActor


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Batches of at most a few rows through a 256-wide MLP: one thread is fastest, and with the
    cores busy two threads made each policy call about 80x slower (12.7 ms vs 0.16 ms measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _actor(obs_dim: int, act_dim: int, seed: int) -> TanhGaussianActor:
    torch.manual_seed(seed)
    return TanhGaussianActor(obs_dim, act_dim).eval()


def _rowwise(policy):
    """``policy`` applied one row at a time. A BLAS matmul may round a row differently depending on
    the batch size (measured up to 1e-7 on actions), so only a row-wise policy is bit-for-bit the
    same batched and unbatched."""
    return lambda obs: torch.cat([policy(row[None]) for row in obs])


def _deterministic(actor: TanhGaussianActor):
    return lambda obs: actor.act(obs, deterministic=True)


def _sequential(gym_id: str, policy, num_episodes: int, seed: int, **make_kwargs):
    """Reference: one env, episodes one after another, episode k reset with seed + k."""
    env = gym.make(gym_id, **make_kwargs)
    returns, lengths, last_terminated = [], [], []
    for k in range(num_episodes):
        obs, _ = env.reset(seed=seed + k)
        total, length, done = 0.0, 0, False
        while not done:
            act = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            obs, rew, terminated, truncated, _ = env.step(act)
            total += float(rew)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
        last_terminated.append(terminated)
    env.close()
    return np.array(returns), np.array(lengths), np.array(last_terminated)


def test_halfcheetah_matches_sequential_loop():
    actor = _actor(17, 6, seed=1)
    policy = _rowwise(_deterministic(actor))
    result = evaluate(policy, "halfcheetah", num_episodes=3, seed=5)
    ref_returns, ref_lengths, _ = _sequential("HalfCheetah-v5", policy, 3, seed=5)
    # Same seeds, same actions bit for bit, rewards summed in the same order in float64: equal.
    np.testing.assert_array_equal(result.returns, ref_returns)
    np.testing.assert_array_equal(result.lengths, [1000, 1000, 1000])
    np.testing.assert_array_equal(ref_lengths, [1000, 1000, 1000])
    assert len(set(result.returns.tolist())) == 3  # the seeds differ per episode
    lo, hi = -280.178953, 12135.0  # D4RL halfcheetah random / expert returns
    assert result.normalized_score == pytest.approx(100 * (ref_returns.mean() - lo) / (hi - lo), rel=1e-12)
    assert result.normalized_score_std == pytest.approx(100 * ref_returns.std() / (hi - lo), rel=1e-9)
    metrics = result.metrics()
    assert metrics["eval/return_mean"] == pytest.approx(ref_returns.mean(), rel=1e-12)
    assert metrics["eval/normalized_score"] == result.normalized_score
    assert metrics["eval/episode_length"] == 1000.0
    assert metrics["perf/eval_steps_per_s"] == pytest.approx(3000 / result.wall_s)
    assert {"eval/normalized_score_std", "eval/return_std"} <= metrics.keys()

    # The plain batched actor: rows of a batch may round differently from single rows (about 1e-7
    # on actions); measured effect on these returns (of order 1) about 1e-7, tolerance 1e-4.
    batched = evaluate(_deterministic(actor), "halfcheetah", num_episodes=3, seed=5)
    np.testing.assert_allclose(batched.returns, ref_returns, rtol=0, atol=1e-4)


def test_hopper_episodes_end_on_termination():
    policy = _rowwise(_deterministic(_actor(11, 3, seed=2)))
    result = evaluate(policy, "Hopper-v5", num_episodes=4, seed=11)
    ref_returns, ref_lengths, ref_terminated = _sequential("Hopper-v5", policy, 4, seed=11)
    assert ref_terminated.all() and (ref_lengths < 1000).all()  # a random actor falls early
    np.testing.assert_array_equal(result.lengths, ref_lengths)
    np.testing.assert_array_equal(result.returns, ref_returns)


@pytest.mark.parametrize("num_envs", [1, 2, 5])
def test_result_independent_of_num_envs(num_envs):
    """Envs are reused for later episodes (num_envs < num_episodes) and reseeded each time; the
    time limit truncates. Episode order and seeds must not depend on the number of envs."""
    policy = _rowwise(_deterministic(_actor(17, 6, seed=3)))
    result = evaluate(policy, "halfcheetah", num_episodes=5, seed=0, num_envs=num_envs, max_episode_steps=37)
    ref_returns, ref_lengths, _ = _sequential("HalfCheetah-v5", policy, 5, seed=0, max_episode_steps=37)
    np.testing.assert_array_equal(result.lengths, [37] * 5)
    np.testing.assert_array_equal(result.returns, ref_returns)


def test_uneven_episode_lengths_with_reused_envs():
    """Hopper episodes of different lengths finish out of order; results stay in episode order. A
    jittery policy (sin of a scaled projection) makes the falls come at very different steps."""
    proj = torch.randn(11, 3, generator=torch.Generator().manual_seed(0))
    policy = _rowwise(lambda obs: torch.sin(100 * obs @ proj))
    # The fall steps of this chaotic policy depend on the CPU's floating point: without a limit, measured
    # [11 >25 10 23 14 >25 10] on AMD EPYC and [10 20 11 14 21 22 10] on an Intel Xeon. A limit of 20 gives both
    # a mix of falls and truncations.
    result = evaluate(policy, "hopper", num_episodes=7, seed=0, num_envs=3, max_episode_steps=20)
    ref_returns, ref_lengths, _ = _sequential("Hopper-v5", policy, 7, seed=0, max_episode_steps=20)
    assert len(set(ref_lengths.tolist())) >= 4 and ref_lengths.max() == 20 and ref_lengths.min() < 20
    np.testing.assert_array_equal(result.lengths, ref_lengths)
    np.testing.assert_array_equal(result.returns, ref_returns)


def test_bad_inputs():
    policy = _deterministic(_actor(17, 6, seed=0))
    with pytest.raises(ValueError, match="num_episodes"):
        evaluate(policy, "halfcheetah", num_episodes=0)
    with pytest.raises(ValueError, match="num_envs"):
        evaluate(policy, "halfcheetah", num_episodes=2, num_envs=0)
    with pytest.raises(ValueError, match="supported"):
        evaluate(policy, "Ant-v5", num_episodes=1)
    with pytest.raises(ValueError, match=r"\[B, A\] = \[2, 6\]"):
        evaluate(lambda o: torch.zeros(o.shape[0], 5), "halfcheetah", num_episodes=2, max_episode_steps=3)
    with pytest.raises(ValueError, match=r"\[B, A\]"):
        evaluate(lambda o: torch.zeros(6), "halfcheetah", num_episodes=1, max_episode_steps=3)
    with pytest.raises(ValueError, match=r"\[B, A\]"):
        evaluate(lambda o: np.zeros((o.shape[0], 6)), "halfcheetah", num_episodes=1, max_episode_steps=3)


def test_make_env_shows_mujoco_warnings_once_and_restores_handler(caplog):
    """MuJoCo 4 warns about half_cheetah.xml's deprecated ``settotalmass`` at each compile; make_env logs a
    distinct MuJoCo warning once per process and leaves MuJoCo's own handler as it found it."""
    import mujoco

    from engine import envs

    envs._warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="engine.envs"):
        for _ in range(3):
            envs.make_env("halfcheetah").close()
        compile_records = [r.getMessage() for r in caplog.records if r.name == "engine.envs"]
        envs._warn_once("first")
        envs._warn_once("second")
        envs._warn_once("first")
    assert len(compile_records) <= 1  # one (settotalmass) on MuJoCo >= 4.0, none before
    shown = [r.getMessage() for r in caplog.records if r.name == "engine.envs"][len(compile_records) :]
    assert [m.rsplit(": ", 1)[-1] for m in shown] == ["first", "second"]
    assert mujoco.get_mju_user_warning() is None
    with pytest.raises(ValueError, match="unsupported environment 'ant'.*halfcheetah"):
        envs.make_env("ant")
