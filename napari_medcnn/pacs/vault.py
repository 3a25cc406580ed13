"""The encrypted PACS cache (a *vault*): retrieved series kept encrypted at
rest, in a folder the user chose, instead of in plaintext (no Qt).

Without it, a retrieve lands in the per-session cache (a 0700 temporary
folder removed at close and at exit, :func:`~.client.session_cache`) or in
a folder the user chose.  With it, each retrieved instance is sealed
(AES-256-GCM, authenticated: :mod:`napari_medcnn.deid.sealed`, the format
of the encrypted manifest and key file) and the plaintext exists only in
the 0700 session cache while it is being sealed, or while the user has the
series open.  Layout of the folder, version 1::

    vault.key        the vault's data key (32 random bytes), sealed under the
                     passphrase (scrypt: about 0.1 s and 32 MiB, once per
                     unlock)
    index.sealed     the list of series (study / series UIDs, modality,
                     description, date, instance names and SHA-256 digests),
                     sealed under the data key
    objects/<32 hex> one DICOM instance each, sealed under the data key
                     (HKDF-SHA256 with a random per-file salt: a per-file key
                     and no scrypt cost, so 1,000 instances cost 1,000 AES
                     passes, not 1,000 scrypt runs)
    .lock            empty; serialises writers (``flock``)

No file name or plaintext byte carries PHI: object names are random, and
everything about the series is in the sealed index.  The index also holds
each object's SHA-256, so an object swapped for another (or an older copy)
fails like a changed byte.  A wrong passphrase, a changed, truncated or
swapped file all raise :class:`VaultError` with "authentication failed" and
write nothing.  Changing the passphrase re-seals ``vault.key`` only
(:meth:`Vault.rekey`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Generator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from napari_medcnn._atomic import atomic_write
from napari_medcnn.deid.sealed import (
    ScryptParams,
    SealedFileError,
    open_sealed,
    read_sealed,
    seal,
)
from napari_medcnn.pacs.client import (
    Cancel,
    PacsClient,
    SeriesStaging,
    check_cancel,
    series_dir,
    session_cache,
)

__all__ = [
    "VAULT_VERSION",
    "Vault",
    "VaultError",
    "VaultSeries",
    "is_vault",
    "iter_retrieve_to_vault",
]

VAULT_VERSION = 1
KEY_NAME, INDEX_NAME, OBJECTS, LOCK_NAME = (
    "vault.key",
    "index.sealed",
    "objects",
    ".lock",
)
_FORMAT = "napari-medcnn-vault"
_AUTH_FAILED = (
    "authentication failed (wrong passphrase, or the file was changed or truncated)"
)


class VaultError(ValueError):
    """The encrypted cache cannot be created, unlocked or read; the message
    says why (never quoting the passphrase or any patient data)."""


@dataclass
class VaultSeries:
    """One series in the vault (what the sealed index holds about it).

    Attributes:
        study_uid, series_uid: the series' DICOM UIDs.
        modality, description, series_number, study_date: from the first
            instance's header (``study_date`` as ``YYYYMMDD``).
        objects: ``(object name, SHA-256 hex of the sealed file)`` per
            instance, in ``objects/``.
        stored_at: when it was sealed (UTC, ISO 8601).
    """

    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    study_date: str = ""
    objects: list[tuple[str, str]] = field(default_factory=list)
    stored_at: str = ""

    @property
    def n_instances(self) -> int:
        """How many instances (files) the series has."""
        return len(self.objects)

    def display_row(self) -> dict[str, str]:
        """Strings for a listing: date, modality, number, description,
        images, series UID (no patient data: the vault holds none)."""
        d = self.study_date
        return {
            "date": f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 else d,
            "modality": self.modality,
            "number": "" if self.series_number is None else str(self.series_number),
            "description": self.description,
            "images": str(self.n_instances),
            "series_uid": self.series_uid,
        }


def is_vault(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding an encrypted cache."""
    return (Path(path) / KEY_NAME).is_file()


