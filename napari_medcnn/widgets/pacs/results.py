"""The DICOM result objects of a layer, for "Send results" (no Qt).

* an image layer the Classify widget classified (its
  ``metadata["classification"]`` record): a Comprehensive 3D SR
  (:mod:`napari_medcnn.export.sr`);
* a saliency overlay (``metadata["saliency"]``): a float32 Parametric
  Map (:mod:`napari_medcnn.export.pmap`, through the npe2 writer);
* a Labels layer: a BINARY SEG (:mod:`napari_medcnn.export.seg`).

Each is built against the DICOM source files of the scan the layer lies on
(its own ``metadata["source_paths"]``, else the layer named in
``metadata["source_layer"]``, else the one image layer read from DICOM
with its shape).  :func:`plan_results` runs in the UI thread and copies
what it needs; the returned :class:`ResultPlan` builds the files in a
worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResultPlan", "plan_results", "result_from_record"]


def result_from_record(record: Mapping[str, Any]) -> Any:
    """A :class:`~napari_medcnn.inference.predict.ClassificationResult`
    rebuilt from its JSON record (what the Classify widget stores in
    ``layer.metadata["classification"]``): classes, probabilities, label,
    scope, per-slice values, domain and uncertainty.

    Raises:
        ValueError: not a classification record (an error record, or a
            record without classes).
    """
    from napari_medcnn.inference.predict import ClassificationResult

    classes = list(record.get("classes") or [])
    probs = [float(p) for p in record.get("probabilities") or []]
    if not classes or len(probs) != len(classes) or record.get("error"):
        raise ValueError("the layer's classification record has no result")

    def arr(key: str, dtype: Any) -> np.ndarray | None:
        value = record.get(key)
        return None if value is None else np.asarray(value, dtype)

    label = str(record.get("label") or classes[int(np.argmax(probs))])
    return ClassificationResult(
        classes=classes,
        probabilities=probs,
        label=label,
        index=int(record.get("index", classes.index(label))),
        scope=str(record.get("scope") or "slice"),
        slice_probabilities=arr("slice_probabilities", float),
        slice_index=record.get("slice_index"),
        model_id=str(record.get("model_id") or ""),
        model_name=str(record.get("model_name") or ""),
        domain=record.get("domain"),
        slice_in_domain=arr("slice_in_domain", bool),
        uncertainty=record.get("uncertainty"),
        slice_uncertainty=arr("slice_uncertainty", float),
    )


def _spatial_shape(layer: Any) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(np.shape(data))
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def source_metadata(layer: Any, layers: Sequence[Any]) -> dict[str, Any]:
    """The metadata (``source_paths``, ``affine``) of the DICOM scan
    ``layer`` lies on (see the module docstring).

    Raises:
        ValueError: no such scan; the message says why.
    """
    md = dict(layer.metadata or {})
    if md.get("source_paths"):
        return md
    wanted = md.get("source_layer")
    for other in layers:
        if wanted and other.name == wanted and other.metadata.get("source_paths"):
            return dict(other.metadata)
    shape = _spatial_shape(layer)
    same = [
        other
        for other in layers
        if other is not layer
        and other.metadata.get("source_paths")
        and _spatial_shape(other) == shape
    ]
    if len(same) == 1:
        return dict(same[0].metadata)
    raise ValueError(
        f"'{layer.name}' does not lie on a scan read from DICOM files: results "
        "are sent for layers of a DICOM series (retrieve or open one first)"
    )


@dataclass
class ResultPlan:
    """What "Send results" will build for one layer.

    Attributes:
        kinds: the objects, in words (``SR``, ``PM``, ``SEG``).
        source: the source scan's metadata (``source_paths``, ``affine``).
        layer_name: the layer's name (no patient data: reader names).
        record: the classification record (SR), or None.
        data: the overlay map or labels array (PM, SEG), or None.
        saliency: the overlay's saliency record (PM), or None.
    """

    kinds: list[str]
    source: dict[str, Any]
    layer_name: str
    record: dict[str, Any] | None = None
    data: np.ndarray | None = None
    saliency: dict[str, Any] | None = None

    def source_deidentified(self) -> bool:
        """Whether the source scan was de-identified (its first file's
        ``PatientIdentityRemoved``): its results are too."""
        import pydicom

        from napari_medcnn.pacs.store import is_deidentified

        paths = self.source.get("source_paths") or []
        if not paths:
            return False
        try:
            ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        except Exception:  # unreadable: the build reports it
            return False
        return is_deidentified(ds)

    def build(self, folder: Path) -> tuple[list[Path], list[str]]:
        """Write the objects into ``folder``; returns ``(paths, kinds)``.

        Raises:
            ExportError / ValueError: no DICOM source, or the layer's
                slices do not match it.
        """
        from napari_medcnn.export.sources import source_images

        paths: list[Path] = []
        if "SR" in self.kinds:
            from napari_medcnn.export.sr import write_classification_sr

            shape = self.source.get("_shape") or ()
            src = source_images(
                self.source,
                n_slices=shape[0] if len(shape) == 3 else 1,
                name=self.layer_name,
            )
            result = result_from_record(self.record or {})
            paths.append(write_classification_sr(result, src, folder / "sr.dcm"))
        if "PM" in self.kinds:
            from napari_medcnn.widgets.writers import write_overlay

            meta = {"metadata": {**self.source, "saliency": self.saliency},
                    "name": self.layer_name}  # fmt: skip
            paths += [Path(p) for p in write_overlay(
                str(folder / "pm.dcm"), self.data, meta)]  # fmt: skip
        if "SEG" in self.kinds:
            from napari_medcnn.widgets.writers import write_labels

            meta = {"metadata": self.source, "name": self.layer_name}
            paths += [Path(p) for p in write_labels(
                str(folder / "seg.dcm"), self.data, meta)]  # fmt: skip
        return paths, list(self.kinds)


def plan_results(layer: Any, layers: Sequence[Any]) -> ResultPlan:
    """What to send for ``layer`` (UI thread: copies the data it needs).

    Raises:
        ValueError: the layer has no result to send (not classified, not a
            saliency overlay, not labels) or no DICOM source.
    """
    from napari.layers import Image, Labels

    md = dict(layer.metadata or {})
    name = str(layer.name)
    if isinstance(layer, Labels):
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        if not data.any():
            raise ValueError(f"'{name}' has no labels to send")
        return ResultPlan(["SEG"], source_metadata(layer, layers), name, data=data)
    if isinstance(layer, Image) and isinstance(md.get("saliency"), dict):
        data = np.asarray(layer.data, np.float32)
        return ResultPlan(["PM"], source_metadata(layer, layers), name,
                          data=data, saliency=dict(md["saliency"]))  # fmt: skip
    if isinstance(layer, Image) and isinstance(md.get("classification"), dict):
        source = source_metadata(layer, layers)
        source["_shape"] = _spatial_shape(layer)
        return ResultPlan(["SR"], source, name, record=dict(md["classification"]))
    raise ValueError(
        f"'{name}' has no result to send: classify it (Classify widget), "
        "select a saliency overlay, or a Labels layer"
    )
