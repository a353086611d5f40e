"""COMBO as OfflineRL-Kit implements it, trained on a simloop dataset (the ``.npz`` that
``python -m peers.export_data`` writes) with the library's own ensemble fit, ``COMBOPolicy``, replay buffers and
``MBPolicyTrainer``, set up the way its example script sets them up. The policy is saved as TorchScript snapshots
for ``python -m peers.score``, simloop's evaluator.

The library: github yihaosun1124/OfflineRL-Kit, commit e3ce69793766d02660217d4dfc0af4693a5531bd (2025-07-11),
unmodified, its source on ``PYTHONPATH`` and its dependencies in ``/work/peers/offlinerlkit-venv`` (see
peers/README.md); run this module with that venv's python. It never imports simloop. The parts it has in common
with the MOPO adapter live in ``peers.offlinerlkit_common``.

Wiring and settings: ``run_example/run_combo.py`` at that commit, ``train()`` and ``get_args()``:

- policy: ``COMBOPolicy`` (a ``CQLPolicy``) with a 3x256 SAC actor (TanhDiagGaussian, unbounded mean,
  state-dependent sigma, ``max_mu`` = the action bound 1) and two 3x256 critics; actor lr 1e-4 with cosine
  annealing over the run's epochs, critic lr 3e-4, gamma 0.99, tau 0.005, automatic alpha (target entropy -A,
  lr 1e-4); the conservative term with temperature 1.0, 10 repeated actions, ``max_q_backup=False``,
  ``deterministic_backup=True``, ``with_lagrange=False`` (so ``lagrange_threshold`` 10.0 and ``cql_alpha_lr``
  3e-4 are passed but unused), ``uniform_rollout=False`` (model rollouts with the current policy's sampled
  actions), ``rho_s="mix"`` (the conservative term's states from the mixed real/model batch); as the peer's code
  stands, its conservative log-sum-exp runs over the 3 proposals of each of the 10 repeats and averages over the
  repeats, not over the 30 samples of a state (a ``reshape`` whose result is discarded, ``combo.py`` l. 188;
  ``algos/combo.py`` describes the difference from ours), and the actor steps before the critics: run unmodified;
- dynamics: ensemble of 7 (5 elites), 4x200 Swish, weight decays (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), lr 1e-3,
  no reward penalty (``EnsembleDynamics`` built without ``penalty_coef``), trained as ``EnsembleDynamics.train``
  with ``max_epochs_since_update=5`` (its own early stopping: 5 epochs without a 1% holdout gain; no epoch cap
  unless ``--dynamics-max-epochs``);
- ``MBPolicyTrainer``: rollouts of 50,000 starts every 1,000 updates, kept 5 rollout phases, real ratio 0.5,
  batch 256, 1,000 updates per epoch;
- rollout length h and ``cql_weight`` (the paper's beta): the script's "suggested hypers" docstring for the
  D4RL -v2 dataset of the same name (halfcheetah-medium 5 / 0.5, hopper-medium 5 / 5.0, walker2d-medium
  1 / 5.0; medium-replay 5 / 0.5, 5 / 0.5, 1 / 0.5; medium-expert 5 / 5.0, 5 / 5.0, 1 / 5.0); other levels need
  ``--rollout-length`` and ``--cql-weight`` (the script's own defaults, 5 and 5.0, are its default task's,
  hopper-medium-v2);
- the data goes through OfflineRL-Kit's ``qlearning_dataset`` (the script's choice for hopper, halfcheetah and
  walker2d; it drops each timed-out episode's last transition, as it does for D4RL).

Departures: the script's epoch count (1,000) is replaced by ``--num-updates / --step-per-epoch`` (200 for
200,000 updates); the cosine schedule follows the epoch count as in the script. ``--seed`` (default 0) replaces
the script's ``--seed`` (default 1), seeding python, numpy and torch at the same point. CPU, one torch thread.
The script reads the action space and ``max_action`` from the D4RL gym env; here ``action_space`` is
``gym.spaces.Box(-1, 1, (A,), float32)`` and ``max_action`` 1, the bounds of the Gymnasium v5 MuJoCo envs (and
of D4RL's). And, because the trainer assumes a D4RL gym env: no environment evaluation during training (the
trainer's per-epoch ``_evaluate`` saves a snapshot every ``--snapshot-interval`` updates instead and logs NaN
as its score; ``peers.score`` evaluates the snapshots afterwards); ``termination_fn`` is looked up with simloop's
env name (``get_termination_fn("hopper")``, the same functions as for the D4RL task names).

Resuming (ours; the trainer has none), as in the MOPO adapter: at every snapshot at a multiple of the rollout
period (1,000 updates: every snapshot with the default ``--step-per-epoch``) the script also writes
``resume.pt``, the whole training state -- the policy's networks and target critics, the three optimisers and
alpha's, ``log_alpha``, CQL's ``cql_log_alpha`` and its optimiser (unused without the Lagrange form, saved all the
same), the cosine schedule, the model-rollout buffer, the python/numpy/torch random states and the epochs done --
and ``--resume RUN_DIR`` rebuilds the run from ``peer_run.json``'s arguments, loads the fitted ensemble from
``offlinerlkit/model`` and calls the trainer again for the remaining epochs (its log goes to
``offlinerlkit-resumed-<step>/``). ``--resume RUN_DIR --slim-to DEST`` copies a run without the rollout buffer;
resuming the copy refills it with five rollout phases of the current policy. The ensemble fit resumes from
``fit_state.pt`` as in the MOPO adapter (``offlinerlkit_fit.fit_dynamics``). ``--load-dynamics-path`` (the run
script's ``--load-dynamics-path``) reuses a fitted ensemble, e.g. ``<earlier run>/offlinerlkit/model``.

    cd /work/main && OMP_NUM_THREADS=1 PYTHONPATH=/work/peers/OfflineRL-Kit /work/peers/offlinerlkit-venv/bin/python \\
        -m peers.offlinerlkit_combo --data /work/peers/data/hopper-medium.npz --seed 0 \\
        --num-updates 200000 --out runs/peers/offlinerlkit-combo/hopper-medium/seed0

Snapshot: ``policies/step_XXXXXXX.pt``, the actor's mode ``tanh(mu(obs))`` traced to TorchScript (no
observation normalisation for the policy; the dynamics' input scaler is inside the model only).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from peers import offlinerlkit_common as common

RUN_COMBO = dict(
    common.SCRIPT_DEFAULTS,
    hidden_dims=[256, 256, 256],
    real_ratio=0.5,
    temperature=1.0,
    max_q_backup=False,
    deterministic_backup=True,
    with_lagrange=False,
    lagrange_threshold=10.0,
    cql_alpha_lr=3e-4,
    num_repeat_actions=10,
    uniform_rollout=False,
    rho_s="mix",
)
"""``get_args()`` defaults of run_combo.py (its epoch count, eval episodes, rollout length and cql weight aside)."""
# (rollout length, cql weight) per dataset: run_combo.py's "suggested hypers" for the D4RL -v2 datasets
SUGGESTED = common.by_level(
    medium=dict(halfcheetah=(5, 0.5), hopper=(5, 5.0), walker2d=(1, 5.0)),
    medium_replay=dict(halfcheetah=(5, 0.5), hopper=(5, 0.5), walker2d=(1, 0.5)),
    medium_expert=dict(halfcheetah=(5, 5.0), hopper=(5, 5.0), walker2d=(1, 5.0)),
)


@dataclass(frozen=True)
class Args(common.Args):
    """OfflineRL-Kit COMBO on a dataset exported by peers.export_data."""

    cql_weight: float | None = None
    """beta, the conservative term's weight; default: run_combo.py's suggestion for the dataset's env and level."""


