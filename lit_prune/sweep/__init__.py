"""``lit-prune sweep``: experiments as grids of options times seeds, with a shared dense base stage.

The package is split by job: :mod:`~lit_prune.sweep.definition` (sweep files and command-line
grids, checked), :mod:`~lit_prune.sweep.resolve` (each run's complete config, parsed with the run
command's own parser), :mod:`~lit_prune.sweep.plan` (runs, names, base runs),
:mod:`~lit_prune.sweep.base_stage` (the dense run's saved states), :mod:`~lit_prune.sweep.manifest`
(states, fingerprint, lock), :mod:`~lit_prune.sweep.execute` (one run: start, resume, done),
:mod:`~lit_prune.sweep.launchers` (local, SLURM through submitit) and
:mod:`~lit_prune.sweep.command` (the command).
"""

from lit_prune.sweep.command import main

__all__ = ["main"]
