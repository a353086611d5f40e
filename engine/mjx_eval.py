"""Policy evaluation on MJX (MuJoCo XLA): many episodes of HalfCheetah-v5, Hopper-v5 or Walker2d-v5 in
parallel, ``jax.vmap`` over episodes and the whole episode in one compiled ``lax.while_loop``.

The task is Gymnasium's v5 task, re-stated in JAX from its source (Gymnasium 1.4,
gymnasium/envs/mujoco/{half_cheetah,hopper,walker2d}_v5.py and mujoco_env.py), with the defaults of
``gymnasium.make(id)``, which each env's ``engine.envs.EnvSpec`` holds:

- model: the same XML file (``mujoco_env.expand_model_path(xml_file)``, i.e. Gymnasium's own assets:
  half_cheetah.xml, hopper.xml, walker2d_v5.xml) compiled by ``mujoco.MjModel.from_xml_path`` and moved
  to the device with ``mjx.put_model``; ``frame_skip`` physics steps per env step (5, 4, 4).
- observation ``[D]``: ``concat(qpos[1:], qvel)``; qvel clipped to [-10, 10] for Hopper and Walker2d,
  unclipped for HalfCheetah.
- reward: ``forward_reward_weight * (x_after - x_before) / dt + healthy_reward * is_healthy
  - ctrl_cost_weight * sum(action^2)`` with ``dt = timestep * frame_skip`` and x = qpos[0]; HalfCheetah
  has no healthy term. In v5 the healthy reward is paid only on healthy steps (0 on the terminal step).
- termination (``terminate_when_unhealthy=True``): not ``is_healthy``, evaluated on the full state
  (unclipped qvel) as Gymnasium does. Hopper: ``0.7 < z``, ``-0.2 < angle < 0.2``,
  ``-100 < state_vector()[2:] < 100``; Walker2d: ``0.8 < z < 2``, ``-1 < angle < 1``; HalfCheetah never.
- truncation after ``max_episode_steps`` (the registered 1,000).
- reset: ``qpos = qpos0 + U(-s, s)``, ``qvel = 0 + U(-s, s)`` (Hopper, Walker2d: s = 5e-3) or
  ``0 + s * N(0, 1)`` (HalfCheetah: s = 0.1), drawn on the host from the very generator Gymnasium's
  ``env.reset(seed=seed + k)`` builds (``gymnasium.utils.seeding.np_random``), so episode k starts from
  the same state on both backends and the scores are paired.
- actions: ``ctrl = action``; MuJoCo and MJX clamp ``ctrl`` to ``ctrlrange``, the control cost sees the
  raw action.

Agreement with MuJoCo (tests/test_mjx_eval.py). MJX computes in float32 unless ``jax_enable_x64`` is on
when a runner is built (MJX docs, https://mujoco.readthedocs.io/en/stable/mjx.html). In float64 most
steps agree with Gymnasium's MuJoCo to about 1e-14; a constraint that switches on within rounding of its
boundary can switch in one simulator only (Walker2d's thigh limits sit exactly at qpos0 and reset noise
starts some episodes on them: up to 3e-5 on the observation), and contacts amplify any difference
(bang-bang HalfCheetah: 7e-7 after 45 steps). In float32, Hopper observations agree to 6e-6 until the
hoppers fall (about 40 steps), with identical terminations. Closed loop, the two backends' float32
policies differ by matmul rounding (about 1e-7), which contacts amplify: paired HalfCheetah returns
(float64 physics) drift 0.2% apart in 150 steps.

Departure, for compile time only: Hopper and Walker2d use MuJoCo's RK4 integrator. ``mjx.step`` unrolls
the three inner RK4 stages (``lax.scan(..., unroll=3)``), which puts four copies of ``mjx.forward`` in the
compiled program; here the ``frame_skip`` RK4 steps run as one ``fori_loop`` over ``4 * frame_skip``
stages with a single ``mjx.forward`` in its body. The arithmetic is that of
``mujoco/mjx/_src/forward.py::rungekutta4`` + ``_advance`` in mujoco-mjx 3.17 for hinge and slide joints
without actuator activations (``load_model`` checks this). Measured (Hopper, vmap over 4 episodes): it
agrees with ``mjx.step`` to 7e-15 over 40 steps in float64 (not bitwise: XLA fuses the two programs
differently), and it lowers and compiles in about half the time (bench/RESULTS.md).

Speed note, not acted on: MJX's Newton line search is a fixed-length ``lax.scan`` over
``opt.ls_iterations`` (50 in these models) of ``lax.cond``, and under ``vmap`` a ``cond`` evaluates both
branches, so every solver iteration pays all 50 line-search iterations. The MJX docs suggest lowering
``opt.iterations``/``opt.ls_iterations`` for speed; that changes the physics, so Gymnasium's values are kept.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from gymnasium.utils.seeding import np_random
from mujoco import mjx
from torch import nn

from engine.envs import EnvSpec, get_env_spec
from engine.eval_result import EvalResult
from engine.nets import TanhGaussianActor

# MuJoCo's RK4 tableau (engine_forward.c; mjx/_src/forward.py _RK4_A, _RK4_B) per stage 0..3: stage k is
# evaluated at X0 + h * A[k] * F[k-1] and time t0 + C[k] * h; the step adds h * sum_k B[k] * F[k].
_RK4_A = (0.0, 0.5, 0.5, 1.0)
_RK4_B = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)
_RK4_C = (0.0, 0.5, 0.5, 1.0)


@functools.cache
def load_model(env_name: str) -> mujoco.MjModel:
    """The MuJoCo model Gymnasium builds for ``env_name`` (same XML path, ``MjModel.from_xml_path``).

    Raises:
        ValueError: unsupported env, or a model this module cannot integrate (joints other than hinge
            and slide, actuator activations, an integrator other than Euler or RK4).
    """
    spec = get_env_spec(env_name)
    model = mujoco.MjModel.from_xml_path(expand_model_path(spec.xml_file))
    joint_types = {mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE}
    integrators = {mujoco.mjtIntegrator.mjINT_EULER, mujoco.mjtIntegrator.mjINT_RK4}
    if model.na or not set(model.jnt_type.tolist()) <= joint_types or model.opt.integrator not in integrators:
        raise ValueError(f"{spec.xml_file}: only hinge/slide joints, no activations, Euler or RK4 are supported")
    return model


def _x64() -> bool:
    return jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64


@functools.cache
def _device_model(env_name: str, x64: bool) -> mjx.Model:
    return mjx.put_model(load_model(env_name))


def device_model(env_name: str) -> mjx.Model:
    """``mjx.put_model`` of ``load_model(env_name)`` in the current precision (float64 iff x64 is on), cached."""
    return _device_model(get_env_spec(env_name).name, _x64())


def reset_states(env_name: str, seed: int, num_episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial states of episodes ``seed, seed + 1, ...``, equal to Gymnasium's ``reset(seed=seed + k)``.

    Each episode's noise comes from ``gymnasium.utils.seeding.np_random(seed + k)``, the generator
    ``Env.reset`` installs, drawn in ``reset_model``'s order (qpos noise, then qvel noise).

    Returns:
        ``qpos: [B, nq]`` and ``qvel: [B, nv]`` float64, B = ``num_episodes``.

    Raises:
        ValueError: unsupported env, ``num_episodes < 1`` or ``seed < 0``.
    """
    spec = get_env_spec(env_name)
    if num_episodes < 1 or seed < 0:
        raise ValueError(f"need num_episodes >= 1 and seed >= 0; got {num_episodes} and {seed}")
    model = load_model(spec.name)
    s = spec.reset_noise_scale
    qpos = np.empty((num_episodes, model.nq))
    qvel = np.empty((num_episodes, model.nv))
    for k in range(num_episodes):
        rng, _ = np_random(seed + k)
        qpos[k] = model.qpos0 + rng.uniform(low=-s, high=s, size=model.nq)
        qvel[k] = s * rng.standard_normal(model.nv) if spec.qvel_noise_normal else rng.uniform(-s, s, model.nv)
    return qpos, qvel


