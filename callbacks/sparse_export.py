"""``SparseExport``: saves the masks and the pruned weights as COO at the end of training, and checks them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from callbacks.base import PruningCallback
from lit_prune.pruning import PruningMask
from lit_prune.pruning.sparse_files import SPARSE_WEIGHTS_FILE, export_and_verify
from lit_prune.validation import check_bool

__all__ = ["SparseExport"]


class SparseExport(PruningCallback):
    """Exports the pruned weights as sparse COO tensors at the end of training and verifies them.

    Deep Compression's first step (Han et al. 2016, "Deep Compression: Compressing Deep Neural
    Networks with Pruning, Trained Quantization and Huffman Coding"): only the kept weights of
    an unstructured-pruned network are stored. In ``on_train_end`` (before ``on_fit_end``, so
    the profiling report sees the result) rank 0 writes into the run directory
    (``trainer.log_dir``):

    - ``masks.pt``: the module's mask (parameter name to bool tensor, plain names);
    - ``sparse_weights.pt``: ``lit_prune.pruning.sparse_export.export_coo`` of the network;
    - ``sparse_export.json``: the verification, made by reading both files back and checking
      with ``verify_coo_against_mask`` that the COO indices are exactly the kept positions of the
      mask and that the values equal the network's weights bit for bit (and that ``masks.pt``
      equals the module's mask).

    The files and the check are :func:`lit_prune.pruning.sparse_files.export_and_verify`.

    The result (or a failure) is broadcast to every rank and recorded as the stage ``sparse_export``
    (``coo_verified``, ``coo_problems``) of the run report. Sparse inference itself is measured
    by ``ProfilingCallback(sparse_inference: true)``. A run without a mask exports nothing.

    Args:
        fail_on_mismatch: Raise ``RuntimeError`` when the export does not match the mask
            (after writing ``sparse_export.json``), rather than only recording it.

    Raises:
        TypeError: If ``fail_on_mismatch`` is not a bool.
    """

    def __init__(self, fail_on_mismatch: bool = True) -> None:
        super().__init__()
        self.fail_on_mismatch = check_bool(fail_on_mismatch, "fail_on_mismatch")

    @override
    def describe_method(self) -> None:
        """None: exporting changes nothing in the model."""
        return None

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        mask = module.pruning_mask
        if mask is None:
            rank_zero_warn("SparseExport: the model has no pruning mask, so there is nothing to export")
            return
        result = self.decide_on_rank_zero(trainer, lambda: _export(module.network, mask, run_dir))
        module.record_stage("sparse_export", coo_verified=result["verified"], coo_problems=len(result["problems"]))
        if not result["verified"]:
            message = "SparseExport: the COO export does not match the mask:\n" + "\n".join(result["problems"])
            if self.fail_on_mismatch:
                raise RuntimeError(message)
            rank_zero_warn(message)


def _export(network: nn.Module, mask: PruningMask, run_dir: Path) -> dict[str, Any]:
    """Writes and verifies the export (rank 0 only), and says so on the console."""
    result = export_and_verify(network, mask, run_dir)
    rank_zero_info(
        f"SparseExport: wrote {run_dir / SPARSE_WEIGHTS_FILE} ({mask.num_kept()} of {mask.num_total()} weights), "
        f"verified: {result['verified']}"
    )
    return result
