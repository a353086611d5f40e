"""The sweep's grid: its Config, ``--set`` overrides, the trials (algorithm x dataset x seed x override values,
each with its run directory) and each trial's algorithm Config, resolved by ``algos.resolve_config``, the rule
of every entry point, with the overrides given as that algorithm's command-line flags (parsed by tyro)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from algos import algo_module, resolve_config
from engine.data import DEFAULT_DATASET

AlgoName = Literal["mopo", "combo", "armor", "bc"]


@dataclass(frozen=True)
class Config:
    """A sweep: every algorithm x dataset x seed x combination of override values is one trial."""

    algos: tuple[AlgoName, ...] = ("mopo",)
    """Algorithm modules to run (``algos/<name>.py``)."""
    datasets: tuple[str, ...] = (DEFAULT_DATASET,)
    """Minari dataset ids; a missing ``simloop`` id is generated once, before its trials start."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each is one trial per algorithm, dataset and override combination."""
    preset: Literal["dataset", "fast"] = "dataset"
    """``dataset``: each dataset's own preset (full budget). ``fast``: that preset with the algorithm's
    ``--fast`` budget (``python -m algos.<name> --fast --dataset X`` resolves to the same config)."""
    set: tuple[str, ...] = ()
    """Config overrides ``KEY=V1[,V2...]`` (dotted keys for nested fields: ``rollout.penalty_coef=0.5,1.0``;
    tuples space-separated: ``"dynamics.weight_decays=1e-5 1e-5 1e-5"``; ``none`` for None). Several values
    make a grid axis. A key applies to every selected algorithm whose Config has it and must exist in one."""
    sweep_dir: str = "runs/sweep"
    """Directory of the trials and the results; rerunning with the same one resumes the sweep."""
    address: str | None = None
    """Ray cluster to join (``auto`` or ``host:port``); None starts a local Ray instance."""
    num_cpus: int | None = None
    """CPUs of the local Ray instance (default: all of this machine's); ignored with ``--address``."""
    cpus_per_trial: int = 1
    """CPUs Ray reserves per trial; also the trial's torch threads."""
    gpus_per_trial: float = 0.0
    """GPUs Ray reserves per trial (use with ``--set device=cuda``)."""
    dynamics_per_seed: bool = True
    """Each seed fits its own dynamics model (it follows the trial's seed, as in every run), so the spread
    over seeds includes the model's; off, all seeds of a dataset share the seed-0 model (faster)."""
    max_retries: int = 0
    """Ray retries of a trial whose worker process died (out of memory, crash); a retry resumes from
    the trial's checkpoint. Python exceptions are never retried."""
    plots: bool = True
    """Write the learning-curve and throughput plots with the table."""
    benchmark_json: str | None = None
    """pytest-benchmark JSON for the throughput plot; default: the newest under ./.benchmarks, if any."""

    def __post_init__(self):
        bad = []
        if not self.algos or not self.datasets or not self.seeds:
            bad.append("--algos, --datasets and --seeds each need at least one value")
        if self.cpus_per_trial < 1 or self.gpus_per_trial < 0 or self.max_retries < 0:
            bad.append("cpus_per_trial must be >= 1, gpus_per_trial and max_retries >= 0")
        if self.num_cpus is not None and self.num_cpus < self.cpus_per_trial:
            bad.append(f"num_cpus={self.num_cpus} is less than cpus_per_trial={self.cpus_per_trial}")
        if bad:
            raise ValueError("; ".join(bad))


# --- config overrides ---------------------------------------------------------------------------