ActorParams = tuple[tuple[jax.Array, jax.Array], ...]
"""Layers ``(W [in, out], b [out])`` float32 of the actor's mean head: ReLU between layers, tanh after."""


def actor_params(actor: TanhGaussianActor) -> ActorParams:
    """The weights of ``actor.trunk`` as JAX arrays, the last layer cut to its mean half (``[:A]``),
    copied to the device once.

    Raises:
        ValueError: ``actor`` is not a TanhGaussianActor, or its trunk is not Linear/ReLU alternating
            and ending with a ``2 * act_dim`` Linear.
    """
    if not isinstance(actor, TanhGaussianActor):
        raise ValueError(f"the MJX backend needs a TanhGaussianActor; got {type(actor).__name__}")
    layers = list(actor.trunk)
    linear = layers[0::2]
    ok = all(isinstance(m, nn.Linear) for m in linear) and all(isinstance(m, nn.ReLU) for m in layers[1::2])
    if not ok or len(layers) % 2 == 0 or linear[-1].out_features != 2 * actor.act_dim:
        raise ValueError("actor.trunk must be Linear, ReLU, ..., Linear(2 * act_dim)")
    params = []
    with torch.no_grad():
        for i, layer in enumerate(linear):
            w, b = layer.weight.detach().float().cpu(), layer.bias.detach().float().cpu()
            if i == len(linear) - 1:
                w, b = w[: actor.act_dim], b[: actor.act_dim]  # mean rows of chunk(2, dim=-1)
            params.append((jnp.asarray(w.T.numpy()), jnp.asarray(b.numpy())))
    return tuple(params)


