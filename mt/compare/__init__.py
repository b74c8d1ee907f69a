"""Compare the runs of a sweep: a table sorted by test BLEU, with significance against the best.

    python -m mt.compare                                   # the latest sweep under multirun/
    python -m mt.compare multirun/2026-11-24_08-00-00      # one sweep (or one run folder)
    python -m mt.compare multirun/A multirun/B outputs/X   # several folders together

Every folder holding a metrics.json (searched recursively) is a run; a Hydra job folder
without one (the job failed before training started) is listed too, never dropped. The table
has one column per hyperparameter that differs across the runs (`model.layers`, `train.lr`...)
and the metrics; `p` is sacreBLEU's paired bootstrap resampling p-value of each run's test BLEU
against the best run with the same test references, `*` where p < 0.05. comparison.md,
comparison.csv and comparison.png (BLEU against each swept parameter) go into the first folder.
"""

from __future__ import annotations

from mt.compare.cli import main
from mt.compare.report import Comparison, compare
from mt.compare.runs import Run, differing_params, flatten, latest_sweep

__all__ = ["Comparison", "Run", "compare", "differing_params", "flatten", "latest_sweep", "main"]
