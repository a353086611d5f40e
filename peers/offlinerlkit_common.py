"""What the OfflineRL-Kit adapters (``peers.offlinerlkit_mopo``, ``peers.offlinerlkit_combo``) share: their
command-line arguments, the wiring that OfflineRL-Kit's ``run_example/run_mopo.py`` and ``run_combo.py`` have in
common (SAC actor and critics, the dynamics ensemble and its fit, the buffers, ``MBPolicyTrainer``), the
snapshot trainer, ``resume.pt`` and slim copies. Each adapter describes its algorithm with a ``Peer`` (its
script's defaults, suggested settings and policy) and calls ``main``; its docstring gives the exact wiring.

Module level imports only numpy, torch, tyro and ``peers.peer_common``: OfflineRL-Kit (and gym) are imported
inside the functions that build the run, so simloop's tests import this module and the adapters without them.
"""

from __future__ import annotations

import copy
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from peers import peer_common as pc
from peers.offlinerlkit_fit import FIT_STATE_FILE, fit_dynamics
from peers.peer_common import RESUME_FILE, PeerRecord

COMMIT = "e3ce69793766d02660217d4dfc0af4693a5531bd"
CODE = {"library": "OfflineRL-Kit", "repository": "https://github.com/yihaosun1124/OfflineRL-Kit", "commit": COMMIT}
_SAC = dict(actor_lr=1e-4, critic_lr=3e-4, gamma=0.99, tau=0.005, auto_alpha=True, alpha_lr=1e-4)
_ENSEMBLE = dict(dynamics_lr=1e-3, dynamics_hidden_dims=[200, 200, 200, 200], n_ensemble=7, n_elites=5)
_FIT = dict(dynamics_weight_decay=[2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4], max_epochs_since_update=5)
_ROLLOUTS = dict(rollout_freq=1000, rollout_batch_size=50000, model_retain_epochs=5, batch_size=256)
SCRIPT_DEFAULTS = {**_SAC, **_ENSEMBLE, **_FIT, **_ROLLOUTS}
"""``get_args()`` defaults that run_mopo.py and run_combo.py share (both also pass ``max_epochs_since_update=5``
to ``dynamics.train``); ``hidden_dims`` and ``real_ratio`` differ and are in each adapter's table."""
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminals")
OPTIMIZERS = ("actor_optim", "critic1_optim", "critic2_optim", "alpha_optim")
PATH_ARGS = ("data", "out", "load_dynamics_path")


@dataclass(frozen=True)
class Args:
    """An OfflineRL-Kit algorithm on a dataset exported by peers.export_data."""

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
    """Seeds python, numpy and torch, as the run script does."""
    num_updates: int = 200_000
    """Policy updates (= epochs x step_per_epoch)."""
    step_per_epoch: int = 1000
    """The run script's --step-per-epoch (the cosine actor schedule steps once per epoch)."""
    snapshot_interval: int = 10_000
    """Save a TorchScript snapshot every this many updates (a multiple of step_per_epoch); the last one always.
    ``resume.pt`` is written with the snapshots at multiples of the rollout period (1,000 updates)."""
    rollout_length: int | None = None
    """h; default: the run script's suggestion for the dataset's env and level."""
    dynamics_max_epochs: int | None = None
    """Cap on the ensemble's epochs (full passes over the data); None: OfflineRL-Kit's early stopping alone."""
    load_dynamics_path: Path | None = None
    """A folder with dynamics.pth, mu.npy, std.npy (an earlier run's offlinerlkit/model) instead of fitting."""
    num_threads: int = 1
    """torch threads."""


@dataclass(frozen=True)
class Peer:
    """One OfflineRL-Kit algorithm as its run script wires it."""

    algo: str
    """Name in ``peer_run.json`` and ``peers.score`` (``offlinerlkit-mopo``)."""
    script: str
    """The run script (``run_mopo.py``), for messages and the recorded source."""
    settings: dict
    """The script's ``get_args()`` defaults used here (``SCRIPT_DEFAULTS`` plus ``hidden_dims``, ``real_ratio``
    and the algorithm's own)."""
    suggested: dict
    """``(env, level) -> (rollout_length, coef)``: the script's "suggested hypers" for the D4RL -v2 datasets."""
    coef: str
    """The suggested setting besides h: the adapter's ``Args`` field and the settings key (``penalty_coef``)."""
    policy: Callable[[dict, float, int], tuple[type, dict]]
    """``(settings, coef, action_dim) -> (policy class, keyword arguments beyond SAC's tau, gamma, alpha)``;
    imports OfflineRL-Kit."""
    coef_is_dynamics_penalty: bool = False
    """Pass ``coef`` to ``EnsembleDynamics`` as ``penalty_coef`` (MOPO)."""
    extra_state: tuple[str, ...] = ()
    """The policy's training state beyond SAC's: optimisers (saved with ``state_dict``) and tensors (copied back
    in place: an optimiser holds them)."""

    @property
    def source(self) -> str:
        return f"OfflineRL-Kit run_example/{self.script} at commit {COMMIT}"


