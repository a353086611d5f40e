"""Checks ``peers.offlinerlkit_fit_dynamics`` against OfflineRL-Kit's own ``EnsembleDynamics.train``: on
the first ``--rows`` transitions of a dataset, the run as the MOPO adapter builds it (same seed, same objects)
fits its ensemble three ways for ``--epochs`` epochs (a cap, as ``--dynamics-max-epochs`` gives): with the
peer's ``train``, with ``fit_dynamics`` in one go, and with ``fit_dynamics`` stopped after ``--kill-after``
epochs, the run rebuilt from scratch and the fit resumed from its ``fit_state.pt``. All three must give the same
ensemble (every tensor of its state_dict, saved best weights included), elites, scaler and random states after
the fit, bit for bit. Exit status 0 when they do, 1 otherwise. Run with the peer's venv (peers/README.md):

    OMP_NUM_THREADS=1 TQDM_DISABLE=1 PYTHONPATH=/work/peers/OfflineRL-Kit /work/peers/offlinerlkit-venv/bin/python \\
        -m peers.offlinerlkit_fit_check --data /work/peers/data/hopper-medium.npz
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from peers import offlinerlkit_common as common
from peers import offlinerlkit_mopo
from peers import peer_common as pc
from peers.offlinerlkit_fit import fit_dynamics


@dataclass(frozen=True)
class CheckArgs:
    data: Path
    """The .npz from ``python -m peers.export_data``."""
    rows: int = 20_000
    """Transitions used (the first ones; a whole number of episodes is not needed)."""
    epochs: int = 4
    """Epochs of each fit (the cap)."""
    kill_after: int = 2
    """Where the interrupted fit stops before it is resumed in a rebuilt run."""
    seed: int = 0


class _Log:
    """The part of OfflineRL-Kit's ``Logger`` the fit uses, writing nothing but the ensemble."""

    def __init__(self, model_dir: Path):
        self.model_dir = str(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)

    def log(self, *_):
        pass

    def logkv(self, *_):
        pass

    def set_timestep(self, *_):
        pass

    def dumpkvs(self, *_, **__):
        pass


def _run(data, seed: int):
    """The MOPO adapter's objects for ``data`` (``_build``, seeded as the run script seeds); returns the dynamics
    and the fit's input (``real_buffer.sample_all()``)."""
    args = offlinerlkit_mopo.Args(data=Path("unused"), out=Path("unused"), seed=seed)
    _, dynamics, _, real_buffer, _, _ = common._build(offlinerlkit_mopo.PEER, args, data, 5, 5.0, 1, [0.0])
    return dynamics, real_buffer.sample_all()


def _outcome(dynamics) -> dict:
    return {
        "model": {k: v.clone() for k, v in dynamics.model.state_dict().items()},
        "mu": np.array(dynamics.scaler.mu),
        "std": np.array(dynamics.scaler.std),
        "rng": pc.rng_state(),
    }


def _same(a: dict, b: dict) -> list[str]:
    """Names of what differs between two outcomes."""
    diff = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    diff += [k for k in ("mu", "std") if not np.array_equal(a[k], b[k])]
    ra, rb = a["rng"], b["rng"]
    if ra["python"] != rb["python"] or not torch.equal(ra["torch"], rb["torch"]):
        diff.append("rng")
    if not all(torch.equal(x, y) if torch.is_tensor(x) else x == y for x, y in zip(ra["numpy"], rb["numpy"])):
        diff.append("numpy rng")
    return diff


def main(argv: list[str] | None = None) -> int:
    a = tyro.cli(CheckArgs, args=argv)
    pc.set_threads(1)
    full = pc.load_dataset(a.data)
    arrays = {f.name: getattr(full, f.name) for f in dataclasses.fields(full)}
    n = a.rows
    cut = {k: v[:n] if isinstance(v, np.ndarray) else v for k, v in arrays.items()}
    cut["timeout"] = cut["timeout"].copy()
    cut["timeout"][-1] = 1 - cut["terminal"][-1]  # the cut ends an episode
    data = pc.PeerDataset(**cut)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dynamics, rows = _run(data, a.seed)
        dynamics.train(rows, _Log(tmp / "train"), max_epochs=a.epochs, max_epochs_since_update=5)
        peer = _outcome(dynamics)

        dynamics, rows = _run(data, a.seed)
        fit = fit_dynamics(dynamics, rows, _Log(tmp / "one"), tmp / "one.pt", max_epochs=a.epochs)
        ours = _outcome(dynamics)

        dynamics, rows = _run(data, a.seed)
        fit_dynamics(dynamics, rows, _Log(tmp / "two"), tmp / "two.pt", max_epochs=a.epochs, stop_after=a.kill_after)
        torch.manual_seed(a.seed + 1), np.random.seed(a.seed + 1)  # the killed process's streams are gone
        dynamics, rows = _run(data, a.seed)
        resumed_fit = fit_dynamics(dynamics, rows, _Log(tmp / "two"), tmp / "two.pt", max_epochs=a.epochs)
        resumed = _outcome(dynamics)
    print(
        f"{n} rows, {fit['epochs']} epochs, elites {fit['elites']}, elite holdout MSE {fit['elite_holdout_mse']:.6g};"
        f" resumed after epoch {resumed_fit['resumed_at_epoch']}"
    )
    bad = {"fit_dynamics vs train": _same(peer, ours), "resumed vs train": _same(peer, resumed)}
    for name, diff in bad.items():
        print(f"{name}: {'identical' if not diff else 'DIFFER in ' + ', '.join(diff)}")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
