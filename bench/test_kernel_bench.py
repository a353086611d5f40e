"""``kernels.rollout_step`` throughput per backend against this machine's own float32 matmul peak,
at MOPO's sizes: N=50,000 rows, E=7 members of 4x200 SiLU, HalfCheetah dims (D=17, A=6). The
providers and a large matmul are timed in one run, interleaved (``bench.conftest.time_interleaved``),
so load from other processes hits them alike.

    SIMLOOP_BENCH_THREADS=1 python -m pytest bench/test_kernel_bench.py --benchmark-enable --benchmark-only

extra_info: ``<provider>_transitions_per_s`` (rows per second of one step), ``<provider>_gflop_per_s``
(ensemble-forward FLOPs ``2 N E sum(in * out)`` per second; the epilogue is not counted),
``<provider>_fraction_of_peak`` (of ``matmul_peak_gflop_per_s``, a 2048^3 float32 ``torch.mm`` with
the same threads), ``<provider>_vs_reference``; the ``..._cpu`` variants use this process's CPU time
instead of the wall clock. Provider ``cpu_aten_silu`` is the cpu backend with ATen's ``F.silu`` instead
of the native AVX2 SiLU (``kernels/native.py``); ``native_silu`` says whether the native one ran.
"""

import os

import pytest
import torch

from bench.conftest import machine, time_interleaved
from engine.termination import termination_params
from kernels import EnsembleParams, native, rollout_step
from kernels.rollout_step_cpu import rollout_step_cpu

E, D, A, K, LAYERS = 7, 17, 6, 200, 4
PEAK_SIZE = 2048
"""Square float32 matmul for the peak: large enough for MKL's / cuBLAS's best kernel (4096 gives the same
GFLOP/s on the CPU; bench/RESULTS.md)."""
PEAK_CALLS = 4
"""Matmuls per timed peak call (~0.2 s each on one core), so one timed block lasts about as long as a step."""


def rounds(benchmark) -> int:
    """Timed blocks per provider: ``SIMLOOP_BENCH_ROUNDS`` (default 5); 1 when benchmarks are disabled (CI)."""
    return 1 if benchmark.disabled else int(os.environ.get("SIMLOOP_BENCH_ROUNDS", "5"))


def ensemble_flops(params: EnsembleParams, n: int) -> int:
    """Multiply-adds x 2 of the ensemble forward for n rows: ``2 n E sum_l(in_l * out_l)``."""
    return 2 * n * params.num_members * sum(w.shape[1] * w.shape[2] for w in params.weights)


def step_inputs(n: int, device: str):
    params = EnsembleParams.random(E, D, A, K, num_layers=LAYERS, seed=0, num_elites=5, device=device)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, D, generator=g)
    act = torch.rand(n, A, generator=g) * 2 - 1
    noise = torch.randn(n, D + 1, generator=g)
    member = params.elites.cpu()[torch.randint(5, (n,), generator=g)]
    term = termination_params("halfcheetah")
    args = tuple(t.to(device) for t in (obs, act, noise, member))
    return params, args, (term.obs_low.to(device), term.obs_high.to(device))


def report(benchmark, res: dict, flops: int, n: int, peak_flops: int, threads: int | None, device: str) -> None:
    """Figures of ``time_interleaved``'s result into extra_info (see the module docstring); on CUDA
    only the wall clock (the host's CPU time says nothing about the GPU)."""
    info = benchmark.extra_info
    info.update(machine=machine() if device == "cpu" else torch.cuda.get_device_name(), threads=threads, N=n, E=E, K=K)
    clocks = (("wall_s", ""), ("cpu_s", "_cpu")) if device == "cpu" else (("wall_s", ""),)
    for clock, suffix in clocks:
        peak = peak_flops / res["matmul_peak"][clock] / 1e9
        info[f"matmul_peak_gflop_per_s{suffix}"] = peak
        for name, t in res.items():
            if name == "matmul_peak":
                continue
            info[f"{name}_transitions_per_s{suffix}"] = n / t[clock]
            info[f"{name}_gflop_per_s{suffix}"] = flops / t[clock] / 1e9
            info[f"{name}_fraction_of_peak{suffix}"] = flops / t[clock] / 1e9 / peak
            if "reference" in res and name != "reference":
                info[f"{name}_vs_reference{suffix}"] = res["reference"][clock] / t[clock]


def test_rollout_step_cpu_throughput(benchmark, bench_n, bench_threads):
    params, args, box = step_inputs(bench_n, "cpu")
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    c = torch.empty(PEAK_SIZE, PEAK_SIZE)
    outs = {}

    def step(backend):
        return lambda: outs.__setitem__(backend, rollout_step(params, *args, 0.5, *box, backend=backend))

    fns = {
        "matmul_peak": lambda: [torch.mm(a, b, out=c) for _ in range(PEAK_CALLS)],
        "reference": step("reference"),
        "cpu": step("cpu"),
        # the same backend with ATen's F.silu instead of the native AVX2 one (kernels/native.py)
        "cpu_aten_silu": lambda: outs.__setitem__(
            "cpu_aten_silu", rollout_step_cpu(params, *args, 0.5, *box, native_silu=False)
        ),
    }
    if not benchmark.disabled:
        for fn in fns.values():  # warm-up: allocator, MKL's first-call setup
            fn()
    res = benchmark.pedantic(time_interleaved, args=(fns, rounds(benchmark), 1), rounds=1, iterations=1)
    report(
        benchmark, res, ensemble_flops(params, bench_n), bench_n, PEAK_CALLS * 2 * PEAK_SIZE**3, bench_threads, "cpu"
    )
    benchmark.extra_info["native_silu"] = native.native_status()[1]
    for name in ("cpu", "cpu_aten_silu"):
        torch.testing.assert_close(outs[name].next_obs, outs["reference"].next_obs, rtol=2e-5, atol=2e-5)


def test_rollout_step_triton_throughput(benchmark, bench_n):
    if not torch.cuda.is_available():
        pytest.skip("the triton backend is benchmarked on a CUDA device (the CPU interpreter is for tests only)")
    pytest.importorskip("triton")
    params, args, box = step_inputs(bench_n, "cuda")
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE, device="cuda"), torch.randn(PEAK_SIZE, PEAK_SIZE, device="cuda")
    c = torch.empty(PEAK_SIZE, PEAK_SIZE, device="cuda")
    calls = 20  # GPU steps are ~1 ms: time blocks of 20 calls, synchronised at the end of each call

    def synced(fn):
        def run():
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()

        return run

    tf32_before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the peak of IEEE float32, like the "triton" backend
    try:
        fns = {"matmul_peak": synced(lambda: torch.mm(a, b, out=c))}
        for backend in ("reference", "cpu", "triton", "triton-tf32"):
            fns[backend] = synced(lambda backend=backend: rollout_step(params, *args, 0.5, *box, backend=backend))
        for fn in fns.values():  # warm-up: compilation and autotuning
            fn()
        res = benchmark.pedantic(time_interleaved, args=(fns, rounds(benchmark), 1), rounds=1, iterations=1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
    res = {k: {clock: t / calls for clock, t in v.items()} for k, v in res.items()}
    report(benchmark, res, ensemble_flops(params, bench_n), bench_n, 2 * PEAK_SIZE**3, None, "cuda")
