"""Shared benchmark settings. Sizes come from ``SIMLOOP_BENCH_*`` environment variables; without
them, a benchmarking run (``pytest bench --benchmark-enable --benchmark-only``) uses the full
sizes the figures in RESULTS.md were taken at, and a test run (``--benchmark-disable``, the
default in pyproject.toml, as CI runs it) uses small sizes, so every benchmark body still runs
once, end to end, in seconds."""

import os
import statistics
import time
from collections.abc import Callable

import pytest
import torch

from engine.logger import machine_info

QUICK = False
"""True when benchmarks are disabled (a test run): ``bench_size`` then returns the quick sizes."""


def pytest_configure(config):
    global QUICK
    QUICK = bool(config.getoption("benchmark_disable", False)) and not config.getoption("benchmark_enable", False)


def bench_size(env_var: str, full: int | str, quick: int | str) -> str:
    """``$env_var`` if set, else ``quick`` in a test run, else ``full`` (as a string, for env-style parsing)."""
    return os.environ.get(env_var, str(quick if QUICK else full))


def machine() -> str:
    """CPU model, cores and torch threads, for the benchmark's extra_info and RESULTS.md."""
    threads = torch.get_num_threads()
    return f"{machine_info()['cpu']}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads)"


@pytest.fixture(scope="session")
def bench_n() -> int:
    """N: rollout start states (default 50,000, the MOPO rollout batch)."""
    return int(bench_size("SIMLOOP_BENCH_N", 50_000, 2_000))


@pytest.fixture(scope="session")
def bench_updates() -> int:
    """Updates timed per provider in the update and MOPO-epoch benchmarks (default 1,000, one MOPO epoch)."""
    return int(bench_size("SIMLOOP_BENCH_UPDATES", 1_000, 20))


@pytest.fixture
def bench_threads():
    """torch intra-op threads for the benchmark (``SIMLOOP_BENCH_THREADS``, default 1: one core, the
    figure least disturbed by other work on the machine); restored afterwards."""
    before = torch.get_num_threads()
    threads = int(os.environ.get("SIMLOOP_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    yield threads
    torch.set_num_threads(before)


def time_interleaved(fns: dict[str, Callable[[], object]], num_calls: int, block: int) -> dict[str, dict[str, float]]:
    """Time ``num_calls`` calls of every provider in ``fns``, in blocks of ``block`` calls taken in turn
    (the order reversed every other round), so that other load on the machine hits all of them alike.

    Returns, per provider, the median over blocks of the seconds per call by the wall clock
    (``wall_s``) and by this process's CPU time (``cpu_s``: all threads together; with one thread it
    leaves out the time other processes held the core).
    """
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(max(1, num_calls // block)):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = fns[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(block):
                fn()
            wall[name].append((time.perf_counter() - w0) / block)
            cpu[name].append((time.process_time() - c0) / block)
    return {k: {"wall_s": statistics.median(wall[k]), "cpu_s": statistics.median(cpu[k])} for k in names}
