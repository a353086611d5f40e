"""Termination parameters against Gymnasium's own ``is_healthy`` on real simulator states."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from engine.termination import TerminationParams, is_terminal, termination_params


def _rollout(gym_id: str, seed: int, num_steps: int, bang_bang: bool):
    """Step the true env with random actions; returns next_obs [T, D] float32, terminated [T] bool and
    max |unclipped qvel| [T]. Bang-bang runs (actions +-3, clamped to +-1 by MuJoCo) keep stepping
    after termination, so they visit fallen states far past the bounds; the others reset on it."""
    env = gym.make(gym_id)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    obs, terms, qvel = [], [], []
    for _ in range(num_steps):
        act = rng.uniform(-1.0, 1.0, env.action_space.shape)
        if bang_bang:
            act = 3.0 * np.sign(act)
        next_obs, _, terminated, truncated, _ = env.step(act.astype(np.float32))
        obs.append(next_obs)
        terms.append(terminated)
        qvel.append(np.abs(env.unwrapped.data.qvel).max())
        if (terminated and not bang_bang) or truncated:
            env.reset(seed=seed + 1000 + len(obs))
    env.close()
    return torch.as_tensor(np.array(obs), dtype=torch.float32), np.array(terms), np.array(qvel)


@pytest.mark.parametrize("gym_id", ["Hopper-v5", "Walker2d-v5"])
def test_agrees_with_gymnasium_on_real_states(gym_id):
    params = termination_params(gym_id)
    runs = [_rollout(gym_id, seed, 300, bang_bang=seed % 2 == 1) for seed in range(4)]
    obs = torch.cat([r[0] for r in runs])  # [1200, D]
    terminated = np.concatenate([r[1] for r in runs])
    qvel_max = np.concatenate([r[2] for r in runs])
    pred = is_terminal(params, obs).numpy()
    # Both outcomes must be well represented for agreement to mean anything (measured: about
    # 600 terminal and 600 healthy states of 1200 for either env).
    assert terminated.sum() >= 200 and (~terminated).sum() >= 200
    # Exact agreement wherever the observation carries everything Gymnasium checks. The only
    # tolerated disagreement is hopper's state-range check on unclipped velocities (|qvel| >= 100,
    # the observation clips at 10); measured: no step reached it in these runs, so allow at most
    # 1% of steps, and only on such states.
    mismatch = pred != terminated
    assert not mismatch[qvel_max < 100].any()
    assert mismatch.mean() <= 0.01


@pytest.mark.parametrize(
    "gym_id, qpos_index, values",
    [
        ("Hopper-v5", 1, [0.69, 0.7, 0.7001, 1.25, 50.0]),  # z > 0.7 (obs[0])
        ("Hopper-v5", 2, [-0.21, -0.2, -0.1999, 0.0, 0.1999, 0.2, 0.21]),  # |angle| < 0.2 (obs[1])
        ("Hopper-v5", 3, [-100.0, -99.99, 99.99, 100.0, 150.0]),  # state range on joints (obs[2:5])
        ("Hopper-v5", 5, [-100.0, -99.99, 99.99, 100.0]),
        ("Walker2d-v5", 1, [0.79, 0.8, 0.8001, 1.9999, 2.0, 2.1]),  # 0.8 < z < 2 (obs[0])
        ("Walker2d-v5", 2, [-1.01, -1.0, -0.9999, 0.9999, 1.0, 1.01]),  # |angle| < 1 (obs[1])
        ("Walker2d-v5", 4, [-500.0, 500.0]),  # joints unbounded
    ],
)
def test_index_mapping_and_strict_bounds_on_set_states(gym_id, qpos_index, values):
    """Place the simulator exactly at and around each bound (bounds themselves included: both
    sides round 0.7 etc. to the same float32, so strictness must agree too)."""
    env = gym.make(gym_id).unwrapped
    env.reset(seed=0)
    params = termination_params(gym_id)
    for value in values:
        qpos, qvel = env.init_qpos.copy(), env.init_qvel.copy()
        qpos[qpos_index] = value
        env.set_state(qpos, qvel)
        obs = torch.as_tensor(env._get_obs(), dtype=torch.float32)[None]
        assert bool(is_terminal(params, obs)[0]) == (not env.is_healthy), (gym_id, qpos_index, value)
    env.close()


def test_hopper_clipped_velocity_approximation():
    """The documented departure: Gymnasium ends the episode at |qvel| >= 100, the observation shows
    the velocity clipped to 10, so the bound on obs[5:] never fires."""
    env = gym.make("Hopper-v5").unwrapped
    env.reset(seed=0)
    params = termination_params("hopper")
    qvel = env.init_qvel.copy()
    qvel[3] = 150.0
    env.set_state(env.init_qpos.copy(), qvel)
    obs = torch.as_tensor(env._get_obs(), dtype=torch.float32)[None]
    assert not env.is_healthy
    assert obs[0, 8] == 10.0  # obs[5 + 3]
    assert not bool(is_terminal(params, obs)[0])
    env.close()


def test_bounds_values():
    hopper = termination_params("hopper")
    low = torch.tensor([0.7, -0.2] + [-100.0] * 9)
    high = torch.tensor([math.inf, 0.2] + [100.0] * 9)
    assert torch.equal(hopper.obs_low, low) and torch.equal(hopper.obs_high, high)
    walker = termination_params("Walker2d-v5")  # Gymnasium id works too
    assert walker.obs_low.dtype == torch.float32 and walker.obs_dim == 17
    assert walker.obs_low[:2].tolist() == pytest.approx([0.8, -1.0])
    assert walker.obs_high[:2].tolist() == pytest.approx([2.0, 1.0])
    assert torch.isinf(walker.obs_low[2:]).all() and torch.isinf(walker.obs_high[2:]).all()


@pytest.mark.parametrize("num_rows", [1, 7, 33, 1000])
def test_halfcheetah_never_terminates(num_rows):
    params = termination_params("halfcheetah")
    gen = torch.Generator().manual_seed(num_rows)
    obs = torch.randn(num_rows, 17, generator=gen) * 1e6  # far outside any physical range
    assert not is_terminal(params, obs).any()


@pytest.mark.parametrize("env", ["halfcheetah", "hopper", "walker2d"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rows_are_terminal(env, bad):
    params = termination_params(env)
    gen = torch.Generator().manual_seed(7)
    # Rows in the middle of the healthy box, then one non-finite element per row in a different
    # dimension each (including the unbounded ones).
    mid = (params.obs_low.clamp(min=-1e3) + params.obs_high.clamp(max=1e3)) / 2
    obs = mid + 0.01 * torch.randn(params.obs_dim, params.obs_dim, generator=gen)
    assert not is_terminal(params, obs).any()
    obs[torch.arange(params.obs_dim), torch.arange(params.obs_dim)] = bad
    assert is_terminal(params, obs).all()
    assert is_terminal(params, obs.double()).all()  # any float dtype


def test_matches_gymnasium_rule_on_random_rows():
    """Rows drawn around the bounds, against the rule written out as in hopper_v5.py."""
    params = termination_params("hopper")
    gen = torch.Generator().manual_seed(3)
    obs = torch.randn(33, 11, generator=gen) * torch.tensor([0.2, 0.15] + [60.0] * 9) + torch.tensor([0.8] + [0.0] * 10)
    z, angle, state = obs[:, 0], obs[:, 1], obs[:, 1:]
    healthy = (z > 0.7) & (angle > -0.2) & (angle < 0.2) & ((state > -100) & (state < 100)).all(-1)
    assert 0 < healthy.sum() < 33
    assert torch.equal(is_terminal(params, obs), ~healthy)


def test_to_device_and_errors():
    params = termination_params("hopper")
    moved = params.to("meta")
    assert moved.obs_low.device.type == "meta" and moved.obs_high.device.type == "meta"
    with pytest.raises(ValueError, match="supported"):
        termination_params("Ant-v5")
    with pytest.raises(ValueError, match=r"\[N, 11\]"):
        is_terminal(params, torch.zeros(4, 17))
    with pytest.raises(ValueError, match=r"\[N, 11\]"):
        is_terminal(params, torch.zeros(11))
    with pytest.raises(ValueError, match=r"\[D\]"):
        TerminationParams(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="obs_low < obs_high"):
        TerminationParams(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="obs_low < obs_high"):
        TerminationParams(torch.zeros(3), torch.tensor([1.0, math.nan, 1.0]))
