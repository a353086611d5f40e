"""The probabilistic dynamics ensemble of MBPO/MOPO: E Gaussian MLPs trained by maximum
likelihood on ``[delta obs, reward]``, with a holdout set, early stopping and elites.

Follows Janner et al. 2019 (MBPO, App. C) and Yu et al. 2020 (MOPO, App. G) and their official
code (``mbpo/models/bnn.py``): 4 hidden layers of 200 (SiLU), Gaussian head whose log-variance is
soft-clamped by learned bounds (init 0.5 / -10, loss coefficient 0.01), inputs normalised,
per-layer L2 weight decay (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), holdout of 20% (at most
1,000 transitions), early stop when no member improves its holdout MSE by more than 1% for 5
epochs, elites = the members with the lowest holdout MSE. All members train in one batched
pass per minibatch (``[E, B, in] @ [E, in, out]``); each member sees its own permutation of
the training set (MBPO's bootstrap-by-shuffle).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from engine.batch import Batch
from engine.checkpoint import save_atomic
from engine.data import DEFAULT_DATASET, load
from engine.nets import EnsembleLinear, adam_step, clear_grads, make_adam
from kernels import EnsembleParams, ensemble_forward


@dataclass(frozen=True)
class DynamicsConfig:
    """Dynamics ensemble architecture and training (defaults: MOPO's official code)."""

    num_members: int = 7
    """E: ensemble members."""
    num_elites: int = 5
    """Members kept as elites (lowest holdout MSE); rollouts sample among them."""
    hidden_dim: int = 200
    """K: hidden width."""
    num_layers: int = 4
    """Hidden layers."""
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    """L2 coefficient per layer (hidden layers then output), MBPO's values."""
    logvar_bound_coef: float = 0.01
    """Coefficient of (sum max_logvar - sum min_logvar) in the loss."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Minibatch size per member."""
    holdout_ratio: float = 0.2
    """Fraction of the data held out for early stopping and elites."""
    max_holdout: int = 1000
    """At most this many holdout transitions."""
    patience: int = 5
    """Stop after this many epochs with no member improving by more than ``improvement``."""
    improvement: float = 0.01
    """Relative holdout-MSE improvement that counts."""
    max_epochs: int | None = None
    """Hard cap on epochs (None: until early stop)."""
    max_steps_per_epoch: int | None = None
    """Cap on minibatches per epoch (None: a full pass); for short runs on large datasets."""
    seed: int | None = None
    """Seed of the split, shuffles and initialisation; None: the run's ``--seed`` (0 outside a run)."""

    def seeded(self, seed: int = 0) -> DynamicsConfig:
        """This config with ``seed`` filled in where it is None."""
        return self if self.seed is not None else replace(self, seed=seed)


class GaussianEnsemble(nn.Module):
    """E Gaussian MLPs ``[delta obs, reward] ~ N(mean, exp(logvar))`` with stacked weights."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DynamicsConfig):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        e, out = cfg.num_members, obs_dim + 1
        dims = [obs_dim + act_dim] + [cfg.hidden_dim] * cfg.num_layers + [2 * out]
        if len(cfg.weight_decays) != len(dims) - 1:
            raise ValueError(f"weight_decays needs {len(dims) - 1} values (one per layer), got {cfg.weight_decays}")
        self.layers = nn.ModuleList(EnsembleLinear(e, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.max_logvar = nn.Parameter(torch.full((out,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out,), -10.0))
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(cfg.num_elites))

    def params(self) -> EnsembleParams:
        """An ``EnsembleParams`` view (shared storage, no copy) for ``kernels.rollout_step``."""
        return EnsembleParams(
            weights=tuple(layer.weight for layer in self.layers),
            biases=tuple(layer.bias.squeeze(1) for layer in self.layers),
            in_mean=self.in_mean,
            in_std=self.in_std,
            max_logvar=self.max_logvar,
            min_logvar=self.min_logvar,
            elites=self.elites,
        )

    def normalize(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return (torch.cat([obs, act], -1) - self.in_mean) / self.in_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [N, D+A]`` or ``[E, N, D+A]`` normalised -> ``(mean, logvar)`` each ``[E, N, D+1]``."""
        return ensemble_forward(self.params(), x)


def targets_of(batch: Batch) -> torch.Tensor:
    """The regression target ``[delta obs, reward]``: ``[N, D+1]``."""
    return torch.cat([batch.next_obs - batch.obs, batch.rew.unsqueeze(-1)], -1)


class EnsembleDynamics:
    """Train, query, save and load the dynamics ensemble.

    ``fit(batch) -> metrics``; ``model.params()`` gives the stacked weights for the rollout kernel;
    ``elites`` the elite indices; ``save(path)`` / ``EnsembleDynamics.load(path)``.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: DynamicsConfig = DynamicsConfig(), device="cpu"):
        if not 1 <= cfg.num_elites <= cfg.num_members:
            raise ValueError(f"num_elites must be in [1, num_members={cfg.num_members}], got {cfg.num_elites}")
        if not 0.0 < cfg.holdout_ratio < 1.0:
            raise ValueError(f"holdout_ratio must be in (0, 1), got {cfg.holdout_ratio}")
        self.cfg, self.device = cfg.seeded(), torch.device(device)
        with torch.random.fork_rng(devices=[]):  # initialise from cfg.seed, leaving the global generator as it was
            torch.manual_seed(self.cfg.seed)
            self.model = GaussianEnsemble(obs_dim, act_dim, cfg).to(self.device)

    @property
    def obs_dim(self) -> int:
        return self.model.obs_dim

    @property
    def act_dim(self) -> int:
        return self.model.act_dim

    @property
    def elites(self) -> torch.Tensor:
        return self.model.elites

    def params(self) -> EnsembleParams:
        return self.model.params()

    def loss(self, x: torch.Tensor, y: torch.Tensor, decay: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss (MBPO ``bnn.py``): per member, mean over batch and dims of the Gaussian
        NLL without constants ``(mu - y)^2 / var + logvar``, summed over members; plus the
        logvar-bound term and (with ``decay``) the L2 decay ``sum_l wd_l / 2 ||W_l||^2``.
        ``x: [E, B, D+A]``, ``y: [E, B, D+1]``. Returns ``(loss, mse per member [E])``."""
        mean, logvar = self.model(x)
        err = (mean - y).pow(2)
        nll = (err * torch.exp(-logvar) + logvar).mean((1, 2)).sum()
        m = self.model
        loss = nll + self.cfg.logvar_bound_coef * (m.max_logvar.sum() - m.min_logvar.sum())
        if decay:
            wds = self.cfg.weight_decays
            loss = loss + sum(wd * 0.5 * layer.weight.pow(2).sum() for wd, layer in zip(wds, m.layers))
        return loss, err.detach().mean((1, 2))

    def make_optimizer(self) -> torch.optim.Adam:
        """Adam for ``fit``, with the L2 decay inside the optimiser: the gradient of
        ``wd / 2 ||W||^2`` is ``wd W``, exactly what Adam's ``weight_decay`` adds to the gradient, so
        ``loss(decay=False)`` with this optimiser takes the same steps as ``loss(decay=True)`` with a
        plain Adam, without a forward and backward pass over every weight (bench/RESULTS.md). Biases and logvar
        bounds are not decayed (as MBPO)."""
        m = self.model
        groups = [{"params": [layer.weight], "weight_decay": wd} for wd, layer in zip(self.cfg.weight_decays, m.layers)]
        groups.append({"params": [layer.bias for layer in m.layers] + [m.max_logvar, m.min_logvar]})
        return make_adam(groups, self.cfg.lr)

    def train_step(self, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
        """One minibatch step of every member at once: ``x: [E, B, D+A]`` (normalised), ``y: [E, B, D+1]``,
        member e's rows in ``x[e]``; ``opt`` from ``make_optimizer`` (it applies the L2 decay). Its speed against
        a per-member loop (``bench/plain_dynamics.py``) and what was tried is in bench/RESULTS.md."""
        loss, _ = self.loss(x, y, decay=False)
        clear_grads(opt)
        loss.backward()
        adam_step(opt)

    @torch.no_grad()
    def holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each member's mean on ``x: [N, D+A]``: ``[E]``."""
        mean, _ = self.model(x)
        return (mean - y).pow(2).mean((1, 2))

    def fit(
        self, data: Batch, progress: bool = True, state_path: str | Path | None = None, state_key: str = ""
    ) -> dict[str, float]:
        """Train on all transitions of ``data`` (``Batch`` of ``[N, ...]`` tensors).

        With ``state_path`` the fit is resumable: after every epoch the whole loop state (weights, Adam's state,
        each member's best weights and holdout MSE, the epochs without improvement, the shuffle generator and the
        seconds spent) is written there (atomically), and a fit that finds a state file there continues from
        it, taking exactly the steps the uninterrupted fit would have taken. ``state_key`` (e.g. the data and
        config hashes) is stored with it and must match. The caller deletes the file once the fitted ensemble
        is saved (``fit_or_load`` does).

        Returns metrics ``dynamics/holdout_mse`` (mean over elites), ``dynamics/epochs``,
        ``dynamics/train_s`` (seconds over all resumed parts), ``dynamics/epochs_per_s``.
        Raises:
            ValueError: dims do not match the model, too few transitions, non-finite data, or a state file
                saved for another fit (``state_key``, member count or data size differ).
        """
        cfg, dev = self.cfg, self.device
        if data.obs.shape[-1] != self.obs_dim or data.act.shape[-1] != self.act_dim:
            raise ValueError(
                f"data dims (obs {data.obs.shape[-1]}, act {data.act.shape[-1]}) do not match "
                f"the ensemble (obs {self.obs_dim}, act {self.act_dim})"
            )
        n = len(data)
        num_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
        if num_holdout < 1 or n - num_holdout < cfg.batch_size:
            raise ValueError(f"need at least {cfg.batch_size + 1} transitions to fit the ensemble, got {n}")
        x_all = torch.cat([data.obs, data.act], -1).to(dev)
        y_all = targets_of(data).to(dev)
        if not (torch.isfinite(x_all).all() and torch.isfinite(y_all).all()):
            raise ValueError("non-finite values (NaN/inf) in the dynamics training data")
        g = torch.Generator(device=dev).manual_seed(cfg.seed)
        perm = torch.randperm(n, generator=g, device=dev)
        hold, train = perm[:num_holdout], perm[num_holdout:]
        m = self.model
        mu = x_all[train].mean(0)
        sd = x_all[train].std(0)
        m.in_mean.copy_(mu)
        m.in_std.copy_(torch.where(sd < 1e-12, torch.ones_like(sd), sd))
        x_norm = (x_all - m.in_mean) / m.in_std
        x_hold, y_hold = x_norm[hold], y_all[hold]
        x_train, y_train = x_norm[train], y_all[train]
        num_train = x_train.shape[0]
        opt = self.make_optimizer()
        steps = num_train // cfg.batch_size
        if cfg.max_steps_per_epoch is not None:
            steps = min(steps, cfg.max_steps_per_epoch)
        best = self.holdout_mse(x_hold, y_hold)
        best_state = {k: v.clone() for k, v in m.state_dict().items()}
        stale, epoch, spent = 0, 0, 0.0
        if state_path is not None and Path(state_path).is_file():
            state = _read_fit_state(state_path, state_key, cfg.num_members, n)
            m.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            g.set_state(state["generator"])
            best, best_state = state["best"].to(dev), {k: v.to(dev) for k, v in state["best_state"].items()}
            stale, epoch, spent = state["stale"], state["epoch"], state["spent_s"]
        t0 = time.perf_counter() - spent
        e = cfg.num_members
        bar = tqdm(desc="dynamics ensemble", unit="epoch", initial=epoch, disable=not progress)
        while (cfg.max_epochs is None or epoch < cfg.max_epochs) and not (epoch and stale >= cfg.patience):
            # Each member gets its own shuffle of the training set: [E, steps * B] indices.
            order = torch.argsort(torch.rand(e, num_train, generator=g, device=dev), dim=1)
            for s in range(steps):
                idx = order[:, s * cfg.batch_size : (s + 1) * cfg.batch_size]  # [E, B]
                self.train_step(opt, x_train[idx], y_train[idx])
            epoch += 1
            mse = self.holdout_mse(x_hold, y_hold)
            improved = (best - mse) / best > cfg.improvement
            if improved.any():
                best = torch.where(improved, mse, best)
                # Keep the best weights per member (MBPO's _save_best keeps the best epoch's
                # snapshot of each network).
                for k, v in m.state_dict().items():
                    if k.startswith("layers."):
                        mask = improved.view(-1, *([1] * (v.dim() - 1)))
                        best_state[k] = torch.where(mask, v, best_state[k])
                    else:
                        best_state[k] = v.clone()
                stale = 0
            else:
                stale += 1
            bar.update(1)
            bar.set_postfix(holdout_mse=f"{mse.mean().item():.4f}", stale=stale)
            if state_path is not None:
                state = dict(model=m.state_dict(), optimizer=opt.state_dict(), generator=g.get_state(), best=best)
                state.update(best_state=best_state, stale=stale, epoch=epoch, spent_s=time.perf_counter() - t0)
                save_atomic({**state, "key": state_key, "num_rows": n}, state_path)
        bar.close()
        m.load_state_dict(best_state)
        final = self.holdout_mse(x_hold, y_hold)
        m.elites.copy_(torch.argsort(final)[: cfg.num_elites].sort().values)
        wall = time.perf_counter() - t0
        return {
            "dynamics/holdout_mse": float(final[m.elites].mean()),
            "dynamics/holdout_mse_all": float(final.mean()),
            "dynamics/epochs": float(epoch),
            "dynamics/train_s": wall,
            "dynamics/epochs_per_s": epoch / wall,
        }

    def save(self, path: str | Path, **meta) -> None:
        """Write weights, config and ``meta`` (e.g. dataset id and hash) to ``path`` (atomically: a temporary
        file beside it, then a rename: a killed save never leaves a truncated ensemble in the cache)."""
        saved = {"config": asdict(self.cfg), "obs_dim": self.obs_dim, "act_dim": self.act_dim}
        saved.update(state=self.model.state_dict(), meta=json.loads(json.dumps(meta)))
        save_atomic(saved, path)

    @staticmethod
    def load(path: str | Path, device="cpu") -> tuple[EnsembleDynamics, dict]:
        """Load a saved ensemble; returns ``(dynamics, meta)``.

        Raises:
            FileNotFoundError: no file at ``path``; ValueError: not a readable simloop ensemble.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no dynamics checkpoint at {path}")
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
            cfg = ckpt["config"]
            cfg["weight_decays"] = tuple(cfg["weight_decays"])
            dyn = EnsembleDynamics(ckpt["obs_dim"], ckpt["act_dim"], DynamicsConfig(**cfg), device)
            dyn.model.load_state_dict(ckpt["state"])
        except Exception as e:  # noqa: BLE001 - any failure means a bad file; say which
            raise ValueError(f"{path} is not a readable simloop dynamics checkpoint: {e}") from e
        return dyn, ckpt["meta"]


def _read_fit_state(path: str | Path, key: str, num_members: int, num_rows: int) -> dict:
    """The fit state at ``path``, checked against the fit that resumes it. Raises ValueError if it is unreadable
    or was saved for another fit."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means a bad file; say which
        raise ValueError(f"{path} is not a readable ensemble fit state: {e}; delete it to fit from the start") from e
    saved = (state.get("key"), state["best"].shape[0], state.get("num_rows"))
    if saved != (key, num_members, num_rows):
        raise ValueError(
            f"the fit state at {path} was saved for another fit (key {saved[0]!r}, {saved[1]} members, {saved[2]} "
            f"rows), not this one (key {key!r}, {num_members} members, {num_rows} rows); move it away or delete it"
        )
    return state


def data_hash(data: Batch) -> str:
    """SHA-256 (first 16 hex digits) of the transition tensors: identifies a dataset's content."""
    import hashlib

    h = hashlib.sha256()
    for t in data:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


SHIPPED_DIR = Path(__file__).resolve().parent / "ensembles"
"""Ensembles that ship with the package (``<dataset id with / as _>-<config hash>.pt``), so that a short run
(``--fast``) starts from a well-fitted model instead of a long fit; checked on the local data before use."""

SHIPPED_TOLERANCE = 1.5
"""A shipped ensemble is used when its elites' MSE on the local data is at most this times the holdout MSE it
was saved with (the local data may differ in its bytes: the same generator on another CPU)."""


def config_hash(cfg: DynamicsConfig) -> str:
    """First 8 hex digits of the SHA-256 of the config (seed filled in): the cache's and shipped files' key."""
    import hashlib

    return hashlib.sha256(json.dumps(asdict(cfg.seeded()), sort_keys=True).encode()).hexdigest()[:8]


def shipped_ensemble(dataset_id: str, cfg: DynamicsConfig) -> Path | None:
    """The shipped ensemble of ``dataset_id`` trained with ``cfg`` (seed filled in), or None."""
    path = SHIPPED_DIR / f"{dataset_id.replace('/', '_')}-{config_hash(cfg)}.pt"
    return path if path.is_file() else None


@torch.no_grad()
def check_on_data(dyn: EnsembleDynamics, data: Batch, num_rows: int = 5_000, seed: int = 0) -> float:
    """Mean squared error of the elites' mean prediction of ``[delta obs, reward]`` on ``num_rows`` transitions
    of ``data`` drawn with ``seed`` (mean over elites, rows and dims): how well a saved ensemble fits this data."""
    g = torch.Generator(device=data.obs.device).manual_seed(seed)
    idx = torch.randint(len(data), (min(num_rows, len(data)),), generator=g, device=data.obs.device)
    rows = data.index(idx)
    mse = dyn.holdout_mse(dyn.model.normalize(rows.obs, rows.act), targets_of(rows))
    return float(mse[dyn.elites].mean())


def fit_state_path(cached: str | Path) -> Path:
    """Where ``fit_or_load`` keeps the resumable state of the fit that will fill the cache file ``cached``."""
    cached = Path(cached)
    return cached.with_name(cached.name + ".fit_state")


def fit_or_load(
    data: Batch,
    dataset_id: str,
    cfg: DynamicsConfig,
    cache_dir: str | Path = "runs/dynamics",
    path: str | Path | None = None,
    device="cpu",
    progress: bool = True,
) -> tuple[EnsembleDynamics, dict]:
    """Never train the same model twice: reuse a saved ensemble trained on the same data and config.

    With ``path`` the ensemble at ``path`` is loaded and must match the data; otherwise the cache
    ``cache_dir/<dataset id>-<data hash>-<config hash>.pt`` is used; on a miss, a shipped ensemble of the
    dataset and config (``shipped_ensemble``) whose fit of this data passes ``check_on_data`` (within
    ``SHIPPED_TOLERANCE`` of its saved holdout MSE), else a fit; either fills the cache. The fit is resumable:
    its state is kept beside the cache file (``fit_state_path``) until the ensemble is saved, so a fit killed
    with its run continues where it stopped when the same call (or run) is made again.
    Returns ``(dynamics, info)`` with ``info`` holding the fit metrics, ``dataset_id``, ``data_hash``,
    ``path``, ``reused`` and, for a shipped one, ``shipped`` and ``check_mse``.

    Raises:
        ValueError: the given ensemble was trained on other data (dataset id, hash) or other dims.
    """
    import warnings

    cfg = cfg.seeded()
    digest = data_hash(data)
    if path is not None:
        dyn, meta = EnsembleDynamics.load(path, device)
        if (dyn.obs_dim, dyn.act_dim) != (data.obs.shape[-1], data.act.shape[-1]):
            raise ValueError(
                f"dynamics at {path} has dims (obs {dyn.obs_dim}, act {dyn.act_dim}); the data has "
                f"(obs {data.obs.shape[-1]}, act {data.act.shape[-1]})"
            )
        if meta.get("dataset_id") != dataset_id or meta.get("data_hash") != digest:
            raise ValueError(
                f"dynamics at {path} was trained on {meta.get('dataset_id')!r} (hash {meta.get('data_hash')}), "
                f"not on {dataset_id!r} (hash {digest}); train a new one by leaving the path out"
            )
        return dyn, {**meta, "path": str(path)}
    cfg_hash = config_hash(cfg)
    cached = Path(cache_dir) / f"{dataset_id.replace('/', '_')}-{digest}-{cfg_hash}.pt"
    if cached.is_file():
        dyn, meta = EnsembleDynamics.load(cached, device)
        return dyn, {**meta, "path": str(cached), "reused": True}
    shipped = shipped_ensemble(dataset_id, cfg)
    if shipped is not None:
        dyn, meta = EnsembleDynamics.load(shipped, device)
        check = check_on_data(dyn, data)
        if check <= SHIPPED_TOLERANCE * meta["dynamics/holdout_mse"]:
            meta = {**meta, "data_hash": digest, "shipped": str(shipped.name), "check_mse": check}
            dyn.save(cached, **meta)
            return dyn, {**meta, "path": str(cached), "reused": True}
        warnings.warn(
            f"the shipped ensemble {shipped.name} fits this data with MSE {check:.3g}, over {SHIPPED_TOLERANCE}x "
            f"its saved holdout MSE {meta['dynamics/holdout_mse']:.3g}: fitting a new one",
            stacklevel=2,
        )
    dyn = EnsembleDynamics(data.obs.shape[-1], data.act.shape[-1], cfg, device)
    state = fit_state_path(cached)
    metrics = dyn.fit(data, progress=progress, state_path=state, state_key=f"{dataset_id}-{digest}-{cfg_hash}")
    meta = {"dataset_id": dataset_id, "data_hash": digest, "config_hash": cfg_hash, **metrics}
    dyn.save(cached, **meta)
    state.unlink(missing_ok=True)
    return dyn, {**meta, "path": str(cached), "reused": False}


@dataclass(frozen=True)
class FitConfig:
    """``python -m engine.dynamics``: fit (or find in the cache) the ensemble of a dataset once,
    so that every algorithm run with the same ``--dynamics.*`` flags reuses it. A fit that was killed continues
    from its last epoch when the same command is run again."""

    dataset: str = DEFAULT_DATASET
    """Minari dataset id (``python -m engine.data list``)."""
    dynamics: DynamicsConfig = DynamicsConfig()
    """Ensemble architecture and training; the same flags as the algorithms' ``--dynamics.*``."""
    seed: int = 0
    """The ``--seed`` of the runs that will use the ensemble: its seed unless ``--dynamics.seed`` is given."""
    num_threads: int = 2
    """torch CPU threads (2: the fit is usually one process alone, unlike training runs)."""
    device: str = "cpu"
    """torch device."""
    cache_dir: str = "runs/dynamics"
    """Where fitted ensembles are kept (the algorithms' default cache)."""


def main(argv: list[str] | None = None) -> dict:
    """Fit the ensemble of ``--dataset`` into the cache and print where it is and its holdout MSE."""
    import sys

    import tyro

    cfg = tyro.cli(FitConfig, args=argv, prog="python -m engine.dynamics", description=FitConfig.__doc__)
    if cfg.num_threads < 1:
        sys.exit(f"python -m engine.dynamics: error: num_threads must be >= 1, got {cfg.num_threads}")
    torch.set_num_threads(cfg.num_threads)
    try:
        data = load(cfg.dataset, device=cfg.device)
        dyn_cfg = cfg.dynamics.seeded(cfg.seed)
        _, info = fit_or_load(data.as_batch(), cfg.dataset, dyn_cfg, cfg.cache_dir, device=cfg.device)
    except (ValueError, FileNotFoundError) as e:
        if argv is not None:
            raise
        sys.exit(f"python -m engine.dynamics: error: {e}")
    print(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    main()
