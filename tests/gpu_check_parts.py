"""Stand-in parts for tests/test_gpu_check.py, importable by ``bench.gpu_check``'s child processes (no pytest import,
so a child starts fast)."""

import time

from bench import gpu_check


def part_ok() -> dict:
    return {"rows_per_s": 1.5e7}


def part_raises() -> dict:
    raise RuntimeError("no CUDA device")


def part_sleeps() -> dict:
    gpu_check._write_partial({"measured": 1})
    time.sleep(120)
    return {}
