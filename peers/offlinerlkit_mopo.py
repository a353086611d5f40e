"""OfflineRL-Kit's MOPO on a simloop dataset: its own dynamics training, policy, buffers and trainer, wired as
its run script wires them, fed an ``.npz`` from ``python -m peers.export_data``; writes TorchScript
policy snapshots that ``python -m peers.score`` evaluates with simloop's evaluator.

Peer code: OfflineRL-Kit (github yihaosun1124/OfflineRL-Kit) at commit
e3ce69793766d02660217d4dfc0af4693a5531bd (2025-07-11), unmodified, installed from its public repository in its
own venv (``/work/peers/offlinerlkit-venv``, source on ``PYTHONPATH``; setup in peers/README.md). This
script runs with that venv's python and does not import simloop. What it shares with the COMBO adapter is in
``peers.offlinerlkit_common``.

Wiring and settings: ``run_example/run_mopo.py`` at that commit, ``train()``: 2x256 SAC actor (TanhDiagGaussian,
unbounded mean, state-dependent sigma) and critics, actor lr 1e-4 with cosine annealing over the run's epochs,
critic lr 3e-4, gamma 0.99, tau 0.005, automatic alpha (target entropy -A, lr 1e-4); ensemble of 7 (5 elites),
4x200 Swish, weight decays (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), lr 1e-3, trained as ``EnsembleDynamics.train``
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
Resuming (ours; the trainer has none): at every snapshot at a multiple of the rollout period (1,000 updates:
every snapshot with the default ``--step-per-epoch``) the script also writes ``resume.pt``, the whole
training state -- the policy's networks and target critics, the three optimisers and alpha's, ``log_alpha``, the
cosine schedule, the model-rollout buffer, the python/numpy/torch random states and the epochs done -- and
``--resume RUN_DIR`` rebuilds the run from ``peer_run.json``'s arguments, loads the fitted ensemble from
``offlinerlkit/model`` (OfflineRL-Kit saves it when its fit ends) and calls the trainer again for the remaining
epochs (its log goes to ``offlinerlkit-resumed-<step>/``). The resumed trainer counts its updates from 0 and
starts with a rollout phase, as the unbroken one does at every multiple of rollout_freq, so it takes the same
steps. (With another ``--step-per-epoch``, a state saved between rollout phases would resume with an extra
one: none is saved there.) The ensemble fit resumes too: ``EnsembleDynamics.train`` keeps its loop's state
in locals, so the adapter runs that loop itself with the peer's own methods (``offlinerlkit_fit.fit_dynamics``,
checked equal to ``train`` bit for bit by ``python -m peers.offlinerlkit_fit_check``) and saves ``fit_state.pt``
after every epoch; ``--resume RUN_DIR`` of a run killed while fitting goes on from its last finished epoch.
``--load-dynamics-path`` (the run script's ``--load-dynamics-path``) reuses a fitted ensemble, e.g.
``<earlier run>/offlinerlkit/model``.

    cd /work/main && OMP_NUM_THREADS=1 PYTHONPATH=/work/peers/OfflineRL-Kit /work/peers/offlinerlkit-venv/bin/python \\
        -m peers.offlinerlkit_mopo --data /work/peers/data/halfcheetah-medium.npz --seed 0 \\
        --num-updates 200000 --out runs/peers/offlinerlkit-mopo/halfcheetah-medium/seed0

Snapshot: ``policies/step_XXXXXXX.pt``, the actor's mode ``tanh(mu(obs))`` traced to TorchScript (MOPO here
applies no observation normalisation to the policy; the dynamics' input scaler is inside the model only).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from peers import offlinerlkit_common as common

RUN_MOPO = dict(common.SCRIPT_DEFAULTS, hidden_dims=[256, 256], real_ratio=0.05)
"""``get_args()`` defaults of run_mopo.py (the script's epoch count and eval episodes aside)."""
# (rollout length, penalty coef) per dataset: run_mopo.py's "suggested hypers" for the D4RL -v2 datasets
SUGGESTED = common.by_level(
    medium=dict(halfcheetah=(5, 0.5), hopper=(5, 5.0), walker2d=(5, 0.5)),
    medium_replay=dict(halfcheetah=(5, 0.5), hopper=(5, 2.5), walker2d=(1, 2.5)),
    medium_expert=dict(halfcheetah=(5, 2.5), hopper=(5, 5.0), walker2d=(1, 2.5)),
)


def _mopo_policy(settings: dict, penalty_coef: float, action_dim: int):
    """``MOPOPolicy`` takes SAC's arguments only (the penalty is the dynamics')."""
    from offlinerlkit.policy import MOPOPolicy

    return MOPOPolicy, {}


# algo, run script, settings, suggestions, the Args field of the suggested coefficient, policy, and that
# coefficient is the dynamics' reward penalty (EnsembleDynamics(penalty_coef=...))
PEER = common.Peer("offlinerlkit-mopo", "run_mopo.py", RUN_MOPO, SUGGESTED, "penalty_coef", _mopo_policy, True)


@dataclass(frozen=True)
class Args(common.Args):
    """OfflineRL-Kit MOPO on a dataset exported by peers.export_data."""

    penalty_coef: float | None = None
    """lambda; default: run_mopo.py's suggestion for the dataset's env and level."""


def main(argv: list[str] | None = None) -> dict:
    return common.main(PEER, Args, argv)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