def by_level(**levels: dict) -> dict:
    """``{(env, level): setting}`` from ``level=dict(env=setting, ...)`` (``medium_replay`` for ``medium-replay``)."""
    return {(env, level.replace("_", "-")): x for level, envs in levels.items() for env, x in envs.items()}


def suggested_setting(peer: Peer, env: str, level: str, rollout_length: int | None, coef: float | None):
    """``(h, coef)`` for a dataset: the given values, else the script's suggestion for ``(env, level)``.

    Raises ValueError when the script suggests nothing for the dataset and a value is not given."""
    h, x = peer.suggested.get((env, level), (None, None))
    h = rollout_length if rollout_length is not None else h
    x = coef if coef is not None else x
    if h is None or x is None:
        flag = "--" + peer.coef.replace("_", "-")
        raise ValueError(f"{peer.script} suggests no setting for {env}-{level}; pass --rollout-length and {flag}")
    return h, x


def check_args(args: Args) -> None:
    """Raises ValueError for update counts that are not whole epochs or below 1."""
    if args.num_updates % args.step_per_epoch or args.snapshot_interval % args.step_per_epoch:
        raise ValueError(
            f"num_updates ({args.num_updates}) and snapshot_interval ({args.snapshot_interval}) must be multiples "
            f"of step_per_epoch ({args.step_per_epoch})"
        )
    if args.num_updates < 1 or args.snapshot_interval < 1:
        raise ValueError("num_updates and snapshot_interval must be >= 1")


class _NoEvalEnv:
    """Stands in for the trainer's D4RL ``eval_env``: only ``get_normalized_score`` is called (on the NaN
    placeholder returned by ``_evaluate``)."""

    def get_normalized_score(self, score: float) -> float:
        return float("nan")


def resumed_args(args_type: type, run_dir: Path):
    """The arguments (an ``args_type``) and the ``peer_run.json`` of a run to resume (errors:
    ``peer_common.resume_args``)."""
    record = pc.resume_args(run_dir, state_files=(RESUME_FILE, FIT_STATE_FILE))
    saved = dict(record["extra"]["args"], resume=None, out=str(run_dir))  # the run may have been moved
    for key in PATH_ARGS:
        saved[key] = None if saved[key] is None else Path(saved[key])
    return args_type(**saved), record


def _fitted_dynamics(args: Args) -> Path:
    """Where a run's ensemble is: ``--load-dynamics-path``, else the run's own fit (saved when the fit ends)."""
    return args.load_dynamics_path if args.load_dynamics_path is not None else args.out / "offlinerlkit" / "model"


def training_state(policy, lr_scheduler, fake_buffer, epochs_done: int, extra: tuple[str, ...] = ()) -> dict:
    """Everything the trainer's next epochs depend on, as tensors and plain values: the policy's networks and
    target critics, SAC's optimisers, ``log_alpha`` and ``alpha``, the attributes named in ``extra``, the cosine
    schedule, the model-rollout buffer, the random states and the epochs done."""
    buffer = {k: torch.from_numpy(getattr(fake_buffer, k).copy()) for k in BUFFER_FIELDS}
    return {
        "epochs_done": epochs_done,
        "policy": policy.state_dict(),
        "log_alpha": policy._log_alpha.detach().clone(),
        "alpha": policy._alpha.detach().clone(),
        "optimizers": {k: getattr(policy, k).state_dict() for k in OPTIMIZERS},
        "extra": {k: _save_attr(getattr(policy, k)) for k in extra},
        "lr_scheduler": lr_scheduler.state_dict(),
        "fake_buffer": {"ptr": fake_buffer._ptr, "size": fake_buffer._size, **buffer},
        "rng": pc.rng_state(),
    }


def _save_attr(obj):
    return obj.state_dict() if isinstance(obj, torch.optim.Optimizer) else obj.detach().clone()


