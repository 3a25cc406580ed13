"""The PACS dock widget: server profiles, search, retrieve with Cancel,
and "Send results" (SR, Parametric Map, SEG) over DICOMweb or DIMSE.

* :mod:`.widget`: the panel (:class:`PacsWidget`).
* :mod:`.jobs`: its worker jobs, no Qt (echo, search, retrieve, send).
* :mod:`.results`: the DICOM result objects of a layer.
* :mod:`.dialogs`: the de-identified-send confirmation.
"""

from napari_medcnn.widgets.pacs.widget import PacsWidget

__all__ = ["PacsWidget"]
