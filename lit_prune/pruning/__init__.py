"""Pure-PyTorch pruning core: masks, scores, selection, schedules, enforcement, structured surgery.

Nothing here imports Lightning; callbacks decide *when* to call these functions. Scores are
registered by name (:func:`register_score`, :func:`get_score`, :func:`list_scores`); importing
this package registers every score lit-prune ships.

Typical one-shot global magnitude pruning::

    params = prunable_parameters(model, exclude=["conv1.weight", "fc.weight"])
    mask = global_prune_mask(magnitude_scores(params), sparsity=0.9)
    mask.apply_(model)
    enforcer = MaskEnforcer(model, mask)
    enforcer.clear_optimizer_state_(optimizer)
    # each step: loss.backward(); enforcer.zero_gradients_(); optimizer.step(); enforcer.zero_weights_()
"""

from lit_prune.pruning.channel_groups import StructuredGroup, prunable_groups
from lit_prune.pruning.channel_surgery import remove_channels_, shrink_groups_
from lit_prune.pruning.enforcement import (
    MaskEnforcer,
    clear_pruned_optimizer_state_,
    zero_pruned_gradients_,
    zero_pruned_weights_,
)
from lit_prune.pruning.fpgm import fpgm_importance
from lit_prune.pruning.group_scores import (
    bn_scale_importance,
    l1_importance,
    l2_importance,
    taylor_from_gradients,
    taylor_importance,
)
from lit_prune.pruning.head_surgery import remove_heads_, remove_mlp_units_
from lit_prune.pruning.lamp import lamp_scores
from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.nm_sparsity import NMPattern, nm_prune_mask, parse_pattern
from lit_prune.pruning.parameters import NORM_LAYER_TYPES, PRUNABLE_LAYER_TYPES, prunable_parameters
from lit_prune.pruning.saliency import class_balanced_batches, grasp_scores, snip_scores, synflow_prune_mask
from lit_prune.pruning.schedules import cubic_sparsity, fixed_steps, geometric, linear_steps, one_shot
from lit_prune.pruning.score_registry import Score, get_score, list_scores, register_score
from lit_prune.pruning.scores import magnitude_scores, random_scores
from lit_prune.pruning.selection import (
    SCOPES,
    global_prune_mask,
    iterative_prune_mask,
    layerwise_prune_mask,
    sparsity_after_step,
)
from lit_prune.pruning.semi_structured import semi_structured_plan, to_semi_structured
from lit_prune.pruning.sensitivity import SensitivityResult, allocate_layer_sparsity, sensitivity_sweep
from lit_prune.pruning.sparse_export import export_coo, to_sparse_inference, verify_coo_against_mask
from lit_prune.pruning.structured_importance import (
    removed_parameter_fraction,
    select_channels,
    select_channels_for_removed_fraction,
    structured_importance,
)
from lit_prune.pruning.surgery_history import remap_mask, replay_history
from lit_prune.pruning.unstructured import UnstructuredPruner

__all__ = [
    "NORM_LAYER_TYPES",
    "PRUNABLE_LAYER_TYPES",
    "SCOPES",
    "allocate_layer_sparsity",
    "bn_scale_importance",
    "class_balanced_batches",
    "clear_pruned_optimizer_state_",
    "cubic_sparsity",
    "export_coo",
    "fixed_steps",
    "fpgm_importance",
    "geometric",
    "get_score",
    "global_prune_mask",
    "grasp_scores",
    "iterative_prune_mask",
    "l1_importance",
    "l2_importance",
    "lamp_scores",
    "layerwise_prune_mask",
    "linear_steps",
    "list_scores",
    "magnitude_scores",
    "MaskEnforcer",
    "NMPattern",
    "nm_prune_mask",
    "one_shot",
    "parse_pattern",
    "prunable_groups",
    "prunable_parameters",
    "PruningMask",
    "random_scores",
    "register_score",
    "remap_mask",
    "remove_channels_",
    "remove_heads_",
    "remove_mlp_units_",
    "removed_parameter_fraction",
    "replay_history",
    "Score",
    "select_channels",
    "select_channels_for_removed_fraction",
    "semi_structured_plan",
    "sensitivity_sweep",
    "SensitivityResult",
    "shrink_groups_",
    "snip_scores",
    "sparsity_after_step",
    "structured_importance",
    "StructuredGroup",
    "synflow_prune_mask",
    "taylor_from_gradients",
    "taylor_importance",
    "to_semi_structured",
    "to_sparse_inference",
    "UnstructuredPruner",
    "verify_coo_against_mask",
    "zero_pruned_gradients_",
    "zero_pruned_weights_",
]
