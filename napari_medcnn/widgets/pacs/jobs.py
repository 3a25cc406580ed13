"""Worker jobs of the PACS widget (no Qt): each takes a
:class:`~napari_medcnn.pacs.Server` and runs in a napari ``thread_worker``
thread, so the network never blocks napari.

Nothing here logs or returns patient data beyond what the search results
carry (the widget masks names); messages name the server by its label,
never a secret.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_medcnn.widgets._common.jobs import guarded_call

__all__ = [
    "Retrieved",
    "SearchHit",
    "echo_job",
    "iter_open_vault_job",
    "iter_retrieve_job",
    "iter_search_job",
    "send_job",
]


@dataclass
class SearchHit:
    """One study of a search and its series (in the PACS's order)."""

    study: Any  # napari_medcnn.pacs.StudyResult
    series: list[Any] = field(default_factory=list)  # SeriesResult


@dataclass
class Retrieved:
    """What a retrieve job returns.

    Attributes:
        layers: ``(data, add_kwargs, "image")`` per scan, as the plugin's
            reader gives them (geometry in mm, metadata).
        folders: the retrieved series folders (in the session cache, or
            the destination given).
        cancelled: the user cancelled: nothing is to be loaded.
        not_images: reasons, one per retrieved series that holds no image
            (an SR, a SEG...: kept in the cache, not loaded); no paths.
        sealed: series also sealed into the encrypted cache.
    """

    layers: list[tuple] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    cancelled: bool = False
    not_images: list[str] = field(default_factory=list)
    sealed: int = 0


def echo_job(server: Any) -> float:
    """C-ECHO (DIMSE) or a one-result QIDO-RS search (DICOMweb); returns
    the round trip in seconds.

    Raises:
        PacsError: unreachable, refused, timed out (secrets masked).
    """
    from napari_medcnn.pacs import connect

    return guarded_call(lambda: connect(server).echo())


def iter_search_job(
    server: Any, filters: Mapping[str, Any]
) -> Generator[tuple[str, int, int], None, list[SearchHit]]:
    """Studies matching ``filters`` (``patient_id``, ``patient_name``,
    ``date``, ``modality``, ``accession``, ``description``), each with its
    series; yields ``("search", i, n)`` per study searched for series.

    A modality filter also filters the series of each study.

    Raises:
        PacsError, ValueError: the PACS failed, or a bad filter (a date
            that is not YYYYMMDD...).
    """
    from napari_medcnn.pacs import connect

    client = connect(server)
    studies = client.find_studies(**dict(filters))
    modality = filters.get("modality") or None
    hits = []
    yield ("search", 0, len(studies))
    for i, study in enumerate(studies, 1):
        series = client.find_series(study.study_uid, modality=modality)
        hits.append(SearchHit(study, list(series)))
        yield ("search", i, len(studies))
    return hits


def iter_retrieve_job(
    server: Any,
    items: Sequence[tuple[str, str]],
    dest: str | os.PathLike | None = None,
    cancel: threading.Event | None = None,
    vault: Any = None,
) -> Generator[tuple[str, int, int], None, Retrieved]:
    """Retrieve ``(study UID, series UID)`` pairs into ``dest`` (None: the
    session cache, :func:`napari_medcnn.pacs.session_cache`) and read them
    with :func:`napari_medcnn.io.load`, the same reader as a disk load.

    Yields ``("retrieve", i, n)`` per instance of the series being
    retrieved (``n`` its instance count) and ``("series", k, m)`` after
    each series.  A set ``cancel`` stops the retrieve at the next
    instance: the series in progress leaves nothing in the cache, and the
    job returns ``Retrieved(cancelled=True)`` with no layers, so nothing is
    loaded.  After a cancel or an error, the series this job already
    retrieved into the session cache are deleted too (a ``dest`` the
    caller chose is left as it is).

    A series that holds no image (an SR, a SEG) is kept in the cache and
    listed in ``Retrieved.not_images``; the others still load.

    With ``vault`` (an unlocked :class:`napari_medcnn.pacs.vault.Vault`),
    each series is also sealed into that encrypted cache (``("seal", i,
    n)`` events) before it is loaded; the plaintext copy is the session
    cache's, deleted at close and at exit.

    Raises:
        PacsError: the PACS failed.
        VaultError: the encrypted cache cannot be written.
    """
    from napari_medcnn.io import load
    from napari_medcnn.io.scan import ScanReadError
    from napari_medcnn.pacs import PacsError, connect

    client = connect(server)
    out = Retrieved()
    kept = False
    try:
        for k, (study_uid, series_uid) in enumerate(items, 1):
            try:
                folder = yield from client.retrieve_series(
                    study_uid, series_uid, dest, cancel=cancel
                )
            except PacsError:
                if cancel is not None and cancel.is_set():
                    return Retrieved(cancelled=True)
                raise
            out.folders.append(folder)
            if vault is not None:
                yield from vault.iter_add_folder(folder, study_uid, series_uid, cancel)
                out.sealed += 1
            try:
                scans = guarded_call(load, folder)
            except ScanReadError as exc:  # an SR, a SEG: nothing to show
                out.not_images.append(str(getattr(exc, "reason", "") or "no image"))
                scans = []
            for scan in scans:
                out.layers.append(scan.to_layer_data())
            yield ("series", k, len(items))
            if cancel is not None and cancel.is_set():
                return Retrieved(cancelled=True)
        kept = True
        return out
    finally:
        if not kept and dest is None:  # an error, a cancel: nothing is kept
            _forget(out.folders)


def iter_open_vault_job(
    vault: Any,
    entries: Sequence[Any],
    cancel: threading.Event | None = None,
) -> Generator[tuple[str, int, int], None, Retrieved]:
    """Decrypt series of an encrypted cache (``entries``:
    :class:`napari_medcnn.pacs.vault.VaultSeries`) into the session cache
    (mode 0700, deleted at close and at exit) and read them with
    :func:`napari_medcnn.io.load`, like a retrieve.

    Yields ``("decrypt", i, n)`` per instance and ``("series", k, m)``
    after each series.  A cancel returns ``Retrieved(cancelled=True)``;
    after a cancel or an error (a changed file: "authentication failed")
    what this job decrypted is deleted again.

    Raises:
        VaultError: a file of the cache was changed, truncated or swapped.
    """
    from napari_medcnn.io import load
    from napari_medcnn.io.scan import ScanReadError
    from napari_medcnn.pacs import PacsError

    out = Retrieved()
    kept = False
    try:
        for k, entry in enumerate(entries, 1):
            try:
                folder = yield from vault.iter_extract(entry, None, cancel=cancel)
            except PacsError:
                if cancel is not None and cancel.is_set():
                    return Retrieved(cancelled=True)
                raise
            out.folders.append(folder)
            try:
                scans = guarded_call(load, folder)
            except ScanReadError as exc:
                out.not_images.append(str(getattr(exc, "reason", "") or "no image"))
                scans = []
            out.layers.extend(scan.to_layer_data() for scan in scans)
            yield ("series", k, len(entries))
            if cancel is not None and cancel.is_set():
                return Retrieved(cancelled=True)
        kept = True
        return out
    finally:
        if not kept:
            _forget(out.folders)


def _forget(folders: Sequence[Path]) -> None:
    """Delete series folders of the session cache (and their study folder
    when it is left empty); a folder the user chose is never touched."""
    import contextlib
    import shutil

    from napari_medcnn.pacs.client import in_session_cache

    for folder in folders:
        if not in_session_cache(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()


def send_job(
    server: Any, build: Any, *, confirm_deidentified: bool = False
) -> tuple[Any, list[str]]:
    """Write the result objects (``build(folder)`` returns their paths) into
    a temporary folder and send them with
    :func:`napari_medcnn.pacs.send` (STOW-RS or C-STORE).

    Returns:
        ``(StoreResult, kinds)``: what was stored and what failed, and the
        kinds of the objects built (``SR``, ``PM``, ``SEG``).

    Raises:
        PacsError: the privacy rule refused de-identified objects (nothing
            sent), or the PACS failed; ExportError: no DICOM source.
    """
    import tempfile

    from napari_medcnn.pacs import connect, send

    with tempfile.TemporaryDirectory(prefix="napari-medcnn-send-") as tmp:
        paths, kinds = guarded_call(build, Path(tmp))
        result = send(connect(server), paths, confirm_deidentified=confirm_deidentified)
    return result, kinds
