"""Evaluation throughput: the CPU backend (Gymnasium MuJoCo envs stepped in lockstep, torch policy)
against MJX (all episodes in one vmapped, compiled while_loop), in one run, at several batch sizes
(B = episodes run together), same policy (TanhGaussianActor 256x256), same env and episode length.

    pytest bench/test_eval_bench.py --benchmark-enable --benchmark-only
Sizes from the environment (defaults are small, for a CPU CI run):
    SIMLOOP_BENCH_EVAL_ENV      env short name (halfcheetah; HalfCheetah never terminates, so every
                                episode has exactly STEPS steps)
    SIMLOOP_BENCH_EVAL_STEPS    steps per episode (100; the GPU goal uses 1000)
    SIMLOOP_BENCH_EVAL_BATCHES  comma-separated batch sizes (4,32; the GPU goal uses 1000)
Each benchmark's extra_info holds env_steps_per_s (B * STEPS / median seconds); the MJX ones also hold
compile_s, the one-off lowering + compilation, which the timed rounds exclude (the warm-up call compiles).
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.conftest import bench_size, machine
from engine.envs import get_env_spec
from engine.evaluate import evaluate
from engine.nets import TanhGaussianActor

ENV = os.environ.get("SIMLOOP_BENCH_EVAL_ENV", "halfcheetah")
STEPS = int(bench_size("SIMLOOP_BENCH_EVAL_STEPS", 100, 20))
BATCHES = [int(b) for b in bench_size("SIMLOOP_BENCH_EVAL_BATCHES", "4,32", "4").split(",")]


@pytest.fixture(scope="module")
def actor() -> TanhGaussianActor:
    spec = get_env_spec(ENV)
    torch.manual_seed(0)
    return TanhGaussianActor(spec.obs_dim, spec.act_dim).eval()


def _report(benchmark, provider: str, num_episodes: int, result) -> None:
    benchmark.extra_info.update(provider=provider, machine=machine(), B=num_episodes, steps=STEPS)
    benchmark.extra_info["env_steps"] = int(result.lengths.sum())
    if benchmark.stats is not None:
        benchmark.extra_info["env_steps_per_s"] = result.lengths.sum() / benchmark.stats.stats.median


@pytest.mark.parametrize("num_episodes", BATCHES)
def test_eval_cpu(benchmark, actor, num_episodes):
    benchmark.group = f"eval {ENV} B={num_episodes} steps={STEPS}"  # providers side by side per B
    result = benchmark.pedantic(
        evaluate,
        args=(lambda o: actor.act(o, deterministic=True), ENV, num_episodes),
        kwargs=dict(seed=0, max_episode_steps=STEPS),
        rounds=3,
        iterations=1,
        warmup_rounds=1,  # the first call pays one-off costs (MuJoCo model loading, imports), like MJX's compile
    )
    assert result.lengths.shape == (num_episodes,)
    _report(benchmark, "cpu (gymnasium mujoco)", num_episodes, result)


@pytest.mark.parametrize("num_episodes", BATCHES)
def test_eval_mjx(benchmark, actor, num_episodes):
    jax = pytest.importorskip("jax")
    from engine.mjx_eval import evaluate_mjx

    benchmark.group = f"eval {ENV} B={num_episodes} steps={STEPS}"
    first = evaluate_mjx(actor, ENV, num_episodes, seed=0, max_episode_steps=STEPS)  # compiles
    result = benchmark.pedantic(
        evaluate_mjx, args=(actor, ENV, num_episodes), kwargs=dict(seed=0, max_episode_steps=STEPS), rounds=3
    )
    assert result.compile_s == 0.0 and result.lengths.shape == (num_episodes,)
    _report(benchmark, "mjx", num_episodes, result)
    benchmark.extra_info["compile_s"] = first.compile_s
    benchmark.extra_info["jax_device"] = str(jax.devices()[0].device_kind)
    benchmark.extra_info["precision"] = "float64" if jax.config.jax_enable_x64 else "float32"