def _fail(what: str) -> VaultError:
    return VaultError(f"{what}: {_AUTH_FAILED}")


class Vault:
    """An unlocked encrypted cache: made by :meth:`open` or :meth:`create`.

    The data key lives in this object only; :meth:`close` (or the ``with``
    block's end) drops it.
    """

    def __init__(self, path: Path, data_key: bytes):
        self.path = Path(path)
        self._key: bytes | None = data_key

    def __repr__(self) -> str:
        state = "locked" if self._key is None else "unlocked"
        return f"Vault({str(self.path)!r}, {state})"

    # -- create / unlock ------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        passphrase: str | bytes,
        *,
        scrypt: ScryptParams | None = None,
    ) -> Vault:
        """Make a new vault in ``path`` (missing or an empty folder; made
        mode 0700) under ``passphrase``.

        Raises:
            VaultError: ``path`` is a file, a non-empty folder that is not a
                vault, already a vault, or cannot be written.
        """
        p = Path(path)
        if is_vault(p):
            raise VaultError(f"{p} is already an encrypted cache")
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise VaultError(
                f"{p} is not empty and not an encrypted cache: give a new or "
                "empty folder"
            )
        data_key = secrets.token_bytes(32)
        body = json.dumps(
            {"format": _FORMAT, "version": VAULT_VERSION, "key": data_key.hex()}
        ).encode("ascii")
        try:
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(p, 0o700)
            (p / OBJECTS).mkdir(mode=0o700, exist_ok=True)
            vault = cls(p, data_key)
            vault._write_index([])
            # the key last: a folder without it is not (yet) a vault
            atomic_write(p / KEY_NAME, seal(body, passphrase, scrypt=scrypt),
                         mode=0o600, overwrite=False)  # fmt: skip
        except (OSError, ValueError) as exc:
            if isinstance(exc, VaultError):
                raise
            raise VaultError(f"cannot create the encrypted cache {p}: {exc}") from None
        return vault

    @classmethod
    def open(cls, path: str | os.PathLike, passphrase: str | bytes) -> Vault:
        """Unlock the vault in ``path``.

        Raises:
            VaultError: not a vault, or "authentication failed" (a wrong
                passphrase, or ``vault.key`` changed or truncated).
        """
        p = Path(path)
        if not is_vault(p):
            raise VaultError(f"{p} is not an encrypted cache (no {KEY_NAME})")
        try:
            body = read_sealed(p / KEY_NAME, passphrase)
        except SealedFileError as exc:
            raise VaultError(str(exc)) from None
        try:
            info = json.loads(body)
            data_key = bytes.fromhex(info["key"])
            ok = info.get("format") == _FORMAT and len(data_key) == 32
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise VaultError(f"{p / KEY_NAME} is not a napari-medcnn vault key")
        if info.get("version") != VAULT_VERSION:
            raise VaultError(
                f"{p}: encrypted cache version {info.get('version')} is not "
                f"supported (this napari-medcnn reads version {VAULT_VERSION})"
            )
        return cls(p, data_key)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike,
        passphrase: str | bytes,
        *,
        scrypt: ScryptParams | None = None,
    ) -> Vault:
        """:meth:`open` the vault in ``path``, or :meth:`create` it there
        when the folder is missing or empty."""
        if is_vault(path):
            return cls.open(path, passphrase)
        return cls.create(path, passphrase, scrypt=scrypt)

    def rekey(self, new_passphrase: str | bytes) -> None:
        """Seal the data key under ``new_passphrase`` (the objects are not
        touched; the old passphrase no longer opens the vault)."""
        body = json.dumps({"format": _FORMAT, "version": VAULT_VERSION,
                           "key": self._data_key().hex()}).encode("ascii")  # fmt: skip
        atomic_write(self.path / KEY_NAME, seal(body, new_passphrase), mode=0o600)

    def close(self) -> None:
        """Forget the data key (the object can no longer read or write)."""
        self._key = None

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _data_key(self) -> bytes:
        if self._key is None:
            raise VaultError(f"the encrypted cache {self.path} is locked (closed)")
        return self._key

    # -- the index ------------------------------------------------------------
    def series(self) -> list[VaultSeries]:
        """The series in the vault (oldest first).

        Raises:
            VaultError: the index was changed or truncated.
        """
        return self._read_index()

    def find(
        self, study_uid: str | None = None, series_uid: str | None = None
    ) -> list[VaultSeries]:
        """The series of ``study_uid`` and/or with ``series_uid`` (None
        matches any)."""
        return [
            s
            for s in self._read_index()
            if (study_uid is None or s.study_uid == study_uid)
            and (series_uid is None or s.series_uid == series_uid)
        ]

    def _read_index(self) -> list[VaultSeries]:
        path = self.path / INDEX_NAME
        try:
            body = read_sealed(path, self._data_key())
            rows = json.loads(body)["series"]
            out = []
            for row in rows:
                row["objects"] = [tuple(o) for o in row["objects"]]
                out.append(VaultSeries(**row))
        except SealedFileError as exc:
            raise VaultError(str(exc)) from None
        except (ValueError, KeyError, TypeError):
            raise VaultError(f"{path}: not a napari-medcnn vault index") from None
        return out

    def _write_index(self, series: list[VaultSeries]) -> None:
        body = json.dumps(
            {"version": VAULT_VERSION, "series": [asdict(s) for s in series]}
        ).encode("utf-8")
        blob = seal(body, self._data_key(), key_file=True)
        atomic_write(self.path / INDEX_NAME, blob, mode=0o600)

    @contextlib.contextmanager
    def _locked(self):
        """Hold the vault's writer lock (other processes wait)."""
        fd = os.open(self.path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- add ----------------------------------------------------------------
    def iter_add_folder(
        self,
        folder: str | os.PathLike,
        study_uid: str,
        series_uid: str,
        cancel: Cancel = None,
    ) -> Generator[tuple[str, int, int], None, VaultSeries]:
        """Seal every file of a series folder into the vault (replacing an
        older copy of the same series).

        Yields ``("seal", i, n)`` after each file; returns the new entry.
        The index is written last, so an error or a cancel leaves the vault
        as it was (the objects sealed so far are deleted again).  The
        folder itself is not touched.

        Raises:
            VaultError: the folder holds no file, or the vault cannot be
                written (disk full...).
            PacsError: cancelled.
        """
        src = Path(folder)
        files = sorted(p for p in src.iterdir() if p.is_file()) if src.is_dir() else []
        if not files:
            raise VaultError("the retrieved series holds no file; nothing was kept")
        entry = VaultSeries(study_uid, series_uid, stored_at=_now())
        _describe(entry, files[0])
        key = self._data_key()
        objects = self.path / OBJECTS
        objects.mkdir(mode=0o700, exist_ok=True)
        written: list[Path] = []
        done = False
        yield ("seal", 0, len(files))
        try:
            for i, path in enumerate(files, 1):
                check_cancel(cancel, "encrypted cache", "sealing")
                blob = seal(path.read_bytes(), key, key_file=True)
                name = secrets.token_hex(16)
                atomic_write(objects / name, blob, mode=0o600, overwrite=False)
                written.append(objects / name)
                entry.objects.append((name, hashlib.sha256(blob).hexdigest()))
                yield ("seal", i, len(files))
            check_cancel(cancel, "encrypted cache", "sealing")
            with self._locked():
                index = self._read_index()
                same = (study_uid, series_uid)
                old = [s for s in index if (s.study_uid, s.series_uid) == same]
                index = [s for s in index if s not in old] + [entry]
                self._write_index(index)
            done = True
        except OSError as exc:
            raise VaultError(f"cannot write the encrypted cache {self.path}: "
                             f"{exc.strerror or exc}") from None  # fmt: skip
        finally:
            if not done:
                for p in written:
                    p.unlink(missing_ok=True)
        for s in old:  # the older copy, now unreferenced
            for name, _digest in s.objects:
                (objects / name).unlink(missing_ok=True)
        return entry

    def remove(self, entries: Iterable[VaultSeries]) -> int:
        """Delete series from the vault; returns how many were there."""
        gone = {(e.study_uid, e.series_uid) for e in entries}
        with self._locked():
            index = self._read_index()
            drop = [s for s in index if (s.study_uid, s.series_uid) in gone]
            self._write_index([s for s in index if s not in drop])
        for s in drop:
            for name, _digest in s.objects:
                (self.path / OBJECTS / name).unlink(missing_ok=True)
        return len(drop)

    # -- open -----------------------------------------------------------------
    def iter_extract(
        self,
        entry: VaultSeries,
        dest: str | os.PathLike | None = None,
        cancel: Cancel = None,
    ) -> Generator[tuple[str, int, int], None, Path]:
        """Decrypt one series into ``<dest or session cache>/<study>/<series>``
        (folders mode 0700, files as the DICOM reader expects), atomically.

        ``dest`` None is the session cache (removed at close and at exit),
        so the plaintext never outlives the session unless the caller chose
        a folder.  Yields ``("decrypt", i, n)``; returns the folder.

        Raises:
            VaultError: "authentication failed" for an object that was
                changed, truncated, swapped or is missing; nothing is
                written then (the series folder is complete, or absent).
            PacsError: cancelled.
        """
        key = self._data_key()
        target = series_dir(dest, entry.study_uid, entry.series_uid)
        n = len(entry.objects)
        yield ("decrypt", 0, n)
        with SeriesStaging(target) as staging:
            for i, (name, digest) in enumerate(entry.objects, 1):
                check_cancel(cancel, "encrypted cache", "decrypting")
                what = f"encrypted cache object {name}"
                try:
                    blob = (self.path / OBJECTS / name).read_bytes()
                except OSError:
                    raise _fail(what) from None
                if hashlib.sha256(blob).hexdigest() != digest:
                    raise _fail(what)
                try:
                    data = open_sealed(blob, key, what=what)
                except SealedFileError as exc:
                    raise VaultError(str(exc)) from None
                staging.add_bytes(f"{i:05d}.dcm", data)
                yield ("decrypt", i, n)
            check_cancel(cancel, "encrypted cache", "decrypting")
            return staging.commit()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _describe(entry: VaultSeries, first: Path) -> None:
    """Fill the entry's modality, description, number and date from a
    header (best effort: a file pydicom cannot read leaves them empty)."""
    import pydicom

    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - any unreadable header: describe nothing
        return
    entry.modality = str(ds.get("Modality", "") or "")
    # the listing shows no patient data: a description that repeats the
    # patient's name, ID or birth date is kept redacted (the series itself
    # keeps it)
    from napari_medcnn.io.metadata import phi_tokens, redact

    entry.description = redact(
        str(ds.get("SeriesDescription", "") or ""), phi_tokens(ds)
    )
    entry.study_date = str(ds.get("StudyDate", "") or "")
    with contextlib.suppress(TypeError, ValueError):
        entry.series_number = int(ds.get("SeriesNumber"))


def iter_retrieve_to_vault(
    client: PacsClient,
    study_uid: str,
    series_uid: str,
    vault: Vault,
    cancel: Cancel = None,
) -> Generator[tuple[str, int, int], None, VaultSeries]:
    """Retrieve one series and keep it only in ``vault``, encrypted.

    The plaintext is staged in a private folder of the session cache (mode
    0700) and deleted when this returns or fails (an error, a cancel, the
    generator closed), so the only copy left is the sealed one.  Yields the
    client's ``("retrieve", i, n)`` events, then ``("seal", i, n)``;
    returns the vault's entry.

    Raises:
        PacsError: the PACS failed, or the retrieve was cancelled.
        VaultError: the vault cannot be written.
    """
    staging = Path(tempfile.mkdtemp(prefix="vault-", dir=session_cache()))
    try:
        folder = yield from client.retrieve_series(
            study_uid, series_uid, staging, cancel=cancel
        )
        return (yield from vault.iter_add_folder(folder, study_uid, series_uid, cancel))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
