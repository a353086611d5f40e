"""OfflineRL-Kit's MOPO on a simloop dataset: its own dynamics training, policy, buffers and trainer, wired as
its run script wires them, fed an ``.npz`` from ``python -m peers.export_data``; writes TorchScript
policy snapshots that ``python -m peers.score`` evaluates with simloop's evaluator.

Peer code: OfflineRL-Kit (github yihaosun1124/OfflineRL-Kit) at commit
e3ce69793766d02660217d4dfc0af4693a5531bd (2025-07-11), unmodified, installed from its public repository in its
own venv (``/work/peers/offlinerlkit-venv``, source on ``PYTHONPATH``; setup in peers/README.md). This
script runs with that venv's python and does not import simloop.

Wiring and settings: ``run_example/run_mopo.py`` at that commit, ``train()``: 2x256 SAC actor (TanhDiagGaussian,
unbounded mean, state-dependent sigma) and critics, actor lr 1e-4 with cosine annealing over the run's epochs,
critic lr 3e-4, gamma 0.99, tau 0.005, automatic alpha (target entropy -A, lr 1e-4); ensemble of 7 (5 elites),
4x200 Swish, weight decays (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), lr 1e-3, trained by ``EnsembleDynamics.train``
with ``max_epochs_since_update=5`` (its own early stopping; no epoch cap unless ``--dynamics-max-epochs``);
rollouts of 50,000 starts every 1,000 updates, kept 5 rollout phases, real ratio 0.05, batch 256, 1,000
updates per epoch. Rollout length h and penalty lambda: the script's "suggested hypers" docstring for the
D4RL -v2 dataset of the same name (halfcheetah-medium 5 / 0.5, hopper-medium 5 / 5.0, walker2d-medium 5 / 0.5;
medium-replay and medium-expert listed there too); other levels need ``--rollout-length`` and ``--penalty-coef``.
The data goes through its own ``offlinerlkit.utils.load_dataset.qlearning_dataset`` (it drops each timed-out
episode's last transition, as it does for D4RL). The run script's epoch count (3,000) is replaced by
``--num-updates / 1,000``; the cosine schedule follows the epoch count as in the script.

Departures, each because the trainer assumes a D4RL gym env: no environment evaluation during training (the
trainer's per-epoch ``_evaluate`` saves a snapshot every ``--snapshot-interval`` updates instead and logs NaN
as its score; ``peers.score`` evaluates the snapshots afterwards); ``termination_fn`` is looked up with
simloop's env name (``get_termination_fn("halfcheetah")``, the same functions as for the D4RL task names).
Resuming (ours; the trainer has none): at every snapshot the script also writes ``resume.pt``, the whole
training state -- the policy's networks and target critics, the three optimisers and alpha's, ``log_alpha``, the
cosine schedule, the model-rollout buffer, the python/numpy/torch random states and the epochs done -- and
``--resume RUN_DIR`` rebuilds the run from ``peer_run.json``'s arguments, loads the fitted ensemble from
``offlinerlkit/model`` (OfflineRL-Kit saves it when its fit ends) and calls the trainer again for the remaining
epochs (its log goes to ``offlinerlkit-resumed-<step>/``). Each epoch starts with a rollout phase (rollout_freq =
step_per_epoch), so the resumed trainer takes the same steps as an unbroken one. A run killed during the
ensemble fit has nothing to resume and starts again. ``--load-dynamics-path`` (the run script's
``--load-dynamics-path``) reuses a fitted ensemble, e.g. ``<earlier run>/offlinerlkit/model``.

    cd /work/main && OMP_NUM_THREADS=1 PYTHONPATH=/work/peers/OfflineRL-Kit /work/peers/offlinerlkit-venv/bin/python \\
        -m peers.offlinerlkit_mopo --data /work/peers/data/halfcheetah-medium.npz --seed 0 \\
        --num-updates 200000 --out runs/peers/offlinerlkit-mopo/halfcheetah-medium/seed0

Snapshot: ``policies/step_XXXXXXX.pt``, the actor's mode ``tanh(mu(obs))`` traced to TorchScript (MOPO here
applies no observation normalisation to the policy; the dynamics' input scaler is inside the model only).
"""

