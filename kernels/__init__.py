"""simloop's fast core: the fused rollout-step operation and its backends.

``rollout_step`` is the one public entry point; ``EnsembleParams`` is the parameter type
users build from their own stacked ensemble weights.
"""

from kernels.params import EnsembleParams, StepOutput, ensemble_forward
from kernels.rollout_step import BACKENDS, rollout_step, rollout_step_reference

__all__ = ["BACKENDS", "EnsembleParams", "StepOutput", "ensemble_forward", "rollout_step", "rollout_step_reference"]
