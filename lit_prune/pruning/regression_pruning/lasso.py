"""LASSO channel selection: which input channels of a convolution to keep (He et al., 2017, Eq. 3, β-step).

With ``Z_i = X_i W_iᵀ`` the contribution of input channel ``i`` to the output, the coefficients
``β`` solve ``min_β 1/(2N) ‖Y − b − Σ_i β_i Z_i‖²_F + λ‖β‖₁`` (``b`` the current bias, ``β ≥ 0``:
a coefficient scales its channel). ``λ`` is bisected (log scale) until exactly the requested
number of channels keep a non-zero coefficient; where the support jumps over that number (ties,
plateaus), the channels with the largest ``|β|`` at the closest ``λ`` with more non-zeros are
kept. scikit-learn's ``Lasso`` solves each problem. It is handed an equivalent problem of ``c``
rows: with ``A = [vec Z_1 … vec Z_c]`` and the Cholesky factor ``AᵀA = LLᵀ``, ``R = Lᵀ`` and
``r = L⁻¹Aᵀy`` give ``‖y − Aβ‖² = ‖r − Rβ‖² + const``; ``AᵀA`` and ``Aᵀy`` come from ``XᵀX``,
``XᵀY`` and ``WᵀW`` without ever forming the ``N·n x c`` matrix ``A``.

He, Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from torch import Tensor

from lit_prune.pruning.regression_pruning.calibration import CalibrationData, check_layer_data, kernel_size
from lit_prune.validation import check_int

__all__ = ["LassoSelection", "lasso_channel_selection"]

_RELATIVE_JITTER = 1e-10
_LOWEST_LAMBDA_FACTOR = 1e-9
_LAMBDA_RELATIVE_RESOLUTION = 1e-6


@dataclass(frozen=True)
class LassoSelection:
    """The outcome of :func:`lasso_channel_selection`.

    Attributes:
        keep: Sorted indices of the kept input channels.
        coefficients: ``β`` of every input channel at the chosen ``λ``.
        lam: The chosen ``λ`` in the scaling of the paper's objective (``0`` when nothing was
            pruned).
        exact: Whether the LASSO alone left exactly ``len(keep)`` non-zero coefficients
            (``False``: the top ``|β|`` at the closest ``λ`` were taken).
        fits: Number of LASSO problems solved.
    """

    keep: list[int]
    coefficients: list[float]
    lam: float
    exact: bool
    fits: int


def lasso_channel_selection(
    data: CalibrationData,
    weight: Tensor,
    bias: Tensor | None,
    num_keep: int,
    max_fits: int = 40,
) -> LassoSelection:
    """Chooses ``num_keep`` input channels by LASSO regression (He et al., 2017, Eq. 3).

    Solves ``min_β 1/(2N) ‖Y − b − Σ_i β_i X_i W_iᵀ‖²_F + λ‖β‖₁`` with ``β ≥ 0`` for ``λ``
    bisected on a log scale between the smallest value that zeroes every coefficient and
    ``1e-9`` of it, until exactly ``num_keep`` coefficients are non-zero. When no ``λ`` tried
    gives exactly that many (the support jumps over the count at ties, or ``max_fits`` runs
    out), the ``num_keep`` channels with the largest ``|β|`` at the closest ``λ`` with more
    non-zeros are kept. When even the smallest ``λ`` leaves fewer non-zeros (a plateau: channels
    that contribute nothing to the output never get a coefficient), its non-zero channels are
    kept and the rest filled up by ``‖Z_i‖``, then by index.

    Args:
        data: Calibration pairs of the layer.
        weight: The layer's weight ``(n, c, kh, kw)``.
        bias: The layer's bias ``(n,)`` or ``None``.
        num_keep: Channels to keep, in ``[1, c]``.
        max_fits: Upper bound on the LASSO problems solved, at least 2.

    Returns:
        The kept channels, ``β``, ``λ``, whether the count was hit exactly, and the fits used.

    Raises:
        ValueError: If shapes disagree or a count is out of range.
    """
    channels = check_layer_data(data, weight, bias)
    if isinstance(num_keep, bool) or not isinstance(num_keep, int) or not 1 <= num_keep <= channels:
        raise ValueError(
            f"num_keep must be an integer in [1, {channels}] (the layer's input channels), got {num_keep!r}"
        )
    max_fits = check_int(max_fits, "max_fits", 2)
    if num_keep == channels:
        return LassoSelection(list(range(channels)), [1.0] * channels, 0.0, True, 0)
    gram, correlation = _channel_gram(data, weight, bias)
    design, response = _equivalent_rows(gram, correlation)
    search = _LambdaSearch(design, response, num_keep, data.samples)
    beta, lam, exact = search.run(float(correlation.max()) / data.samples, max_fits)
    if exact:
        keep = sorted(int(i) for i in torch.nonzero(beta).flatten())
    else:
        order = sorted(range(channels), key=lambda i: (-abs(float(beta[i])), -float(gram[i, i]), i))
        keep = sorted(order[:num_keep])
    return LassoSelection(keep, [float(value) for value in beta], lam, exact, search.fits)


class _LambdaSearch:
    """Bisects the LASSO penalty for a support of exactly ``num_keep`` channels."""

    def __init__(self, design: Tensor, response: Tensor, num_keep: int, samples: int) -> None:
        self.design = design.numpy()
        self.response = response.numpy()
        self.num_keep = num_keep
        self.alpha_per_lambda = samples / design.shape[0]
        self.channels = design.shape[1]
        self.fits = 0
        self._solver = Lasso(fit_intercept=False, positive=True, precompute=True, max_iter=10000, tol=1e-8)

    def run(self, lam_max: float, max_fits: int) -> tuple[Tensor, float, bool]:
        """Returns ``(β, λ, exact)``: the support of exactly ``num_keep`` or the closest larger one."""
        if lam_max <= 0.0:
            return torch.zeros(self.channels, dtype=torch.float64), 0.0, False
        high = lam_max
        low = lam_max * _LOWEST_LAMBDA_FACTOR
        beta = self._solve(low)
        if self._count(beta) <= self.num_keep:
            return beta, low, self._count(beta) == self.num_keep
        best_low = (beta, low)
        while self.fits < max_fits:
            if high / low < 1.0 + _LAMBDA_RELATIVE_RESOLUTION:
                break
            middle = math.sqrt(low * high)
            beta = self._solve(middle)
            count = self._count(beta)
            if count == self.num_keep:
                return beta, middle, True
            if count > self.num_keep:
                low, best_low = middle, (beta, middle)
            else:
                high = middle
        return best_low[0], best_low[1], False

    def _solve(self, lam: float) -> Tensor:
        self._solver.set_params(alpha=lam * self.alpha_per_lambda)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._solver.fit(self.design, self.response)
        self.fits += 1
        return torch.from_numpy(self._solver.coef_.copy())

    @staticmethod
    def _count(beta: Tensor) -> int:
        return int(torch.count_nonzero(beta))


def _channel_gram(data: CalibrationData, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``AᵀA`` (``c x c``) and ``Aᵀy`` (``c``) of the LASSO, in float64 on the CPU.

    ``<Z_i, Z_j> = Σ (X_iᵀX_j) ⊙ (W_iᵀW_j)`` and ``<Z_i, Y − b> = Σ (X_iᵀ(Y − b)) ⊙ W_iᵀ``.
    """
    channels, kernel = weight.shape[1], kernel_size(weight)
    flat = weight.reshape(weight.shape[0], -1).to(data.inputs)
    targets = data.targets if bias is None else data.targets - bias.to(data.targets)
    inputs_gram = data.inputs.T @ data.inputs
    weight_gram = flat.T @ flat
    gram = (inputs_gram * weight_gram).reshape(channels, kernel, channels, kernel).sum(dim=(1, 3), dtype=torch.float64)
    correlation = ((data.inputs.T @ targets) * flat.T).reshape(channels, -1).sum(dim=1, dtype=torch.float64)
    if not bool(torch.isfinite(gram).all()) or not bool(torch.isfinite(correlation).all()):
        raise ValueError(
            "the calibration data or the layer's weights hold NaN or infinite values; regression pruning needs a "
            "network whose feature maps are finite"
        )
    return gram.cpu(), correlation.cpu()