from __future__ import annotations

import copy
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from peers.peer_common import (
    RESUME_FILE,
    PeerRecord,
    check_snapshot,
    list_snapshots,
    load_dataset,
    new_run_dir,
    resume_args,
    rng_state,
    save_atomic,
    set_rng_state,
    set_threads,
    snapshot_path,
    write_json,
)

ALGO = "offlinerlkit-mopo"
CODE = {
    "library": "OfflineRL-Kit",
    "repository": "https://github.com/yihaosun1124/OfflineRL-Kit",
    "commit": "e3ce69793766d02660217d4dfc0af4693a5531bd",
}
SOURCE = "OfflineRL-Kit run_example/run_mopo.py at commit e3ce69793766d02660217d4dfc0af4693a5531bd"
RUN_MOPO = dict(
    actor_lr=1e-4,
    critic_lr=3e-4,
    hidden_dims=[256, 256],
    gamma=0.99,
    tau=0.005,
    auto_alpha=True,
    alpha_lr=1e-4,
    dynamics_lr=1e-3,
    dynamics_hidden_dims=[200, 200, 200, 200],
    dynamics_weight_decay=[2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4],
    n_ensemble=7,
    n_elites=5,
    rollout_freq=1000,
    rollout_batch_size=50000,
    model_retain_epochs=5,
    real_ratio=0.05,
    batch_size=256,
    max_epochs_since_update=5,
)
"""``get_args()`` defaults of run_mopo.py (the script's epoch count and eval episodes aside)."""
SUGGESTED = {
    ("halfcheetah", "medium"): (5, 0.5),
    ("hopper", "medium"): (5, 5.0),
    ("walker2d", "medium"): (5, 0.5),
    ("halfcheetah", "medium-replay"): (5, 0.5),
    ("hopper", "medium-replay"): (5, 2.5),
    ("walker2d", "medium-replay"): (1, 2.5),
    ("halfcheetah", "medium-expert"): (5, 2.5),
    ("hopper", "medium-expert"): (5, 5.0),
    ("walker2d", "medium-expert"): (1, 2.5),
}
"""(rollout length, penalty coef) per (env, level): run_mopo.py's "suggested hypers" for the D4RL -v2 datasets."""


@dataclass(frozen=True)
class Args:
    """OfflineRL-Kit MOPO on a dataset exported by peers.export_data."""

    data: Path | None = None
    """The .npz from `python -m peers.export_data` (required unless --resume)."""
    out: Path | None = None
    """Run directory (must not hold a peer run yet; required unless --resume)."""
    resume: Path | None = None
    """A run directory with ``resume.pt``: continue that run with its own arguments (the others are ignored)."""
    slim_to: Path | None = None
    """With --resume: copy the run to this directory without the model-rollout buffer (a few MB, to carry it
    to another machine; resuming the copy refills the buffer) and exit."""
    seed: int = 0
    """Seeds python, numpy and torch, as run_mopo.py does."""
    num_updates: int = 200_000
    """Policy updates (= epochs x step_per_epoch)."""
    step_per_epoch: int = 1000
    """run_mopo.py's --step-per-epoch (the cosine actor schedule steps once per epoch)."""
    snapshot_interval: int = 10_000
    """Save a TorchScript snapshot every this many updates (a multiple of step_per_epoch); the last one always."""
    rollout_length: int | None = None
    """h; default: run_mopo.py's suggestion for the dataset's env and level."""
    penalty_coef: float | None = None
    """lambda; default: run_mopo.py's suggestion for the dataset's env and level."""
    dynamics_max_epochs: int | None = None
    """Cap on the ensemble's epochs (full passes over the data); None: OfflineRL-Kit's early stopping alone."""
    load_dynamics_path: Path | None = None
    """A folder with dynamics.pth, mu.npy, std.npy (an earlier run's offlinerlkit/model) instead of fitting."""
    num_threads: int = 1
    """torch threads."""


