"""d3rlpy's IQL or TD3+BC on a simloop dataset, with the settings of d3rlpy's own D4RL reproduction scripts, fed
an ``.npz`` from ``python -m peers.export_data``; writes TorchScript policy snapshots (d3rlpy's own
``save_policy``) that ``python -m peers.score`` evaluates with simloop's evaluator.

Peer code: d3rlpy 2.8.1 from PyPI, unmodified, in its own venv (``/work/peers/d3rlpy-venv``; it pins
gymnasium 1.0.0; setup in peers/README.md). This script runs with that venv's python and does not import
simloop.

Settings: ``reproductions/offline/iql.py`` and ``reproductions/offline/td3_plus_bc.py`` of github
takuseno/d3rlpy at tag v2.8.1 (commit 4e7bba7a4c896e5e9f36774dce386f887841bb90; unchanged on master up to
38c34b6f, 2025-09-11):

- IQL: actor and critic lr 3e-4, batch 256, expectile 0.7, weight_temp 3.0, max_weight 100, rewards scaled by
  ``ReturnBasedRewardScaler(multiplier=1000)`` (r * 1000 / (max - min episode return in the data)), actor Adam
  with cosine annealing; no observation scaler. The script anneals over ``T_max=500000`` = its ``n_steps``;
  here ``T_max`` = ``--num-updates`` unless ``--cosine-t-max`` is given (500000 for the script's literal value).
- TD3+BC: actor and critic lr 3e-4, batch 256, target smoothing sigma 0.2 / clip 0.5, alpha 2.5, actor updated
  every 2 steps, ``StandardObservationScaler`` (mean / std of the data's observations).
- both: 2 critics of 256x256 (d3rlpy's defaults), gamma 0.99, tau 0.005, 1,000 updates per epoch, seeded with
  ``d3rlpy.seed``. The scripts run 500,000 updates; the number here is ``--num-updates``.

The data: ``MDPDataset(obs, act, rew, terminal, timeout)``; d3rlpy rebuilds episodes from the two flags and takes
``next_obs`` from the following row, so the last transition of each timed-out episode is not trained on (as
for D4RL). No environment evaluation during training. Snapshots: ``policies/step_XXXXXXX.pt`` from
``save_policy`` (it traces observation scaler -> greedy action ``tanh(mu)`` -> action scaler (none here)), checked
against ``algo.predict`` on dataset rows; d3rlpy's own logs and ``model_<step>.d3`` parameters go to
``d3rlpy_logs/``.

Resuming (ours; d3rlpy's ``fitter`` always starts at epoch 1): at every snapshot but the last the script writes
``resume_model_<step>.d3`` (d3rlpy's ``save_model``: networks, targets, optimisers and their lr schedules) and
``resume.pt`` (the update count, python/numpy/torch random states; d3rlpy samples batches with numpy's global
generator); ``--resume RUN_DIR`` rebuilds the algorithm from ``peer_run.json``'s arguments, fits its scalers on
the data again (deterministic), loads both, sets ``set_grad_step`` and calls ``fitter`` for the remaining updates
(its logs go to a new ``d3rlpy_logs`` experiment, ``<algo>_seed<k>_resumed<step>``). A resumed run must find the
data it started on (``peer_run.json`` keeps its SHA-256; ``peer_common.check_same_data``): another machine's export
of the same dataset id is refused before anything is built.

    cd /work/main && OMP_NUM_THREADS=1 /work/peers/d3rlpy-venv/bin/python -m peers.d3rlpy_run \\
        --algo iql --data /work/peers/data/halfcheetah-medium.npz --seed 0 --num-updates 200000 \\
        --out runs/peers/d3rlpy-iql/halfcheetah-medium/seed0
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

from peers.peer_common import (
    RESUME_FILE,
    PeerRecord,
    check_same_data,
    check_snapshot,
    data_sha256,
    load_dataset,
    new_run_dir,
    resume_args,
    rng_state,
    save_atomic,
    set_rng_state,
    set_threads,
    snapshot_path,
)

SOURCE = {
    "iql": "d3rlpy reproductions/offline/iql.py at tag v2.8.1 (4e7bba7a4c896e5e9f36774dce386f887841bb90)",
    "td3plusbc": "d3rlpy reproductions/offline/td3_plus_bc.py at tag v2.8.1 (4e7bba7a4c896e5e9f36774dce386f887841bb90)",
}


@dataclass(frozen=True)
class Args:
    """d3rlpy IQL / TD3+BC on a dataset exported by peers.export_data."""

    algo: Literal["iql", "td3plusbc"] = "iql"
    """Which reproduction script's settings."""
    data: Path | None = None
    """The .npz from `python -m peers.export_data` (required unless --resume)."""
    out: Path | None = None
    """Run directory (must not hold a peer run yet; required unless --resume)."""
    resume: Path | None = None
    """A run directory with ``resume.pt``: continue that run with its own arguments (the others are ignored)."""
    seed: int = 0
    """d3rlpy.seed(seed): python, numpy and torch."""
    num_updates: int = 200_000
    """Gradient updates (fit's n_steps)."""
    steps_per_epoch: int = 1000
    """fit's n_steps_per_epoch (the scripts' value)."""
    snapshot_interval: int = 10_000
    """Save a TorchScript snapshot every this many updates (a multiple of steps_per_epoch); the last one always."""
    cosine_t_max: int | None = None
    """IQL's actor cosine schedule length; None: num_updates."""
    num_threads: int = 1
    """torch threads."""
    progress: bool = False
    """Show d3rlpy's per-epoch tqdm bars."""


