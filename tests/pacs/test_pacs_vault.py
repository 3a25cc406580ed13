"""The encrypted PACS cache (issue 17): series retrieved with "keep
encrypted" are only on disk sealed (no PHI in any byte or name, no
plaintext DICOM), open again with the passphrase into the session cache
(pixels equal to the source), and a wrong passphrase or a changed byte is
"authentication failed" with nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_medcnn._progress import drain
from napari_medcnn.cli import main
from napari_medcnn.deid.sealed import ScryptParams
from napari_medcnn.pacs import PacsError, clear_session_cache, session_cache
from napari_medcnn.pacs.folder import FolderPacs
from napari_medcnn.pacs.vault import (
    INDEX_NAME,
    KEY_NAME,
    OBJECTS,
    Vault,
    VaultError,
    iter_retrieve_to_vault,
)

PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-7788",
    "PatientBirthDate": "19700101",
}
PASS = b"correct horse battery staple"
#: the cheapest scrypt the format accepts (the tests unlock many times)
FAST = ScryptParams(log2_n=10, r=8, p=1)


def _phi_pacs(root: Path, n: int = 3) -> tuple[FolderPacs, str, str, list[np.ndarray]]:
    """A FolderPacs with one PHI-laden MR series of ``n`` slices."""
    from napari_medcnn.io.synth import write_series

    rng = np.random.default_rng(17)
    vol = rng.integers(0, 900, size=(n, 16, 12)).astype(np.float64)
    files = write_series(
        vol, root, modality="MR", patient_name=PHI["PatientName"],
        patient_id=PHI["PatientID"], series_description="t1 vault",
        seed="vault-test",
    )  # fmt: skip
    pixels = []
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate = PHI["PatientBirthDate"]
        ds.save_as(f)
        pixels.append(ds.pixel_array.copy())
    ds = pydicom.dcmread(files[0])
    return (
        FolderPacs(root, name="test-folder"),
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        pixels,
    )


def _all_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def _assert_no_phi(folder: Path) -> None:
    for path, data in _all_bytes(folder):
        rel = str(path.relative_to(folder))
        for value in PHI.values():
            for form in (value, value.replace("^", " "), value.lower()):
                assert form.encode() not in data, (rel, form)
                assert form.lower() not in rel.lower(), rel
        assert b"DICM" not in data, rel  # no plaintext DICOM anywhere


def _pixels(folder: Path) -> list[np.ndarray]:
    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    dss.sort(key=lambda d: int(d.InstanceNumber))
    return [d.pixel_array for d in dss]


@pytest.fixture
def fresh_session():
    clear_session_cache()
    yield
    clear_session_cache()


def _staged_files() -> list[Path]:
    """Plaintext files left in the session cache."""
    root = session_cache()
    return [p for p in root.rglob("*") if p.is_file()]


def test_round_trip_no_phi_at_rest(tmp_path, fresh_session):
    pacs, study, series, pixels = _phi_pacs(tmp_path / "pacs")
    vdir = tmp_path / "vault"
    with Vault.create(vdir, PASS, scrypt=FAST) as vault:
        entry = drain(iter_retrieve_to_vault(pacs, study, series, vault))
        assert entry.n_instances == 3 and entry.modality == "MR"
    assert _staged_files() == []  # the plaintext staging is gone
    assert sorted(p.name for p in vdir.iterdir()) == sorted(
        [KEY_NAME, INDEX_NAME, OBJECTS, ".lock"]
    )
    assert oct(vdir.stat().st_mode & 0o777) == "0o700"
    for path, _data in _all_bytes(vdir):
        assert path.stat().st_mode & 0o077 == 0, path
        assert study not in path.name and series not in path.name
    _assert_no_phi(vdir)
    for _path, data in _all_bytes(vdir):  # UIDs are sealed too
        assert study.encode() not in data and series.encode() not in data

    with Vault.open(vdir, PASS) as vault:
        (listed,) = vault.series()
        assert (listed.study_uid, listed.series_uid) == (study, series)
        assert listed.description == "t1 vault"
        folder = drain(vault.iter_extract(listed))
    assert folder.is_relative_to(session_cache())
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    for got, want in zip(_pixels(folder), pixels, strict=True):
        np.testing.assert_array_equal(got, want)
    assert str(pydicom.dcmread(next(folder.iterdir())).PatientID) == PHI["PatientID"]
    # the normal reader opens it
    from napari_medcnn.io import load

    (scan,) = load(folder)
    assert scan.data.shape[0] == 3
    root = session_cache()
    assert clear_session_cache() and not root.exists() and not folder.exists()


def test_listing_redacts_a_description_that_names_the_patient(tmp_path, fresh_session):
    """A series description that repeats the patient's name or birth date
    is listed redacted (the decrypted series keeps its own header)."""
    pacs_root = tmp_path / "pacs"
    pacs, study, series, _pixels = _phi_pacs(pacs_root)
    for f in pacs_root.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "t1 JANE DOE 1970-01-01"
        ds.save_as(f)
    pacs = FolderPacs(pacs_root, name="test-folder")
    with Vault.create(tmp_path / "vault", PASS, scrypt=FAST) as vault:
        entry = drain(iter_retrieve_to_vault(pacs, study, series, vault))
        shown = json.dumps(entry.display_row())
    assert "t1" in shown and "[redacted]" in shown
    for needle in ("JANE", "DOE", "1970-01-01"):
        assert needle not in shown


def test_re_retrieve_replaces_the_older_copy(tmp_path, fresh_session):
    pacs, study, series, _px = _phi_pacs(tmp_path / "pacs")
    vdir = tmp_path / "vault"
    with Vault.create(vdir, PASS, scrypt=FAST) as vault:
        drain(iter_retrieve_to_vault(pacs, study, series, vault))
        drain(iter_retrieve_to_vault(pacs, study, series, vault))
        assert len(vault.series()) == 1
    assert len(list((vdir / OBJECTS).iterdir())) == 3


def test_wrong_passphrase_and_tampering_fail_cleanly(tmp_path, fresh_session):
    pacs, study, series, _px = _phi_pacs(tmp_path / "pacs")
    vdir = tmp_path / "vault"
    with Vault.create(vdir, PASS, scrypt=FAST) as vault:
        drain(iter_retrieve_to_vault(pacs, study, series, vault))
    with pytest.raises(VaultError, match="authentication failed"):
        Vault.open(vdir, b"wrong passphrase")
    out = tmp_path / "out"
    vault = Vault.open(vdir, PASS)
    (entry,) = vault.series()
    # one flipped byte in one object: the series is refused, nothing written
    obj = vdir / OBJECTS / entry.objects[1][0]
    blob = bytearray(obj.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    obj.write_bytes(bytes(blob))
    with pytest.raises(VaultError, match="authentication failed"):
        drain(vault.iter_extract(entry, out))
    assert not out.exists() or not any(out.rglob("*.dcm"))
    with pytest.raises(VaultError, match="authentication failed"):
        drain(vault.iter_extract(entry))  # into the session cache: nothing kept
    assert _staged_files() == []
    # a flipped byte in the index or the key file
    index = vdir / INDEX_NAME
    good = index.read_bytes()
    index.write_bytes(good[:-1] + bytes([good[-1] ^ 0x80]))
    with pytest.raises(VaultError, match="authentication failed"):
        vault.series()
    key = vdir / KEY_NAME
    blob = bytearray(key.read_bytes())
    blob[50] ^= 0x04
    key.write_bytes(bytes(blob))
    with pytest.raises(VaultError, match="authentication failed"):
        Vault.open(vdir, PASS)


def test_swapped_object_is_detected(tmp_path, fresh_session):
    """Two objects under the same data key, exchanged: each still decrypts,
    but the index's digests catch it."""
    pacs, study, series, _px = _phi_pacs(tmp_path / "pacs")
    vdir = tmp_path / "vault"
    with Vault.create(vdir, PASS, scrypt=FAST) as vault:
        entry = drain(iter_retrieve_to_vault(pacs, study, series, vault))
        a, b = (
            vdir / OBJECTS / entry.objects[0][0],
            vdir / OBJECTS / entry.objects[1][0],
        )
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        with pytest.raises(VaultError, match="authentication failed"):
            drain(vault.iter_extract(entry, tmp_path / "out"))