class _NoEvalEnv:
    """Stands in for the trainer's D4RL ``eval_env``: only ``get_normalized_score`` is called (on the NaN
    placeholder returned by ``_evaluate``)."""

    def get_normalized_score(self, score: float) -> float:
        return float("nan")


def _holdout_loss(console_log: Path) -> float | None:
    """Elites' mean holdout MSE from OfflineRL-Kit's log line ``elites:[...] , holdout loss: X``."""
    found = re.findall(r"holdout loss: ([0-9.eE+-]+)", console_log.read_text()) if console_log.is_file() else []
    return float(found[-1]) if found else None


def _resume_args(run_dir: Path) -> tuple[Args, dict]:
    """The arguments and the ``peer_run.json`` of a run to resume (errors: ``peer_common.resume_args``)."""
    record = resume_args(run_dir)
    saved = dict(record["extra"]["args"], resume=None, out=str(run_dir))  # the run may have been moved
    for key in ("data", "out", "load_dynamics_path"):
        saved[key] = None if saved[key] is None else Path(saved[key])
    return Args(**saved), record


def _fitted_dynamics(args: Args) -> Path:
    """Where a run's ensemble is: ``--load-dynamics-path``, else the run's own fit (saved when the fit ends)."""
    return args.load_dynamics_path if args.load_dynamics_path is not None else args.out / "offlinerlkit" / "model"


def _training_state(policy, lr_scheduler, fake_buffer, epochs_done: int) -> dict:
    """Everything the trainer's next epochs depend on, as tensors and plain values (see the module docstring)."""
    buffer = {k: torch.from_numpy(getattr(fake_buffer, k).copy()) for k in BUFFER_FIELDS}
    return {
        "epochs_done": epochs_done,
        "policy": policy.state_dict(),
        "log_alpha": policy._log_alpha.detach().clone(),
        "alpha": policy._alpha.detach().clone(),
        "optimizers": {k: getattr(policy, k).state_dict() for k in OPTIMIZERS},
        "lr_scheduler": lr_scheduler.state_dict(),
        "fake_buffer": {"ptr": fake_buffer._ptr, "size": fake_buffer._size, **buffer},
        "rng": rng_state(),
    }


def _load_training_state(state: dict, policy, lr_scheduler, fake_buffer) -> int:
    """Put ``_training_state``'s output back; returns the epochs done."""
    policy.load_state_dict(state["policy"])
    with torch.no_grad():
        policy._log_alpha.copy_(state["log_alpha"])  # in place: alpha_optim holds this tensor
    policy._alpha = state["alpha"].clone()
    for k in OPTIMIZERS:
        getattr(policy, k).load_state_dict(state["optimizers"][k])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    fb = state.get("fake_buffer")
    if fb is not None:
        for k in BUFFER_FIELDS:
            getattr(fake_buffer, k)[...] = fb[k].numpy()
        fake_buffer._ptr, fake_buffer._size = int(fb["ptr"]), int(fb["size"])
    set_rng_state(state["rng"])
    return int(state["epochs_done"])


BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminals")
OPTIMIZERS = ("actor_optim", "critic1_optim", "critic2_optim", "alpha_optim")


