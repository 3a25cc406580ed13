"""A classification as a DICOM Comprehensive 3D SR: a TID 1500 measurement
report, written with highdicom (pure core, no Qt).

Content (one TID 1501 measurement group each, all with the algorithm's
name and version, TID 4019):

* **the classification** (tracking id ``classification``): finding type
  the predicted class (a code of the private scheme ``99NMEDCNN`` or the
  card's own, see :mod:`.common`); measurements: *Probability*
  (DCM 122157) of that class, unit ``{probability}`` (UCUM, 0..1), the
  predictive *uncertainty* (``99NMEDCNN UNCERTAINTY``, unit 1: 0 certain
  .. 1 a coin flip) and, when the card records a training domain, the
  *domain novelty score* (``99NMEDCNN DOMAINSCORE``, unit 1, higher =
  farther from the training images); qualitative evaluation *within the
  model's training domain* (``99NMEDCNN INDOMAIN``: Yes/No, SNOMED CT);
  source images: the 2D image, or the slice classified.
* **one group per class** (tracking id ``class <name>``): finding type the
  class, its *Probability*.
* **per-slice results** (a 2D model over every slice, or a CNN+RNN's
  per-slice probabilities): one group per slice (tracking id
  ``slice <z>``): finding type the slice's most probable
  class, its *Probability*, the slice's uncertainty and domain
  evaluation; source image: that slice's instance (and frame).

The observer is the model as a device (IHE AI Results): device observer UID
derived from the model id (:func:`~napari_medcnn.export.common.device_uid`),
name the model's name, model name its id.  The document references its
source series as evidence (Current Requested Procedure Evidence), copies
patient and study from the source (so a de-identified source gives a
de-identified report: PatientIdentityRemoved is copied), carries
ContentLabel ``MEDCNN_CLASS`` and the series description
``napari-medcnn classification — not for diagnostic use``.
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
    private_code,
    write_result,
)
from napari_medcnn.export.sources import SourceImages, source_images

__all__ = ["CONTENT_LABEL", "classification_sr", "write_classification_sr"]

CONTENT_LABEL = "MEDCNN_CLASS"
SERIES_NUMBER = 9901


def _codes() -> dict[str, Any]:
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    return {
        "probability": codes.DCM.Probability,
        "p_unit": CodedConcept("{probability}", "UCUM", "probability"),
        "one": CodedConcept("1", "UCUM", "no units"),
        "uncertainty": private_code("UNCERTAINTY", "Predictive uncertainty"),
        "domain_score": private_code("DOMAINSCORE", "Domain novelty score"),
        "in_domain": private_code("INDOMAIN", "Within model training domain"),
        "yes": codes.SCT.Yes,
        "no": codes.SCT.No,
    }


def _source_image(src: SourceImages, z: int) -> Any:
    import highdicom as hd

    ds, frame = src.dataset_of(z)
    return hd.sr.SourceImageForMeasurementGroup.from_source_image(
        ds, referenced_frame_numbers=None if frame is None else [frame]
    )


def _group(
    tracking: str,
    finding: Any,
    algorithm: Algorithm,
    *,
    probability: float | None,
    uncertainty: float | None = None,
    domain_score: float | None = None,
    in_domain: bool | None = None,
    source_images: list[Any] | None = None,
) -> Any:
    import highdicom as hd

    c = _codes()
    algo = algorithm.sr_algorithm()
    measurements = []

    def add(name: Any, value: float | None, unit: Any) -> None:
        if value is None or not np.isfinite(value):
            return
        measurements.append(
            hd.sr.Measurement(
                name=name, value=float(value), unit=unit, algorithm_id=algo
            )
        )

    add(c["probability"], probability, c["p_unit"])
    add(c["uncertainty"], uncertainty, c["one"])
    add(c["domain_score"], domain_score, c["one"])
    evaluations = []
    if in_domain is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                c["in_domain"], c["yes"] if in_domain else c["no"]
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=tracking[:64]
        ),
        finding_type=finding,
        algorithm_id=algo,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
        source_images=source_images or None,
    )


def classification_sr(
    result: Any,
    source: Any,
    *,
    card: Any = None,
    series_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBER,
    instance_number: int = 1,
) -> Any:
    """The Comprehensive 3D SR of one classification.

    Args:
        result: a :class:`~napari_medcnn.inference.predict.ClassificationResult`
            of the scan (``slice_probabilities`` in the scan's slice order).
        source: the scan (:class:`~napari_medcnn.io.Scan`), its layer
            metadata, or a :class:`~.sources.SourceImages`.
        card: the model card (its recorded class codes); default: the
            result's model name, id and classes.
        series_instance_uid: default a new UID.

    Returns:
        a ``highdicom.sr.Comprehensive3DSR``.

    Raises:
        ExportError: the scan has no DICOM source (NIfTI, plain image), or
            its slices do not match the source images.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    src = source if isinstance(source, SourceImages) else source_images(source)
    algorithm = Algorithm.from_result(result, card)
    probs = [float(p) for p in result.probabilities]
    domain = result.domain or None
    groups = []
    first_images = None
    if result.slice_index is not None and result.slice_index < len(src.slices):
        first_images = [_source_image(src, int(result.slice_index))]
    elif len(src.slices) == 1:
        first_images = [_source_image(src, 0)]
    groups.append(
        _group(
            "classification",
            algorithm.code(result.label),
            algorithm,
            probability=probs[result.index],
            uncertainty=result.uncertainty,
            domain_score=None if domain is None else domain.get("score"),
            in_domain=None if domain is None else bool(domain.get("in_domain")),
            source_images=first_images,
        )
    )
    for name, p in zip(result.classes, probs):
        groups.append(
            _group(f"class {name}", algorithm.code(name), algorithm, probability=p)
        )
    sp = result.slice_probabilities
    if sp is not None and (result.scope == "slices" or len(sp) == len(src.slices)):
        sp = np.asarray(sp, float)
        if len(sp) != len(src.slices):
            from napari_medcnn.export.common import ExportError

            raise ExportError(
                f"{len(sp)} per-slice results for a scan of {len(src.slices)} "
                "source slices"
            )
        unc = result.slice_uncertainty
        ind = result.slice_in_domain
        for z, row in enumerate(sp):
            k = int(np.argmax(row))
            groups.append(
                _group(
                    f"slice {z}",
                    algorithm.code(result.classes[k]),
                    algorithm,
                    probability=float(row[k]),
                    uncertainty=None if unc is None else float(unc[z]),
                    in_domain=None if ind is None else bool(ind[z]),
                    source_images=[_source_image(src, z)],
                )
            )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid,
            name=algorithm.name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=algorithm.version[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=src.datasets,
        content=report,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64],
        device_serial_number=algorithm.device_uid,
        **common_kwargs(algorithm, "classification"),
    )
    sr.ContentLabel = CONTENT_LABEL
    return sr


def write_classification_sr(
    result: Any,
    source: Any,
    out: str | os.PathLike,
    *,
    card: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`classification_sr` atomically.

    Args:
        out: a ``.dcm`` file, or a folder: the file is then named from the
            series (``SR_<modality>_s<number>_<8 hex>.dcm``, no patient
            data; :func:`~.common.safe_file_stem`).
        overwrite: replace an existing file.

    Returns:
        the path written.
    """
    src = source if isinstance(source, SourceImages) else source_images(source)
    sr = classification_sr(result, src, card=card)
    return write_result(sr, out, src.first, "SR", overwrite=overwrite)
