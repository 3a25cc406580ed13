"""npe2 reader contribution: thin over :func:`napari_medcnn.io.load`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from napari_medcnn.io import ScanReadError, detect_format, load

log = logging.getLogger(__name__)


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return a reader for ``path`` or None.  Cheap checks only; never raises."""
    try:
        paths = [path] if isinstance(path, str | os.PathLike) else list(path)
        if not paths:
            return None
        if all(detect_format(p) is not None for p in paths):
            return read_scans
    except Exception:  # a reader probe must never break napari's open dialog
        return None
    return None


def read_scans(path: str | list[str]) -> list[tuple]:
    """Read one or more paths into napari LayerDataTuples.

    Raises:
        ScanReadError: with the file name and the reason, which napari shows
            as an error notification.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers = []
    for p in paths:
        scans = load(p)
        if not scans:
            raise ScanReadError(p, "no readable image or series found")
        folder = getattr(scans, "folder_quality", None)
        if folder is not None and folder.issues:
            _notify_folder(p, folder)  # once per folder, not once per layer
        for scan in scans:
            if not scan.quality.ok:
                _notify(f"{scan.name}: data-quality warnings\n{scan.quality.summary()}")
            layers.append(scan.to_layer_data())
    return layers


def _notify_folder(path, report) -> None:
    """One notification for a folder's own findings (skipped objects,
    unreadable files): a warning when any is one, else information."""
    lines = "\n".join(i.message for i in report.issues)
    _notify(f"{os.fspath(path)}: {lines}", warning=not report.ok)


def _notify(msg: str, warning: bool = True) -> None:
    if warning:
        log.warning(msg)
    else:
        log.info(msg)
    try:
        from napari.utils.notifications import show_info, show_warning

        (show_warning if warning else show_info)(msg)
    except Exception:  # no napari (CLI, scripts): the log line is enough
        pass
