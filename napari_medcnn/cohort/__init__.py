"""Cohort jobs: classify and explain many series, resumably, on local worker
processes or a Dask cluster (no Qt).

* ``items.py``: inputs (folders, CSV manifests, files) -> :class:`Item`;
* ``task.py``: the pure per-item function ``process_item(item, options,
  out_dir) -> row``;
* ``journal.py``: the append-only journal that resumes a run;
* ``executors.py``: ``local`` worker processes and ``dask``;
* ``results.py``: ``results.csv``, ``results.parquet``, ``summary.json``;
* ``report.py``: the self-contained ``report.html``;
* ``run.py``: :func:`iter_cohort`, the progress generator tying them up.
"""

from napari_medcnn.cohort.items import CohortInputError, Item
from napari_medcnn.cohort.run import CohortEvent, CohortResult, iter_cohort
from napari_medcnn.cohort.task import CohortOptions

__all__ = [
    "CohortEvent",
    "CohortInputError",
    "CohortOptions",
    "CohortResult",
    "Item",
    "iter_cohort",
]