def test_error_and_cancel_leave_no_plaintext(tmp_path, fresh_session, monkeypatch):
    pacs, study, series, _px = _phi_pacs(tmp_path / "pacs")
    vdir = tmp_path / "vault"
    vault = Vault.create(vdir, PASS, scrypt=FAST)
    # the vault cannot be written mid-way: no plaintext kept, vault unchanged
    import napari_medcnn.pacs.vault as vault_mod

    calls = {"n": 0}
    real = vault_mod.atomic_write

    def failing(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(vault_mod, "atomic_write", failing)
    with pytest.raises(VaultError, match="No space left"):
        drain(iter_retrieve_to_vault(pacs, study, series, vault))
    monkeypatch.undo()
    assert _staged_files() == []
    assert vault.series() == [] and list((vdir / OBJECTS).iterdir()) == []
    # a cancel during the retrieve
    with pytest.raises(PacsError, match="cancelled"):
        drain(iter_retrieve_to_vault(pacs, study, series, vault, cancel=lambda: True))
    assert _staged_files() == []
    # an unknown series: the PACS fails, nothing staged
    with pytest.raises(PacsError):
        drain(iter_retrieve_to_vault(pacs, study, "1.2.3.4", vault))
    assert _staged_files() == []
    # the generator closed mid-way (a widget's worker quit)
    gen = iter_retrieve_to_vault(pacs, study, series, vault)
    next(gen), next(gen)
    gen.close()
    assert _staged_files() == [] and vault.series() == []


def test_create_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VaultError, match="not empty"):
        Vault.create(tmp_path, PASS, scrypt=FAST)
    with pytest.raises(VaultError, match="not an encrypted cache"):
        Vault.open(tmp_path, PASS)


