"""The in-memory scan every reader returns, and the quality report it carries.

Geometry convention (used by every reader and every layer the plugin adds):

* ``data`` is indexed in *array order*: ``(y, x)`` for a 2D image,
  ``(z, y, x)`` for a volume, with a trailing RGB axis of length 3 when
  ``rgb`` is true.  For DICOM, ``y`` runs along the columns' direction down
  the rows (ImageOrientationPatient's column cosine), ``x`` along the row
  cosine, and ``z`` along the slice normal ``row x col``, sorted by position.
* ``affine`` is a 4x4 matrix that maps a homogeneous array index
  ``(z, y, x, 1)`` to DICOM patient coordinates **LPS, in mm**.  2D images
  get a 3D affine with a single ``z`` index 0.
* ``spacing`` is the voxel size in mm along each spatial array axis (napari's
  ``scale``).
* ``origin`` is napari's ``translate``: the position of voxel 0 projected on
  each array axis' direction (``origin[k] = d_k . p0`` in mm).  napari then
  shows the scan in its own rotated frame, in which two scans that share an
  orientation line up exactly, and overlays that copy ``scale`` and
  ``translate`` lie on the scan in 2D and 3D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Severity = Literal["info", "warning", "error"]


class ScanReadError(Exception):
    """A file or folder could not be read; the message names it and why."""

    def __init__(self, path: Any, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class QualityIssue:
    """One finding of the data-quality report.

    ``code`` is a stable key (``missing_slices``, ``uneven_spacing``,
    ``duplicate_positions``, ``split_series``, ``saturated``, ``constant``,
    ``skipped_non_image``, ``pixel_spacing_fallback``, ...).
    """

    code: str
    message: str
    severity: Severity = "warning"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "severity": self.severity}


@dataclass
class QualityReport:
    """Findings attached to every loaded scan (``layer.metadata['quality']``)."""

    issues: list[QualityIssue] = field(default_factory=list)

    def add(self, code: str, message: str, severity: Severity = "warning") -> None:
        """Record a finding, once per (code, message)."""
        if not any(i.code == code and i.message == message for i in self.issues):
            self.issues.append(QualityIssue(code, message, severity))

    def extend(self, other: QualityReport) -> None:
        for issue in other.issues:
            self.add(issue.code, issue.message, issue.severity)

    @property
    def ok(self) -> bool:
        """True when nothing at warning level or above was found."""
        return not any(i.severity != "info" for i in self.issues)

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def summary(self) -> str:
        """One line per warning/error, for a notification."""
        return "\n".join(i.message for i in self.issues if i.severity != "info")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "issues": [i.to_dict() for i in self.issues]}


@dataclass
class Scan:
    """A loaded image or volume with its geometry, intensities and provenance.

    Attributes:
        data: pixel array in array order (see module docstring); intensities
            are modality units after rescale (HU for CT).
        spacing: mm per spatial array axis.
        origin: napari ``translate`` in mm per spatial array axis.
        affine: 4x4 index ``(z, y, x, 1)`` -> LPS mm.
        name: layer name (modality + series description/number); no PHI.
        modality: DICOM modality (``CT``, ``MR``...) or ``None``.
        rgb: true when the last axis holds RGB samples.
        axis_labels: one per spatial axis, e.g. ``("z", "y", "x")``.
        units: one per spatial axis, ``"mm"`` or ``"pixel"``.
        window: ``(center, width)`` from the file, in output units, or None.
        metadata: non-identifying tags (see ``io.metadata``).
        quality: the data-quality report.
        source_paths: files the scan was read from.
        phi_tokens: the patient's identifying strings (name parts, IDs,
            birth date; see ``io.metadata.phi_tokens``), kept only to redact
            paths and names before they are written or shown; never exported.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    affine: np.ndarray
    name: str
    modality: str | None = None
    rgb: bool = False
    axis_labels: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    window: tuple[float, float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    quality: QualityReport = field(default_factory=QualityReport)
    source_paths: list[str] = field(default_factory=list)
    phi_tokens: frozenset[str] = field(
        default_factory=frozenset, repr=False, compare=False
    )

    def redact(self, text: str) -> str:
        """``text`` (a path, a name) with this scan's PHI strings redacted."""
        from napari_medcnn.io.metadata import redact

        return redact(text, self.phi_tokens)

    @property
    def ndim_spatial(self) -> int:
        """Number of spatial axes (2 or 3), not counting the RGB axis."""
        return self.data.ndim - (1 if self.rgb else 0)

    def contrast_limits(self) -> tuple[float, float] | None:
        """Display range: the file's window if any, else robust percentiles.

        Returns None for RGB data (napari shows it as is).
        """
        if self.rgb:
            return None
        if self.window is not None:
            c, w = self.window
            if w > 0:
                return (float(c - w / 2.0), float(c + w / 2.0))
        return robust_limits(self.data)

    def layer_metadata(self) -> dict[str, Any]:
        """The dict stored in ``layer.metadata`` (no PHI unless opted in)."""
        md = dict(self.metadata)
        md.setdefault("modality", self.modality)
        md["spacing_mm"] = [float(s) for s in self.spacing]
        md["origin_mm"] = [float(o) for o in self.origin]
        md["affine"] = np.asarray(self.affine, dtype=float).tolist()
        md["affine_convention"] = "index (z, y, x, 1) -> LPS mm"
        md["source_paths"] = list(self.source_paths)
        md["quality"] = self.quality.to_dict()
        if self.window is not None:
            md["window"] = {"center": self.window[0], "width": self.window[1]}
        return md

    def to_layer_data(self) -> tuple[np.ndarray, dict[str, Any], str]:
        """napari LayerDataTuple ``(data, add_kwargs, "image")``."""
        kwargs: dict[str, Any] = {
            "name": self.name,
            "scale": tuple(float(s) for s in self.spacing),
            "translate": tuple(float(o) for o in self.origin),
            "rgb": self.rgb,
            "metadata": self.layer_metadata(),
        }
        if self.axis_labels:
            kwargs["axis_labels"] = tuple(self.axis_labels)
        if self.units:
            kwargs["units"] = tuple(self.units)
        limits = self.contrast_limits()
        if limits is not None:
            kwargs["contrast_limits"] = limits
        return (self.data, kwargs, "image")


class ScanList(list[Scan]):
    """The scans :func:`napari_medcnn.io.load` found at one path (a plain
    ``list`` of :class:`Scan`), plus what it found about the path as a whole.

    Attributes:
        folder_quality: findings about a folder rather than about one scan
            (``skipped_non_image``: SR, RT plan... not loaded;
            ``skipped_unreadable``: files or series that failed).  They are
            reported here once, not copied into every scan's report.  Empty
            for a single file.
    """

    def __init__(self, scans: Any = (), folder_quality: QualityReport | None = None):
        super().__init__(scans)
        self.folder_quality = (
            folder_quality if folder_quality is not None else QualityReport()
        )


def robust_limits(
    data: np.ndarray, low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """Percentile display range of ``data`` (subsampled for speed).

    Returns ``(lo, hi)`` with ``hi > lo`` even for constant images.
    """
    flat = np.asarray(data).reshape(-1)
    if flat.size == 0:
        return (0.0, 1.0)
    step = max(1, flat.size // 1_000_000)
    sample = flat[::step].astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def geometry_from_affine(
    affine: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """Split a 4x4 index->LPS affine into spacing, napari translate, directions.

    Returns ``(spacing_mm, translate_mm, directions)`` where ``directions`` is
    3x3 with one unit row per array axis (z, y, x).
    """
    a = np.asarray(affine, dtype=float)
    cols = a[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    dirs = (cols / spacing).T
    p0 = a[:3, 3]
    translate = dirs @ p0
    return (
        tuple(float(s) for s in spacing),
        tuple(float(t) for t in translate),
        dirs,
    )
