"""Data-quality checks that build the :class:`QualityReport` of a scan.

Codes (stable keys, see ``scan.QualityIssue``):

* ``missing_slices`` (warning): a gap between slices that is about an integer
  multiple (>= 2) of the median spacing.
* ``uneven_spacing`` (warning): spacing varies by more than 5 % otherwise.
* ``duplicate_positions`` (warning): slices share a position and nothing in
  the headers (echo, acquisition) explained it.
* ``gantry_tilt`` (warning): slices are sheared (tilted gantry CT); shown
  unsheared.
* ``split_series`` (info): a series was split (orientation, size...).
* ``saturated`` (warning): >= 5 % of pixels sit at the top of the stored
  range, or >= 90 % at its bottom (air at the bottom is normal for CT/MR).
* ``constant`` (warning): every pixel has the same value.
* ``skipped_non_image`` (info): SR, RT plan... objects were not loaded.
* ``skipped_unreadable`` (warning): files or series that could not be read.
* ``pixel_spacing_fallback`` (warning, or info for images that rarely carry
  a spacing): PixelSpacing missing or zero.
* ``decoder_output`` (warning): a native pixel decoder printed something
  while decoding (kept off the terminal, reported here).

``skipped_non_image`` and ``skipped_unreadable`` describe a folder, not a
scan: they go in the folder's report (``ScanList.folder_quality``), once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_medcnn.io.scan import QualityReport, Severity

#: Spacing differences up to this fraction of the median count as even.
SPACING_RTOL = 0.05
#: Fraction of pixels at the top of the stored range that flags saturation.
SATURATED_TOP = 0.05
#: Fraction of pixels at the bottom of the stored range that flags it.
SATURATED_BOTTOM = 0.9
#: Modalities whose images normally carry a physical pixel spacing.
SPATIAL_MODALITIES = {"CT", "MR", "PT", "NM", "CR", "DX", "MG", "RTDOSE", "XA", "RF"}


def check_positions(
    dists: np.ndarray,
    report: QualityReport,
    *,
    steps: np.ndarray | None = None,
    normal: np.ndarray | None = None,
) -> None:
    """Flag missing slices, uneven spacing, duplicates and shear.

    Args:
        dists: sorted slice positions along the normal, mm.
        report: the report to add findings to.
        steps: optional (n-1, 3) vectors between consecutive positions (mm),
            with ``normal``, to detect gantry tilt.
        normal: unit slice normal.
    """
    d = np.asarray(dists, float)
    if d.size < 2:
        return
    diffs = np.diff(d)
    tol_abs = 1e-3
    dup = diffs < tol_abs
    if dup.any():
        report.add(
            "duplicate_positions",
            f"{int(dup.sum())} slice(s) share a position with another slice; "
            "the volume may mix acquisitions",
        )
    real = diffs[~dup]
    if real.size == 0:
        return
    med = float(np.median(real))
    tol = SPACING_RTOL * med + 0.01
    gaps = []
    uneven = []
    for i, step in enumerate(diffs):
        if step < tol_abs or abs(step - med) <= tol:
            continue
        k = round(step / med)
        if k >= 2 and abs(step - k * med) <= tol * k:
            gaps.append((i, k - 1, step))
        else:
            uneven.append(step)
    if gaps:
        n_missing = sum(g[1] for g in gaps)
        where = ", ".join(
            f"{d[i]:.2f} to {d[i + 1]:.2f} mm" for i, _, _ in gaps[:3]
        ) + (" ..." if len(gaps) > 3 else "")
        report.add(
            "missing_slices",
            f"about {n_missing} slice(s) missing (gaps at {where}; "
            f"spacing {med:.3g} mm)",
        )
    if uneven:
        report.add(
            "uneven_spacing",
            f"slice spacing is uneven: {min(real):.3g} to {max(real):.3g} mm "
            f"(median {med:.3g} mm); the volume uses the median",
        )
    if steps is not None and normal is not None and len(steps):
        step = np.mean(np.asarray(steps, float), axis=0)
        along = float(step @ normal)
        inplane = float(np.linalg.norm(step - along * np.asarray(normal)))
        if along > 0 and inplane > 0.01 * along:
            angle = float(np.degrees(np.arctan2(inplane, along)))
            report.add(
                "gantry_tilt",
                f"slices are sheared by {angle:.1f} degrees (gantry tilt); "
                "the volume is shown without the shear",
            )


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest value a ``bits_stored``-bit pixel can hold."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def check_intensities(
    raw: np.ndarray,
    report: QualityReport,
    *,
    bits_stored: int | None,
    signed: bool,
    padding: float | None = None,
    max_samples: int = 2_000_000,
) -> None:
    """Flag constant and saturated images from the *stored* values.

    Args:
        raw: stored pixel values (before rescale), any shape.
        report: the report to add findings to.
        bits_stored: BitsStored (None skips the saturation check).
        signed: PixelRepresentation == 1.
        padding: PixelPaddingValue, ignored in the counts.
        max_samples: the check looks at a regular subsample of this size.
    """
    raw = np.asarray(raw)
    if raw.size == 0:
        return
    if raw.ndim >= 3 and raw.shape[0] > 1:
        # whole slices, evenly spaced: contiguous reads, far cheaper than a
        # strided gather over a large volume
        per = raw[0].size
        k = min(raw.shape[0], max(1, -(-max_samples // per)))
        sample = raw[np.unique(np.linspace(0, raw.shape[0] - 1, k).astype(int))]
        sample = sample.reshape(-1)
    else:
        flat = raw.reshape(-1)
        sample = flat[:: max(1, flat.size // max_samples)]
    if padding is not None:
        sample = sample[sample != padding]
        if sample.size == 0:
            return
    lo, hi = sample.min(), sample.max()
    if lo == hi and raw.min() == raw.max():
        report.add("constant", f"every pixel has the same value ({lo})")
        return
    if bits_stored is None or raw.dtype.kind not in "iu" or not 1 < bits_stored <= 32:
        return
    smin, smax = stored_range(bits_stored, signed)
    top = float(np.count_nonzero(sample == smax)) / sample.size
    bottom = float(np.count_nonzero(sample == smin)) / sample.size
    if top >= SATURATED_TOP:
        report.add(
            "saturated",
            f"{top:.0%} of pixels are at the maximum stored value ({smax}); "
            "bright structures may be clipped",
        )
    elif bottom >= SATURATED_BOTTOM:
        report.add(
            "saturated",
            f"{bottom:.0%} of pixels are at the minimum stored value ({smin}); "
            "the image may be clipped or mostly empty",
        )


def note_split(report: QualityReport, reason: str | None) -> None:
    """Record that the series this scan comes from was split, and why."""
    if reason:
        report.add(
            "split_series",
            f"the DICOM series was split by {reason}; this scan is one part",
            "info",
        )


def note_skipped_non_image(report: QualityReport, names: Iterable[str]) -> None:
    """Record non-image objects (SR, RT plan...) that were not loaded."""
    names = sorted(set(names))
    if names:
        report.add(
            "skipped_non_image",
            f"non-image DICOM series not loaded: {', '.join(names)}",
            "info",
        )


def note_unreadable(report: QualityReport, messages: Iterable[str]) -> None:
    """Record series of the folder that failed to load."""
    messages = list(messages)
    if messages:
        shown = "; ".join(messages[:3]) + (" ..." if len(messages) > 3 else "")
        report.add(
            "skipped_unreadable",
            f"{len(messages)} file(s) or series could not be read: {shown}",
        )


def note_spacing_fallback(
    report: QualityReport, used: str, modality: str | None
) -> None:
    """Record that PixelSpacing was missing/zero and what was used instead.

    ``used`` is ``"ImagerPixelSpacing"``, ``"SequenceOfUltrasoundRegions"``
    or ``"none"`` (1 pixel = 1 unit).
    """
    severity: Severity = (
        "warning" if (modality or "").upper() in SPATIAL_MODALITIES else "info"
    )
    if used == "none":
        msg = "no valid PixelSpacing; distances are in pixels (spacing 1.0)"
    elif used == "SequenceOfUltrasoundRegions":
        msg = (
            "no PixelSpacing; using the ultrasound region's physical deltas "
            "(PhysicalDeltaX/Y, cm), valid inside that region"
        )
        severity = "info"
    else:
        msg = (
            f"PixelSpacing missing or zero; using {used} (at the detector, "
            "not corrected for magnification)"
        )
    report.add("pixel_spacing_fallback", msg, severity)


def note_decoder_output(report: QualityReport, messages: Iterable[str]) -> None:
    """Record what native decoders printed while decoding this scan's pixels
    (each message names its file; at most 3 are quoted)."""
    messages = list(dict.fromkeys(messages))
    if messages:
        shown = "; ".join(messages[:3]) + (" ..." if len(messages) > 3 else "")
        report.add(
            "decoder_output",
            f"the pixel decoder printed messages for {len(messages)} file(s); "
            f"the pixels may be damaged: {shown}",
        )
