"""A saliency map as a DICOM Parametric Map, and its overlay as an RGB
Secondary Capture, written with highdicom (pure core, no Qt).

The Parametric Map holds the map as float32 frames (0..1, 1 at the robust
maximum, see :class:`~napari_medcnn.saliency.explain.SaliencyResult`;
-1..1 for signed maps), one frame per source slice: each frame takes the
position and orientation of the source instance (or frame) at the same
ImagePositionPatient (:mod:`.sources`), so the map lies on the source
series in any viewer.  Its Real World Value Mapping says what the values
are: quantity *Class activation* (DCM 130402) for the CAM methods
(Grad-CAM, Grad-CAM++, LayerCAM, HiResCAM), *Saliency* (DCM 130404) for
the gradient and occlusion methods, unit 1 (UCUM ``1``, no units), LUT
label ``CAM`` / ``SALIENCY`` and an explanation naming the method and the
class.  ContentLabel ``MEDCNN_CAM``, series description ``napari-medcnn
saliency — not for diagnostic use``, the algorithm (model name, id,
device UID) in Manufacturer Model Name, Software Versions, Device Serial
Number and Contributing Equipment; patient and study copied from the
source (a de-identified source gives a de-identified map).

For viewers without Parametric Map support, :func:`saliency_secondary_capture`
draws the map on the windowed scan as napari does
(:func:`napari_medcnn.saliency.export.overlay_rgb`) into an RGB Secondary
Capture of one slice, which references its source instance.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.export.common import (
    MANUFACTURER,
    Algorithm,
    common_kwargs,
    copy_laterality,
    write_dataset,
    write_result,
)
from napari_medcnn.export.sources import SourceImages, source_images

__all__ = [
    "CONTENT_LABEL",
    "saliency_parametric_map",
    "saliency_secondary_capture",
    "write_parametric_map",
    "write_secondary_capture",
]

CONTENT_LABEL = "MEDCNN_CAM"
SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903
#: methods whose maps are class activations (the others: saliency)
CAM_METHODS = frozenset({"gradcam", "gradcam++", "layercam", "hirescam"})


def _sources(source: Any, result: Any) -> SourceImages:
    if isinstance(source, SourceImages):
        return source
    return source_images(source)


def _real_world_value_mapping(result: Any) -> Any:
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    cam = str(result.method) in CAM_METHODS
    signed = bool(np.nanmin(result.map) < 0) if np.size(result.map) else False
    kind = "class activation" if cam else "saliency"
    return hd.pm.RealWorldValueMapping(
        lut_label="CAM" if cam else "SALIENCY",
        lut_explanation=f"{result.method} {kind} of {result.target_name}"[:64],
        unit=CodedConcept("1", "UCUM", "no units"),
        value_range=(-1.0, 1.0) if signed else (0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=codes.DCM.ClassActivation if cam else codes.DCM.Saliency,
    )


def saliency_parametric_map(
    result: Any,
    source: Any,
    *,
    card: Any = None,
    series_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBER,
) -> Any:
    """The Parametric Map of a saliency map.

    Args:
        result: a :class:`~napari_medcnn.saliency.explain.SaliencyResult`
            whose ``map`` is on its scan's grid, (S, H, W) or (H, W).
        source: the scan (:class:`~napari_medcnn.io.Scan`), its layer
            metadata, or :class:`~.sources.SourceImages`.
        card: the model card (name, id); default the result's model id.

    Returns:
        a ``highdicom.pm.ParametricMap`` (float32 frames).

    Raises:
        ExportError: no DICOM source, or the map is not on its grid.
    """
    import highdicom as hd

    src = _sources(source, result)
    algorithm = Algorithm.from_result(result, card)
    frames = src.frames_in_source_order(np.asarray(result.map, np.float32))
    frames = np.ascontiguousarray(np.nan_to_num(frames), dtype=np.float32)
    pm = hd.pm.ParametricMap(
        source_images=src.datasets,
        pixel_array=frames,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64],
        device_serial_number=algorithm.device_uid,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[_real_world_value_mapping(result)],
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=0.5, window_width=1.0)
        ],
        content_label=CONTENT_LABEL,
        content_description=(
            f"{result.method} map of {result.target_name} ({algorithm.name})"
        )[:64],
        **common_kwargs(algorithm, "saliency"),
    )
    copy_laterality(pm, src.first)
    return pm


def saliency_secondary_capture(
    result: Any,
    source: Any,
    image: np.ndarray,
    *,
    slice_index: int | None = None,
    window: tuple[float, float] | None = None,
    colormap: str = "inferno",
    opacity: float = 0.6,
    threshold_percentile: float = 0.0,
    card: Any = None,
    series_instance_uid: str | None = None,
) -> Any:
    """An RGB Secondary Capture of the map drawn on one slice of the scan.

    Args:
        result: the ``SaliencyResult``; image: the scan's data, same grid.
        slice_index: the slice of a volume (default: the one with the
            highest map value; ``result.slice_index`` when set).
        window: the scan's (center, width); colormap, opacity,
            threshold_percentile: as the PNG export
            (:func:`napari_medcnn.saliency.export.write_map`).

    Returns:
        a ``highdicom.sc.SCImage`` (8-bit RGB) that shares the source's
        patient and study and references the slice's instance.
    """
    import highdicom as hd

    from napari_medcnn.saliency.export import overlay_rgb, threshold_value

    src = _sources(source, result)
    algorithm = Algorithm.from_result(result, card)
    m, img = np.asarray(result.map, np.float32), np.asarray(image)
    z = 0
    if m.ndim == 3:
        z = slice_index if slice_index is not None else result.slice_index
        if z is None:
            z = int(np.argmax(m.reshape(len(m), -1).max(axis=1)))
        m, img = m[z], img[z]
    rgb = overlay_rgb(
        img, m, window=window, colormap=colormap, opacity=opacity,
        threshold=threshold_value(m, threshold_percentile),
    )  # fmt: skip
    ds, frame = src.dataset_of(int(z))
    spacing = ds.get("PixelSpacing")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ds,
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=int(z) + 1,
        manufacturer=MANUFACTURER,
        pixel_spacing=None if spacing is None else tuple(float(v) for v in spacing),
        patient_orientation=_patient_orientation(ds),
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64],
        device_serial_number=algorithm.device_uid,
        **common_kwargs(algorithm, "saliency overlay"),
    )
    _reference_source(sc, ds, frame)
    copy_laterality(sc, ds)
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "NO"
    return sc


def _patient_orientation(ds: Any) -> tuple[str, str]:
    """PatientOrientation (row and column directions) from the source's
    ImageOrientationPatient, e.g. ``("L", "P")`` for an axial slice."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        return ("L", "P")
    v = [float(x) for x in iop]
    return (_direction(v[:3]), _direction(v[3:]))


def _direction(v: list[float]) -> str:
    """The patient direction (one letter, as highdicom takes it) closest to
    the unit vector ``v``."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    k = int(np.argmax(np.abs(v)))
    return letters[k][0 if v[k] > 0 else 1]


def _reference_source(sc: Any, ds: Any, frame: int | None) -> None:
    """Source Image Sequence: the slice the capture shows."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    sc.SourceImageSequence = Sequence([item])


def write_parametric_map(
    result: Any,
    source: Any,
    out: str | os.PathLike,
    *,
    card: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`saliency_parametric_map` atomically to ``out`` (a
    ``.dcm`` file, or a folder: then ``PM_<modality>_s<n>_<hex>.dcm``)."""
    src = _sources(source, result)
    pm = saliency_parametric_map(result, src, card=card)
    return write_result(pm, out, src.first, "PM", overwrite=overwrite)


def write_secondary_capture(
    result: Any,
    source: Any,
    image: np.ndarray,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write :func:`saliency_secondary_capture` atomically to ``out`` (a
    ``.dcm`` file); ``options`` go to it (slice, window, colormap...)."""
    sc = saliency_secondary_capture(result, source, image, **options)
    return write_dataset(sc, out, overwrite=overwrite)
