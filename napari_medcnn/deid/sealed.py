"""Sealed files: authenticated encryption of the manifest and the key file.

A *sealed* file is a small binary header followed by AES-256-GCM
ciphertext.  The whole header is the associated data of the cipher, so a
changed byte anywhere (header, salt, nonce, ciphertext or tag), a wrong
passphrase or a truncated file all fail the same way: a
:class:`SealedFileError` that says "authentication failed", never garbage
and never a crash.  Format version 1, all integers unsigned::

    offset size  field
         0   12  magic  b"\\x89NMCSEAL\\r\\n\\x1a\\n"  (PNG-style: a text-mode
                 copy or a 7-bit transfer changes it)
        12    1  format version (1)
        13    1  KDF: 1 scrypt (a passphrase), 2 HKDF-SHA256 (a key file of
                 at least 32 random bytes)
        14    1  cipher: 1 AES-256-GCM
        15    1  scrypt log2(N)   (0 for HKDF)
        16    1  scrypt r         (0 for HKDF)
        17    1  scrypt p         (0 for HKDF)
        18   16  salt (random, per file)
        34   12  nonce (random, per file)
        46    -  ciphertext, then the 16-byte GCM tag

The 256-bit file key is derived from the secret and this file's salt, so
no two files share a key, and a nonce is never reused under one key.
Default scrypt cost: N = 2**15, r = 8, p = 1, which takes 32 MiB of memory
and about 0.1 s of one CPU core per derivation (0.09 s measured on the
development machine): once per file sealed or opened, whatever its size.
Readers accept N up to 2**20 with r * N * 128 bytes up to 1 GiB, so a
tampered header cannot make them allocate more.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from napari_medcnn._atomic import atomic_write

__all__ = [
    "ENV_PASSPHRASE",
    "FORMAT_VERSION",
    "MAGIC",
    "ScryptParams",
    "SealedFileError",
    "is_sealed",
    "open_sealed",
    "read_passphrase_file",
    "read_sealed",
    "seal",
    "write_sealed",
]

MAGIC = b"\x89NMCSEAL\r\n\x1a\n"
FORMAT_VERSION = 1
#: the environment variable that may hold the passphrase
ENV_PASSPHRASE = "NAPARI_MEDCNN_PASSPHRASE"

_KDF_SCRYPT, _KDF_HKDF = 1, 2
_CIPHER_AESGCM = 1
_SALT, _NONCE, _TAG = 16, 12, 16
_HEADER = len(MAGIC) + 6 + _SALT + _NONCE  # 46 bytes
_HKDF_INFO = b"napari-medcnn sealed file v1"
#: the most memory a reader lets scrypt take (bytes): 1 GiB
_MAX_SCRYPT_MEMORY = 1 << 30
_AUTH_FAILED = (
    "authentication failed (wrong passphrase, or the file was changed or truncated)"
)


class SealedFileError(ValueError):
    """A sealed file that cannot be opened; the message says why (and never
    quotes the passphrase or any plaintext)."""


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: ``N = 2**log2_n`` (CPU and memory), block size ``r``
    and parallelism ``p``.  Memory is about ``128 * r * N`` bytes (32 MiB
    for the default), time about 0.1 s for the default."""

    log2_n: int = 15
    r: int = 8
    p: int = 1

    def check(self) -> None:
        """Raise ValueError unless the parameters are within what readers
        accept (N from 2**10 to 2**20, r and p from 1 to 16, 1 GiB)."""
        if not (10 <= self.log2_n <= 20 and 1 <= self.r <= 16 and 1 <= self.p <= 16):
            raise ValueError(f"scrypt parameters out of range: {self}")
        if 128 * self.r * (1 << self.log2_n) > _MAX_SCRYPT_MEMORY:
            raise ValueError(f"scrypt parameters need more than 1 GiB: {self}")


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise ValueError("the passphrase is empty")
    return bytes(secret)


def _derive(secret: bytes, kdf: int, params: ScryptParams, salt: bytes) -> bytes:
    if kdf == _KDF_SCRYPT:
        return Scrypt(salt=salt, length=32, n=1 << params.log2_n, r=params.r,
                      p=params.p).derive(secret)  # fmt: skip
    return HKDF(hashes.SHA256(), 32, salt, _HKDF_INFO).derive(secret)


