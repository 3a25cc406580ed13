"""Worker jobs of the Cohort widget (core generators and functions, no Qt).

* :func:`iter_cohort_job` runs :func:`napari_medcnn.cohort.iter_cohort` in a
  napari ``thread_worker``.  Cancel goes through a :class:`CohortControl`,
  not ``worker.quit()``: superqt's quit stops pulling the generator without
  closing it, which would leave the worker processes running and the
  tables unwritten.  The job checks the control after every event and then
  closes the core generator *in the worker thread*: the worker processes
  are terminated, what finished stays in the journal, the tables and the
  report are written for it, and a rerun resumes.
* :func:`open_item` loads one item's scan (only that DICOM series's files,
  picked by series UID) and its saliency map, for the widget to show.

Messages of the open job name the item by its row's redacted path, never
by the raw path (a folder may carry the patient's name).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.widgets._common.jobs import JobError, JobHandle

#: shortest time between two ``discover`` events passed on to the panel, s
DISCOVER_INTERVAL_S = 0.1


class CohortControl:
    """Asks a running cohort job to stop (thread-safe; a plain object, so
    the panel's ``destroyed`` signal can still reach it)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self, *_args: Any) -> None:
        """Stop at the next event of the run (the next finished item)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class CohortJobHandle(JobHandle):
    """The running worker and, for a cohort run, its :class:`CohortControl`.

    :meth:`quit` (the panel destroyed, napari closing) cancels the run the
    way Cancel does, so the core generator is closed in its thread; other
    jobs (a model load) are quit as usual.
    """

    control: CohortControl | None = None

    def quit(self, *_args: Any) -> None:
        if self.control is not None:
            self.control.cancel()
        else:
            super().quit()


@dataclass
class CohortOutcome:
    """How a cohort job ended.

    Attributes:
        out_dir: the output folder.
        result: the core's ``CohortResult`` (None when cancelled).
        cancelled: stopped before every item was done.
        done: items journalled (this run and earlier ones).
        total: items in the cohort (0 when cancelled before discovery ended).
        report: ``report.html`` when it exists.
    """

    out_dir: Path
    result: Any = None
    cancelled: bool = False
    done: int = 0
    total: int = 0
    report: Path | None = None


def iter_cohort_job(
    inputs: Sequence[str],
    out_dir: str,
    options: Any,
    control: CohortControl,
    **kwargs: Any,
) -> Generator[Any, None, CohortOutcome]:
    """:func:`napari_medcnn.cohort.iter_cohort` for a worker thread.

    Args:
        inputs: folders, files or CSV manifests.
        out_dir: the output folder (new, or an earlier run's: resumed).
        options: the ``CohortOptions``.
        control: checked after every event; when cancelled, the core
            generator is closed here (see module doc).
        **kwargs: ``executor``, ``workers``, ``scheduler``,
            ``redo_errors``... of ``iter_cohort``.

    Yields:
        The core's ``CohortEvent``s (``discover`` ones at most every
        :data:`DISCOVER_INTERVAL_S`).

    Returns:
        The :class:`CohortOutcome`.

    Raises:
        CohortInputError: bad inputs or settings (nothing written).
        JobError: a ``RuntimeError`` of the core (superqt would hide it).
    """
    from napari_medcnn.cohort import iter_cohort

    out = Path(out_dir)
    gen = iter_cohort(list(inputs), out, options, **kwargs)
    done = total = 0
    shown = 0.0
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                result = stop.value
                return CohortOutcome(
                    out, result, result.cancelled, len(result.rows),
                    len(result.items), result.files.get("report"),
                )  # fmt: skip
            if ev.stage != "discover":
                done, total = ev.done, ev.total
            if control.cancelled and ev.stage != "write":
                if ev.stage in ("start", "item"):
                    yield ev  # journalled already: the panel shows it
                gen.close()  # here, in the worker thread: see module doc
                report = out / "report.html"
                return CohortOutcome(
                    out, None, True, done, total, report if report.is_file() else None
                )
            if ev.stage == "wait":  # a heartbeat: only for the cancel check
                continue
            now = time.perf_counter()
            early = ev.stage == "discover" and ev.done < ev.total
            if early and now - shown < DISCOVER_INTERVAL_S:
                continue
            shown = now
            yield ev
    except RuntimeError as exc:
        raise JobError(str(exc)) from exc
    finally:
        gen.close()  # an error or the job's own close: stop the workers


# -- opening one item --------------------------------------------------------------
@dataclass
class OpenedItem:
    """One item loaded for the viewer.

    Attributes:
        key: the item key.
        scan: the :class:`~napari_medcnn.io.scan.Scan` (the first one when
            the item holds several stacks, as the run classified).
        saliency: the map (float32, the scan's spatial shape, 0..1) or None.
        saliency_record: the map's JSON sidecar (method, target, metrics),
            or None.
        notes: what could not be shown, and why.
    """

    key: str
    scan: Any
    saliency: np.ndarray | None = None
    saliency_record: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _series_scans(item: Any) -> list[Any]:
    """The scans of a DICOM item: its own files only (a series folder may
    hold others), grouped as the reader does, picked by series UID."""
    from napari_medcnn.io import load
    from napari_medcnn.io.dicom.find import group_headers
    from napari_medcnn.io.dicom.headers import read_header
    from napari_medcnn.io.dicom.load import load_series_scans
    from napari_medcnn.io.scan import ScanReadError

    files = list(item.files) or [item.path]
    if len(files) == 1:
        return list(load(files[0], include_phi=False))
    headers = []
    for f in files:
        try:
            h = read_header(f)
        except ScanReadError:
            continue
        if h is not None:
            headers.append(h)
    infos = [i for i in group_headers(headers) if i.kind == "image"]
    same = [i for i in infos if i.series_uid == item.series_uid]
    scans: list[Any] = []
    for info in same or infos:
        scans.extend(load_series_scans(info, include_phi=False))
    return scans


def _saliency(out_dir: Path, rel: str, shape: tuple[int, ...], notes: list[str]):
    """The map ``out_dir/rel`` (``.npy`` or NIfTI, aligned with the scan as
    the reader loads it) and its sidecar; None when it does not fit."""
    from napari_medcnn.inference.records import scrub
    from napari_medcnn.io import load
    from napari_medcnn.saliency.export import sidecar_path

    root = out_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        notes.append(f"saliency map {rel} not found in the output folder")
        return None, None
    if path.name.lower().endswith(".npy"):
        data = np.load(path, allow_pickle=False)
    else:
        data = load(path, include_phi=False)[0].data
    data = np.asarray(data, dtype=np.float32)
    if data.shape != shape:
        notes.append(f"saliency map {rel} is {data.shape}, the scan {shape}: not shown")
        return None, None
    record = None
    side = sidecar_path(path)
    if side.is_file():
        try:
            record = scrub(json.loads(side.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            record = None
    return data, record


def _redacted(exc: BaseException, item: Any, shown: str) -> str:
    """``exc``'s message with the item's raw path (the folder of a DICOM
    series: its files lie below it) replaced by the row's redacted one."""
    text = str(exc)
    others = [f for f in item.files if not f.startswith(item.path)]
    for raw in [item.path, *others]:
        if raw:
            text = text.replace(raw, shown)
    return text


def open_item(item: Any, row: Mapping[str, Any] | None, out_dir: str) -> OpenedItem:
    """Load ``item``'s scan and, when its row has one, its saliency map.

    Args:
        item: the cohort ``Item`` (its path and, for DICOM, its files).
        row: the item's result row, or None (not processed yet).
        out_dir: the run's output folder (``saliency_file`` is relative
            to it).

    Returns:
        The :class:`OpenedItem`.

    Raises:
        JobError: the item cannot be loaded; the message names it by the
            row's redacted path, never by the raw one.
    """
    from napari_medcnn.io import load

    shown = str((row or {}).get("path") or f"item {item.key}")
    try:
        if item.kind == "dicom":
            scans = _series_scans(item)
        elif item.kind in ("nifti", "image"):
            scans = list(load(item.path, include_phi=False))
        else:
            raise ValueError(f"a {item.kind} item holds no image")
        if not scans:
            raise ValueError("no image found")
    except Exception as exc:  # any reader failure: one message, redacted
        why = _redacted(exc, item, shown)
        raise JobError(f"{shown}: cannot open ({why})") from None
    scan = scans[0]
    opened = OpenedItem(item.key, scan)
    if len(scans) > 1:
        opened.notes.append(f"{len(scans)} stacks in this item; showing the first")
    rel = str((row or {}).get("saliency_file") or "")
    if rel:
        shape = tuple(scan.data.shape[: scan.ndim_spatial])
        try:
            opened.saliency, opened.saliency_record = _saliency(
                Path(out_dir), rel, shape, opened.notes
            )
        except Exception as exc:  # a damaged map: the scan still opens
            opened.notes.append(f"saliency map {rel} unreadable ({exc})")
    return opened
