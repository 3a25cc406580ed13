"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) over dicomweb-client: every HTTP
call of the plugin is in this one module.

Authentication is set on the ``requests`` session (HTTP basic or a bearer
token), never in a URL or a logged header; HTTPS is verified against
``server.ca_bundle`` (or the system's CAs), and ``server.client_cert`` /
``client_key`` are presented to servers that require a client
certificate (the files checked first by
:func:`napari_medcnn.pacs.tls.check_files`).  Every ``requests`` failure is
turned into a :class:`PacsError` that names the server and the reason
(connection refused, authentication refused, a timeout, a missing
resource, an untrusted certificate, a refused client certificate) with
the secrets masked.

dicomweb-client (and urllib3 under it) logs every request's URL at DEBUG
level, query string included, so a search by patient ID or name would put the patient's
identifiers into any DEBUG log; :class:`_QueryRedactor`, attached to its
loggers when a client is made, replaces query strings with
``?[query redacted]`` (and drops logged headers, which may carry the
authorisation).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
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
from napari_medcnn.pacs.server import PacsError, Secret, Server
from napari_medcnn.pacs.store import StoreResult, read_for_store
from napari_medcnn.pacs.tls import (
    TlsConfigError,
    check_files,
    client_context,
    diagnose,
)

__all__ = ["DicomWebClient"]

_QUERY = re.compile(r"\?[^\s'\"]*")
_HEADERS = re.compile(r"\{.*\}")


class _QueryRedactor(logging.Filter):
    """Masks URL query strings (patient filters) and header dicts in the
    records of dicomweb-client's and urllib3's loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = _HEADERS.sub(
            "{headers redacted}", _QUERY.sub("?[query redacted]", text)
        )
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def _redact_library_logs() -> None:
    """Attach :class:`_QueryRedactor` to every dicomweb-client logger (a
    logger's filters do not apply to its children's records)."""
    import dicomweb_client.web  # noqa: F401 - creates its loggers
    import urllib3.connectionpool  # noqa: F401 - logs "GET /path?query"

    libs = ("dicomweb_client", "urllib3")
    names = [
        n
        for n in logging.root.manager.loggerDict
        if n in libs or n.startswith(tuple(f"{lib}." for lib in libs))
    ]
    for name in names:
        lib = logging.getLogger(name)
        if not any(isinstance(f, _QueryRedactor) for f in lib.filters):
            lib.addFilter(_QueryRedactor())


_STUDY_FIELDS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
_SERIES_FIELDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
#: instances per STOW-RS request
STOW_BATCH = 32


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every request (token masked in
    ``repr``)."""

    def __init__(self, token: Secret):
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return r

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class _CABundleAdapter(requests.adapters.HTTPAdapter):
    """Verify HTTPS against one CA bundle, whatever the environment says.

    ``requests`` lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override a
    session's ``verify``; the profile's CA bundle must win.
    """

    def __init__(self, ca_bundle: str):
        super().__init__()
        self._ca_bundle = ca_bundle

    def send(self, request, **kwargs):
        kwargs["verify"] = self._ca_bundle
        return super().send(request, **kwargs)


def _innermost(exc: BaseException) -> BaseException:
    """The ``ssl.SSLError`` inside what requests/urllib3 raise (or the
    exception itself), for its reason."""
    import ssl

    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return e
        for x in (getattr(e, "reason", None), e.__cause__, e.__context__,
                  *getattr(e, "args", ())):  # fmt: skip
            if isinstance(x, BaseException):
                todo.append(x)
    return exc


def _is_tls_failure(exc: BaseException) -> bool:
    import ssl

    inner = _innermost(exc)
    return isinstance(inner, ssl.SSLError) or "ssl" in type(inner).__name__.lower()


class DicomWebClient:
    """A :class:`~napari_medcnn.pacs.client.PacsClient` for a DICOMweb
    server (``server.kind == "dicomweb"``).

    Args:
        server: the profile (URL, prefixes, auth, CA bundle, timeout in s).
        session: a ``requests`` session to use (tests, proxies); its auth
            and verification are set from ``server``.

    Raises:
        PacsError: an environment variable named for a secret is not set.
    """

    def __init__(self, server: Server, session: requests.Session | None = None):
        from dicomweb_client.api import DICOMwebClient

        if server.kind != "dicomweb":
            raise ValueError(f"{server.label} is not a DICOMweb server")
        _redact_library_logs()
        self.server = server
        password, token = server.resolved_password(), server.resolved_token()
        self._secrets = [s for s in (password, token) if s]
        sess = session or requests.Session()
        if token:
            sess.auth = _BearerAuth(token)
        elif server.user:
            sess.auth = requests.auth.HTTPBasicAuth(
                server.user, password.reveal() if password else ""
            )
        if server.ca_bundle and not Path(server.ca_bundle).is_file():
            raise PacsError(server, f"CA bundle {server.ca_bundle} not found")
        if server.url.lower().startswith("https:"):
            try:
                check_files(server.ca_bundle, server.client_cert, server.client_key)
            except TlsConfigError as exc:
                raise PacsError(server, str(exc)) from None
        if server.ca_bundle:
            sess.verify = server.ca_bundle
            sess.mount("https://", _CABundleAdapter(server.ca_bundle))
        if server.client_cert:
            sess.cert = (
                (server.client_cert, server.client_key)
                if server.client_key
                else server.client_cert
            )
        self._session = sess
        t = server.timeout
        self._client = DICOMwebClient(
            url=server.url.rstrip("/"),
            session=sess,
            qido_url_prefix=server.qido_prefix,
            wado_url_prefix=server.wado_prefix,
            stow_url_prefix=server.stow_prefix,
            timeout=(min(t, 10.0), t),
        )
        # its default retries every failure (timeouts too) up to 5 times with
        # back-off: a hung server would take minutes to report; fail fast
        self._client.set_http_retry_params(retry=False)

    def __repr__(self) -> str:
        return f"DicomWebClient({self.server.label!r})"

    def _error(self, reason: str) -> PacsError:
        return PacsError(self.server, reason, self._secrets)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn what ``requests`` raises during ``what`` into PacsError."""
        t = self.server.timeout
        try:
            yield
        except PacsError:
            raise
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code == 401:
                why = "authentication refused (HTTP 401): check the user and "
                why += "password or token"
            elif code == 403:
                why = "access refused (HTTP 403): these credentials may not "
                why += what
            elif code == 404:
                why = "not found (HTTP 404): check the URL and the QIDO/WADO/"
                why += "STOW prefixes"
            else:
                reason = exc.response.reason if exc.response is not None else ""
                why = f"HTTP {code} {reason}".strip()
            raise self._error(f"{why} (while trying to {what})") from None
        except requests.exceptions.SSLError as exc:
            raise self._error(
                f"{self._ssl_reason(exc)} (while trying to {what})"
            ) from None
        except requests.exceptions.Timeout:
            raise self._error(
                f"no answer within {t:g} s (timed out while trying to {what})"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if _is_tls_failure(exc):  # a TLS 1.3 alert after the handshake
                raise self._error(
                    f"{self._ssl_reason(exc)} (while trying to {what})"
                ) from None
            if "timed out" in str(exc).lower():
                raise self._error(
                    f"no answer within {t:g} s (timed out while trying to {what})"
                ) from None
            raise self._error(
                f"cannot connect (connection refused or host unreachable) while "
                f"trying to {what}: check the URL and port"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise self._error(f"{type(exc).__name__} while trying to {what}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(
                f"unexpected answer while trying to {what} ({type(exc).__name__}: "
                f"{str(exc)[:200]})"
            ) from None

    def _ssl_reason(self, exc: BaseException) -> str:
        """One line for an HTTPS failure (see
        :func:`~napari_medcnn.pacs.tls.describe_ssl_error`)."""
        s = self.server
        parts = urlsplit(s.url)
        try:
            context = client_context(s.ca_bundle, s.client_cert, s.client_key)
        except TlsConfigError as err:
            return str(err)
        why = diagnose(
            _innermost(exc), context, parts.hostname or "", parts.port or 443,
            s.timeout, has_client_cert=bool(s.client_cert),
        )  # fmt: skip
        return why.replace("TLS handshake failed", "HTTPS handshake failed", 1)

    # get_remaining (paging with offset) is not used: some servers (Orthanc's
    # DICOMweb plugin with filters) ignore the offset and it never ends

    # -- PacsClient ----------------------------------------------------------
    def echo(self) -> float:
        """A QIDO-RS study search limited to one result; returns seconds."""
        t0 = time.perf_counter()
        with self._errors("search studies"):
            self._client.search_for_studies(limit=1)
        return time.perf_counter() - t0

    def find_studies(self, **filters: Any) -> list[StudyResult]:
        """QIDO-RS ``/studies`` (filters: see :class:`PacsClient`)."""
        keywords = normalise_filters(filters, "study")
        with self._errors("search studies"):
            found = self._client.search_for_studies(
                fields=list(_STUDY_FIELDS),
                search_filters=keywords,
            )
            return [StudyResult.from_dataset(Dataset.from_json(d)) for d in found]

    def find_series(self, study_uid: str, **filters: Any) -> list[SeriesResult]:
        """QIDO-RS ``/studies/{study}/series``."""
        keywords = normalise_filters(filters, "series")
        with self._errors("search series"):
            found = self._client.search_for_series(
                study_instance_uid=study_uid,
                fields=list(_SERIES_FIELDS),
                search_filters=keywords,
            )
            return [
                SeriesResult.from_dataset(Dataset.from_json(d), study_uid)
                for d in found
            ]

    def _count(self, study_uid: str, series_uid: str) -> int:
        with self._errors("search series"):
            found = self._client.search_for_series(
                study_instance_uid=study_uid,
                fields=["NumberOfSeriesRelatedInstances"],
                search_filters={"SeriesInstanceUID": series_uid},
            )
        if not found:
            raise self._error(f"series {series_uid} not found in study {study_uid}")
        n = SeriesResult.from_dataset(Dataset.from_json(found[0])).n_instances
        return n or 0

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        dest: str | os.PathLike | None = None,
        cancel: Cancel = None,
    ) -> Generator[tuple[str, int, int], None, Path]:
        """WADO-RS ``/studies/{study}/series/{series}`` into
        ``<dest or cache>/<study>/<series>/`` (atomically: see
        :class:`~napari_medcnn.pacs.client.SeriesStaging`).

        Yields ``("retrieve", i, n)``; returns the series folder.
        """
        target = series_dir(dest, study_uid, series_uid)
        n = self._count(study_uid, series_uid)
        yield ("retrieve", 0, n)
        with SeriesStaging(target) as staging:
            with self._errors("retrieve the series"):
                instances = self._client.iter_series(study_uid, series_uid)
                try:
                    for ds in instances:
                        check_cancel(cancel, self.server, "retrieve")
                        staging.add(ds)
                        i = len(staging.files)
                        yield ("retrieve", i, max(n, i))
                        check_cancel(cancel, self.server, "retrieve")
                finally:
                    close = getattr(instances, "close", None)
                    if close is not None:
                        close()
            if not staging.files:
                raise self._error(f"series {series_uid} returned no instance")
            return staging.commit()

    def store(self, paths: Iterable[str | os.PathLike]) -> StoreResult:
        """STOW-RS the DICOM files in ``paths`` (batches of
        :data:`STOW_BATCH`); returns what was stored and what failed."""
        result = StoreResult()
        batch: list[tuple[str, Dataset]] = []

        def flush() -> None:
            if not batch:
                return
            datasets = [ds for _p, ds in batch]
            with self._errors("store instances"):
                response = self._client.store_instances(datasets)
            failed = {
                str(item.get("ReferencedSOPInstanceUID", "")): int(
                    item.get("FailureReason", 0) or 0
                )
                for item in (response.get("FailedSOPSequence") or [])
            }
            for path, ds in batch:
                uid = str(ds.SOPInstanceUID)
                if uid in failed:
                    result.failed.append((path, f"refused (reason {failed[uid]:#06x})"))
                else:
                    result.stored.append(uid)
            batch.clear()

        for path, ds, why in read_for_store(paths):
            if ds is None:
                result.failed.append((path, why))
                continue
            batch.append((path, ds))
            if len(batch) >= STOW_BATCH:
                flush()
        flush()
        return result
