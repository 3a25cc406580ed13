"""PACS connectivity (no Qt): search, retrieve and send over DICOMweb or
DIMSE, with a local folder as a third, offline implementation.

* :class:`Server`: a PACS profile (saved with :func:`save_profile` as
  JSON, mode 0600, in the user's config folder); secrets are
  :class:`Secret` objects that print as ``***``.
* :func:`connect`: the :class:`PacsClient` for a profile:
  :class:`~napari_medcnn.pacs.dicomweb.DicomWebClient` (dicomweb-client:
  QIDO-RS, WADO-RS, STOW-RS) or :class:`~napari_medcnn.pacs.dimse.DimseClient`
  (pynetdicom: C-ECHO, C-FIND, C-GET / C-MOVE, C-STORE);
  :class:`~napari_medcnn.pacs.folder.FolderPacs` is a folder.
* :func:`send`: stores files with a client, after the privacy rule
  (:func:`~napari_medcnn.pacs.store.refuse_deidentified`: de-identified
  objects only with ``confirm_deidentified=True``).
* :func:`session_cache`: where retrieves without a destination go, a
  temporary folder (mode 0700) removed by :func:`clear_session_cache` and
  at exit.
* :func:`retrieve`: drains a client's ``retrieve_series`` progress
  generator and loads the series with :func:`napari_medcnn.io.load`.

Every failure is a :class:`PacsError` naming the server and the reason,
with secrets masked.
"""

from __future__ import annotations

import os

from napari_medcnn.pacs.client import (
    PacsClient,
    SeriesResult,
    StudyResult,
    cache_root,
    clear_session_cache,
    series_dir,
    session_cache,
)
from napari_medcnn.pacs.server import (
    PacsError,
    Secret,
    Server,
    delete_profile,
    load_profiles,
    profiles_path,
    save_profile,
)
from napari_medcnn.pacs.store import StoreResult

__all__ = [
    "PacsClient",
    "PacsError",
    "Secret",
    "SeriesResult",
    "Server",
    "StoreResult",
    "StudyResult",
    "cache_root",
    "clear_session_cache",
    "connect",
    "delete_profile",
    "load_profiles",
    "profiles_path",
    "retrieve",
    "save_profile",
    "send",
    "series_dir",
    "session_cache",
]


def connect(server: Server) -> PacsClient:
    """The client for ``server`` (DICOMweb or DIMSE).  Nothing is sent
    until a method is called.

    Raises:
        PacsError: a secret's environment variable is not set.
    """
    if server.kind == "dicomweb":
        from napari_medcnn.pacs.dicomweb import DicomWebClient

        return DicomWebClient(server)
    from napari_medcnn.pacs.dimse import DimseClient

    return DimseClient(server)


def retrieve(
    client: PacsClient,
    study_uid: str,
    series_uid: str,
    dest: str | os.PathLike | None = None,
    **load_kwargs,
):
    """Retrieve one series (no progress shown) and load it.

    Returns:
        The :class:`~napari_medcnn.io.ScanList` that
        :func:`napari_medcnn.io.load` gives for the retrieved folder.
    """
    from napari_medcnn._progress import drain
    from napari_medcnn.io import load

    folder = drain(client.retrieve_series(study_uid, series_uid, dest))
    return load(folder, **load_kwargs)


def send(
    client: PacsClient,
    paths,
    *,
    confirm_deidentified: bool = False,
) -> StoreResult:
    """Send the DICOM files in ``paths`` (folders recursively) with
    ``client.store`` (STOW-RS or C-STORE), after the privacy rule.

    Args:
        client: from :func:`connect` (or a
            :class:`~napari_medcnn.pacs.folder.FolderPacs`).
        paths: files or folders.
        confirm_deidentified: the user confirmed sending objects that were
            de-identified (or results of a de-identified scan).

    Returns:
        the :class:`StoreResult` (what was stored, what failed).

    Raises:
        PacsError: de-identified objects without ``confirm_deidentified``
            (nothing is sent), or the PACS cannot be reached.
    """
    from napari_medcnn.pacs.store import refuse_deidentified

    paths = [os.fspath(p) for p in paths]
    where = getattr(client, "server", None) or getattr(client, "name", "PACS")
    refuse_deidentified(paths, where, confirm_deidentified=confirm_deidentified)
    return client.store(paths)
