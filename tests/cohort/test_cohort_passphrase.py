"""``cohort --deidentify --key-file K`` with an encrypted (sealed) key:
the passphrase from ``--passphrase-file`` or NAPARI_MEDCNN_PASSPHRASE; a
missing or wrong one stops the run before anything is written (exit 2,
a clear message), instead of failing every item."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_medcnn.cli import main
from napari_medcnn.deid.keys import ProjectKey, is_sealed_file

PASS = b"cohort key passphrase"


@pytest.fixture
def sealed_key(tmp_path, monkeypatch) -> tuple[Path, Path, ProjectKey]:
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    key_file = tmp_path / "project.key"
    key = ProjectKey.from_file(key_file, create=True, passphrase=PASS)
    assert is_sealed_file(key_file)
    pw = tmp_path / "pw.txt"
    pw.write_bytes(PASS + b"\n")
    os.chmod(pw, 0o600)
    return key_file, pw, key


def _series(root: Path) -> None:
    from _helpers import phi_series

    phi_series(root / "Doe_Jane" / "ct", n=3)


def test_missing_or_wrong_passphrase_exits_2(tmp_path, sealed_key, capsys):
    key_file, _pw, _key = sealed_key
    _series(tmp_path / "in")
    out = tmp_path / "out"
    base = ["cohort", str(tmp_path / "in"), "--out", str(out), "--workers", "1",
            "--deidentify", "--key-file", str(key_file), "--quiet"]  # fmt: skip
    rc = main(base)
    err = capsys.readouterr().err
    assert rc == 2 and "is encrypted: give its passphrase" in err
    assert "--passphrase-file" in err and not out.exists()

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    rc = main([*base, "--passphrase-file", str(wrong)])
    err = capsys.readouterr().err
    assert rc == 2 and "authentication failed" in err
    assert "not the passphrase" not in err and not out.exists()

    rc = main([*base, "--passphrase-file", str(tmp_path / "missing.txt")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read the passphrase file" in err and not out.exists()

    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    rc = main([*base, "--passphrase-file", str(empty)])
    assert rc == 2 and "is empty" in capsys.readouterr().err


def test_wrong_passphrase_in_environment_exits_2(
    tmp_path, sealed_key, capsys, monkeypatch
):
    key_file, _pw, _key = sealed_key
    _series(tmp_path / "in")
    monkeypatch.setenv("NAPARI_MEDCNN_PASSPHRASE", "wrong")
    out = tmp_path / "out"
    rc = main(["cohort", str(tmp_path / "in"), "--out", str(out), "--quiet",
               "--deidentify", "--key-file", str(key_file)])  # fmt: skip
    assert rc == 2 and "authentication failed" in capsys.readouterr().err
    assert not out.exists()


def test_passphrase_is_not_in_the_options_repr():
    from napari_medcnn.cohort import CohortOptions

    opts = CohortOptions(deidentify=True, key_file="k", passphrase=PASS)
    assert PASS.decode() not in repr(opts)


@pytest.mark.slow
def test_sealed_key_with_passphrase_file_runs(tmp_path, sealed_key):
    """The workers open the sealed key: the row's series UID is the key's
    replacement of the original one."""
    from napari_medcnn.cohort.items import discover

    key_file, pw, key = sealed_key
    _series(tmp_path / "in")
    original_uid = next(it.series_uid for it in discover([tmp_path / "in"]))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "NAPARI_MEDCNN_PASSPHRASE"}
    run = subprocess.run(
        [sys.executable, "-m", "napari_medcnn.cli", "cohort", str(tmp_path / "in"),
         "--out", str(out), "--workers", "1", "--deidentify", "--key-file",
         str(key_file), "--passphrase-file", str(pw)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    with open(out / "results.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["status"] == "ok", row.get("error")
    assert row["series_uid"] == key.uid(original_uid)
    assert PASS.decode() not in run.stdout + run.stderr


@pytest.mark.slow
def test_new_key_file_is_made_once_before_the_workers(tmp_path, monkeypatch):
    """A missing ``--key-file`` is created once, sealed under the
    passphrase, before any worker starts: two workers then pseudonymise
    two series with that same key (each creating its own would give the
    series UIDs of two different keys)."""
    from _helpers import phi_series

    from napari_medcnn.cohort.items import discover

    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    phi_series(tmp_path / "in" / "Doe_Jane" / "ct", n=3)
    phi_series(tmp_path / "in" / "Roe_Rick" / "mr", n=3, seed="s2",
               patient=("Roe^Rick", "PID-0077"))  # fmt: skip
    originals = {it.series_uid for it in discover([tmp_path / "in"])}
    assert len(originals) == 2
    key_file, pw = tmp_path / "keys" / "new.key", tmp_path / "pw.txt"
    key_file.parent.mkdir()
    pw.write_bytes(PASS + b"\n")
    out = tmp_path / "out"
    code = main(["cohort", str(tmp_path / "in"), "--out", str(out), "--workers",
                 "2", "--deidentify", "--key-file", str(key_file),
                 "--passphrase-file", str(pw), "--quiet"])  # fmt: skip
    assert code == 0
    assert is_sealed_file(key_file)
    key = ProjectKey.from_file(key_file, passphrase=PASS)
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["series_uid"] for r in rows} == {key.uid(u) for u in originals}


def test_bad_input_does_not_create_the_key_file(tmp_path, monkeypatch):
    """An empty input folder stops the run (exit 2) before the key file is
    made: nothing is written."""
    monkeypatch.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)
    (tmp_path / "empty").mkdir()
    key_file = tmp_path / "new.key"
    code = main(["cohort", str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
                 "--deidentify", "--key-file", str(key_file), "--quiet"])  # fmt: skip
    assert code == 2
    assert not key_file.exists() and not (tmp_path / "out").exists()