def policy_apply(params: ActorParams, obs: jax.Array) -> jax.Array:
    """``TanhGaussianActor.act(obs, deterministic=True)`` in JAX: ``obs: [B, D] -> tanh(mean): [B, A]``
    float32. Observations are cast to float32 as the CPU backend does; matmuls at HIGHEST precision so that
    GPUs do not use TF32 (torch's default for float32 matmuls is full float32)."""
    h = obs.astype(jnp.float32)
    for i, (w, b) in enumerate(params):
        h = jnp.matmul(h, w, precision=jax.lax.Precision.HIGHEST) + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return jnp.tanh(h)


def _observe(spec: EnvSpec, d: mjx.Data) -> jax.Array:
    qvel = d.qvel if spec.qvel_clip is None else jnp.clip(d.qvel, -spec.qvel_clip, spec.qvel_clip)
    return jnp.concatenate([d.qpos[1:], qvel])


def _is_healthy(spec: EnvSpec, d: mjx.Data) -> jax.Array:
    if spec.healthy_z_range is None:
        return jnp.array(True)
    z, angle = d.qpos[1], d.qpos[2]
    healthy = (spec.healthy_z_range[0] < z) & (z < spec.healthy_z_range[1])
    healthy &= (spec.healthy_angle_range[0] < angle) & (angle < spec.healthy_angle_range[1])
    if spec.healthy_state_range is not None:
        state = jnp.concatenate([d.qpos, d.qvel])[2:]
        lo, hi = spec.healthy_state_range
        healthy &= jnp.all((lo < state) & (state < hi))
    return healthy


def _rk4_steps(m: mjx.Model, d: mjx.Data, num_steps: int) -> mjx.Data:
    """``num_steps`` calls of ``mjx.step`` for an RK4 model with hinge/slide joints and no activations, as
    one loop over ``4 * num_steps`` stages holding one ``mjx.forward`` (see the module docstring). Stage 0
    is the forward pass ``mjx.step`` makes at the current state, stages 1-3 those of ``rungekutta4``; each
    line below mirrors the expression of mjx/_src/forward.py it names."""
    dt = m.opt.timestep
    a_tab, b_tab, c_tab = (jnp.asarray(t, dtype=d.qpos.dtype) for t in (_RK4_A, _RK4_B, _RK4_C))

    def stage(j, carry):
        d, qpos0, qvel0, time0, kqvel, qvel_sum, qacc_sum = carry
        k = j % 4
        first, last = k == 0, k == 3
        qpos0, qvel0, time0 = (jnp.where(first, x, x0) for x, x0 in ((d.qpos, qpos0), (d.qvel, qvel0), (d.time, time0)))
        # rungekutta4.f: kqpos = _integrate_pos(d0.qpos, a * kqvel), kqvel = d0.qvel + (a * d.qacc) * dt, t = T
        qpos_in = jnp.where(first, qpos0, qpos0 + dt * (a_tab[k] * kqvel))
        qvel_in = jnp.where(first, qvel0, qvel0 + (a_tab[k] * d.qacc) * dt)
        d = mjx.forward(m, d.replace(qpos=qpos_in, qvel=qvel_in, time=time0 + c_tab[k] * dt))
        # rungekutta4: sums start at B[0] * (d.qvel, d.qacc) and add b * (kqvel, d.qacc) per stage
        qvel_sum = jnp.where(first, b_tab[0] * qvel_in, qvel_sum + b_tab[k] * qvel_in)
        qacc_sum = jnp.where(first, b_tab[0] * d.qacc, qacc_sum + b_tab[k] * d.qacc)
        # _advance(m, d0-with-last-stage-qacc, act_dot, qacc_sum, qvel_sum)
        d = d.replace(
            qvel=jnp.where(last, qvel0 + qacc_sum * dt, d.qvel),
            qpos=jnp.where(last, qpos0 + dt * qvel_sum, d.qpos),
            time=jnp.where(last, time0 + dt, d.time),
            qacc_warmstart=jnp.where(last, d.qacc, d.qacc_warmstart),
        )
        return d, qpos0, qvel0, time0, qvel_in, qvel_sum, qacc_sum

    zeros = jnp.zeros_like(d.qvel)
    carry = (d, d.qpos, d.qvel, d.time, zeros, zeros, zeros)
    return jax.lax.fori_loop(0, 4 * num_steps, stage, carry)[0]


