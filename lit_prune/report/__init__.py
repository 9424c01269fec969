"""Reports: one run's ``report.json`` and ``report.md``, and the comparison of runs.

One module per reason to change:

* :mod:`.schema`: the keys of ``report.json``, their types and the checks;
* :mod:`.measurement`: the measured sections (sparsity, accuracy, profile);
* :mod:`.reduction`: how much was pruned, in one vocabulary for every method;
* :mod:`.run_report`: a run's report assembled, written and read back;
* :mod:`.markdown` and :mod:`.formatting`: ``report.md`` and the number formats it shares;
* :mod:`.runs`: finding run directories and their reports;
* :mod:`.comparison`: ``lit-prune report``, the table that compares runs;
* :mod:`.stats`: runs that differ only by seed, as mean ± std;
* :mod:`.plots` and :mod:`.sensitivity_plot`: the figures.

This package exports the run-report API; the others are imported from their modules. Nothing
here imports Lightning: ``callbacks.profiling.ProfilingCallback`` gathers the inputs from a
trainer and calls these functions.
"""

from lit_prune.report.measurement import accuracy_section, measure_profile, sparsity_summary
from lit_prune.report.run_report import build_report, load_report, write_report
from lit_prune.report.schema import (
    ACCURACY_KEYS,
    DATASET_NAMES,
    PROFILE_KEYS,
    REPORT_JSON,
    REPORT_MD,
    check_report,
    dataset_name,
    to_jsonable,
)

__all__ = [
    "ACCURACY_KEYS",
    "DATASET_NAMES",
    "PROFILE_KEYS",
    "REPORT_JSON",
    "REPORT_MD",
    "accuracy_section",
    "build_report",
    "check_report",
    "dataset_name",
    "load_report",
    "measure_profile",
    "sparsity_summary",
    "to_jsonable",
    "write_report",
]
