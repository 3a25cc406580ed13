"""The project key and everything derived from it, plus replacement values.

One secret (the *project key*, 32 random bytes kept in a key file) makes
de-identification repeatable without a lookup table: every replacement is an
HMAC-SHA256 of the original under that key, so the same original UID gives
the same new UID in every file and every run with that key, and nobody
without the key can link the two.

* UIDs become ``2.25.<decimal>`` where the number is a 128-bit UUID (version
  8, "custom") made from the HMAC: a valid UID of at most 44 characters.
* A patient's pseudonym is ``ANON-`` and 12 hex digits of the HMAC of the
  patient's identity (Patient ID, else name and birth date).
* A patient's date shift is 365 to 3652 days back, from the same HMAC: every
  date of that patient moves by the same number of days, so the intervals
  between studies are kept exactly.

The module also holds the value helpers of the engine: dummy values per VR,
date shifting for DA and DT, and the scrubber that cleans free text.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from datetime import date, timedelta
from pathlib import Path

from napari_medcnn._atomic import atomic_write
from napari_medcnn.deid.sealed import (
    ENV_PASSPHRASE,
    MAGIC,
    SealedFileError,
    is_sealed,
    open_sealed,
    write_sealed,
)

__all__ = [
    "KeyFileError",
    "ProjectKey",
    "dummy_value",
    "is_sealed_file",
    "scrub_text",
    "shift_da",
    "shift_dt",
]

#: Smallest and largest date shift, in days back.
MIN_SHIFT_DAYS = 365
MAX_SHIFT_DAYS = 3652


class KeyFileError(ValueError):
    """A key file that cannot be read or is too short."""


class ProjectKey:
    """A secret and the keyed replacements derived from it.

    Args:
        secret: at least 16 bytes; keep it out of the exported folder.
    """

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise KeyFileError("a project key needs at least 16 bytes")
        self._secret = bytes(secret)
        self._uids: dict[str, str] = {}

    @classmethod
    def random(cls) -> ProjectKey:
        """A one-off key: replacements are consistent within this key only."""
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        create: bool = False,
        passphrase: str | bytes | None = None,
    ) -> ProjectKey:
        """Read a key file: sealed (see :mod:`.sealed`), or plaintext (64
        hex digits, or at least 16 raw bytes, as written before sealing).

        With ``create``, a missing file is created with a new random key,
        written atomically and readable by its owner only (mode 0600):
        sealed under ``passphrase`` when one is given, else plaintext.

        Args:
            passphrase: opens a sealed key file (and seals a new one); a
                plaintext key file is read without it.  When None, a sealed
                key file is opened with the environment variable
                ``NAPARI_MEDCNN_PASSPHRASE`` if it is set (so that commands
                without ``--passphrase-file``, such as ``cohort``, can use
                a sealed key); a new key is never sealed implicitly.

        Raises:
            KeyFileError: unreadable, too short, missing without ``create``,
                sealed and no passphrase given, or the passphrase is wrong
                or the file was changed ("authentication failed").
        """
        p = Path(path)
        if not p.exists():
            if not create:
                raise KeyFileError(f"key file not found: {p}")
            key = cls.random()
            text = key._secret.hex() + "\n"
            if passphrase is None:
                write_private(p, text)
            else:
                write_sealed(p, text.encode("ascii"), passphrase)
            return key
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {p}: {exc.strerror}") from None
        if is_sealed(raw):
            if passphrase is None:
                passphrase = os.environ.get(ENV_PASSPHRASE) or None
            if passphrase is None:
                raise KeyFileError(
                    f"key file {p} is encrypted: give its passphrase "
                    "(--passphrase-file FILE or the environment variable "
                    "NAPARI_MEDCNN_PASSPHRASE)"
                )
            try:
                raw = open_sealed(raw, passphrase, what=f"key file {p}")
            except SealedFileError as exc:
                raise KeyFileError(str(exc)) from None
        return cls(_parse_secret(raw))

    @property
    def fingerprint(self) -> str:
        """12 hex digits naming the key (safe to record; reveals nothing)."""
        return self._mac("fingerprint").hex()[:12]

    def _mac(self, *parts: str) -> bytes:
        msg = "\x1f".join(parts).encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The keyed replacement of a UID (cached; empty stays empty)."""
        original = str(original).strip("\x00 ")
        if not original:
            return ""
        new = self._uids.get(original)
        if new is None:
            b = bytearray(self._mac("uid", original)[:16])
            b[6] = (b[6] & 0x0F) | 0x80  # UUID version 8 (custom)
            b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
            new = f"2.25.{int.from_bytes(b, 'big')}"
            self._uids[original] = new
        return new

    def pseudonym(self, identity: str) -> str:
        """``ANON-`` and 12 hex digits for a patient identity string."""
        return "ANON-" + self._mac("patient", identity).hex()[:12].upper()

    def day_offset(self, identity: str) -> int:
        """Days (negative) that every date of this patient is shifted by."""
        n = int.from_bytes(self._mac("dateshift", identity)[:8], "big")
        return -(MIN_SHIFT_DAYS + n % (MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1))