def env_step(
    spec: EnvSpec, m: mjx.Model, d: mjx.Data, action: jax.Array
) -> tuple[mjx.Data, jax.Array, jax.Array, jax.Array]:
    """One environment step of one episode (vmap it for a batch): ``action: [A]`` ->
    ``(data, obs [D], reward [], terminated [] bool)``, as ``<Env>-v5.step`` computes them."""
    x_before = d.qpos[0]
    d = d.replace(ctrl=action.astype(d.qpos.dtype))
    if m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4:
        d = _rk4_steps(m, d, spec.frame_skip)
    else:
        d = jax.lax.fori_loop(0, spec.frame_skip, lambda _, d: mjx.step(m, d), d)
    x_velocity = (d.qpos[0] - x_before) / (m.opt.timestep * spec.frame_skip)
    healthy = _is_healthy(spec, d)
    ctrl_cost = spec.ctrl_cost_weight * jnp.sum(jnp.square(d.ctrl))
    reward = (spec.forward_reward_weight * x_velocity + spec.healthy_reward * healthy) - ctrl_cost
    terminated = ~healthy if spec.healthy_z_range is not None else jnp.array(False)
    return d, _observe(spec, d), reward, terminated


class EpisodeBatch(NamedTuple):
    """State of B episodes stepped together (leading axis B everywhere)."""

    data: mjx.Data
    """Batched MJX data (physics state)."""
    obs: jax.Array
    """``[B, D]`` current observations."""
    act: jax.Array
    """``[B, A]`` float32: the last actions taken (zeros before the first step)."""
    done: jax.Array
    """``[B]`` bool: the episode has terminated (its later steps are not counted)."""
    returns: jax.Array
    """``[B]`` simulation dtype: sum of the rewards of the counted steps."""
    lengths: jax.Array
    """``[B]`` int32: counted steps."""


def _init_batch(spec: EnvSpec, m: mjx.Model, qpos: jax.Array, qvel: jax.Array) -> EpisodeBatch:
    # No forward pass here: Gymnasium's set_state -> mj_forward only fills derived quantities, which the
    # first step's forward recomputes; qacc_warmstart is 0 in both (mj_resetData, make_data).
    data = jax.vmap(lambda qp, qv: mjx.make_data(m).replace(qpos=qp, qvel=qv))(qpos, qvel)
    b = qpos.shape[0]
    obs = jax.vmap(functools.partial(_observe, spec))(data)
    return EpisodeBatch(
        data,
        obs,
        jnp.zeros((b, spec.act_dim), jnp.float32),
        jnp.zeros(b, bool),
        jnp.zeros(b, qpos.dtype),
        jnp.zeros(b, jnp.int32),
    )


def _run_batch(
    spec: EnvSpec, m: mjx.Model, params: ActorParams, batch: EpisodeBatch, num_steps: jax.Array
) -> EpisodeBatch:
    """Up to ``num_steps`` steps of every episode, stopping early once all have terminated."""
    step = jax.vmap(functools.partial(env_step, spec), in_axes=(None, 0, 0))

    def body(carry):
        i, b = carry
        act = policy_apply(params, b.obs)  # [B, A]
        data, obs, reward, terminated = step(m, b.data, act)
        alive = ~b.done
        returns = b.returns + jnp.where(alive, reward, 0.0)
        return i + 1, EpisodeBatch(data, obs, act, b.done | terminated, returns, b.lengths + alive)

    return jax.lax.while_loop(lambda c: (c[0] < num_steps) & ~jnp.all(c[1].done), body, (jnp.int32(0), batch))[1]


