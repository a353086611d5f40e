"""OfflineRL-Kit's ensemble fit (``EnsembleDynamics.train``) as a loop the OfflineRL-Kit adapters drive, so that a
fit killed after hours resumes from its last epoch (``fit_dynamics``). Module level imports only numpy, torch and
``peers.peer_common``: it calls the peer's methods on the objects it is given and never imports OfflineRL-Kit."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from peers import peer_common as pc

FIT_STATE_FILE = "fit_state.pt"
"""A peer run's ensemble fit after its last finished epoch (``fit_dynamics``), until the fit ends."""


def _shuffle_rows(arr: np.ndarray) -> np.ndarray:
    """``shuffle_rows`` of ``EnsembleDynamics.train``: each row of ``arr`` permuted by numpy's global stream."""
    idxes = np.argsort(np.random.uniform(size=arr.shape), axis=-1)
    return arr[np.arange(arr.shape[0])[:, None], idxes]


def _losses_from_tensors(values: torch.Tensor, is_float32: torch.Tensor) -> list:
    """The members' best holdout losses as ``train`` holds them: ``np.float32`` where ``validate`` set one, the
    python float ``1e10`` where none has improved yet (the type decides the precision of the next comparison)."""
    return [np.float32(v) if f else float(v) for v, f in zip(values.tolist(), is_float32.tolist())]


