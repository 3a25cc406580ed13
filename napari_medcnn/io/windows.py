"""CT display windows (window/level presets) and conversions to display limits.

A window is ``(center, width)`` in Hounsfield units (HU); a display range is
``(lo, hi)`` = ``(center - width / 2, center + width / 2)``, the same formula
:meth:`napari_medcnn.io.scan.Scan.contrast_limits` uses for the file's own
window, so a preset and a file window line up exactly.

Pure core: no Qt, napari or magicgui.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "CT_PRESETS",
    "preset_names",
    "window_to_limits",
    "limits_to_window",
]

# Standard radiology CT windows, (center/level, width) in HU, from
# Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/52108):
#   brain W:80 L:40; subdural W:130-300 L:50-100 (midpoints used here);
#   stroke W:40 L:40 (the narrow window used to see early loss of grey-white
#   differentiation; W:8 L:32 is a more extreme variant); lungs W:1500
#   L:-600; mediastinum W:350 L:50; abdomen soft tissue W:400 L:50;
#   liver W:150 L:30; bone W:1800 L:400.
# Read-only so that no caller can change a preset for everyone else.
CT_PRESETS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "brain": (40.0, 80.0),
        "subdural": (75.0, 215.0),
        "stroke": (40.0, 40.0),
        "lung": (-600.0, 1500.0),
        "mediastinum": (50.0, 350.0),
        "abdomen": (50.0, 400.0),
        "liver": (30.0, 150.0),
        "bone": (400.0, 1800.0),
    }
)


def preset_names() -> list[str]:
    """Names of the CT presets, in display order (head, chest, abdomen, bone)."""
    return list(CT_PRESETS)


def window_to_limits(center: float, width: float) -> tuple[float, float]:
    """Display range of a window.

    Args:
        center: window center (level), in the image's units (HU for CT).
        width: window width, same units; must be > 0.

    Returns:
        ``(lo, hi)`` with ``hi - lo == width``.

    Raises:
        ValueError: ``width`` is not positive.
    """
    center, width = float(center), float(width)
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return (center - width / 2.0, center + width / 2.0)


def limits_to_window(lo: float, hi: float) -> tuple[float, float]:
    """Window of a display range: the inverse of :func:`window_to_limits`.

    Args:
        lo, hi: display range, in the image's units; ``hi > lo``.

    Returns:
        ``(center, width)``.

    Raises:
        ValueError: ``hi <= lo``.
    """
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        raise ValueError(f"display range must have hi > lo, got ({lo}, {hi})")
    return ((lo + hi) / 2.0, hi - lo)
