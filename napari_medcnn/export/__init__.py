"""DICOM output of results, written with highdicom (pure core, no Qt).

Every object belongs to the series its scan was read from: it copies the
source's patient and study (a de-identified source gives a de-identified
result), references the source series and instances, names the algorithm
(model name, model id as version, a device UID derived from the model id;
IHE AI Results) and has the series description ``napari-medcnn <task> —
not for diagnostic use``.

* :mod:`.sr`: a classification as a Comprehensive 3D SR (TID 1500).
* :mod:`.pmap`: a saliency map as a float32 Parametric Map (and its overlay
  as an RGB Secondary Capture).
* :mod:`.seg`: a labels layer (BINARY) or class probability maps
  (FRACTIONAL) as a Segmentation.
* :mod:`.sources`: the DICOM source images of a scan, sorted and matched to
  its slices; NIfTI and plain images are refused (:class:`ExportError`).
* :mod:`.common`: the algorithm's identity, the class codes, the atomic
  write.

Each builder returns the highdicom object; each ``write_*`` writes it
atomically (no half-written file, an existing file refused unless
``overwrite``).
"""

from __future__ import annotations

from napari_medcnn.export.common import Algorithm, ExportError, write_dataset
from napari_medcnn.export.pmap import (
    saliency_parametric_map,
    saliency_secondary_capture,
    write_parametric_map,
    write_secondary_capture,
)
from napari_medcnn.export.seg import segmentation, write_segmentation
from napari_medcnn.export.sources import SourceImages, source_images
from napari_medcnn.export.sr import classification_sr, write_classification_sr

__all__ = [
    "Algorithm",
    "ExportError",
    "SourceImages",
    "classification_sr",
    "saliency_parametric_map",
    "saliency_secondary_capture",
    "segmentation",
    "source_images",
    "write_classification_sr",
    "write_dataset",
    "write_parametric_map",
    "write_secondary_capture",
    "write_segmentation",
]
