"""Lightning callbacks that decide *when* to prune and measure; the algorithms live in lit_prune."""

from callbacks.lottery_ticket import LotteryTicket
from callbacks.magnitude_pruning import MagnitudePruning

__all__ = ["LotteryTicket", "MagnitudePruning"]