def combo_policy(settings: dict, cql_weight: float, action_dim: int):
    """``COMBOPolicy`` and its arguments beyond SAC's, as run_combo.py passes them."""
    import gym
    from offlinerlkit.policy import COMBOPolicy

    action_space = gym.spaces.Box(low=-1.0, high=1.0, shape=(action_dim,), dtype=np.float32)
    keys = ("temperature", "max_q_backup", "deterministic_backup", "with_lagrange", "lagrange_threshold")
    kwargs = {k: settings[k] for k in (*keys, "cql_alpha_lr", "uniform_rollout", "rho_s")}
    # num_repeart_actions: COMBOPolicy's spelling
    kwargs.update(action_space=action_space, num_repeart_actions=settings["num_repeat_actions"])
    return COMBOPolicy, dict(kwargs, cql_weight=cql_weight)


PEER = common.Peer(
    "offlinerlkit-combo",
    "run_combo.py",
    RUN_COMBO,
    SUGGESTED,
    coef="cql_weight",  # the Args field and settings key of the suggested coefficient
    policy=combo_policy,
    extra_state=("cql_log_alpha", "cql_alpha_optim"),  # CQL's Lagrange multiplier and its optimiser
)


def main(argv: list[str] | None = None) -> dict:
    return common.main(PEER, Args, argv)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