def load_training_state(state: dict, policy, lr_scheduler, fake_buffer) -> int:
    """Put ``training_state``'s output back; returns the epochs done. (A ``resume.pt`` written before ``extra``
    existed, by the MOPO adapter, has none: MOPO needs none.)"""
    policy.load_state_dict(state["policy"])
    with torch.no_grad():
        policy._log_alpha.copy_(state["log_alpha"])  # in place: alpha_optim holds this tensor
    policy._alpha = state["alpha"].clone()
    for k in OPTIMIZERS:
        getattr(policy, k).load_state_dict(state["optimizers"][k])
    for k, saved in state.get("extra", {}).items():
        obj = getattr(policy, k)
        if isinstance(obj, torch.optim.Optimizer):
            obj.load_state_dict(saved)
        else:
            with torch.no_grad():
                obj.copy_(saved)
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    fb = state.get("fake_buffer")
    if fb is not None:
        for k in BUFFER_FIELDS:
            getattr(fake_buffer, k)[...] = fb[k].numpy()
        fake_buffer._ptr, fake_buffer._size = int(fb["ptr"]), int(fb["size"])
    pc.set_rng_state(state["rng"])
    return int(state["epochs_done"])


def slim_copy(args_type: type, run_dir: Path, dest: Path) -> Path:
    """Copy a resumable run to ``dest`` without the model-rollout buffer: ``peer_run.json``, the snapshots,
    ``resume.pt`` less its ``fake_buffer``, and the fitted ensemble (into ``dest/offlinerlkit/model``, where
    ``--resume`` looks). Resuming the copy first refills the buffer with ``model_retain_epochs`` rollout phases
    of the current policy (the buffer an unbroken run would hold came from the last five policies), so the
    continued run is close to, not identical with, an unbroken one. A run still fitting its ensemble (no
    ``resume.pt`` yet) is copied as its ``fit_state.pt`` and record (~15 MB), and resumes exactly. Raises
    FileExistsError if ``dest`` holds a run."""
    args, record = resumed_args(args_type, run_dir)
    dest = pc.new_run_dir(dest)
    saved = dict(record["extra"]["args"], out=str(dest), load_dynamics_path=None)
    record["extra"] = dict(record["extra"], args=saved, slim_copy_of=str(run_dir))
    if not (run_dir / RESUME_FILE).is_file():  # still fitting its ensemble: the fit's state is all there is
        shutil.copy2(run_dir / FIT_STATE_FILE, dest / FIT_STATE_FILE)
        pc.write_json(dest / "peer_run.json", record)
        return dest
    state = torch.load(run_dir / RESUME_FILE, weights_only=True)
    state.pop("fake_buffer")
    state["refill_buffer"] = True
    torch.save(state, dest / RESUME_FILE)
    for _, path in pc.list_snapshots(run_dir):
        shutil.copy2(path, dest / path.relative_to(run_dir))
    (dest / "offlinerlkit" / "model").mkdir(parents=True)
    for name in ("dynamics.pth", "mu.npy", "std.npy"):  # what EnsembleDynamics.load reads
        shutil.copy2(_fitted_dynamics(args) / name, dest / "offlinerlkit" / "model" / name)
    pc.write_json(dest / "peer_run.json", record)
    return dest


def main(peer: Peer, args_type: type, argv: list[str] | None = None) -> dict:
    """The adapter's command line: a slim copy, a resumed run or a new one (see the adapter's docstring)."""
    args = tyro.cli(args_type, args=argv)
    if args.resume is not None and args.slim_to is not None:
        print(f"slim copy: {slim_copy(args_type, args.resume, args.slim_to)}", flush=True)
        return {"slim_to": str(args.slim_to)}
    resumed = None
    if args.resume is not None:
        args, resumed = resumed_args(args_type, args.resume)
    elif args.data is None or args.out is None:
        raise ValueError("--data and --out are required (or --resume RUN_DIR)")
    return train(peer, args, resumed)


