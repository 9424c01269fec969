"""Lightning callbacks that decide *when* to prune and measure; the algorithms live in lit_prune."""

from callbacks.channel_pruning import ChannelPruning, HeadPruning
from callbacks.early_bird import EarlyBird
from callbacks.lottery_ticket import LotteryTicket
from callbacks.magnitude_pruning import MagnitudePruning
from callbacks.network_slimming import NetworkSlimming
from callbacks.profiling import ProfilingCallback
from callbacks.regression_pruning import ChannelRegressionPruning
from callbacks.robustness import RobustnessEvaluation
from callbacks.saliency_pruning import SaliencyPruning
from callbacks.sensitivity import SensitivityAnalysis
from callbacks.sparse_export import SparseExport

__all__ = [
    "ChannelPruning",
    "ChannelRegressionPruning",
    "EarlyBird",
    "HeadPruning",
    "LotteryTicket",
    "MagnitudePruning",
    "NetworkSlimming",
    "ProfilingCallback",
    "RobustnessEvaluation",
    "SaliencyPruning",
    "SensitivityAnalysis",
    "SparseExport",
]
