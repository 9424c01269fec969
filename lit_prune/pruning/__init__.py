"""Pure-PyTorch pruning core: masks, parameter selection, scores, selection, schedules, enforcement.

Nothing here imports Lightning; callbacks decide *when* to call these functions.

Typical one-shot global magnitude pruning::

    params = prunable_parameters(model, exclude=["conv1.weight", "fc.weight"])
    mask = global_prune_mask(magnitude_scores(params), sparsity=0.9)
    mask.apply_(model)
    enforcer = MaskEnforcer(model, mask)
    enforcer.clear_optimizer_state_(optimizer)
    # each step: loss.backward(); enforcer.zero_gradients_(); optimizer.step(); enforcer.zero_weights_()
"""

from lit_prune.pruning.enforcement import (
    MaskEnforcer,
    clear_pruned_optimizer_state_,
    zero_pruned_gradients_,
    zero_pruned_weights_,
)
from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.parameters import NORM_LAYER_TYPES, PRUNABLE_LAYER_TYPES, prunable_parameters
from lit_prune.pruning.schedules import cubic_sparsity, fixed_steps, geometric, linear_steps, one_shot
from lit_prune.pruning.scores import magnitude_scores, random_scores
from lit_prune.pruning.selection import (
    global_prune_mask,
    layerwise_prune_mask,
    sparsity_after_step,
    validate_sparsity,
)

__all__ = [
    "NORM_LAYER_TYPES",
    "PRUNABLE_LAYER_TYPES",
    "MaskEnforcer",
    "PruningMask",
    "clear_pruned_optimizer_state_",
    "cubic_sparsity",
    "fixed_steps",
    "geometric",
    "global_prune_mask",
    "layerwise_prune_mask",
    "linear_steps",
    "magnitude_scores",
    "one_shot",
    "prunable_parameters",
    "random_scores",
    "sparsity_after_step",
    "validate_sparsity",
    "zero_pruned_gradients_",
    "zero_pruned_weights_",
]
