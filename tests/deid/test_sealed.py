"""Sealed files (the encrypted manifest and key file): the format, every
way a file can be wrong (each gives a clear error, never garbage), the
sealed project key, and manifest lookups and rekeying in Python."""

from __future__ import annotations

import json

import pytest
from _helpers import KEY, phi_series

from napari_medcnn.deid.keys import KeyFileError, ProjectKey, is_sealed_file
from napari_medcnn.deid.reidentify import find, read_manifest, rekey
from napari_medcnn.deid.run import deidentify
from napari_medcnn.deid.sealed import (
    FORMAT_VERSION,
    MAGIC,
    ScryptParams,
    SealedFileError,
    is_sealed,
    open_sealed,
    read_passphrase_file,
    seal,
)

#: cheap scrypt (1 MiB, ~1 ms) so that hundreds of opens stay fast
FAST = ScryptParams(log2_n=10, r=8, p=1)
PASS = "a long passphrase, for tests only"
AUTH = "authentication failed (wrong passphrase, or the file was changed or truncated)"
DATA = json.dumps({"patients": [{"pseudonym": "ANON-1", "patient_id": "PID-0042"}]})


def test_round_trip_and_header():
    blob = seal(DATA.encode(), PASS, scrypt=FAST)
    assert blob.startswith(MAGIC) and is_sealed(blob)
    assert blob[12:18] == bytes([FORMAT_VERSION, 1, 1, 10, 8, 1])  # v1 scrypt GCM
    assert len(blob) == 46 + len(DATA) + 16
    assert b"PID-0042" not in blob and PASS.encode() not in blob
    assert open_sealed(blob, PASS) == DATA.encode()
    assert open_sealed(blob, PASS.encode()) == DATA.encode()  # str is UTF-8
    # a fresh salt and nonce each time: the same data never seals the same
    assert seal(DATA.encode(), PASS, scrypt=FAST) != blob
    assert open_sealed(seal(b"", PASS, scrypt=FAST), PASS) == b""
    default = seal(b"x", PASS)
    assert default[15:18] == bytes([15, 8, 1])  # N = 2**15, r 8, p 1 recorded


def test_key_file_secret_uses_hkdf():
    secret = bytes(range(32))
    blob = seal(b"data", secret, key_file=True)
    assert blob[13] == 2 and blob[15:18] == b"\0\0\0"
    assert open_sealed(blob, secret) == b"data"
    with pytest.raises(SealedFileError, match="authentication failed"):
        open_sealed(blob, bytes(32))
    with pytest.raises(ValueError, match="32 random bytes"):
        seal(b"data", b"short", key_file=True)


def test_wrong_passphrase():
    blob = seal(DATA.encode(), PASS, scrypt=FAST)
    with pytest.raises(SealedFileError) as err:
        open_sealed(blob, PASS + "!", what="m.json")
    assert str(err.value) == f"m.json: {AUTH}"
    assert PASS not in str(err.value)


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_changed_byte_is_refused(mask):
    blob = seal(DATA.encode(), PASS, scrypt=FAST)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= mask
        with pytest.raises(SealedFileError) as err:
            open_sealed(bytes(bad), PASS)
        msg = str(err.value)
        if i < len(MAGIC):
            assert "not a napari-medcnn sealed file" in msg, i
        elif i == len(MAGIC):
            assert f"version {blob[i] ^ mask} is not supported" in msg, i
        else:  # KDF, cipher, cost, salt, nonce, ciphertext, tag
            assert msg.endswith(AUTH), (i, msg)


def test_every_truncation_is_refused():
    blob = seal(DATA.encode(), PASS, scrypt=FAST)
    for n in range(len(blob)):
        with pytest.raises(SealedFileError, match="authentication failed"):
            open_sealed(blob[:n], PASS)
    with pytest.raises(SealedFileError, match="authentication failed"):
        open_sealed(blob + b"\0", PASS)  # appended bytes too


def test_header_cannot_ask_for_huge_scrypt():
    blob = bytearray(seal(b"x", PASS, scrypt=FAST))
    blob[15] = 40  # N = 2**40: would need terabytes
    with pytest.raises(SealedFileError, match="authentication failed"):
        open_sealed(bytes(blob), PASS)
    with pytest.raises(ValueError):
        seal(b"x", PASS, scrypt=ScryptParams(log2_n=21))


