"""``SparseExport``: saves the masks and the pruned weights as COO at the end of training, and checks them."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_prune.module import ImageClassifier
from lit_prune.pruning.sparse_files import SPARSE_WEIGHTS_FILE, export_and_verify
from lit_prune.validation import check_bool

__all__ = ["SparseExport"]


class SparseExport(Callback):
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

    The result is broadcast to every rank and recorded as the stage ``sparse_export``
    (``coo_verified``, ``coo_problems``) of the run report. Sparse inference itself is measured
    by ``ProfilingCallback(sparse_inference: true)``. A run without a mask exports nothing.

    Args:
        fail_on_mismatch: Raise ``RuntimeError`` when the export does not match the mask
            (after writing ``sparse_export.json``), rather than only recording it.

    Raises:
        TypeError: If ``fail_on_mismatch`` is not a bool.
    """

    def __init__(self, fail_on_mismatch: bool = True) -> None:
        self.fail_on_mismatch = check_bool(fail_on_mismatch, "fail_on_mismatch")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(pl_module, ImageClassifier):
            raise TypeError(f"SparseExport works with lit_prune's ImageClassifier, got {type(pl_module).__name__}")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        mask = pl_module.pruning_mask
        if mask is None:
            rank_zero_warn("SparseExport: the model has no pruning mask, so there is nothing to export")
            return
        result = None
        if trainer.is_global_zero:
            result = export_and_verify(pl_module.network, mask, run_dir)
            rank_zero_info(
                f"SparseExport: wrote {run_dir / SPARSE_WEIGHTS_FILE} ({mask.num_kept()} of {mask.num_total()} "
                f"weights), verified: {result['verified']}"
            )
        result = trainer.strategy.broadcast(result, src=0)
        pl_module.record_stage(
            "sparse_export", coo_verified=result["verified"], coo_problems=len(result["problems"])
        )
        if not result["verified"]:
            message = "SparseExport: the COO export does not match the mask:\n" + "\n".join(result["problems"])
            if self.fail_on_mismatch:
                raise RuntimeError(message)
            rank_zero_warn(message)
