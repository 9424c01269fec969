"""Files of a sparse export: the masks and the kept weights as COO, written and then checked back.

Deep Compression's first step (Han et al. 2016, "Deep Compression: Compressing Deep Neural
Networks with Pruning, Trained Quantization and Huffman Coding") stores only the kept weights
of an unstructured-pruned network. :func:`export_and_verify` writes them with the mask, reads
both files back and checks them with :func:`~lit_prune.pruning.sparse_export.verify_coo_against_mask`;
``callbacks.SparseExport`` calls it at the end of training. Every file is written atomically.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_prune.atomic_files import atomic_write
from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.sparse_export import export_coo, verify_coo_against_mask

__all__ = [
    "MASKS_FILE",
    "SPARSE_EXPORT_FILE",
    "SPARSE_WEIGHTS_FILE",
    "export_and_verify",
    "verify_export",
]

MASKS_FILE = "masks.pt"
"""Parameter name to bool keep-mask (``True`` = kept), written with ``torch.save``."""

SPARSE_WEIGHTS_FILE = "sparse_weights.pt"
"""Parameter name to sparse COO tensor of the kept weights, written with ``torch.save``."""

SPARSE_EXPORT_FILE = "sparse_export.json"
"""The outcome of the check: ``verified``, ``problems``, file sizes, weight counts."""


def export_and_verify(network: nn.Module, mask: PruningMask, directory: str | Path) -> dict[str, Any]:
    """Writes ``masks.pt`` and ``sparse_weights.pt``, reads them back, verifies, writes ``sparse_export.json``.

    Args:
        network: The pruned network.
        mask: Its mask.
        directory: The output directory (created if missing).

    Returns:
        The content of ``sparse_export.json``: ``verified``, ``problems``, ``layers``,
        ``kept_weights``, ``total_weights``, the file sizes in bytes and, for comparison, the
        bytes of the masked weights stored densely. COO stores one int64 index per dimension
        with every kept value, so for 4-D convolution kernels it needs 36 bytes per kept float32
        weight: it is smaller than the dense weights only above about 89 % sparsity.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cpu_mask = mask.to("cpu")
    parameters = dict(network.named_parameters())
    coo = {name: tensor.cpu() for name, tensor in export_coo(network, mask).items()}
    atomic_write(directory / MASKS_FILE, lambda path: torch.save(cpu_mask.state_dict(), path))
    atomic_write(directory / SPARSE_WEIGHTS_FILE, lambda path: torch.save(coo, path))
    problems = verify_export(directory, network, mask)
    result = {
        "verified": not problems,
        "problems": problems,
        "layers": len(mask),
        "kept_weights": mask.num_kept(),
        "total_weights": mask.num_total(),
        "masks_bytes": (directory / MASKS_FILE).stat().st_size,
        "sparse_weights_bytes": (directory / SPARSE_WEIGHTS_FILE).stat().st_size,
        "dense_weights_bytes": sum(parameters[name].numel() * parameters[name].element_size() for name in mask),
    }
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(directory / SPARSE_EXPORT_FILE, lambda path: path.write_text(text))
    return result


def verify_export(directory: str | Path, network: nn.Module, mask: PruningMask | None = None) -> list[str]:
    """Reads ``masks.pt`` and ``sparse_weights.pt`` from ``directory`` and checks them.

    Args:
        directory: Where :func:`export_and_verify` wrote the files.
        network: The network the weights must equal (at the kept positions).
        mask: The mask the file must equal; None skips that comparison.

    Returns:
        One line per problem (empty when the export matches): COO indices that are not the kept
        positions of the saved mask, values that differ from the network, a saved mask that
        differs from ``mask``, a file that cannot be read back.

    Raises:
        FileNotFoundError: If a file is missing.
    """
    directory = Path(directory)
    for name in (MASKS_FILE, SPARSE_WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} does not exist; SparseExport writes it at the end of training")
    loaded = {}
    for name in (MASKS_FILE, SPARSE_WEIGHTS_FILE):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
                loaded[name] = torch.load(directory / name, map_location="cpu", weights_only=True)
        except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
            return [f"{name}: cannot be read back as tensors ({error})"]
    saved_mask, coo = loaded[MASKS_FILE], loaded[SPARSE_WEIGHTS_FILE]
    if not isinstance(saved_mask, Mapping) or not isinstance(coo, Mapping):
        return [f"{MASKS_FILE} and {SPARSE_WEIGHTS_FILE} must each hold a mapping of parameter name to tensor"]
    problems = verify_coo_against_mask(coo, saved_mask, model=network)
    if mask is not None and not _same_mask(saved_mask, mask):
        problems.append(f"{MASKS_FILE}: differs from the module's mask")
    return problems


def _same_mask(saved: Mapping[str, Any], mask: PruningMask) -> bool:
    """Whether a loaded mask file names the same parameters as ``mask`` with identical entries."""
    if saved.keys() != mask.keys():
        return False
    return all(
        isinstance(saved[name], torch.Tensor)
        and saved[name].shape == keep.shape
        and torch.equal(saved[name], keep.cpu())
        for name, keep in mask.items()
    )
