"""Dynamics training speed: ``EnsembleDynamics`` (all members in one batched step, fused Adam with the
L2 decay inside it) against a plain per-member loop (``bench/plain_dynamics.py``: 7 separate
``nn.Module`` MLPs, each with its own forward, backward and Adam per minibatch), at MOPO's sizes:
HalfCheetah dims (D=17, A=6), E=7 members of 4x200 SiLU, batch 256. Both in one run.

    SIMLOOP_BENCH_THREADS=1 pytest bench/test_dynamics_bench.py --benchmark-enable --benchmark-only

- ``test_dynamics_step_throughput``: minibatch steps/s (every member one minibatch), interleaved
  blocks, ``SIMLOOP_BENCH_DYN_STEPS`` steps each (default 100; two blocks with ``--benchmark-disable``,
  as in CI); extra_info also gives the seconds per epoch this implies on the 1M-transition
  ``simloop/halfcheetah/medium-v0``.
- ``test_dynamics_time_to_early_stop``: ``fit`` until the early stop (patience 5, 1% improvement) on
  ``SIMLOOP_BENCH_DYN_N`` transitions drawn at random (default 2,000; 0 = the whole dataset), at most
  ``SIMLOOP_BENCH_DYN_MAX_EPOCHS`` epochs (default 10 to keep CI short; 0 = no cap): epochs, seconds
  and seconds per epoch of both (extra_info ``stopped_early`` says whether the cap was reached).

The data is ``simloop/halfcheetah/medium-v0`` when it has been generated on this machine, otherwise a
random smooth system of the same dims (extra_info ``data`` says which).
"""

import math
import os

import pytest
import torch

from bench.conftest import bench_size, machine, time_interleaved
from bench.plain_dynamics import PlainEnsemble
from engine.batch import Batch
from engine.data import load
from engine.dynamics import DynamicsConfig, EnsembleDynamics, targets_of

D, A = 17, 6
DATASET = "simloop/halfcheetah/medium-v0"
FULL_SIZE = 1_000_000
"""Transitions of ``DATASET``, for the seconds per epoch at full size."""
BLOCK = 10
"""Minibatch steps per timed block."""


def random_system(n: int, seed: int = 0) -> Batch:
    """``n`` transitions of a fixed random smooth system with HalfCheetah dims (a learnable stand-in
    for the dataset): ``[delta obs, reward] = 0.1 tanh([s, a] W1) W2`` plus 1% noise."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(D + A, 64, generator=g) / (D + A) ** 0.5
    w2 = torch.randn(64, D + 1, generator=g) / 8
    obs = torch.randn(n, D, generator=g)
    act = torch.rand(n, A, generator=g) * 2 - 1
    out = torch.tanh(torch.cat([obs, act], -1) @ w1) @ w2 + 0.01 * torch.randn(n, D + 1, generator=g)
    return Batch(obs, act, out[:, -1], obs + 0.1 * out[:, :D], torch.zeros(n))


@pytest.fixture(scope="module")
def dynamics_data() -> tuple[Batch, str]:
    """``(data, description)``: ``SIMLOOP_BENCH_DYN_N`` random transitions of the dataset, or of a random system."""
    n = int(os.environ.get("SIMLOOP_BENCH_DYN_N", "2000"))
    try:
        full = load(DATASET, generate_missing=False).as_batch()
    except Exception as e:  # noqa: BLE001 - not generated here (or unreadable): say so, use random data
        return random_system(n or FULL_SIZE), f"random smooth system, D={D}, A={A} ({DATASET} not loaded: {e})"
    if not n:
        return full, DATASET
    return full.index(torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:n]), DATASET


def test_dynamics_step_throughput(benchmark, bench_threads, dynamics_data):
    data, source = dynamics_data
    cfg = DynamicsConfig()
    steps = int(bench_size("SIMLOOP_BENCH_DYN_STEPS", 100, 10))
    e, b = cfg.num_members, cfg.batch_size
    x, y = torch.cat([data.obs, data.act], -1), targets_of(data)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    g = torch.Generator().manual_seed(0)
    sim = EnsembleDynamics(D, A, cfg)
    opt = sim.make_optimizer()
    plain = PlainEnsemble(D, A, cfg)

    def minibatch():  # each member its own rows, as in fit: [E, B, ...]
        idx = torch.randint(x.shape[0], (e, b), generator=g)
        return x[idx], y[idx]

    fns = {"simloop": lambda: sim.train_step(opt, *minibatch()), "plain": lambda: plain.train_step(*minibatch())}
    for fn in fns.values():
        fn()
    steps = steps if not benchmark.disabled else min(steps, 2 * BLOCK)
    res = benchmark.pedantic(time_interleaved, args=(fns, steps, BLOCK), rounds=1, iterations=1)
    benchmark.extra_info.update(machine=machine(), threads=bench_threads, data=source, steps=steps)
    steps_per_epoch = (FULL_SIZE - cfg.max_holdout) // b
    for name, t in res.items():
        benchmark.extra_info[f"{name}_steps_per_s"] = 1.0 / t["wall_s"]
        benchmark.extra_info[f"{name}_steps_per_s_cpu"] = 1.0 / t["cpu_s"]
        benchmark.extra_info[f"{name}_epoch_s_at_1M"] = steps_per_epoch * t["wall_s"]
    benchmark.extra_info["ratio"] = res["plain"]["wall_s"] / res["simloop"]["wall_s"]
    benchmark.extra_info["ratio_cpu"] = res["plain"]["cpu_s"] / res["simloop"]["cpu_s"]


def test_dynamics_time_to_early_stop(benchmark, bench_threads, dynamics_data):
    data, source = dynamics_data
    cfg = DynamicsConfig(max_epochs=int(bench_size("SIMLOOP_BENCH_DYN_MAX_EPOCHS", 10, 2)) or None)

    def fit_both():
        sim = EnsembleDynamics(D, A, cfg)
        sim_metrics = sim.fit(data, progress=False)
        x = torch.cat([data.obs, data.act], -1)
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
        plain = PlainEnsemble(D, A, cfg)
        return sim_metrics, plain.fit(x, targets_of(data), max_epochs=cfg.max_epochs)

    sim_m, plain_m = benchmark.pedantic(fit_both, rounds=1, iterations=1)
    info = benchmark.extra_info
    info.update(machine=machine(), threads=bench_threads, data=source, transitions=len(data), max_epochs=cfg.max_epochs)
    for name, m in (("simloop", sim_m), ("plain", plain_m)):
        info[f"{name}_epochs"] = m["dynamics/epochs"]
        info[f"{name}_stopped_early"] = cfg.max_epochs is None or m["dynamics/epochs"] < cfg.max_epochs
        info[f"{name}_train_s"] = m["dynamics/train_s"]
        info[f"{name}_epoch_s"] = m["dynamics/train_s"] / m["dynamics/epochs"]
    info["epoch_ratio"] = info["plain_epoch_s"] / info["simloop_epoch_s"]
    assert math.isfinite(sim_m["dynamics/holdout_mse"])