def fit_dynamics(
    dynamics,
    data: dict,
    logger,
    state_path: Path,
    max_epochs: int | None = None,
    max_epochs_since_update: int = 5,
    batch_size: int = 256,
    holdout_ratio: float = 0.2,
    logvar_loss_coef: float = 0.01,
    stop_after: int | None = None,
) -> dict:
    """OfflineRL-Kit's ``EnsembleDynamics.train`` (offlinerlkit/dynamics/ensemble_dynamics.py, lines 106-171, at
    ``peers.offlinerlkit_common.COMMIT``) step for step, calling the peer's own methods
    (``format_samples_for_training``, the scaler, ``learn``, ``validate``, ``model.update_save``, ``select_elites``,
    ``model.set_elites``, ``model.load_save``, ``save``), with one addition: after every epoch it writes
    ``state_path`` (the epoch, the epochs since an improvement, the members' best holdout losses, the ensemble with
    its saved best weights, the optimiser, numpy's, python's and torch's random states), so that a fit killed after
    hours goes on from its last epoch.

    ``train``'s loop has no such state, so the adapter drives the peer's methods itself; the holdout split, the
    bootstrap indices and each epoch's reshuffle draw from the same global streams in the same order, and
    ``python -m peers.offlinerlkit_fit_check`` (in the peer's venv) checks that the ensemble it fits, killed and
    resumed or not, equals ``train``'s bit for bit. On resume (``state_path`` present) the caller must have
    rebuilt the run as it was (same seed, same objects): the split and the bootstrap indices are drawn again,
    the reshuffles of the finished epochs replayed, and numpy's state afterwards checked against the saved one.

    ``stop_after``: return after this many epochs of this call without finishing (tests and the fit check).
    Returns ``{"epochs", "holdout_losses", "elites", "elite_holdout_mse", "resumed_at_epoch", "wall_s",
    "finished"}`` (``wall_s``: the fit's seconds over all its processes). Raises RuntimeError when a resumed fit
    does not replay to the saved random state (the run was not rebuilt as it was)."""
    t = time.perf_counter()
    model = dynamics.model
    inputs, targets = dynamics.format_samples_for_training(data)
    data_size = inputs.shape[0]
    holdout_size = min(int(data_size * holdout_ratio), 1000)
    train_size = data_size - holdout_size
    train_splits, holdout_splits = torch.utils.data.random_split(range(data_size), (train_size, holdout_size))
    train_inputs, train_targets = inputs[train_splits.indices], targets[train_splits.indices]
    holdout_inputs, holdout_targets = inputs[holdout_splits.indices], targets[holdout_splits.indices]
    dynamics.scaler.fit(train_inputs)
    train_inputs = dynamics.scaler.transform(train_inputs)
    holdout_inputs = dynamics.scaler.transform(holdout_inputs)
    holdout_losses = [1e10 for _ in range(model.num_ensemble)]
    data_idxes = np.random.randint(train_size, size=[model.num_ensemble, train_size])
    epoch = cnt = 0
    wall_before, resumed_at = 0.0, None
    if state_path.is_file():
        saved = torch.load(state_path, weights_only=True)
        for _ in range(saved["epoch"]):
            data_idxes = _shuffle_rows(data_idxes)
        if not np.array_equal(np.random.get_state()[1], saved["rng"]["numpy"][1].numpy().astype(np.uint32)):
            raise RuntimeError(
                f"{state_path}: replaying {saved['epoch']} epochs' reshuffles did not reach the saved random state; "
                "the run was not rebuilt as it was (seed, data or settings differ)"
            )
        model.load_state_dict(saved["model"])
        dynamics.optim.load_state_dict(saved["optim"])
        holdout_losses = _losses_from_tensors(saved["holdout_losses"], saved["holdout_loss_is_float32"])
        epoch, cnt, wall_before = int(saved["epoch"]), int(saved["cnt"]), float(saved["wall_s"])
        resumed_at = epoch
        pc.set_rng_state(saved["rng"])
        logger.log(f"Training dynamics: resumed after epoch {epoch} ({state_path})")
    else:
        logger.log("Training dynamics:")
    this_call = 0
    while not (cnt >= max_epochs_since_update or (max_epochs and epoch >= max_epochs)):
        if stop_after is not None and this_call >= stop_after:
            return {"epochs": epoch, "finished": False, "wall_s": wall_before + time.perf_counter() - t}
        epoch += 1
        this_call += 1
        train_loss = dynamics.learn(train_inputs[data_idxes], train_targets[data_idxes], batch_size, logvar_loss_coef)
        new_holdout_losses = dynamics.validate(holdout_inputs, holdout_targets)
        holdout_loss = (np.sort(new_holdout_losses)[: model.num_elites]).mean()
        logger.logkv("loss/dynamics_train_loss", train_loss)
        logger.logkv("loss/dynamics_holdout_loss", holdout_loss)
        logger.set_timestep(epoch)
        logger.dumpkvs(exclude=["policy_training_progress"])
        data_idxes = _shuffle_rows(data_idxes)
        indexes = []
        for i, new_loss, old_loss in zip(range(len(holdout_losses)), new_holdout_losses, holdout_losses):
            if (old_loss - new_loss) / old_loss > 0.01:
                indexes.append(i)
                holdout_losses[i] = new_loss
        if len(indexes) > 0:
            model.update_save(indexes)
            cnt = 0
        else:
            cnt += 1
        state = {
            "epoch": epoch,
            "cnt": cnt,
            "holdout_losses": torch.tensor([float(x) for x in holdout_losses], dtype=torch.float64),
            "holdout_loss_is_float32": torch.tensor([isinstance(x, np.float32) for x in holdout_losses]),
            "model": model.state_dict(),
            "optim": dynamics.optim.state_dict(),
            "rng": pc.rng_state(),
            "wall_s": wall_before + time.perf_counter() - t,
        }
        pc.save_atomic(state, state_path)
    indexes = dynamics.select_elites(holdout_losses)
    model.set_elites(indexes)
    model.load_save()
    dynamics.save(logger.model_dir)
    model.eval()
    elite_loss = (np.sort(holdout_losses)[: model.num_elites]).mean()
    logger.log(f"elites:{indexes} , holdout loss: {elite_loss}")
    return {
        "epochs": epoch,
        "holdout_losses": [float(x) for x in holdout_losses],
        "elites": [int(i) for i in indexes],
        "elite_holdout_mse": float(elite_loss),
        "resumed_at_epoch": resumed_at,
        "wall_s": wall_before + time.perf_counter() - t,
        "finished": True,
    }