def _build(peer: Peer, args: Args, data, h: int, coef: float, epochs: int, rollout_s: list):
    """The run script's objects, in its order after seeding: SAC actor and critics with their optimisers and the
    cosine schedule, automatic alpha, the dynamics ensemble, the policy (its rollouts timed into ``rollout_s``),
    the real and fake buffers. Returns ``(policy, dynamics, lr_scheduler, real_buffer, fake_buffer, n_data)``."""
    from offlinerlkit.buffer import ReplayBuffer
    from offlinerlkit.dynamics import EnsembleDynamics
    from offlinerlkit.modules import ActorProb, Critic, EnsembleDynamicsModel, TanhDiagGaussian
    from offlinerlkit.nets import MLP
    from offlinerlkit.utils.load_dataset import qlearning_dataset
    from offlinerlkit.utils.scaler import StandardScaler
    from offlinerlkit.utils.termination_fns import get_termination_fn

    c = peer.settings
    arrays = dict(observations=data.obs, next_observations=data.next_obs, actions=data.act, rewards=data.rew)
    dataset = qlearning_dataset(None, dataset=dict(arrays, terminals=data.terminal, timeouts=data.timeout))
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
        max_mu=1.0,  # the script's max_action, env.action_space.high[0]: 1 for these envs
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
    penalty = {"penalty_coef": coef} if peer.coef_is_dynamics_penalty else {}
    termination_fn = get_termination_fn(task=data.env)
    dynamics = EnsembleDynamics(dynamics_model, dynamics_optim, StandardScaler(), termination_fn, **penalty)

    policy_type, policy_kwargs = peer.policy(c, coef, action_dim)

    class TimedPolicy(policy_type):
        def rollout(self, init_obss, rollout_length):  # the policy's rollout, timed
            t = time.perf_counter()
            out = super().rollout(init_obss, rollout_length)
            rollout_s[0] += time.perf_counter() - t
            return out

    nets = (dynamics, actor, critic1, critic2, actor_optim, critic1_optim, critic2_optim)
    policy = TimedPolicy(*nets, tau=c["tau"], gamma=c["gamma"], alpha=alpha, **policy_kwargs)
    real_buffer = ReplayBuffer(len(dataset["observations"]), obs_shape, np.float32, action_dim, np.float32, "cpu")
    real_buffer.load_dataset(dataset)
    fake_size = c["rollout_batch_size"] * h * c["model_retain_epochs"]
    fake_buffer = ReplayBuffer(fake_size, obs_shape, np.float32, action_dim, np.float32, "cpu")
    return policy, dynamics, lr_scheduler, real_buffer, fake_buffer, len(dataset["observations"])


def _fit_dynamics(dynamics, real_buffer, logger, args: Args, n_data: int, record, run_dir: Path):
    """The run script's ``dynamics.train(..., max_epochs_since_update=5)`` (``max_epochs`` only with
    ``--dynamics-max-epochs``) through ``fit_dynamics``, resuming from ``run_dir/fit_state.pt`` when present;
    its epochs, holdout loss, elites and wall time (over all processes) recorded in ``extra["dynamics"]``, the
    ensemble saved where ``--resume`` looks for it (``_fitted_dynamics``). ``fit_state.pt`` stays until the run
    ends: a process killed between the fit's end and the first ``resume.pt`` resumes into the finished fit, which
    ends at once with the same ensemble and random states."""
    fit = fit_dynamics(
        dynamics,
        real_buffer.sample_all(),
        logger,
        run_dir / FIT_STATE_FILE,
        max_epochs=args.dynamics_max_epochs,
        max_epochs_since_update=SCRIPT_DEFAULTS["max_epochs_since_update"],
    )
    model_dir = _fitted_dynamics(args)
    if Path(logger.model_dir) != model_dir:  # a resumed fit logs elsewhere; resumes load the ensemble from here
        model_dir.mkdir(parents=True, exist_ok=True)
        dynamics.save(str(model_dir))
    record.phases_s["dynamics"] = fit["wall_s"]
    record.extra["dynamics"] = {
        "epochs": fit["epochs"],
        "minibatches_per_epoch": int(np.ceil((n_data - 1000) / 256)),
        "elite_holdout_mse": fit["elite_holdout_mse"],
        "elites": fit["elites"],
        "wall_s": fit["wall_s"],
        **({} if fit["resumed_at_epoch"] is None else {"fit_resumed_after_epoch": fit["resumed_at_epoch"]}),
    }
    record.write(run_dir)
    print(f"dynamics: {record.extra['dynamics']}", flush=True)