def make_algo(args: Args):
    """The reproduction script's config, created on the CPU. Returns ``(algo, settings)``: the settings as the
    script writes them (d3rlpy's full config, defaults included, is its log's ``params.json``)."""
    import d3rlpy

    settings: dict = dict(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256)
    if args.algo == "iql":
        t_max = args.num_updates if args.cosine_t_max is None else args.cosine_t_max
        settings.update(weight_temp=3.0, max_weight=100.0, expectile=0.7)
        config = d3rlpy.algos.IQLConfig(
            **settings,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=t_max),
            ),
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        )
        settings.update(actor_lr_schedule=f"cosine, T_max={t_max}", reward_scaler="ReturnBasedRewardScaler(1000)")
    else:
        settings.update(target_smoothing_sigma=0.2, target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2)
        config = d3rlpy.algos.TD3PlusBCConfig(
            **settings, observation_scaler=d3rlpy.preprocessing.StandardObservationScaler()
        )
        settings.update(observation_scaler="StandardObservationScaler")
    settings.update(
        source=SOURCE[args.algo],
        n_steps=args.num_updates,
        n_steps_per_epoch=args.steps_per_epoch,
        defaults="d3rlpy's: 2 critics, 256x256 ReLU encoders, gamma 0.99, tau 0.005",
    )
    return config.create(device="cpu:0"), settings