def slim_copy(run_dir: Path, dest: Path) -> Path:
    """Copy a resumable run to ``dest`` without the model-rollout buffer: ``peer_run.json``, the snapshots,
    ``resume.pt`` less its ``fake_buffer``, and the fitted ensemble (into ``dest/offlinerlkit/model``, where
    ``--resume`` looks). Resuming the copy first refills the buffer with ``model_retain_epochs`` rollout phases
    of the current policy (the buffer an unbroken run would hold came from the last five policies), so the
    continued run is close to, not identical with, an unbroken one. Raises FileExistsError if ``dest`` holds a
    run."""
    args, record = _resume_args(run_dir)
    dest = new_run_dir(dest)
    state = torch.load(run_dir / RESUME_FILE, weights_only=True)
    state.pop("fake_buffer")
    state["refill_buffer"] = True
    torch.save(state, dest / RESUME_FILE)
    for _, path in list_snapshots(run_dir):
        shutil.copy2(path, dest / path.relative_to(run_dir))
    (dest / "offlinerlkit" / "model").mkdir(parents=True)
    for name in ("dynamics.pth", "mu.npy", "std.npy"):  # what EnsembleDynamics.load reads
        shutil.copy2(_fitted_dynamics(args) / name, dest / "offlinerlkit" / "model" / name)
    saved = dict(record["extra"]["args"], out=str(dest), load_dynamics_path=None)
    record["extra"] = dict(record["extra"], args=saved, slim_copy_of=str(run_dir))
    write_json(dest / "peer_run.json", record)
    return dest


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv)
    resumed = None
    if args.resume is not None and args.slim_to is not None:
        print(f"slim copy: {slim_copy(args.resume, args.slim_to)}", flush=True)
        return {"slim_to": str(args.slim_to)}
    if args.resume is not None:
        args, resumed = _resume_args(args.resume)
    elif args.data is None or args.out is None:
        raise ValueError("--data and --out are required (or --resume RUN_DIR)")
    t0 = time.perf_counter()
    set_threads(args.num_threads)
    if args.num_updates % args.step_per_epoch or args.snapshot_interval % args.step_per_epoch:
        raise ValueError(
            f"num_updates ({args.num_updates}) and snapshot_interval ({args.snapshot_interval}) must be multiples "
            f"of step_per_epoch ({args.step_per_epoch})"
        )
    if args.num_updates < 1 or args.snapshot_interval < 1:
        raise ValueError("num_updates and snapshot_interval must be >= 1")
    data = load_dataset(args.data)
    h, lam = SUGGESTED.get((data.env, data.level), (None, None))
    h = args.rollout_length if args.rollout_length is not None else h
    lam = args.penalty_coef if args.penalty_coef is not None else lam
    if h is None or lam is None:
        raise ValueError(
            f"run_mopo.py suggests no setting for {data.env}-{data.level}; pass --rollout-length and --penalty-coef"
        )
    run_dir = new_run_dir(args.out) if resumed is None else Path(args.out)

    from offlinerlkit.buffer import ReplayBuffer
    from offlinerlkit.dynamics import EnsembleDynamics
    from offlinerlkit.modules import ActorProb, Critic, EnsembleDynamicsModel, TanhDiagGaussian
    from offlinerlkit.nets import MLP
    from offlinerlkit.policy import MOPOPolicy
    from offlinerlkit.policy_trainer import MBPolicyTrainer
    from offlinerlkit.utils.load_dataset import qlearning_dataset
    from offlinerlkit.utils.logger import Logger
    from offlinerlkit.utils.scaler import StandardScaler
    from offlinerlkit.utils.termination_fns import get_termination_fn

    c = RUN_MOPO
    epochs = args.num_updates // args.step_per_epoch
    dataset = qlearning_dataset(
        None,
        dataset=dict(
            observations=data.obs,
            next_observations=data.next_obs,
            actions=data.act,
            rewards=data.rew,
            terminals=data.terminal,
            timeouts=data.timeout,
        ),
    )
    obs_shape, action_dim = data.obs.shape[1:], data.act.shape[1]

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    actor_backbone = MLP(input_dim=np.prod(obs_shape), hidden_dims=c["hidden_dims"])
    critic1_backbone = MLP(input_dim=np.prod(obs_shape) + action_dim, hidden_dims=c["hidden_dims"])
    critic2_backbone = MLP(input_dim=np.prod(obs_shape) + action_dim, hidden_dims=c["hidden_dims"])
    dist = TanhDiagGaussian(
        latent_dim=actor_backbone.output_dim,
        output_dim=action_dim,
        unbounded=True,
        conditioned_sigma=True,
        max_mu=1.0,
    )
    actor = ActorProb(actor_backbone, dist, "cpu")
    critic1, critic2 = Critic(critic1_backbone, "cpu"), Critic(critic2_backbone, "cpu")
    actor_optim = torch.optim.Adam(actor.parameters(), lr=c["actor_lr"])
    critic1_optim = torch.optim.Adam(critic1.parameters(), lr=c["critic_lr"])
    critic2_optim = torch.optim.Adam(critic2.parameters(), lr=c["critic_lr"])
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(actor_optim, epochs)
    target_entropy = -np.prod((action_dim,))
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha = (target_entropy, log_alpha, torch.optim.Adam([log_alpha], lr=c["alpha_lr"]))

    dynamics_model = EnsembleDynamicsModel(
        obs_dim=np.prod(obs_shape),
        action_dim=action_dim,
        hidden_dims=c["dynamics_hidden_dims"],
        num_ensemble=c["n_ensemble"],
        num_elites=c["n_elites"],
        weight_decays=c["dynamics_weight_decay"],
        device="cpu",
    )
    dynamics_optim = torch.optim.Adam(dynamics_model.parameters(), lr=c["dynamics_lr"])
    dynamics = EnsembleDynamics(
        dynamics_model, dynamics_optim, StandardScaler(), get_termination_fn(task=data.env), penalty_coef=lam
    )
    if resumed is not None or args.load_dynamics_path is not None:
        dynamics.load(str(_fitted_dynamics(args)))

    rollout_s = [0.0]

    class TimedMOPOPolicy(MOPOPolicy):
        def rollout(self, init_obss, rollout_length):  # MOPOPolicy.rollout, timed
            t = time.perf_counter()
            out = super().rollout(init_obss, rollout_length)
            rollout_s[0] += time.perf_counter() - t
            return out

    policy = TimedMOPOPolicy(
        dynamics,
        actor,
        critic1,
        critic2,
        actor_optim,
        critic1_optim,
        critic2_optim,
        tau=c["tau"],
        gamma=c["gamma"],
        alpha=alpha,
    )
    real_buffer = ReplayBuffer(len(dataset["observations"]), obs_shape, np.float32, action_dim, np.float32, "cpu")
    real_buffer.load_dataset(dataset)
    fake_buffer = ReplayBuffer(
        c["rollout_batch_size"] * h * c["model_retain_epochs"], obs_shape, np.float32, action_dim, np.float32, "cpu"
    )

    state = None
    if resumed is not None:
        state = torch.load(run_dir / RESUME_FILE, weights_only=True)
        log_dir = run_dir / f"offlinerlkit-resumed-{state['epochs_done'] * args.step_per_epoch}"
        if log_dir.exists():
            shutil.rmtree(log_dir)  # an earlier resume from the same snapshot that was killed again
    else:
        log_dir = run_dir / "offlinerlkit"
    log_dir.mkdir()
    logger = Logger(
        str(log_dir),
        {
            "consoleout_backup": "stdout",
            "policy_training_progress": "csv",
            "dynamics_training_progress": "csv",
            "tb": "tensorboard",
        },
    )
    settings = dict(c, rollout_length=h, penalty_coef=lam, epoch=epochs, step_per_epoch=args.step_per_epoch)
    settings.update(
        dynamics_max_epochs=args.dynamics_max_epochs,
        load_dynamics_path=None if args.load_dynamics_path is None else str(args.load_dynamics_path),
        source=SOURCE,
        transitions_after_qlearning_dataset=len(dataset["observations"]),
    )
    logger.log_hyperparameters(dict(settings, seed=args.seed, data=str(args.data)))
    if resumed is not None:
        record = PeerRecord(**resumed)
        t0 = time.perf_counter() - record.wall_s  # wall_s and the phase times carry on from the killed process
    else:
        record = PeerRecord(
            algo=ALGO,
            dataset=data.dataset_id,
            env=data.env,
            seed=args.seed,
            num_updates=args.num_updates,
            behavior_normalized_score=data.behavior_normalized_score,
            code=CODE,
            settings=settings,
            data_file=str(Path(args.data).resolve()),
            torch_threads=args.num_threads,
            extra={"args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()}},
        )
    record.write(run_dir)

    if args.load_dynamics_path is None and resumed is None:
        t = time.perf_counter()
        dynamics.train(
            real_buffer.sample_all(),
            logger,
            max_epochs=args.dynamics_max_epochs,
            max_epochs_since_update=c["max_epochs_since_update"],
        )
        record.phases_s["dynamics"] = time.perf_counter() - t
        progress = log_dir / "record" / "dynamics_training_progress.csv"
        rows = progress.read_text().splitlines()[1:] if progress.is_file() else []
        record.extra["dynamics"] = {
            "epochs": len(rows),
            "minibatches_per_epoch": int(np.ceil((len(dataset["observations"]) - 1000) / 256)),
            "elite_holdout_mse": _holdout_loss(log_dir / "record" / "consoleout_backup.txt"),
            "elites": [int(i) for i in dynamics.model.elites.data],
            "wall_s": record.phases_s["dynamics"],
        }
        record.write(run_dir)
        print(f"dynamics: {record.extra['dynamics']}", flush=True)

    obs_check = data.obs[np.random.default_rng(0).choice(len(data.obs), 7, replace=False)]
    epochs_done = 0
    if state is not None:
        epochs_done = _load_training_state(state, policy, lr_scheduler, fake_buffer)
        if state.get("refill_buffer"):  # a slim copy (see slim_copy)
            for _ in range(c["model_retain_epochs"]):
                init_obss = real_buffer.sample(c["rollout_batch_size"])["observations"].cpu().numpy()
                fake_buffer.add_batch(**policy.rollout(init_obss, h)[0])
            record.extra.setdefault("buffer_refilled_at", []).append(epochs_done * args.step_per_epoch)
        rollout_s[0] = record.phases_s.get("rollouts", 0.0)
        record.mark_resumed(run_dir, epochs_done * args.step_per_epoch)
    t_updates = time.perf_counter() - record.phases_s.get("updates", 0.0) * (state is not None)

    class SnapshotTrainer(MBPolicyTrainer):
        """The trainer, with its per-epoch environment evaluation replaced by snapshots and resume states."""

        def _evaluate(self):
            nonlocal epochs_done
            epochs_done += 1
            step = epochs_done * args.step_per_epoch
            if step % args.snapshot_interval == 0 or step == args.num_updates:
                greedy = copy.deepcopy(self.policy.actor).eval()
                module = torch.jit.trace(_Greedy(greedy), torch.as_tensor(obs_check[:1]), check_trace=False)
                path = snapshot_path(run_dir, step)
                module.save(str(path))
                check_snapshot(path, lambda x: self.policy.select_action(x, deterministic=True), obs_check)
                record.phases_s["rollouts"] = rollout_s[0]
                record.add_snapshot(run_dir, step, path, t0, t_updates)
                if step < args.num_updates:  # after the record: a resume drops the record's later snapshots
                    state = _training_state(self.policy, self.lr_scheduler, self.fake_buffer, epochs_done)
                    save_atomic(state, run_dir / RESUME_FILE)
            return {"eval/episode_reward": [float("nan")], "eval/episode_length": [float("nan")]}

    trainer = SnapshotTrainer(
        policy=policy,
        eval_env=_NoEvalEnv(),
        real_buffer=real_buffer,
        fake_buffer=fake_buffer,
        logger=logger,
        rollout_setting=(c["rollout_freq"], c["rollout_batch_size"], h),
        epoch=epochs - epochs_done,
        step_per_epoch=args.step_per_epoch,
        batch_size=c["batch_size"],
        real_ratio=c["real_ratio"],
        eval_episodes=0,
        lr_scheduler=lr_scheduler,
    )
    trainer.train()
    (run_dir / RESUME_FILE).unlink(missing_ok=True)  # finished: the snapshots and the ensemble are what is kept
    record.finished = True
    record.wall_s = time.perf_counter() - t0
    record.write(run_dir)
    print(f"done: {run_dir}, {record.updates_done} updates, {record.wall_s:.0f} s", flush=True)
    return asdict(record)


class _Greedy(torch.nn.Module):
    """OfflineRL-Kit's deterministic action, ``SACPolicy.actforward(obs, deterministic=True)``: the
    TanhNormal's mode, ``max_action * tanh(mu)``."""

    def __init__(self, actor: torch.nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs).mode()[0]


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
