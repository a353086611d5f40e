"""Shared benchmark settings: sizes come from the environment so CI can run every benchmark
once at full size (``--benchmark-disable``) while ``pytest bench --benchmark-only`` times them."""

import os
import platform

import pytest
import torch


def machine() -> str:
    """CPU model, cores and torch threads, for the benchmark's extra_info and RESULTS.md."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


@pytest.fixture(scope="session")
def bench_n() -> int:
    """N: rollout start states (default 50,000, the MOPO rollout batch)."""
    return int(os.environ.get("SIMLOOP_BENCH_N", "50000"))