def test_rekey(tmp_path):
    vault = Vault.create(tmp_path / "v", PASS, scrypt=FAST)
    vault.rekey(b"new passphrase")
    with pytest.raises(VaultError, match="authentication failed"):
        Vault.open(tmp_path / "v", PASS)
    assert Vault.open(tmp_path / "v", b"new passphrase").series() == []


# -- the command line -----------------------------------------------------------
@pytest.fixture
def cli_pacs(tmp_path, monkeypatch, fresh_session):
    """``pacs get`` served by a FolderPacs with the PHI series; the
    passphrase in a file."""
    import napari_medcnn.pacs as pacs_pkg

    pacs, study, series, pixels = _phi_pacs(tmp_path / "pacs")
    monkeypatch.setattr(pacs_pkg, "connect", lambda server: pacs)
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    pw = tmp_path / "pw.txt"
    pw.write_bytes(PASS + b"\n")
    os.chmod(pw, 0o600)
    return pacs, study, series, pixels, pw


def test_cli_get_keep_encrypted_then_open_cache(tmp_path, cli_pacs, capsys):
    _pacs, study, series, pixels, pw = cli_pacs
    vdir = tmp_path / "vault"
    server = ["--dicomweb", "http://127.0.0.1:9/dicom-web"]
    rc = main(["pacs", "get", *server, "--study", study, "--keep-encrypted",
               str(vdir), "--passphrase-file", str(pw)])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "encrypted: series" in out and "3 instance(s)" in out
    _assert_no_phi(vdir)
    assert _staged_files() == []

    # list, then decrypt into --out
    rc = main(["pacs", "open-cache", str(vdir), "--list", "--passphrase-file", str(pw)])
    out, err = capsys.readouterr()
    assert rc == 0 and series in out and "t1 vault" in out
    for value in PHI.values():
        assert value not in out and value not in err
    dest = tmp_path / "decrypted"
    rc = main(["pacs", "open-cache", str(vdir), "--out", str(dest),
               "--passphrase-file", str(pw)])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    folder = dest / study / series
    assert out.strip() == str(folder)
    for got, want in zip(_pixels(folder), pixels, strict=True):
        np.testing.assert_array_equal(got, want)


