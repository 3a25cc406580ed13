"""Cohort dock widget: classify and explain a whole cohort, resumably, and
open its items in napari.

* :mod:`.widget`: ``CohortWidget``, the panel (npe2 opens it from here).
* :mod:`.boxes`: its group boxes (inputs, model and options, filters,
  the selected row's detail).
* :mod:`.table`: the results table's Qt model and its sort/filter proxy.
* :mod:`.rows`: what a result row shows, how it sorts and filters, and its
  classification record (pure, no Qt).
* :mod:`.jobs`: the cohort run and the item loader (worker jobs, no Qt).
* :mod:`.layers`: an opened item as napari layers.
"""

from napari_medcnn.widgets.cohort.widget import CohortWidget

__all__ = ["CohortWidget"]