def seal(
    data: bytes,
    secret: str | bytes,
    *,
    key_file: bool = False,
    scrypt: ScryptParams | None = None,
) -> bytes:
    """Encrypt and authenticate ``data`` under a passphrase (or a key file).

    Args:
        data: the plaintext (any size; held in memory).
        secret: the passphrase (str as UTF-8, or bytes); with ``key_file``,
            the contents of a key file: at least 32 random bytes, used
            through HKDF-SHA256 instead of the slow scrypt.
        scrypt: scrypt cost (default :class:`ScryptParams`: 32 MiB,
            ~0.1 s).

    Returns:
        The sealed bytes: a 46-byte header, the ciphertext (as long as
        ``data``) and a 16-byte tag.

    Raises:
        ValueError: an empty passphrase, a key file under 32 bytes, or
            scrypt parameters out of range.
    """
    secret = _secret_bytes(secret)
    params = scrypt or ScryptParams()
    if key_file:
        if len(secret) < 32:
            raise ValueError("a key file needs at least 32 random bytes")
        kdf, cost = _KDF_HKDF, b"\0\0\0"
    else:
        params.check()
        kdf, cost = _KDF_SCRYPT, bytes([params.log2_n, params.r, params.p])
    salt, nonce = secrets.token_bytes(_SALT), secrets.token_bytes(_NONCE)
    header = MAGIC + bytes([FORMAT_VERSION, kdf, _CIPHER_AESGCM]) + cost + salt + nonce
    key = _derive(secret, kdf, params, salt)
    return header + AESGCM(key).encrypt(nonce, bytes(data), header)


def is_sealed(blob: bytes) -> bool:
    """Whether ``blob`` (a file's bytes, or at least its first 12) starts
    like a sealed file (any version)."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


def open_sealed(
    blob: bytes, secret: str | bytes, *, what: str = "sealed file"
) -> bytes:
    """Check and decrypt a sealed file made by :func:`seal`.

    Args:
        blob: the sealed bytes.
        secret: the passphrase, or the key file's bytes (the header says
            which KDF applies).
        what: names the file in error messages (a path, "manifest").

    Returns:
        The plaintext, exactly as sealed.

    Raises:
        SealedFileError: ``what`` and why: not a sealed file, a format
            version this release does not read, or "authentication failed
            (wrong passphrase, or the file was changed or truncated)" for
            everything else (a wrong secret, any changed byte, a short file).
    """
    blob = bytes(blob)
    if not is_sealed(blob):
        if len(blob) < len(MAGIC) and MAGIC.startswith(blob):
            raise SealedFileError(f"{what}: {_AUTH_FAILED}")
        raise SealedFileError(
            f"{what}: not a napari-medcnn sealed file (no sealed-file header): "
            "a plaintext file, or another format"
        )
    if len(blob) > len(MAGIC) and blob[len(MAGIC)] != FORMAT_VERSION:
        raise SealedFileError(
            f"{what}: sealed-file format version {blob[len(MAGIC)]} is not "
            f"supported (this napari-medcnn reads version {FORMAT_VERSION}); "
            "a newer napari-medcnn may open it, or the file was changed"
        )
    try:
        secret = _secret_bytes(secret)
    except ValueError as exc:
        raise SealedFileError(f"{what}: {exc}") from None
    if len(blob) < _HEADER + _TAG:
        raise SealedFileError(f"{what}: {_AUTH_FAILED}")
    header = blob[:_HEADER]
    kdf, cipher, log2_n, r, p = header[13:18]
    salt = header[18 : 18 + _SALT]
    nonce = header[18 + _SALT : _HEADER]
    params = ScryptParams(log2_n, r, p)
    try:
        # fields a version-1 file cannot hold mean a changed header
        if cipher != _CIPHER_AESGCM or kdf not in (_KDF_SCRYPT, _KDF_HKDF):
            raise ValueError("unknown algorithm")
        if kdf == _KDF_SCRYPT:
            params.check()
        elif (log2_n, r, p) != (0, 0, 0):
            raise ValueError("KDF parameters on HKDF")
        key = _derive(secret, kdf, params, salt)
        return AESGCM(key).decrypt(nonce, blob[_HEADER:], header)
    except (InvalidTag, ValueError, MemoryError):
        raise SealedFileError(f"{what}: {_AUTH_FAILED}") from None


def read_sealed(path: str | os.PathLike, secret: str | bytes) -> bytes:
    """:func:`open_sealed` on a file (the path names it in errors).

    Raises:
        SealedFileError: as :func:`open_sealed`, or the file cannot be read.
    """
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise SealedFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    return open_sealed(blob, secret, what=str(p))


def write_sealed(
    path: str | os.PathLike,
    data: bytes,
    secret: str | bytes,
    *,
    overwrite: bool = False,
    scrypt: ScryptParams | None = None,
) -> Path:
    """Seal ``data`` and write it atomically, readable by the owner only
    (mode 0600); an existing file is refused (``OverwriteError``) unless
    ``overwrite``.  Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    blob = seal(data, secret, scrypt=scrypt)
    return atomic_write(p, blob, mode=0o600, overwrite=overwrite)


def read_passphrase_file(path: str | os.PathLike) -> bytes:
    """A passphrase from a file: its bytes less one trailing newline
    (``\\n`` or ``\\r\\n``), as ``echo`` and editors leave it.

    Raises:
        SealedFileError: the file cannot be read, or the passphrase is
            empty (the message names the file, never its contents).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SealedFileError(
            f"cannot read the passphrase file {p}: {exc.strerror or exc}"
        ) from None
    for end in (b"\r\n", b"\n"):
        if raw.endswith(end):
            raw = raw[: -len(end)]
            break
    if not raw:
        raise SealedFileError(f"the passphrase file {p} is empty")
    return raw