def parse_set(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["a.b=1,2", "c=x"]`` -> ``[("a.b", ["1", "2"]), ("c", ["x"])]`` (hyphens in keys become underscores).

    Raises:
        ValueError: an item without ``=``, an empty key or value, a key given twice.
    """
    out: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        vals = [v.strip() for v in values.split(",")]
        if not sep or not key or any(not v for v in vals):
            raise ValueError(f"bad --set item {item!r}: expected KEY=VALUE or KEY=V1,V2,... (no empty values)")
        if key in {k for k, _ in out}:
            raise ValueError(f"--set key {key!r} given twice; list its values in one item: {key}=V1,V2")
        out.append((key, vals))
    return out


def field_type(cls: type, path: str):
    """Type of the field at dotted ``path`` of dataclass ``cls``, or None if there is no such field."""
    tp = cls
    for part in path.split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        if part not in {f.name for f in dataclasses.fields(tp)}:
            return None
        tp = typing.get_type_hints(tp)[part]
    return tp


def override_flags(key: str, text: str, tp) -> list[str]:
    """A ``--set`` value as the command-line flags tyro parses for the field of type ``tp`` at dotted ``key``:
    ``rollout.penalty_coef=0.5`` -> ``["--rollout.penalty-coef", "0.5"]``; bools as ``--key``/``--no-key``;
    tuples space-separated; ``none`` as None."""
    head, _, name = key.rpartition(".")
    prefix = "--" + (head + "." if head else "")
    name = name.replace("_", "-")
    if tp is bool and text.lower() in ("true", "false"):
        return [prefix + ("" if text.lower() == "true" else "no-") + name]
    return [prefix + name, *("None" if v.lower() in ("none", "null") else v for v in text.split())]


# --- the grid ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One slot of the grid."""

    algo: str
    dataset: str
    seed: int
    overrides: tuple[tuple[str, str], ...]
    """The ``--set`` values that apply to this algorithm, as typed."""
    variant: str
    """The overrides that vary in the grid, ``key=value, ...`` ("" when none): a row of the table."""
    out: Path

    @property
    def label(self) -> str:
        """The trial for the console and error messages: ``algo dataset seed k [variant]``."""
        return " ".join(x for x in (self.algo, self.dataset, f"seed {self.seed}", self.variant) if x)

    def spec(self, cfg: Config) -> dict:
        """What ``trial.json`` records: the settings that make this trial's result."""
        return {
            "algo": self.algo,
            "dataset": self.dataset,
            "seed": self.seed,
            "preset": cfg.preset,
            "overrides": dict(self.overrides),
            "variant": self.variant,
            "dynamics_per_seed": cfg.dynamics_per_seed,
        }


def _dir_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)


def expand_grid(cfg: Config) -> list[Trial]:
    """Every trial of the sweep, seeds outermost (so the first trials to finish cover every algorithm).

    Raises:
        ValueError: unknown algorithm, bad ``--set`` syntax, or a ``--set`` key no selected algorithm has.
    """
    overrides = parse_set(cfg.set)
    config_cls = {algo: algo_module(algo).Config for algo in cfg.algos}
    for key, _ in overrides:
        if not any(field_type(c, key) is not None for c in config_cls.values()):
            fields = sorted({f.name for c in config_cls.values() for f in dataclasses.fields(c)})
            raise ValueError(
                f"--set {key}: no field {key!r} in the Config of {', '.join(cfg.algos)}; "
                f"fields: {', '.join(fields)} (nested fields with dots, e.g. rollout.penalty_coef)"
            )
    root = Path(cfg.sweep_dir).resolve()
    trials: list[Trial] = []
    seen: set[Path] = set()
    for seed, dataset, algo in itertools.product(cfg.seeds, cfg.datasets, cfg.algos):
        applicable = [(k, vals) for k, vals in overrides if field_type(config_cls[algo], k) is not None]
        for combo in itertools.product(*[vals for _, vals in applicable]):
            chosen = tuple((k, v) for (k, _), v in zip(applicable, combo))
            varying = [(k, v) for (k, vals), (_, v) in zip(applicable, chosen) if len(vals) > 1]
            name = f"seed{seed}" + "".join(f"_{_dir_part(f'{k}={v}')}" for k, v in varying)
            out = root / algo / dataset / name
            if out not in seen:
                seen.add(out)
                variant = ", ".join(f"{k}={v}" for k, v in varying)
                trials.append(Trial(algo, dataset, seed, chosen, variant, out))
    return trials


def build_config(trial: Trial, cfg: Config):
    """The trial's algorithm Config, by the rule of every entry point (``algos.resolve_config``): the dataset's
    preset, the sweep's budget preset, then as flags: seed, out, threads, the shared model (without
    ``dynamics_per_seed``), and the trial's overrides.

    Raises:
        ValueError: an override value of the wrong type, or a combination the Config rejects.
    """
    config_cls = algo_module(trial.algo).Config
    flags = ["--seed", str(trial.seed), "--out", str(trial.out), "--num-threads", str(cfg.cpus_per_trial)]
    flags.append("--no-progress")  # progress bars of parallel trials interleave in the driver's console
    if not cfg.dynamics_per_seed and field_type(config_cls, "dynamics") is not None:
        flags += ["--dynamics.seed", "0"]
    for key, text in trial.overrides:
        flags += override_flags(key, text, field_type(config_cls, key))
    preset = None if cfg.preset == "dataset" else cfg.preset
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            return resolve_config(trial.algo, trial.dataset, preset, flags)
    except SystemExit as e:  # tyro's message, without its box drawing
        text = " ".join(re.sub(r"[\u2500-\u257f]", " ", message.getvalue()).split())
        raise ValueError(f"{trial.label}: bad --set value(s) {dict(trial.overrides)}: {text}") from e