def test_not_sealed_and_empty_passphrase():
    with pytest.raises(SealedFileError, match="not a napari-medcnn sealed file"):
        open_sealed(DATA.encode(), PASS)
    blob = seal(b"x", PASS, scrypt=FAST)
    with pytest.raises(SealedFileError, match="empty"):
        open_sealed(blob, "")
    with pytest.raises(ValueError, match="empty"):
        seal(b"x", b"")


def test_passphrase_file(tmp_path):
    p = tmp_path / "pass"
    p.write_bytes(b"two words\r\n")
    assert read_passphrase_file(p) == b"two words"
    p.write_bytes(b"ends with two newlines\n\n")
    assert read_passphrase_file(p) == b"ends with two newlines\n"
    p.write_bytes(b"\n")
    with pytest.raises(SealedFileError, match="is empty"):
        read_passphrase_file(p)
    with pytest.raises(SealedFileError, match="cannot read"):
        read_passphrase_file(tmp_path / "missing")


# -- the sealed project key -----------------------------------------------------
def test_sealed_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    path = tmp_path / "keys" / "project.key"
    key = ProjectKey.from_file(path, create=True, passphrase=PASS)
    assert is_sealed_file(path) and path.stat().st_mode & 0o777 == 0o600
    raw = path.read_bytes()
    assert key._secret not in raw and key._secret.hex().encode() not in raw
    assert ProjectKey.from_file(path, passphrase=PASS).fingerprint == key.fingerprint
    with pytest.raises(KeyFileError, match="is encrypted: give its passphrase"):
        ProjectKey.from_file(path)
    with pytest.raises(KeyFileError, match="authentication failed"):
        ProjectKey.from_file(path, passphrase="wrong")
    # commands without --passphrase-file (cohort) open it with the variable
    monkeypatch.setenv("NAPARI_MEDCNN_PASSPHRASE", PASS)
    assert ProjectKey.from_file(path).fingerprint == key.fingerprint
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE")
    # a plaintext key file (written before sealing) still reads, either way
    old = tmp_path / "old.key"
    old.write_text(KEY._secret.hex() + "\n")
    assert not is_sealed_file(old)
    for pp in (None, PASS):
        assert ProjectKey.from_file(old, passphrase=pp).fingerprint == KEY.fingerprint
    # rekey seals it, and the key stays the same
    assert rekey(old, None, PASS, scrypt=FAST) is False
    assert is_sealed_file(old)
    assert ProjectKey.from_file(old, passphrase=PASS).fingerprint == KEY.fingerprint


# -- manifests in Python --------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_sealed_manifest_lookup(tmp_path, suffix):
    root = tmp_path / "in"
    phi_series(root / "ct", patient=("Müller^Jörg", "PID-ÄÖ"), n=2)
    manifest = tmp_path / f"map{suffix}"
    result = deidentify([root], tmp_path / "out", key=KEY, manifest=manifest,
                        passphrase=PASS)  # fmt: skip
    blob = manifest.read_bytes()
    assert is_sealed(blob) and "Müller".encode() not in blob
    data, sealed = read_manifest(manifest, PASS)
    assert sealed
    pseudonym = result.outputs[0].relative_to(tmp_path / "out").parts[0]
    (hit,) = find(data, pseudonym.lower())
    assert hit["patient_id"] == "PID-ÄÖ" and hit["patient_name"] == "Müller^Jörg"
    assert len(hit["inputs"]) == 2
    assert find(data, "ANON-000000000000") == []
    with pytest.raises(SealedFileError, match="is encrypted"):
        read_manifest(manifest, None)


def test_rekey_wrong_old_passphrase_leaves_the_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(seal(DATA.encode(), PASS, scrypt=FAST))
    before = path.read_bytes()
    with pytest.raises(SealedFileError, match="authentication failed"):
        rekey(path, "wrong", "new passphrase")
    assert path.read_bytes() == before
    assert rekey(path, PASS, "new passphrase", scrypt=FAST) is True
    assert open_sealed(path.read_bytes(), "new passphrase") == DATA.encode()
    assert path.stat().st_mode & 0o777 == 0o600
