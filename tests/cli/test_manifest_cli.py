"""The encrypted manifest and key through the command line (issue 17):
``deidentify --key K --manifest M --passphrase-file P`` seals both;
``manifest show`` re-identifies a pseudonym; a wrong passphrase, a changed
byte in any part of the file and a truncated file each give "authentication
failed" and exit status 2; ``manifest rekey`` changes the passphrase; the
passphrase never shows in any output or file."""

from __future__ import annotations

import json

import pydicom
import pytest
from _helpers import PHI, grep_phi, phi_series

from napari_medcnn.cli import main
from napari_medcnn.deid.sealed import MAGIC, is_sealed, open_sealed

PASSPHRASE = "Tr0ub4dor & a horse, 2026"
NEW_PASSPHRASE = "an entirely different one"
AUTH = "authentication failed (wrong passphrase, or the file was changed or truncated)"


@pytest.fixture
def export(tmp_path, capsys):
    """An export with a sealed key and manifest; returns a namespace."""
    root = tmp_path / "in"
    phi_series(root / "DOE_JANE" / "ct", n=3)
    private, secrets_dir = tmp_path / "private", tmp_path / "secrets"
    secrets_dir.mkdir()
    pfile = secrets_dir / "pass"
    pfile.write_text(PASSPHRASE + "\n")
    pfile.chmod(0o600)
    key, manifest, out = private / "project.key", private / "map.json", tmp_path / "out"
    shown: list[str] = []

    def run(*args) -> tuple[int, str, str]:
        rc = main([str(a) for a in args])
        cap = capsys.readouterr()
        shown.append(cap.out + cap.err)
        return rc, cap.out, cap.err

    args = ["--key", key, "--manifest", manifest, "--passphrase-file", pfile]
    rc, stdout, err = run("deidentify", root, "--out", out, *args)
    assert rc == 0, err
    assert "manifest (encrypted; keep it private)" in stdout
    assert "warning" not in err

    class Ns:
        pass

    ns = Ns()
    ns.__dict__.update(root=root, key=key, manifest=manifest, out=out, pfile=pfile,
                       run=run, shown=shown, tmp=tmp_path, private=private)  # fmt: skip
    return ns


def _show(ns, *args, pfile=None):
    return ns.run("manifest", "show", ns.manifest, "--passphrase-file",
                  pfile or ns.pfile, *args)  # fmt: skip


def test_key_and_manifest_are_sealed_and_hold_no_phi(export):
    ns = export
    for f in (ns.key, ns.manifest):
        assert is_sealed(f.read_bytes()) and f.stat().st_mode & 0o777 == 0o600
    assert grep_phi(ns.private, PHI) == []  # names split at ^ too
    # nor the raw key, in hex (either case) or bytes
    secret = bytes.fromhex(open_sealed(ns.key.read_bytes(), PASSPHRASE).decode())
    assert len(secret) == 32
    for f in (ns.key, ns.manifest):
        data = f.read_bytes()
        for needle in (secret, secret.hex().encode(), secret.hex().upper().encode()):
            assert needle not in data
    # the same sealed key gives the same names again (with its passphrase)
    names = sorted(p.name for p in ns.out.rglob("*.dcm"))
    rc, _, err = ns.run("deidentify", ns.root, "--out", ns.tmp / "again", "--key",
                        ns.key, "--passphrase-file", ns.pfile)  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in (ns.tmp / "again").rglob("*.dcm")) == names


def test_show_finds_the_original_identifiers(export):
    ns = export
    pseudonym = next(ns.out.iterdir()).name
    assert pseudonym.startswith("ANON-")
    rc, stdout, _ = _show(ns, "--find", pseudonym)
    assert rc == 0
    (hit,) = json.loads(stdout)
    assert hit["match"] == "patient" and hit["pseudonym"] == pseudonym
    assert hit["patient_id"] == "PID-0042" and hit["patient_name"] == "Doe^Jane"
    assert len(hit["inputs"]) == 3
    # a new study UID -> the original, and its accession number
    ds = pydicom.dcmread(next(ns.out.rglob("*.dcm")))
    rc, stdout, _ = _show(ns, "--find", ds.StudyInstanceUID)
    (hit,) = json.loads(stdout)
    assert rc == 0 and hit["accession_numbers"] == ["ACC-77812"]
    # the whole mapping
    rc, stdout, _ = _show(ns)
    assert rc == 0 and "PID-0042" in stdout and json.loads(stdout)["files"]
    # not there: exit 2 alone, 1 beside one found
    assert _show(ns, "--find", "ANON-000000000000")[0] == 2
    assert _show(ns, "--find", pseudonym, "--find", "ANON-000000000000")[0] == 1


