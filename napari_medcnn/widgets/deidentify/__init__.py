"""De-identify dock widget: export de-identified copies of DICOM scans.

* :mod:`.widget`: ``DeidentifyWidget``, the panel (npe2 opens it from here).
* :mod:`.boxes`: its group boxes (scans, profile options).
* :mod:`.jobs`: the preview and export jobs (core generators, no Qt).
* :mod:`.shapes`: rectangles to blank, from a Shapes layer.
"""

from napari_medcnn.widgets.deidentify.jobs import iter_export_job, iter_preview_job
from napari_medcnn.widgets.deidentify.widget import DeidentifyWidget

__all__ = ["DeidentifyWidget", "iter_export_job", "iter_preview_job"]
