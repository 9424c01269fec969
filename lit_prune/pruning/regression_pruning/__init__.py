"""Regression-based channel pruning: LASSO channel selection and least-squares reconstruction.

He, Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV).
A convolution ``L`` with weights ``W`` (``n x c x kh x kw``) is thinned by removing some of its
*input* channels, together with the matching output channels (and batch-norm entries) of the
layer that produces them, while its output feature map is kept as close as possible to the one
of the original network. One module per step:

* :mod:`.layers`: which convolutions are pruned and how many channels each keeps;
* :mod:`.calibration`: the calibration pairs ``X`` (inputs in the network pruned so far) and
  ``Y`` (outputs in the original network) at sampled positions;
* :mod:`.lasso`: the channels to keep, by LASSO regression;
* :mod:`.reconstruction`: the kept channels' weights refitted by least squares;
* :mod:`.orchestration`: all of it layer by layer, with the surgery, in network order.

Nothing here imports Lightning.
"""

from lit_prune.pruning.regression_pruning.calibration import CalibrationData, collect_calibration_data
from lit_prune.pruning.regression_pruning.lasso import LassoSelection, lasso_channel_selection
from lit_prune.pruning.regression_pruning.layers import (
    REGRESSION_SUPPORTED_ARCHITECTURES,
    RegressionLayer,
    channel_ratios_from_sensitivity,
    kept_channel_count,
    regression_layers,
    resolve_channel_ratios,
)
from lit_prune.pruning.regression_pruning.orchestration import (
    LayerPruningResult,
    RegressionPruningResult,
    regression_channel_prune_,
)
from lit_prune.pruning.regression_pruning.reconstruction import least_squares_reconstruction, reconstruction_error

__all__ = [
    "REGRESSION_SUPPORTED_ARCHITECTURES",
    "CalibrationData",
    "LassoSelection",
    "LayerPruningResult",
    "RegressionLayer",
    "RegressionPruningResult",
    "channel_ratios_from_sensitivity",
    "collect_calibration_data",
    "kept_channel_count",
    "lasso_channel_selection",
    "least_squares_reconstruction",
    "reconstruction_error",
    "regression_channel_prune_",
    "regression_layers",
    "resolve_channel_ratios",
]
