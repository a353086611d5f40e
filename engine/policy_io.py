"""The policy checkpoint format: a ``TanhGaussianActor``'s weights with its environment, dimensions and
provenance (``meta``), as written for the behaviour policies that ship in ``engine/policies/`` (which
generate the datasets) and for BC reference policies. Light on purpose: reading a policy needs neither
the SAC trainer (``engine.behavior``) nor an environment.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.nets import TanhGaussianActor

POLICY_DIR = Path(__file__).parent / "policies"
"""Where the shipped behaviour policies live (``<env>-<level>.pt``)."""


def save_policy(actor: TanhGaussianActor, path: str | Path, env: str, **meta) -> None:
    """Write a policy checkpoint: the actor's weights plus ``env``, dims and ``meta`` (JSON-able)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
    torch.save(
        {
            "env": env,
            "obs_dim": actor.obs_dim,
            "act_dim": actor.act_dim,
            "hidden_dims": list(actor.hidden_dims),
            "actor": state,
            "meta": meta,
        },
        path,
    )


def load_policy(path: str | Path, device="cpu") -> tuple[TanhGaussianActor, dict]:
    """Load a checkpoint written by ``save_policy``; returns ``(actor, info)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a simloop policy checkpoint (corrupt or other format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        actor = TanhGaussianActor(ckpt["obs_dim"], ckpt["act_dim"], tuple(ckpt["hidden_dims"]))
        actor.load_state_dict(ckpt["actor"])
    except Exception as e:  # noqa: BLE001 - any failure here means a bad file; say which
        raise ValueError(f"{path} is not a readable simloop policy checkpoint: {e}") from e
    return actor.to(device).eval(), {k: v for k, v in ckpt.items() if k != "actor"}
