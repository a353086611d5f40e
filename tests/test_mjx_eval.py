"""MJX evaluation backend against Gymnasium's MuJoCo v5 environments (the CPU backend's simulator).

Compilation dominates on a CPU (about 30 s per env and precision on this 2-core machine), so the
tests share one compiled runner per (env, precision) with NUM_ENVS episodes: HalfCheetah and
Walker2d in float64 (``jax.enable_x64``), where MJX and MuJoCo agree to rounding on most steps and the
checks can be tight, and Hopper in float32, the precision ``evaluate_mjx`` uses by default. Set
JAX_COMPILATION_CACHE_DIR to reuse the compiled programs across runs.
"""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
mjx_eval = pytest.importorskip("engine.mjx_eval")

from engine.envs import ENVS, get_env_spec  # noqa: E402
from engine.eval_result import EvalResult  # noqa: E402
from engine.evaluate import evaluate  # noqa: E402
from engine.nets import TanhGaussianActor  # noqa: E402

NUM_ENVS = 3
"""Episodes per compiled runner; every MJX call in this file uses this batch size (one compile per env)."""
X64 = {"halfcheetah": True, "walker2d": True, "hopper": False}
"""Precision each env is tested in (see the module docstring)."""
ACTORS = {"halfcheetah": (1, 5.0), "walker2d": (2, 0.3), "hopper": (1, 1.0)}
"""(torch seed, output gain) of each env's test actor: a bang-bang HalfCheetah (actions at the control
limits, exercising joint limits and contacts), and walkers that fall after a few dozen steps (measured
lengths 45 for Walker2d, 41-42 for Hopper), so that termination is inside the tests' windows."""


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The CPU backend's policy batches are tiny: one torch thread is fastest on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _precision(env_name: str):
    return jax.enable_x64(True) if X64[env_name] else contextlib.nullcontext()


def _actor(env_name: str, seed: int, gain: float = 1.0) -> TanhGaussianActor:
    """A random actor; ``gain`` scales the output layer so that actions reach the control limits (the
    joint-limit and contact constraints get exercised and the hopper falls within the test window)."""
    spec = get_env_spec(env_name)
    torch.manual_seed(seed)
    actor = TanhGaussianActor(spec.obs_dim, spec.act_dim, hidden=(64, 64)).eval()
    with torch.no_grad():
        actor.trunk[-1].weight.mul_(gain)
        actor.trunk[-1].bias.mul_(gain)
    return actor


def _lockstep(env_name: str, actor: TanhGaussianActor, seed: int, num_steps: int):
    """MJX (one compiled step per call) and Gymnasium envs stepped in lockstep from the same reset states,
    Gymnasium given exactly the actions MJX's policy took. Returns ``[T, B, ...]`` arrays: MJX and
    Gymnasium observations, rewards and terminated flags, and ``alive`` (the step belongs to the episode)."""
    spec = get_env_spec(env_name)
    params = mjx_eval.actor_params(actor)
    runner, _ = mjx_eval.get_runner(env_name, NUM_ENVS, params)
    batch = runner.init(*mjx_eval.reset_states(env_name, seed, NUM_ENVS))
    envs = [gym.make(spec.gym_id) for _ in range(NUM_ENVS)]
    gym_obs = np.stack([env.reset(seed=seed + k)[0] for k, env in enumerate(envs)])
    np.testing.assert_array_equal(np.asarray(batch.obs), gym_obs.astype(np.asarray(batch.obs).dtype))
    out = {k: [] for k in ("obs", "gym_obs", "rew", "gym_rew", "term", "gym_term", "alive")}
    done = np.zeros(NUM_ENVS, bool)
    for _ in range(num_steps):
        returns_before = np.asarray(batch.returns, dtype=np.float64)
        batch = runner.run(params, batch, 1)
        act = np.asarray(batch.act)  # [B, A] float32, what the CPU backend would pass too
        steps = [env.step(act[k]) if not done[k] else (gym_obs[k], 0.0, True, False, {}) for k, env in enumerate(envs)]
        gym_obs = np.stack([s[0] for s in steps])
        out["obs"].append(np.asarray(batch.obs, dtype=np.float64))
        out["gym_obs"].append(gym_obs)
        out["rew"].append(np.asarray(batch.returns, dtype=np.float64) - returns_before)
        out["gym_rew"].append(np.array([s[1] for s in steps]))
        out["term"].append(np.asarray(batch.done))
        out["gym_term"].append(np.array([s[2] for s in steps]))
        out["alive"].append(~done)
        done = done | out["gym_term"][-1]
    for env in envs:
        env.close()
    return {k: np.array(v) for k, v in out.items()}


