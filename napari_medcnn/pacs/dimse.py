"""DIMSE (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE) over pynetdicom.

Retrieval uses C-GET, with the storage presentation contexts (SCP role)
of :data:`RETRIEVE_SOP_CLASSES`; when the PACS does not accept C-GET (or
``server.retrieve == "move"``) it uses C-MOVE to our own Storage SCP,
started for the retrieve on ``server.storage_port`` with our calling AE
title (the PACS must know it as a DICOM node).  The SCP accepts only the
PACS's AE title as caller and only instances of the requested series.

With ``server.tls`` every association is DICOM TLS (``tls_args`` of
pynetdicom: the server's certificate verified against ``server.ca_bundle``
with its host name, our ``client_cert`` presented), and the C-MOVE Storage
SCP accepts only TLS peers whose certificate ``server.ca_bundle`` signed,
presenting ``client_cert`` itself (contexts from :mod:`napari_medcnn.pacs.tls`).

A failed association becomes a :class:`PacsError` that names the node and
the reason: connection refused, no answer within the timeout, the
rejection's own reason (e.g. "called AE title not recognised"), or why the
TLS handshake failed (certificate not trusted, client certificate refused
or missing, a plain connection to a TLS port).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from napari_medcnn.pacs.client import (
    Cancel,
    SeriesResult,
    SeriesStaging,
    StudyResult,
    check_cancel,
    normalise_filters,
    series_dir,
)
from napari_medcnn.pacs.server import PacsError, Server
from napari_medcnn.pacs.store import StoreResult, read_for_store
from napari_medcnn.pacs.tls import (
    TlsConfigError,
    client_context,
    probe,
    server_context,
    speaks_tls,
)

__all__ = ["RETRIEVE_SOP_CLASSES", "DimseClient"]

#: storage SOP classes offered for C-GET and accepted by our C-MOVE SCP:
#: the common image classes and the result objects (SR, SEG, Parametric Map)
RETRIEVE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.12.2",  # RF
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",  # MF grayscale byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # MF grayscale word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # MF true color SC
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL photographic
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
)

_VERIFICATION = "1.2.840.10008.1.1"
_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R FIND
_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
_GET = "1.2.840.10008.5.1.4.1.2.2.3"
_SUCCESS, _PENDING = 0x0000, (0xFF00, 0xFF01)
_CANCELLED = 0xFE00


def _status_text(status: Dataset | None) -> str:
    if status is None or "Status" not in status:
        return "no response (timed out or aborted)"
    code = int(status.Status)
    text = f"status {code:#06x}"
    comment = status.get("ErrorComment")
    if comment:
        text += f" ({comment})"
    return text


class DimseClient:
    """A :class:`~napari_medcnn.pacs.client.PacsClient` for a DIMSE node
    (``server.kind == "dimse"``).  Every call opens and releases its own
    association; ``server.timeout`` (s) bounds the connection, the
    association negotiation and each DIMSE message."""

    def __init__(self, server: Server):
        if server.kind != "dimse":
            raise ValueError(f"{server.label} is not a DIMSE node")
        self.server = server
        self._tls = None
        if server.tls:
            try:
                self._tls = client_context(
                    server.ca_bundle, server.client_cert, server.client_key
                )
            except TlsConfigError as exc:
                raise PacsError(server, str(exc)) from None

    def __repr__(self) -> str:
        return f"DimseClient({self.server.label!r})"

    def _error(self, reason: str) -> PacsError:
        return PacsError(self.server, reason)

    def _ae(self):
        from pynetdicom import AE

        ae = AE(ae_title=self.server.calling_aet)
        t = self.server.timeout
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = t
        ae.connection_timeout = t
        return ae

    def _tls_reason(self) -> str | None:
        """Why the TLS handshake fails (None: it does not, or no TLS)."""
        s = self.server
        if self._tls is None:
            return None
        return probe(self._tls, s.host, s.port, s.timeout,
                     has_client_cert=bool(s.client_cert))  # fmt: skip

    def _why_not_connected(self) -> str:
        """Probe the node once to say why no association was made."""
        s = self.server
        reason = self._tls_reason()
        if reason:
            return reason
        try:
            with socket.create_connection((s.host, s.port), timeout=s.timeout):
                pass
        except ConnectionRefusedError:
            return "cannot connect (connection refused): check the host and port"
        except TimeoutError:
            return f"no answer within {s.timeout:g} s (connecting timed out)"
        except OSError as exc:
            return f"cannot connect ({exc.strerror or type(exc).__name__})"
        return f"no answer within {s.timeout:g} s (association not negotiated)"

    @contextmanager
    def _associate(self, ae, what: str, **kwargs) -> Iterator[Any]:
        """An established association (released or aborted at the end).

        Raises:
            PacsError: refused connection, rejection (with its reason),
                timeout or abort.
        """
        from pynetdicom import evt

        s = self.server
        seen: dict[str, Any] = {}

        def on_acse(event) -> None:
            prim = event.primitive
            if getattr(prim, "result", None) not in (None, 0x00):
                seen["reject"] = prim

        def on_pdu(event) -> None:
            # the A-ASSOCIATE-RJ as it arrives: when the peer closes the
            # connection right after it, pynetdicom may see the close first
            # and report an abort, never a rejection
            if type(event.pdu).__name__ == "A_ASSOCIATE_RJ":
                seen["reject"] = event.pdu

        def on_open(event) -> None:
            seen["open"] = True

        handlers = [
            (evt.EVT_ACSE_RECV, on_acse),
            (evt.EVT_PDU_RECV, on_pdu),
            (evt.EVT_CONN_OPEN, on_open),
        ]
        handlers += kwargs.pop("evt_handlers", [])
        if self._tls is not None:
            kwargs["tls_args"] = (self._tls, s.host)
        assoc = ae.associate(
            s.host, s.port, ae_title=s.called_aet, evt_handlers=handlers, **kwargs
        )
        if not assoc.is_established:
            if assoc.is_rejected or "reject" in seen:
                prim = seen.get("reject")
                reason = getattr(prim, "reason_str", "") if prim else ""
                raise self._error(
                    f"association rejected ({reason or 'no reason given'}) while "
                    f"trying to {what}: check the called AE title "
                    f"{s.called_aet!r} and that the PACS knows our calling AE "
                    f"title {s.calling_aet!r}"
                )
            if "open" not in seen:
                raise self._error(f"{self._why_not_connected()} (trying to {what})")
            reason = self._tls_reason()
            if reason:
                raise self._error(f"{reason} (trying to {what})")
            if self._tls is None and speaks_tls(s.host, s.port, min(s.timeout, 3.0)):
                raise self._error(
                    f"the connection was closed: {s.host}:{s.port} expects DICOM "
                    f"TLS (use --tls with --ca-bundle) (trying to {what})"
                )
            raise self._error(
                f"no answer within {s.timeout:g} s, or the association was "
                f"aborted (trying to {what})"
            )
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _require(self, assoc, abstract: str, what: str) -> None:
        if not any(c.abstract_syntax == abstract for c in assoc.accepted_contexts):
            raise self._error(f"the PACS does not support {what}")

    # -- PacsClient ----------------------------------------------------------
    def echo(self) -> float:
        """C-ECHO; returns the round trip in seconds."""
        ae = self._ae()
        ae.add_requested_context(_VERIFICATION)
        t0 = time.perf_counter()
        with self._associate(ae, "verify (C-ECHO)") as assoc:
            status = assoc.send_c_echo()
            if status is None or int(status.get("Status", -1)) != _SUCCESS:
                raise self._error(f"C-ECHO failed: {_status_text(status)}")
        return time.perf_counter() - t0

    def _find(self, query: Dataset, what: str) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(_FIND)
        out = []
        with self._associate(ae, what) as assoc:
            self._require(assoc, _FIND, "C-FIND (Study Root)")
            for status, identifier in assoc.send_c_find(query, _FIND):
                code = int(status.get("Status", -1)) if status else -1
                if code in _PENDING and identifier is not None:
                    out.append(identifier)
                elif code != _SUCCESS:
                    raise self._error(f"C-FIND failed: {_status_text(status)}")
        return out

    def find_studies(self, **filters: Any) -> list[StudyResult]:
        """C-FIND at STUDY level (filters: see :class:`PacsClient`)."""
        keywords = normalise_filters(filters, "study")
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        for kw in (
            "StudyInstanceUID", "PatientName", "PatientID", "StudyDate",
            "StudyDescription", "AccessionNumber", "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
        ):  # fmt: skip
            setattr(q, kw, keywords.get(kw, ""))
        return [StudyResult.from_dataset(d) for d in self._find(q, "search studies")]

    def find_series(self, study_uid: str, **filters: Any) -> list[SeriesResult]:
        """C-FIND at SERIES level within one study."""
        keywords = normalise_filters(filters, "series")
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        for kw in (
            "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
            "NumberOfSeriesRelatedInstances",
        ):  # fmt: skip
            setattr(q, kw, keywords.get(kw, ""))
        return [
            SeriesResult.from_dataset(d, study_uid)
            for d in self._find(q, "search series")
        ]

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        dest: str | os.PathLike | None = None,
        cancel: Cancel = None,
    ) -> Generator[tuple[str, int, int], None, Path]:
        """C-GET (or C-MOVE, see the module) one series into
        ``<dest or cache>/<study>/<series>/``, atomically.

        Yields ``("retrieve", i, n)``; returns the series folder.
        """
        target = series_dir(dest, study_uid, series_uid)
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        with SeriesStaging(target) as staging:
            method = self.server.retrieve
            if method in ("auto", "get"):
                done = yield from self._get(query, staging, cancel, method == "get")
                if not done:
                    method = "move"
            if method == "move":
                yield from self._move(query, staging, cancel)
            if not staging.files:
                raise self._error(f"series {series_uid} returned no instance")
            return staging.commit()

    def _store_handler(self, staging: SeriesStaging, series_uid: str, lock):
        def on_store(event) -> int:
            ds = event.dataset
            if str(ds.get("SeriesInstanceUID", "")) != series_uid:
                return 0xA900  # not what we asked for: refused
            sop = str(event.request.AffectedSOPInstanceUID)
            data = event.encoded_dataset()
            with lock:
                staging.add_bytes(f"{sop}.dcm", data)
            return _SUCCESS

        return on_store

    def _drive(self, responses, staging, cancel, assoc, what):
        """Drain C-GET/C-MOVE responses, yielding progress; raises on a
        failure or a cancel (aborting the association)."""
        n = 0
        for status, _ident in responses:
            if cancel is not None:
                try:
                    check_cancel(cancel, self.server, "retrieve")
                except PacsError:
                    assoc.abort()
                    raise
            code = int(status.get("Status", -1)) if status else -1
            left = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
            done = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
            if code in _PENDING:
                n = max(n, left + done + int(status.get(
                    "NumberOfFailedSuboperations", 0) or 0))  # fmt: skip
                yield ("retrieve", len(staging.files), n)
            elif code == _SUCCESS:
                yield ("retrieve", len(staging.files), max(n, len(staging.files)))
            else:
                failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
                extra = f"; {failed} instance(s) failed" if failed else ""
                raise self._error(f"{what} failed: {_status_text(status)}{extra}")

    def _get(self, query, staging, cancel, required: bool):
        """C-GET; returns False (no files) when the PACS does not accept
        C-GET and C-MOVE may be tried instead."""
        from pynetdicom import ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.presentation import build_role

        ae = self._ae()
        ae.add_requested_context(_GET)
        for uid in RETRIEVE_SOP_CLASSES:
            ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES)
        roles = [build_role(uid, scp_role=True) for uid in RETRIEVE_SOP_CLASSES]
        lock = threading.Lock()
        handler = self._store_handler(staging, query.SeriesInstanceUID, lock)
        with self._associate(
            ae, "retrieve (C-GET)", ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, handler)],
        ) as assoc:  # fmt: skip
            if not any(c.abstract_syntax == _GET for c in assoc.accepted_contexts):
                if required:
                    raise self._error("the PACS does not support C-GET")
                return False
            responses = assoc.send_c_get(query, _GET)
            yield from self._drive(responses, staging, cancel, assoc, "C-GET")
        return True

    def _scp_bind_host(self) -> str:
        try:
            host = socket.gethostbyname(self.server.host)
            loopback = ipaddress.ip_address(host).is_loopback
        except (OSError, ValueError):
            loopback = False
        return "127.0.0.1" if loopback else ""

    def _move(self, query, staging, cancel):
        """C-MOVE to our own Storage SCP, started for this retrieve."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

        s = self.server
        scp = AE(ae_title=s.calling_aet)
        scp.require_calling_aet = [s.called_aet]
        scp.network_timeout = scp.dimse_timeout = scp.acse_timeout = s.timeout
        for uid in RETRIEVE_SOP_CLASSES:
            scp.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        lock = threading.Lock()
        handler = self._store_handler(staging, query.SeriesInstanceUID, lock)
        ssl_context = None
        if self._tls is not None:
            if not s.client_cert:
                raise self._error(
                    "C-MOVE over DICOM TLS needs our certificate for our Storage "
                    "SCP (--client-cert FILE); or retrieve with C-GET"
                )
            try:
                ssl_context = server_context(s.client_cert, s.client_key, s.ca_bundle)
            except TlsConfigError as exc:
                raise self._error(str(exc)) from None
        try:
            server = scp.start_server(
                (self._scp_bind_host(), s.storage_port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, handler)],
                ssl_context=ssl_context,
            )
        except OSError as exc:
            raise self._error(
                f"cannot start our Storage SCP on port {s.storage_port} for "
                f"C-MOVE ({exc.strerror or exc})"
            ) from None
        try:
            ae = self._ae()
            ae.add_requested_context(_MOVE)
            with self._associate(ae, "retrieve (C-MOVE)") as assoc:
                self._require(assoc, _MOVE, "C-MOVE (Study Root)")
                responses = assoc.send_c_move(query, s.calling_aet, _MOVE)
                yield from self._drive(responses, staging, cancel, assoc, "C-MOVE")
        finally:
            server.shutdown()

    def store(self, paths: Iterable[str | os.PathLike]) -> StoreResult:
        """C-STORE the DICOM files in ``paths`` over one association (each
        SOP class with the file's own transfer syntax; SR, SEG and
        Parametric Map included)."""
        result = StoreResult()
        items = []
        for path, ds, why in read_for_store(paths):
            if ds is None:
                result.failed.append((path, why))
            else:
                items.append((path, ds))
        if not items:
            return result
        pairs = {}
        for _p, ds in items:
            ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
            pairs.setdefault(str(ds.SOPClassUID), set()).add(ts)
        if len(pairs) > 127:
            raise self._error("too many SOP classes for one association (max 127)")
        ae = self._ae()
        for sop, tss in pairs.items():
            ae.add_requested_context(sop, sorted(tss))
        with self._associate(ae, "store (C-STORE)") as assoc:
            accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
            for path, ds in items:
                if str(ds.SOPClassUID) not in accepted:
                    result.failed.append((path, "SOP class not accepted by the PACS"))
                    continue
                try:
                    status = assoc.send_c_store(ds)
                except (ValueError, RuntimeError) as exc:
                    result.failed.append((path, f"{type(exc).__name__}: {exc}"))
                    continue
                code = int(status.get("Status", -1)) if status else -1
                if code == _SUCCESS or 0xB000 <= code <= 0xBFFF:
                    result.stored.append(str(ds.SOPInstanceUID))
                else:
                    result.failed.append((path, f"refused: {_status_text(status)}"))
                if not assoc.is_established:
                    raise self._error("association lost while storing")
        return result