def test_environment_variable(export, monkeypatch):
    ns = export
    monkeypatch.setenv("NAPARI_MEDCNN_PASSPHRASE", PASSPHRASE)
    rc, stdout, _ = ns.run("manifest", "show", ns.manifest)
    assert rc == 0 and "PID-0042" in stdout
    monkeypatch.setenv("NAPARI_MEDCNN_PASSPHRASE", "wrong")
    rc, _, err = ns.run("manifest", "show", ns.manifest)
    assert rc == 2 and AUTH in err


def test_wrong_changed_and_truncated_files_fail_authentication(export):
    ns = export
    wrong = ns.tmp / "secrets" / "wrong"
    wrong.write_text("not the passphrase\n")
    rc, stdout, err = _show(ns, pfile=wrong)
    assert rc == 2 and f"{ns.manifest}: {AUTH}" in err and stdout == ""
    rc, _, err = ns.run("deidentify", ns.root, "--out", ns.tmp / "o2", "--key",
                        ns.key, "--passphrase-file", wrong)  # fmt: skip
    assert rc == 2 and AUTH in err and not (ns.tmp / "o2").exists()
    good = ns.manifest.read_bytes()
    n = len(good)
    # every region: version, KDF, cipher, scrypt cost, salt, nonce,
    # ciphertext (first, middle, last byte) and tag
    regions = {"version": 12, "kdf": 13, "cipher": 14, "log2_n": 15, "r": 16,
               "p": 17, "salt": 18, "salt_end": 33, "nonce": 34, "nonce_end": 45,
               "ciphertext": 46, "ciphertext_mid": (46 + n - 16) // 2,
               "ciphertext_end": n - 17, "tag": n - 16, "tag_end": n - 1}  # fmt: skip
    for where, i in [("magic", 0), *regions.items()]:
        bad = bytearray(good)
        bad[i] ^= 0x01
        ns.manifest.write_bytes(bytes(bad))
        rc, stdout, err = _show(ns)
        assert rc == 2 and stdout == "", where
        if where == "magic":  # no longer a sealed file, nor a manifest
            assert "not a napari-medcnn manifest" in err
        elif where == "version":
            assert "format version 0 is not supported" in err
        else:
            assert AUTH in err, (where, err)
        assert "Traceback" not in err
    for cut in (0, 5, len(MAGIC), 30, 46, 62, n // 2, n - 1):
        ns.manifest.write_bytes(good[:cut])
        rc, stdout, err = _show(ns)
        assert rc == 2 and AUTH in err and stdout == "", cut
    ns.manifest.write_bytes(good)
    assert _show(ns)[0] == 0


def test_rekey(export):
    ns = export
    new = ns.tmp / "secrets" / "new"
    new.write_text(NEW_PASSPHRASE)
    pseudonym = next(ns.out.iterdir()).name
    rc, stdout, err = ns.run("manifest", "rekey", ns.manifest, "--passphrase-file",
                             ns.pfile, "--new-passphrase-file", new)  # fmt: skip
    assert rc == 0 and "re-encrypted" in stdout, err
    assert ns.manifest.stat().st_mode & 0o777 == 0o600
    rc, stdout, _ = _show(ns, "--find", pseudonym, pfile=new)
    assert rc == 0 and "PID-0042" in stdout
    rc, _, err = _show(ns, "--find", pseudonym)  # the old one no longer opens it
    assert rc == 2 and AUTH in err
    # a wrong old passphrase leaves the file as it was
    before = ns.manifest.read_bytes()
    third = ns.tmp / "secrets" / "third"
    third.write_text("a third passphrase")
    rc, _, err = ns.run("manifest", "rekey", ns.manifest, "--passphrase-file",
                        ns.pfile, "--new-passphrase-file", third)  # fmt: skip
    assert rc == 2 and AUTH in err and ns.manifest.read_bytes() == before
    # the key file too
    rc, _, _ = ns.run("manifest", "rekey", ns.key, "--passphrase-file", ns.pfile,
                      "--new-passphrase-file", new)  # fmt: skip
    assert rc == 0
    assert open_sealed(ns.key.read_bytes(), NEW_PASSPHRASE)


def test_passphrase_never_shown_or_written(export):
    ns = export
    wrong = ns.tmp / "secrets" / "wrong"
    wrong.write_text("wrong passphrase here\n")
    _show(ns, pfile=wrong)
    _show(ns, "--find", "nothing")
    ns.run("deidentify", ns.root, "--out", ns.tmp / "o3", "--key", ns.key,
           "--passphrase-file", wrong)  # fmt: skip
    text = "\n".join(ns.shown)
    for secret in (PASSPHRASE, "wrong passphrase here"):
        assert secret not in text
        for p in ns.tmp.rglob("*"):
            if p.is_file() and p.parent.name != "secrets":
                assert secret.encode() not in p.read_bytes(), p


def test_manifest_needs_a_passphrase_or_plaintext_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    root = tmp_path / "in"
    phi_series(root / "ct", n=2)
    out, manifest = tmp_path / "out", tmp_path / "m.json"
    rc = main(["deidentify", str(root), "--out", str(out), "--manifest", str(manifest)])
    err = capsys.readouterr().err
    assert rc == 2 and "--plaintext-manifest" in err and "unsafe" in err
    assert not out.exists() and not manifest.exists()
    rc = main(["deidentify", str(root), "--out", str(out), "--manifest", str(manifest),
               "--plaintext-manifest"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and "--plaintext-manifest is unsafe" in err
    assert not is_sealed(manifest.read_bytes()) and "PID-0042" in manifest.read_text()
    # show reads it, with a warning; rekey encrypts it
    assert main(["manifest", "show", str(manifest)]) == 0
    assert "plaintext manifest" in capsys.readouterr().err
    pfile = tmp_path / "p"
    pfile.write_text(PASSPHRASE)
    assert main(["manifest", "rekey", str(manifest), "--new-passphrase-file",
                 str(pfile)]) == 0  # fmt: skip
    assert "encrypted (it was plaintext)" in capsys.readouterr().out
    assert is_sealed(manifest.read_bytes())
    # an empty or missing passphrase file is refused before any work
    empty = tmp_path / "empty"
    empty.write_text("")
    for bad in (empty, tmp_path / "missing"):
        rc = main(["deidentify", str(root), "--out", str(tmp_path / "o2"),
                   "--manifest", str(tmp_path / "m2.json"), "--passphrase-file",
                   str(bad)])  # fmt: skip
        assert rc == 2 and str(bad) in capsys.readouterr().err
        assert not (tmp_path / "o2").exists()


def test_sealed_key_needs_its_passphrase(export, monkeypatch):
    ns = export
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    rc, _, err = ns.run("deidentify", ns.root, "--out", ns.tmp / "o4", "--key", ns.key)
    assert rc == 2 and "is encrypted: give its passphrase" in err
    # an old plaintext key file still works, with a warning
    old = ns.tmp / "old.key"
    old.write_text("ab" * 32 + "\n")
    rc, _, err = ns.run("deidentify", ns.root, "--out", ns.tmp / "o5", "--key", old)
    assert rc == 0 and "is not encrypted" in err


def test_help_documents_exit_status_and_has_no_passphrase_argument(capsys):
    for argv in (["manifest"], ["manifest", "show"], ["manifest", "rekey"],
                 ["deidentify"]):  # fmt: skip
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "Exit status: 0 done; 1 done, but some items failed" in text, argv
        assert "2 nothing done" in text, argv
        assert "--passphrase " not in text and "--passphrase=" not in text