def _equivalent_rows(gram: Tensor, correlation: Tensor) -> tuple[Tensor, Tensor]:
    """``R`` and ``r`` with ``RᵀR = AᵀA + εI`` and ``Rᵀr = Aᵀy`` (Cholesky, ``R = Lᵀ``, ``r = L⁻¹Aᵀy``).

    ``ε`` is ``1e-10`` of the largest diagonal entry (raised tenfold until the factorisation
    succeeds): a ridge far below the LASSO penalties searched, which makes the factorisation
    exist for channels that contribute nothing (zero rows and columns of ``AᵀA``).
    """
    scale = float(gram.diagonal().max()) if gram.numel() else 0.0
    if scale <= 0.0:
        return torch.zeros(1, gram.shape[0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    identity = torch.eye(gram.shape[0], dtype=gram.dtype)
    symmetric = (gram + gram.T) / 2
    jitter = scale * _RELATIVE_JITTER
    factor, info = torch.linalg.cholesky_ex(symmetric + jitter * identity)
    while int(info) != 0:
        jitter *= 10.0
        factor, info = torch.linalg.cholesky_ex(symmetric + jitter * identity)
    response = torch.linalg.solve_triangular(factor, correlation[:, None], upper=False)[:, 0]
    return factor.T.contiguous(), response