def test_cli_open_cache_fails_with_exit_2(tmp_path, cli_pacs, capsys, monkeypatch):
    _pacs, study, series, _px, pw = cli_pacs
    vdir = tmp_path / "vault"
    server = ["--dicomweb", "http://127.0.0.1:9/dicom-web"]
    # no passphrase at all
    rc = main(["pacs", "get", *server, "--study", study, "--keep-encrypted", str(vdir)])
    assert rc == 2 and "needs a passphrase" in capsys.readouterr().err
    assert not vdir.exists()
    # --out and --keep-encrypted together
    both = ["--out", str(tmp_path), "--keep-encrypted", str(vdir)]
    rc = main(["pacs", "get", *server, "--study", study, *both,
               "--passphrase-file", str(pw)])  # fmt: skip
    assert rc == 2 and "not both" in capsys.readouterr().err
    # the passphrase from the environment
    monkeypatch.setenv("NAPARI_MEDCNN_PASSPHRASE", PASS.decode())
    rc = main(["pacs", "get", *server, "--study", study, "--keep-encrypted", str(vdir)])
    assert rc == 0
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE")
    capsys.readouterr()

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    dest = tmp_path / "decrypted"
    rc = main(["pacs", "open-cache", str(vdir), "--out", str(dest),
               "--passphrase-file", str(wrong)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "authentication failed" in err
    assert "not it" not in err and not dest.exists()
    # a wrong passphrase for get into an existing vault: nothing retrieved
    rc = main(["pacs", "get", *server, "--study", study, "--keep-encrypted",
               str(vdir), "--passphrase-file", str(wrong)])  # fmt: skip
    assert rc == 2 and "authentication failed" in capsys.readouterr().err
    # a flipped byte in an object
    obj = sorted((vdir / OBJECTS).iterdir())[0]
    blob = bytearray(obj.read_bytes())
    blob[-3] ^= 0x10
    obj.write_bytes(bytes(blob))
    rc = main(["pacs", "open-cache", str(vdir), "--out", str(dest),
               "--passphrase-file", str(pw)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "authentication failed" in err
    assert not any(dest.rglob("*.dcm")) if dest.exists() else True
    # no --out, not a vault
    rc = main(["pacs", "open-cache", str(vdir), "--passphrase-file", str(pw)])
    assert rc == 2 and "--out" in capsys.readouterr().err
    rc = main(["pacs", "open-cache", str(tmp_path / "pacs"), "--list",
               "--passphrase-file", str(pw)])  # fmt: skip
    assert rc == 2 and "not an encrypted cache" in capsys.readouterr().err


def test_cli_open_cache_at_exit_leaves_nothing(tmp_path):
    """A process that decrypted into the session cache leaves nothing
    there when it exits (the atexit cleanup), even after an error."""
    import subprocess
    import sys

    code = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_pacs_vault import _phi_pacs, PASS, FAST
from napari_medcnn._progress import drain
from napari_medcnn.pacs import session_cache
from napari_medcnn.pacs.vault import Vault, iter_retrieve_to_vault
pacs, study, series, _ = _phi_pacs(Path({str(tmp_path)!r}) / "pacs")
v = Vault.create(Path({str(tmp_path)!r}) / "vault", PASS, scrypt=FAST)
drain(iter_retrieve_to_vault(pacs, study, series, v))
folder = drain(v.iter_extract(v.series()[0]))
print(session_cache())
raise RuntimeError("boom")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert "boom" in run.stderr
    cache = Path(run.stdout.strip().splitlines()[-1])
    assert cache.name.startswith("napari-medcnn-pacs-") and not cache.exists()


def test_cli_send_deidentify_with_sealed_key(tmp_path, cli_pacs, capsys):
    """``pacs send --deidentify --key K`` opens an encrypted key with
    ``--passphrase-file``; without it, or with a wrong one: exit 2, nothing
    sent."""
    from napari_medcnn.deid.keys import ProjectKey

    pacs, _study, series, _px, pw = cli_pacs
    key_file = tmp_path / "project.key"
    key = ProjectKey.from_file(key_file, create=True, passphrase=PASS)
    server = ["--dicomweb", "http://127.0.0.1:9/dicom-web"]
    src = [str(tmp_path / "pacs")]
    before = len(list((tmp_path / "pacs").rglob("*.dcm")))
    rc = main(["pacs", "send", *server, "--deidentify", "--key", str(key_file), *src])
    err = capsys.readouterr().err
    assert rc == 2 and "is encrypted: give its passphrase" in err
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n")
    rc = main(["pacs", "send", *server, "--deidentify", "--key", str(key_file),
               "--passphrase-file", str(wrong), *src])  # fmt: skip
    assert rc == 2 and "authentication failed" in capsys.readouterr().err
    assert len(list((tmp_path / "pacs").rglob("*.dcm"))) == before  # nothing sent
    rc = main(["pacs", "send", *server, "--deidentify", "--key", str(key_file),
               "--passphrase-file", str(pw), *src])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "stored 3 instance(s)" in out
    assert pacs.find_series(pacs.find_studies()[-1].study_uid)  # sanity
    new_series = {s.series_uid for st in pacs.find_studies()
                  for s in pacs.find_series(st.study_uid)}  # fmt: skip
    assert key.uid(series) in new_series


def test_manifest_rekey_changes_the_vault_passphrase(tmp_path, monkeypatch, capsys):
    """``manifest rekey DIR/vault.key`` re-seals the vault's key: the new
    passphrase opens the vault, the old one no longer does."""
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    Vault.create(tmp_path / "v", PASS, scrypt=FAST)
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_bytes(PASS)
    new.write_text("a new vault passphrase\n")
    pws = ["--passphrase-file", str(old), "--new-passphrase-file", str(new)]
    rc = main(["manifest", "rekey", str(tmp_path / "v" / KEY_NAME), *pws])
    assert rc == 0, capsys.readouterr().err
    assert Vault.open(tmp_path / "v", b"a new vault passphrase").series() == []
    with pytest.raises(VaultError, match="authentication failed"):
        Vault.open(tmp_path / "v", PASS)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_real_pacs_into_the_vault(orthanc, tmp_path, fresh_session, protocol):
    """From the test Orthanc (WADO-RS, or C-GET) into the encrypted cache and
    back: the same pixels; no PHI and no plaintext left on disk."""
    from napari_medcnn.pacs import connect

    folder_pacs, study, series, pixels = _phi_pacs(tmp_path / "src")
    server = (
        orthanc.dicomweb() if protocol == "dicomweb" else orthanc.dimse(retrieve="get")
    )
    client = connect(server)
    stored = connect(orthanc.dicomweb()).store([folder_pacs.root])
    assert len(stored.stored) == 3 and not stored.failed
    vdir = tmp_path / "vault"
    with Vault.create(vdir, PASS, scrypt=FAST) as vault:
        entry = drain(iter_retrieve_to_vault(client, study, series, vault))
        assert entry.n_instances == 3
        assert _staged_files() == []
        _assert_no_phi(vdir)
        folder = drain(vault.iter_extract(entry, tmp_path / "out"))
    for got, want in zip(_pixels(folder), pixels, strict=True):
        np.testing.assert_array_equal(got, want)