def _drop_resume_models(run_dir: Path, keep: str | None) -> None:
    """Delete ``resume_model_*.d3`` but ``keep`` (the one ``resume.pt`` names)."""
    for path in run_dir.glob("resume_model_*.d3"):
        if path.name != keep:
            path.unlink()


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv)
    resumed = None
    if args.resume is not None:
        resumed = resume_args(args.resume)
        saved = dict(resumed["extra"]["args"], resume=None, out=str(args.resume))  # the run may have been moved
        args = Args(**{k: Path(v) if k in ("data", "out") else v for k, v in saved.items()})
    elif args.data is None or args.out is None:
        raise ValueError("--data and --out are required (or --resume RUN_DIR)")
    t0 = time.perf_counter()
    if args.num_updates < 1 or args.snapshot_interval < 1:
        raise ValueError("num_updates and snapshot_interval must be >= 1")
    if args.num_updates % args.steps_per_epoch or args.snapshot_interval % args.steps_per_epoch:
        raise ValueError(
            f"num_updates ({args.num_updates}) and snapshot_interval ({args.snapshot_interval}) must be multiples "
            f"of steps_per_epoch ({args.steps_per_epoch})"
        )
    set_threads(args.num_threads)
    data = load_dataset(args.data)
    digest = data_sha256(data)
    if resumed is not None:  # before anything is built, trained or saved
        resumed = check_same_data(resumed, digest)
    run_dir = new_run_dir(args.out) if resumed is None else Path(args.out)

    import d3rlpy
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    d3rlpy.seed(args.seed)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=data.obs,
        actions=data.act,
        rewards=data.rew,
        terminals=data.terminal,
        timeouts=data.timeout,
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )
    algo, settings = make_algo(args)
    done = 0
    if resumed is not None:
        record = PeerRecord(**resumed)
        t0 = time.perf_counter() - record.wall_s
        state = torch.load(run_dir / RESUME_FILE, weights_only=True)
        done = int(state["step"])
        build_scalers_with_transition_picker(algo, dataset)  # fitted on the data, as fitter does (deterministic)
        algo.build_with_dataset(dataset)
        algo.load_model(str(run_dir / state["model_file"]))
        algo.set_grad_step(int(state["grad_step"]))
        set_rng_state(state["rng"])
        record.mark_resumed(run_dir, done)
    else:
        record = PeerRecord(
            algo=f"d3rlpy-{args.algo}",
            dataset=data.dataset_id,
            env=data.env,
            seed=args.seed,
            num_updates=args.num_updates,
            behavior_normalized_score=data.behavior_normalized_score,
            code={
                "library": "d3rlpy",
                "repository": "https://github.com/takuseno/d3rlpy",
                "version": d3rlpy.__version__,
            },
            settings=settings,
            data_file=str(Path(args.data).resolve()),
            torch_threads=args.num_threads,
            extra={
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
                "data_sha256": digest,
                "transitions_trained_on": dataset.transition_count,
                "episodes": len(dataset.episodes),
            },
        )
    record.write(run_dir)
    obs_check = data.obs[np.random.default_rng(0).choice(len(data.obs), 7, replace=False)]
    t_updates = time.perf_counter() - (record.phases_s.get("updates", 0.0) if resumed else 0.0)
    fitter = algo.fitter(
        dataset,
        n_steps=args.num_updates - done,
        n_steps_per_epoch=args.steps_per_epoch,
        experiment_name=f"{args.algo}_seed{args.seed}" + (f"_resumed{done}" if done else ""),
        with_timestamp=False,
        logger_adapter=d3rlpy.logging.FileAdapterFactory(root_dir=str(run_dir / "d3rlpy_logs")),
        show_progress=args.progress,
        save_interval=args.snapshot_interval // args.steps_per_epoch,
    )
    for epoch, _ in fitter:
        step = done + epoch * args.steps_per_epoch
        if step % args.snapshot_interval and step != args.num_updates:
            continue
        path = snapshot_path(run_dir, step)
        algo.save_policy(str(path))
        check_snapshot(path, lambda x: algo.predict(x.numpy()), obs_check)
        scaler = algo.config.reward_scaler
        if scaler is not None and "reward_scaler" not in record.extra:
            record.extra["reward_scaler"] = {"return_min": scaler.return_min, "return_max": scaler.return_max}
        record.add_snapshot(run_dir, step, path, t0, t_updates)
        if step < args.num_updates:  # after the record: a resume drops the record's later snapshots
            model_file = f"resume_model_{step:07d}.d3"
            algo.save_model(str(run_dir / model_file))
            state = {"step": step, "grad_step": algo.grad_step, "model_file": model_file, "rng": rng_state()}
            save_atomic(state, run_dir / RESUME_FILE)
            _drop_resume_models(run_dir, keep=model_file)
    (run_dir / RESUME_FILE).unlink(missing_ok=True)  # finished: the snapshots are what is kept
    _drop_resume_models(run_dir, keep=None)
    record.finished = True
    record.wall_s = time.perf_counter() - t0
    record.write(run_dir)
    print(f"done: {run_dir}, {record.updates_done} updates, {record.wall_s:.0f} s", flush=True)
    return asdict(record)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