def test_task_constants_match_gymnasium():
    for name, task in ENVS.items():
        spec = get_env_spec(name)
        env = gym.make(spec.gym_id)
        u = env.unwrapped
        assert env.spec.max_episode_steps == 1000
        assert u.fullpath.endswith("/" + task.xml_file) and u.frame_skip == task.frame_skip
        assert u._exclude_current_positions_from_observation
        assert (u._forward_reward_weight, u._ctrl_cost_weight) == (task.forward_reward_weight, task.ctrl_cost_weight)
        assert u._reset_noise_scale == task.reset_noise_scale
        assert u.observation_space.shape == (spec.obs_dim,) and u.action_space.shape == (spec.act_dim,)
        if name == "halfcheetah":
            assert task.healthy_reward == 0.0 and task.healthy_z_range is None and task.qvel_clip is None
        else:
            assert u._terminate_when_unhealthy and u._healthy_reward == task.healthy_reward
            assert (u._healthy_z_range, u._healthy_angle_range) == (task.healthy_z_range, task.healthy_angle_range)
            assert getattr(u, "_healthy_state_range", None) == task.healthy_state_range
        model = mjx_eval.load_model(name)
        assert model.opt.timestep == u.model.opt.timestep and model.nq == u.model.nq and model.nv == u.model.nv
        env.close()


@pytest.mark.parametrize("env_name", ["halfcheetah", "hopper", "walker2d"])
def test_reset_states_are_gymnasiums(env_name):
    """Bit-for-bit: the same generator and draws as ``reset(seed=...)`` (episodes 5..11)."""
    qpos, qvel = mjx_eval.reset_states(env_name, 5, 7)
    env = gym.make(get_env_spec(env_name).gym_id)
    for k in range(7):
        env.reset(seed=5 + k)
        np.testing.assert_array_equal(qpos[k], env.unwrapped.data.qpos)
        np.testing.assert_array_equal(qvel[k], env.unwrapped.data.qvel)
    assert len({tuple(q) for q in qvel}) == 7
    env.close()


