"""``lit-prune models`` and ``lit-prune callbacks``: what a config can name, with a line on each."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["list_callbacks_command", "list_models_command"]


def list_models_command(args: Sequence[str]) -> int:
    """Prints every registered model with its parameter count (10 classes) and pretrained weights.

    Args:
        args: The arguments after ``models`` (only ``--num_classes``).

    Returns:
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="lit-prune models", description="List the registered models.")
    parser.add_argument("--num_classes", type=int, default=10, help="classes of the classifier (default 10)")
    options = parser.parse_args(list(args))
    from lit_prune.models import create_model, list_models
    from lit_prune.pruning.parameters import parameter_count

    pretrained = _pretrained_datasets()
    rows = []
    for name in list_models():
        try:
            network = create_model(name, num_classes=options.num_classes)
            params = f"{parameter_count(network):,}"
        except (TypeError, ValueError) as error:
            params = f"n/a ({error})"
        rows.append((name, params, ", ".join(pretrained.get(name, [])) or "-"))
    width = max(len(row[0]) for row in rows)
    print(f"{'model':<{width}}  {'parameters':>12}  pretrained CIFAR weights ({options.num_classes} classes)")
    for name, params, weights in rows:
        print(f"{name:<{width}}  {params:>12}  {weights}")
    print("Use one with `model.network: NAME`; any torch.nn.Module through `class_path`; timm models as `timm:NAME`.")
    return 0


def list_callbacks_command(args: Sequence[str]) -> int:
    """Prints every callback a config can name, with the first line of its docstring.

    Args:
        args: The arguments after ``callbacks`` (none).

    Returns:
        The exit status, 0.
    """
    argparse.ArgumentParser(
        prog="lit-prune callbacks", description="List the pruning and profiling callbacks."
    ).parse_args(list(args))
    from lit_prune.cli_help import callback_summaries

    summaries = callback_summaries()
    width = max(len(name) for name in summaries) + len("callbacks.")
    for name, summary in summaries.items():
        print(f"{'callbacks.' + name:<{width}}  {summary}")
    print("Options of one: lit-prune fit --trainer.callbacks.help callbacks.NAME")
    return 0


def _pretrained_datasets() -> dict[str, list[str]]:
    """Model name to the datasets it has published weights for."""
    from lit_prune.models import PRETRAINED_CHECKPOINTS

    datasets: dict[str, list[str]] = {}
    for model, dataset in PRETRAINED_CHECKPOINTS:
        datasets.setdefault(model, []).append(dataset)
    return datasets
