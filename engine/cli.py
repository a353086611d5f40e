"""Command-line plumbing shared by the algorithm modules: preset selection on top of tyro,
and the short result table every run prints."""

from __future__ import annotations

from pathlib import Path

import tyro


def print_summary(summary: dict, run_dir: str | Path | None = None) -> None:
    """The short result table of a run."""
    rows = [
        ("dataset", summary["dataset"]),
        ("behaviour policy normalised score", f"{summary['behavior_normalized_score']:.1f}"),
        (
            f"{summary['algo'].upper()} normalised score",
            f"{summary['normalized_score']:.1f} ± {summary['normalized_score_std']:.1f} "
            f"({summary['eval_episodes']} episodes, after {summary['num_updates']:,} updates)",
        ),
        ("wall time", f"{summary['wall_s']:.0f} s"),
    ]
    if run_dir is not None:
        rows.append(("run directory", str(run_dir)))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


def _take(args: list[str], flag: str, takes_value: bool = True) -> str | bool | None:
    """Remove ``flag`` (and its value, also as ``flag=value``) from ``args``; return the value (or True)."""
    for i, a in enumerate(args):
        if a == flag:
            if not takes_value:
                del args[i]
                return True
            if i + 1 >= len(args):
                raise ValueError(f"{flag} needs a value")
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if takes_value and a.startswith(flag + "="):
            del args[i]
            return a.split("=", 1)[1]
    return None


def _peek(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (left in place), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _budget(args: list[str]) -> str | None:
    """The budget preset a command line names: ``--preset KEY`` (also ``--preset=KEY``), else ``"fast"`` for
    ``--fast``, else None."""
    named = _peek(args, "--preset")
    return named if named is not None else ("fast" if "--fast" in args else None)


def parse_cli(
    args: list[str],
    config_cls: type,
    presets: dict,
    budgets: dict,
    prog: str,
    description: str | None = None,
    algo: str | None = None,
    default_dataset: str | None = None,
) -> tuple[object, str | None]:
    """An algorithm's command line -> ``(config, resume directory or None)``.

    Without ``--resume``: ``engine.config.resolve`` (``--dataset``'s preset, then the budget preset named by
    ``--fast`` / ``--preset KEY``, then every other flag). With ``--resume DIR``: the config saved in
    ``DIR/checkpoint.pt``, then the flags (the trainer accepts only run-control fields there, such as a
    larger ``--num-updates``).

    Raises:
        ValueError: an unknown preset (lists the valid ones), ``--resume`` with a preset, a checkpoint of
            another algorithm.
        FileNotFoundError: ``--resume`` names a directory without ``checkpoint.pt``.
    """
    from engine import checkpoint
    from engine.config import from_dict, resolve

    args = list(args)
    resume = _take(args, "--resume")
    budget = _budget(args)
    _take(args, "--fast", takes_value=False)
    _take(args, "--preset")
    if resume is not None:
        if budget is not None:
            raise ValueError("--resume continues a run with its saved config; it takes no --fast/--preset")
        ckpt_path = Path(resume) / "checkpoint.pt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint.pt in {resume}")
        saved = from_dict(config_cls, checkpoint.load(ckpt_path, algo)["config"])
        cfg = tyro.cli(config_cls, args=args, default=saved, prog=prog, description=description)
        return cfg, resume
    cfg = resolve(
        config_cls,
        presets,
        budgets,
        dataset=_peek(args, "--dataset"),
        budget=budget,
        overrides=args,
        default_dataset=default_dataset,
        prog=prog,
        description=description,
    )
    return cfg, None


def run_cli(module, argv: list[str] | None = None) -> dict:
    """The ``__main__`` of an algorithm module: parse (``parse_cli``), ``train(cfg, resume)``, print the table.

    ``module`` provides ``ALGO`` (its name), ``Config``, ``PRESETS``, ``BUDGETS``, ``train`` and its docstring,
    and may provide ``BUDGET_NOTES`` (budget preset name -> text): a run of that preset prints the text before it
    trains and again under its result table (say, that ``--fast`` checks the pipeline and which recorded budget
    shows learning).
    """
    import sys

    from engine.data import DEFAULT_DATASET

    prog = f"python -m algos.{module.ALGO}"
    args = sys.argv[1:] if argv is None else list(argv)
    note = getattr(module, "BUDGET_NOTES", {}).get(_budget(args)) if _peek(args, "--resume") is None else None
    if note:
        print(note)
    try:
        cfg, resume = parse_cli(
            args,
            module.Config,
            module.PRESETS,
            module.BUDGETS,
            prog,
            module.__doc__,
            algo=module.ALGO,
            default_dataset=DEFAULT_DATASET,
        )
        summary = module.train(cfg, resume)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        if argv is not None:  # called as a library: let the caller handle it
            raise
        sys.exit(f"{prog}: error: {e}")  # bad input from the command line: the message, status 1
    print_summary(summary, summary["run_dir"])
    if note:
        print(note)
    return summary