@dataclass(frozen=True)
class MjxRunner:
    """Compiled programs for one task, batch size, policy shape and precision (see ``get_runner``)."""

    spec: EnvSpec
    model: mjx.Model
    num_envs: int
    compile_s: float
    """Seconds spent lowering and compiling both programs."""
    _init: jax.stages.Compiled
    _run: jax.stages.Compiled

    def init(self, qpos: np.ndarray, qvel: np.ndarray) -> EpisodeBatch:
        """Episodes starting at ``qpos: [B, nq]``, ``qvel: [B, nv]`` (e.g. from ``reset_states``)."""
        dtype = self.model.opt.timestep.dtype
        return self._init(self.model, jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype))

    def run(self, params: ActorParams, batch: EpisodeBatch, num_steps: int) -> EpisodeBatch:
        """Advance every episode up to ``num_steps`` environment steps with the policy ``params``
        (one compiled call; no recompilation for another ``num_steps``)."""
        return self._run(self.model, params, batch, np.int32(num_steps))


_RUNNERS: dict[tuple, MjxRunner] = {}


def get_runner(env_name: str, num_envs: int, params: ActorParams) -> tuple[MjxRunner, bool]:
    """The compiled runner for ``num_envs`` episodes of ``env_name`` with a policy shaped like ``params``, in
    the current JAX precision, and whether this call compiled it: compiled on first use (its ``compile_s``)
    and cached for the process.

    Raises:
        ValueError: unsupported env, ``num_envs < 1``, or ``params`` whose first layer does not take D.
    """
    spec = get_env_spec(env_name)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1; got {num_envs}")
    if params[0][0].shape[0] != spec.obs_dim or params[-1][0].shape[1] != spec.act_dim:
        raise ValueError(f"policy must map D={spec.obs_dim} to A={spec.act_dim} for {spec.gym_id}")
    key = (spec.name, _x64(), num_envs, tuple((w.shape, b.shape) for w, b in params))
    if key in _RUNNERS:
        return _RUNNERS[key], False
    t0 = time.perf_counter()
    m = device_model(spec.name)
    model = load_model(spec.name)
    dtype = m.opt.timestep.dtype
    qpos = jax.ShapeDtypeStruct((num_envs, model.nq), dtype)
    qvel = jax.ShapeDtypeStruct((num_envs, model.nv), dtype)
    init_fn = jax.jit(functools.partial(_init_batch, spec))
    init = init_fn.lower(m, qpos, qvel).compile()
    batch = jax.eval_shape(init_fn, m, qpos, qvel)
    run = jax.jit(functools.partial(_run_batch, spec)).lower(m, params, batch, np.int32(1)).compile()
    _RUNNERS[key] = MjxRunner(spec, m, num_envs, time.perf_counter() - t0, init, run)
    return _RUNNERS[key], True


def evaluate_mjx(
    actor: TanhGaussianActor,
    env_name: str,
    num_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> EvalResult:
    """Run ``num_episodes`` episodes of ``actor.act(obs, deterministic=True)`` on MJX, all in one batch.

    Args:
        actor: the policy; its weights are copied to the device once per call.
        env_name: short name or Gymnasium id (halfcheetah, hopper, walker2d).
        num_episodes: B, the episodes run in parallel; episode k starts from Gymnasium's
            ``reset(seed=seed + k)`` state, as in ``engine.evaluate.evaluate``.
        seed: seed of episode 0 (>= 0).
        max_episode_steps: time limit in environment steps (default: the registered one, 1,000).

    Returns:
        EvalResult with ``returns: [B]`` float64 (summed in the simulation precision, float32 by default),
        ``lengths: [B]`` int64, ``wall_s`` = seconds for resets, transfer and the episodes *without*
        compilation, and ``compile_s`` = seconds this call spent compiling (0 when the programs for this
        env, B, policy shape and precision were already compiled in this process).

    Raises:
        ValueError: ``actor`` not a TanhGaussianActor or not shaped for the env, an unsupported env,
            ``num_episodes < 1``, ``seed < 0`` or ``max_episode_steps < 1``.
    """
    spec = get_env_spec(env_name)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1; got {num_episodes}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1; got {max_episode_steps}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    t0 = time.perf_counter()
    params = actor_params(actor)
    runner, compiled = get_runner(spec.name, num_episodes, params)
    compile_s = runner.compile_s if compiled else 0.0
    batch = runner.init(*reset_states(spec.name, seed, num_episodes))
    batch = runner.run(params, batch, max_episode_steps or gymnasium.spec(spec.gym_id).max_episode_steps)
    returns = np.asarray(batch.returns, dtype=np.float64)  # waits for the device
    lengths = np.asarray(batch.lengths, dtype=np.int64)
    wall_s = time.perf_counter() - t0 - compile_s
    return EvalResult(spec.gym_id, returns, lengths, wall_s, compile_s, seed=seed)
