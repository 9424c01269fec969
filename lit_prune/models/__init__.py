"""Model registry and definitions: CIFAR ResNet-20/32/44/56, ResNet-18, VGG11/13/16/19-BN and ViT-Tiny.

Build a network by name with :func:`create_model`; :func:`list_models` gives the names.
Importing this package registers every model: each definition module registers its builders
when it is imported.
"""

from lit_prune.models import cifar_resnet, resnet18, vgg, vit  # noqa: F401  (registration)
from lit_prune.models.checkpoint import describe_state_dict_mismatch, load_state_dict_checked, read_state_dict
from lit_prune.models.cifar_resnet import BasicBlock, CifarResNet
from lit_prune.models.pretrained import PRETRAINED_CHECKPOINTS, PretrainedCheckpoint, pretrained_checkpoint
from lit_prune.models.provenance import set_weights_source, weights_source
from lit_prune.models.registry import create_model, list_models, register_model
from lit_prune.models.vgg import VGG16_CONFIG, CifarVGG

__all__ = [
    "PRETRAINED_CHECKPOINTS",
    "VGG16_CONFIG",
    "BasicBlock",
    "CifarResNet",
    "CifarVGG",
    "PretrainedCheckpoint",
    "create_model",
    "describe_state_dict_mismatch",
    "list_models",
    "load_state_dict_checked",
    "pretrained_checkpoint",
    "read_state_dict",
    "register_model",
    "set_weights_source",
    "weights_source",
]