def train(peer: Peer, args: Args, resumed: dict | None = None) -> dict:
    """A new run (``resumed`` None) or the rest of a killed one (``resumed``: its ``peer_run.json``)."""
    t0 = time.perf_counter()
    pc.set_threads(args.num_threads)
    check_args(args)
    data = pc.load_dataset(args.data)
    digest = pc.data_sha256(data)
    if resumed is not None:
        resumed = pc.check_same_data(resumed, digest)
    h, coef = suggested_setting(peer, data.env, data.level, args.rollout_length, getattr(args, peer.coef))
    run_dir = pc.new_run_dir(args.out) if resumed is None else Path(args.out)
    (run_dir / pc.SNAPSHOT_DIR).mkdir(exist_ok=True)  # a run carried in git has lost its empty policies/

    from offlinerlkit.policy_trainer import MBPolicyTrainer
    from offlinerlkit.utils.logger import Logger

    c = peer.settings
    epochs = args.num_updates // args.step_per_epoch
    rollout_s = [0.0]
    policy, dynamics, lr_scheduler, real_buffer, fake_buffer, n_data = _build(
        peer, args, data, h, coef, epochs, rollout_s
    )
    # A run resumed before its first snapshot is still fitting its ensemble (fit_state.pt, no resume.pt).
    fitting = resumed is None or not (run_dir / RESUME_FILE).is_file()
    fit_done = None  # a resumed fit's epochs and seconds so far
    if resumed is not None and fitting:
        fit_done = {k: torch.load(run_dir / FIT_STATE_FILE, weights_only=True)[k] for k in ("epoch", "wall_s")}
    if not fitting or args.load_dynamics_path is not None:
        dynamics.load(str(_fitted_dynamics(args)))

    state = None
    if resumed is not None and not fitting:
        state = torch.load(run_dir / RESUME_FILE, weights_only=True)
        log_dir = run_dir / f"offlinerlkit-resumed-{state['epochs_done'] * args.step_per_epoch}"
    elif resumed is not None:
        log_dir = run_dir / f"offlinerlkit-resumed-fit-{fit_done['epoch']}"
    else:
        log_dir = run_dir / "offlinerlkit"
    if resumed is not None and log_dir.exists():
        shutil.rmtree(log_dir)  # an earlier resume from the same point that was killed again
    log_dir.mkdir()
    outputs = {
        "consoleout_backup": "stdout",
        "policy_training_progress": "csv",
        "dynamics_training_progress": "csv",
        "tb": "tensorboard",
    }
    logger = Logger(str(log_dir), outputs)
    settings = dict(c, rollout_length=h, **{peer.coef: coef}, epoch=epochs, step_per_epoch=args.step_per_epoch)
    settings.update(
        dynamics_max_epochs=args.dynamics_max_epochs,
        load_dynamics_path=None if args.load_dynamics_path is None else str(args.load_dynamics_path),
        source=peer.source,
        transitions_after_qlearning_dataset=n_data,
    )
    logger.log_hyperparameters(dict(settings, seed=args.seed, data=str(args.data)))
    if resumed is not None:
        record = PeerRecord(**resumed)
        t0 = time.perf_counter() - record.wall_s  # wall_s and the phase times carry on from the killed process
    else:
        what = dict(algo=peer.algo, dataset=data.dataset_id, env=data.env, seed=args.seed, code=CODE)
        record = PeerRecord(
            **what,
            num_updates=args.num_updates,
            behavior_normalized_score=data.behavior_normalized_score,
            settings=settings,
            data_file=str(Path(args.data).resolve()),
            torch_threads=args.num_threads,
            extra={
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
                "data_sha256": digest,
            },
        )
    record.write(run_dir)

    if args.load_dynamics_path is None and fitting:
        if fit_done is not None:  # the killed processes' fit time, which the record has not counted yet
            t0 -= fit_done["wall_s"]
        _fit_dynamics(dynamics, real_buffer, logger, args, n_data, record, run_dir)

    obs_check = data.obs[np.random.default_rng(0).choice(len(data.obs), 7, replace=False)]
    epochs_done = 0
    if state is not None:
        epochs_done = load_training_state(state, policy, lr_scheduler, fake_buffer)
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
                path = pc.snapshot_path(run_dir, step)
                module.save(str(path))
                pc.check_snapshot(path, lambda x: self.policy.select_action(x, deterministic=True), obs_check)
                record.phases_s["rollouts"] = rollout_s[0]
                record.add_snapshot(run_dir, step, path, t0, t_updates)
                # After the record (a resume drops the record's later snapshots), and only where an epoch starts
                # with a rollout phase: the resumed trainer counts its steps from 0 and rolls out at once.
                if step < args.num_updates and step % c["rollout_freq"] == 0:
                    s = training_state(self.policy, self.lr_scheduler, self.fake_buffer, epochs_done, peer.extra_state)
                    pc.save_atomic(s, run_dir / RESUME_FILE)
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
    for name in (RESUME_FILE, FIT_STATE_FILE):  # finished: the snapshots and the ensemble are what is kept
        (run_dir / name).unlink(missing_ok=True)
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
