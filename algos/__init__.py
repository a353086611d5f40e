"""The algorithms: one module each (Config, PRESETS, BUDGETS, the algorithm's own loss and update, ``train``,
``__main__``), and the one rule that resolves a run's config, shared by every entry point."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

ALGOS = {"mopo": "algos.mopo", "combo": "algos.combo", "armor": "algos.armor", "bc": "algos.bc"}
"""Algorithm name -> module with ``ALGO``, ``Config``, ``PRESETS``, ``BUDGETS`` and ``train(cfg, resume=None)``."""


def algo_module(algo: str) -> ModuleType:
    """The algorithm's module. Raises ValueError for an unknown name (lists the valid ones)."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    return importlib.import_module(ALGOS[algo])


def resolve_config(algo: str, dataset: str | None = None, preset: str | None = None, overrides: Sequence[str] = ()):
    """The config of a run of ``algo``: ``dataset``'s preset, then the budget preset ``preset`` (``"fast"``),
    then ``overrides`` (command-line flags, ``["--rollout.penalty-coef", "1.0"]``, parsed by tyro). The same rule
    as ``python -m algos.<algo> [--dataset X] [--fast] [flags]`` (``engine.config.resolve``).

    Raises:
        ValueError: unknown algorithm or preset (lists the valid ones), bad values.
        SystemExit: a flag tyro cannot parse.
    """
    from engine.config import resolve
    from engine.data import DEFAULT_DATASET

    mod = algo_module(algo)
    return resolve(mod.Config, mod.PRESETS, mod.BUDGETS, dataset, preset, overrides, default_dataset=DEFAULT_DATASET)