def _parse_secret(raw: bytes) -> bytes:
    """A key file's secret: 64 hex digits (a line), else the raw bytes."""
    try:
        return bytes.fromhex(raw.strip().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return raw


def is_sealed_file(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` exists and is sealed (encrypted)."""
    try:
        with open(path, "rb") as fh:
            return is_sealed(fh.read(len(MAGIC)))
    except OSError:
        return False


def write_private(path: Path, text: str | bytes, overwrite: bool = False) -> None:
    """Create ``path`` with ``text`` (str as UTF-8, or bytes) atomically,
    mode 0600; an existing file is refused (``OverwriteError``) unless
    ``overwrite``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    atomic_write(path, data, mode=0o600, overwrite=overwrite)


# -- replacement values -------------------------------------------------------
#: Dummy (action D) per VR: non-empty, valid for the VR, and identical in
#: every file so that it says nothing.
_DUMMY_TEXT = "ANONYMIZED"
_DUMMIES: dict[str, object] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "UR": "http://anonymized.invalid",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
}
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})


def dummy_value(vr: str) -> object:
    """A fixed dummy value valid for ``vr`` (text VRs: ``ANONYMIZED``)."""
    if vr in _DUMMIES:
        return _DUMMIES[vr]
    if vr in _BINARY_VRS:
        return b"\x00\x00"
    return _DUMMY_TEXT


_DA = re.compile(r"^(\d{4})[.]?(\d{2})?[.]?(\d{2})?$")


def shift_da(value: str, days: int) -> str | None:
    """Shift a DA value by ``days``; None when it is not a date.

    Accepts ``YYYYMMDD`` and the old ``YYYY.MM.DD``; a partial date (year or
    year and month) is shifted from its first day and kept as precise.
    """
    m = _DA.match(value.strip())
    if not m:
        return None
    y, mo, d = m.group(1), m.group(2), m.group(3)
    if d is not None and mo is None:
        return None
    try:
        day = date(int(y), int(mo or 1), int(d or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    text = day.strftime("%Y%m%d")
    return text[: 4 + (2 if mo else 0) + (2 if d else 0)]


_DT = re.compile(r"^(\d{4}(?:\d{2}(?:\d{2})?)?)(.*)$")


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT value by ``days``; time and offset kept.

    Returns None when the value is not a date-time.
    """
    m = _DT.match(value.strip())
    if not m:
        return None
    shifted = shift_da(m.group(1), days)
    if shifted is None or (m.group(2) and not re.match(r"^[\d.+-]*$", m.group(2))):
        return None
    return shifted + m.group(2)


#: Patterns redacted from cleaned text whatever the dataset holds: dates in
#: common spellings, and runs of six or more digits (record numbers, phones).
_ALWAYS_REDACT = re.compile(
    r"\b(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"
    r"|(?:19|20)\d{6}|\d{6,})\b"
)


def scrub_text(text: str, terms: list[str]) -> str:
    """Free text with every identifying term and date-like token removed.

    Args:
        text: the original value (one value of a text VR).
        terms: strings known to identify the patient or staff (names, IDs,
            accession number, birth date...), matched case-insensitively as
            whole words.

    Returns:
        The cleaned text, whitespace collapsed; may be empty.
    """
    out = _ALWAYS_REDACT.sub(" ", text)
    for term in terms:
        out = re.sub(rf"(?<!\w){re.escape(term)}(?!\w)", " ", out, flags=re.IGNORECASE)
    out = re.sub(r"(?<![\w-])[\^,;:/=]+(?!\w)", " ", out)  # separators left alone
    out = re.sub(r"\s+", " ", out).strip(" ,;:")
    return out