@pytest.mark.parametrize("hidden", [(256, 256), (7, 33, 1)])
def test_policy_matches_actor(hidden):
    """JAX forward vs ``TanhGaussianActor.act(deterministic=True)`` on fresh observations of odd batch
    sizes. Both are float32; matmuls sum in different orders (XLA vs MKL), hence small differences on the
    actions (3e-7 measured); tolerance 2e-6."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(17, 6, hidden).eval()
    params = mjx_eval.actor_params(actor)
    for b in (1, 33):
        obs = torch.randn(b, 17) * 3
        got = np.asarray(mjx_eval.policy_apply(params, obs.numpy()))
        np.testing.assert_allclose(got, actor.act(obs, deterministic=True).numpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("env_name", ["halfcheetah", "walker2d"])
def test_steps_match_mujoco_float64(env_name):
    """Float64, 50 steps (the walkers all fall within them). Observations agree to rounding on most
    steps (measured median error 3e-13 HalfCheetah, 4e-15 Walker2d): the median must stay below 1e-10,
    which any modelling difference would break. Two effects allow more on some steps, hence a max
    tolerance of 1e-4: a constraint whose activation distance is within rounding of zero switches on
    in one simulator only (Walker2d's thigh limits sit exactly at qpos0 = 0 and reset noise starts some
    episodes on them: measured 3e-5 from the first step on one episode with a zero-action policy), and
    the bang-bang HalfCheetah's contacts amplify rounding differences about 10x every few steps
    (measured max 7e-7, at step 45; Walker2d max 3e-14). Rewards: Gymnasium computes the control cost
    of a float32 action in float32 (measured median 1e-8, max 6e-8)."""
    seed, gain = ACTORS[env_name]
    with _precision(env_name):
        r = _lockstep(env_name, _actor(env_name, seed, gain), seed=7, num_steps=50)
    alive = r["alive"]
    obs_err = np.abs(r["obs"] - r["gym_obs"]).max(axis=2)[alive]  # [alive steps]
    rew_err = np.abs(r["rew"] - r["gym_rew"])[alive]
    assert np.median(obs_err) < 1e-10 and obs_err.max() < 1e-4
    assert np.median(rew_err) < 1e-7 and rew_err.max() < 1e-3
    np.testing.assert_array_equal(r["term"][alive], r["gym_term"][alive])
    assert alive.sum() > 100 and (env_name == "halfcheetah" or not alive[-1].any())  # walkers fell (at 45)


def test_hopper_steps_and_termination_match_mujoco_float32():
    """Float32 (the default precision), until every hopper has fallen. Float32 rounding of the state
    (about 1e-7 relative) grows through the contacts: measured max errors over these steps 6e-6 on
    observations (of order 1-10) and 2e-6 on rewards; tolerance 1e-4. Terminations agree step for step."""
    seed, gain = ACTORS["hopper"]
    with _precision("hopper"):
        r = _lockstep("hopper", _actor("hopper", seed, gain), seed=3, num_steps=60)
    alive = r["alive"]
    assert not alive[-1].any(), "every hopper should fall within 60 steps"
    np.testing.assert_allclose(r["obs"][alive], r["gym_obs"][alive], rtol=0, atol=1e-4)
    np.testing.assert_allclose(r["rew"][alive], r["gym_rew"][alive], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(r["term"][alive], r["gym_term"][alive])
    assert len(set(alive.sum(0).tolist())) > 1  # the falls come at different steps (measured 42, 42, 41)


@pytest.mark.parametrize("env_name", ["halfcheetah", "walker2d", "hopper"])
def test_returns_match_cpu_backend(env_name):
    """Closed loop through ``evaluate(..., backend=...)``, same seeds (so the same initial states). The
    two backends' policies differ by float32 matmul rounding (about 1e-7), which the contacts amplify
    over an episode, so per-episode returns drift apart. Measured: a HalfCheetah policy of gain 2
    drifts 0.2% in 150 steps (returns 2.7, 5.4, 8.4); the bang-bang one of the step test decorrelates
    within about 100 steps (mean returns -77 vs -70 over 3 episodes), as chaotic dynamics do. The
    walkers agree to 4e-7 relative until they fall (41-45 steps). Tolerance: mean return within 2%
    relative, episode lengths equal. Hopper and Walker2d run to termination under the default time limit
    (the while_loop exits once all episodes are done); HalfCheetah is cut at 150 steps."""
    seed, gain = (4, 2.0) if env_name == "halfcheetah" else ACTORS[env_name]
    actor = _actor(env_name, seed, gain)
    steps = 150 if env_name == "halfcheetah" else None
    cpu = evaluate(lambda o: actor.act(o, deterministic=True), env_name, NUM_ENVS, seed=11, max_episode_steps=steps)
    with _precision(env_name):
        mjx = evaluate(actor, env_name, NUM_ENVS, seed=11, max_episode_steps=steps, backend="mjx")
        again = mjx_eval.evaluate_mjx(actor, env_name, NUM_ENVS, seed=11, max_episode_steps=steps)
    assert isinstance(mjx, EvalResult) and mjx.env == cpu.env
    assert mjx.returns.dtype == np.float64 and mjx.lengths.dtype == np.int64
    np.testing.assert_array_equal(mjx.lengths, cpu.lengths)
    assert mjx.return_mean == pytest.approx(cpu.return_mean, rel=0.02)
    # The compiled runner is reused: no compile time on a repeat, and identical results (deterministic).
    assert again.compile_s == 0.0 and again.metrics()["perf/eval_compile_s"] == 0.0
    np.testing.assert_array_equal(again.returns, mjx.returns)
    assert mjx.wall_s > 0 and again.steps_per_s > 0


def test_bad_inputs():
    actor = _actor("halfcheetah", seed=0)
    with pytest.raises(ValueError, match="TanhGaussianActor"):
        evaluate(lambda o: actor.act(o), "halfcheetah", num_episodes=1, backend="mjx")
    with pytest.raises(ValueError, match="TanhGaussianActor"):
        mjx_eval.evaluate_mjx(torch.nn.Linear(17, 6), "halfcheetah", num_episodes=1)
    with pytest.raises(ValueError, match="backend"):
        evaluate(actor, "halfcheetah", num_episodes=1, backend="gpu")
    with pytest.raises(ValueError, match="supported"):
        evaluate(actor, "Ant-v5", num_episodes=1, backend="mjx")
    with pytest.raises(ValueError, match="D=11"):
        mjx_eval.evaluate_mjx(actor, "hopper", num_episodes=1)  # a HalfCheetah-shaped actor
    with pytest.raises(ValueError, match="num_episodes"):
        mjx_eval.evaluate_mjx(actor, "halfcheetah", num_episodes=0)
    with pytest.raises(ValueError, match="max_episode_steps"):
        mjx_eval.evaluate_mjx(actor, "halfcheetah", num_episodes=1, max_episode_steps=0)
    with pytest.raises(ValueError, match="seed"):
        mjx_eval.evaluate_mjx(actor, "halfcheetah", num_episodes=1, seed=-1)
    odd = TanhGaussianActor(17, 6)
    odd.trunk[1] = torch.nn.Tanh()
    with pytest.raises(ValueError, match="Linear, ReLU"):
        mjx_eval.actor_params(odd)
