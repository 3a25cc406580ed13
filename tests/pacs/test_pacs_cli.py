"""``napari-medcnn pacs echo|find|get|send`` against the test Orthanc:
exit status 0/1/2, masked names, secrets only from the environment and
never printed."""

from __future__ import annotations

import json
import logging

import pytest
from _pacs_helpers import PASSWORD, PHI_ID, PHI_NAME, USER, make_deid_series

from napari_medcnn.cli import build_parser, main
from napari_medcnn.pacs import load_profiles
from napari_medcnn.pacs.orthanc import free_port


@pytest.fixture
def env(orthanc, monkeypatch, tmp_path, caplog):
    """The password in ``PACS_PW``, a fresh user config folder, DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PACS_PW", PASSWORD)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return orthanc


def web_args(pacs) -> list[str]:
    return ["--dicomweb", pacs.orthanc.dicomweb_url, "--user", USER,
            "--password-env", "PACS_PW"]  # fmt: skip


def dimse_args(pacs, method="get") -> list[str]:
    o = pacs.orthanc
    return ["--dimse", f"{o.aet}@127.0.0.1:{o.dicom_port}", "--calling-aet",
            "MEDCNN_TEST", "--storage-port", str(pacs.scp_port),
            "--retrieve", method]  # fmt: skip


def run(argv, capsys, caplog):
    rc = main(argv)
    out = capsys.readouterr()
    for blob in (out.out, out.err, caplog.text):
        assert PASSWORD not in blob
    return rc, out.out, out.err


def test_help_states_exit_status():
    sub = next(
        a
        for a in build_parser()._actions
        if a.__class__.__name__ == "_SubParsersAction"
    )
    text = " ".join(sub.choices["pacs"].format_help().split())
    assert "Exit status: 0 done; 1 done, but some items failed" in text
    assert "2 nothing done" in text
    assert "--password-env" in text and "--password " not in text


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_cli_send_find_get(env, tmp_path, capsys, caplog, protocol):
    args = web_args(env) if protocol == "dicomweb" else dimse_args(env)
    sent = make_deid_series(tmp_path / "src", seed=70 + len(protocol), n=4)

    rc, out, _ = run(["pacs", "echo", *args], capsys, caplog)
    assert rc == 0 and "OK" in out

    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    rc, out, err = run(["pacs", "send", *args, "--confirm-deidentified",
                       str(sent.folder), str(junk)],
                       capsys, caplog)  # fmt: skip
    assert rc == 1 and "stored 4 instance(s); 1 failed" in out
    assert "notes.txt: not a DICOM file" in err

    rc, out, _ = run(["pacs", "find", *args, "--study", sent.study_uid, "--json"],
                     capsys, caplog)  # fmt: skip
    assert rc == 0
    (row,) = json.loads(out)
    assert row["series_uid"] == sent.series_uid and row["images"] == "4"

    rc, out, _ = run(["pacs", "find", *args, "--modality", "MR"], capsys, caplog)
    assert rc == 0 and sent.study_uid in out and "patient " in out

    dest = tmp_path / "got"
    rc, out, _ = run(["pacs", "get", *args, "--study", sent.study_uid,
                      "--out", str(dest)], capsys, caplog)  # fmt: skip
    assert rc == 0
    folder = dest / sent.study_uid / sent.series_uid
    assert out.strip() == str(folder) and len(list(folder.glob("*.dcm"))) == 4


def test_cli_send_deidentifies(env, tmp_path, capsys, caplog):
    """``send --deidentify`` sends the project's de-identified copy: the
    PACS never sees the name or the ID."""
    from napari_medcnn.io.synth import write_series

    write_series(
        __import__("numpy").ones((2, 8, 8)), tmp_path / "raw",
        patient_name=PHI_NAME, patient_id=PHI_ID, seed="cli-deid",
    )  # fmt: skip
    rc, out, _ = run(["pacs", "send", *web_args(env), "--deidentify",
                      str(tmp_path / "raw")], capsys, caplog)  # fmt: skip
    assert rc == 0 and "stored 2 instance(s)" in out
    rc, out, _ = run(["pacs", "find", *web_args(env), "--patient-id", PHI_ID,
                      "--json"], capsys, caplog)  # fmt: skip
    assert rc == 0 and json.loads(out) == []


def test_cli_errors_exit_2_without_secrets(env, capsys, caplog, monkeypatch):
    rc, _, err = run(["pacs", "echo"], capsys, caplog)
    assert rc == 2 and "give a server" in err
    monkeypatch.setenv("PACS_PW", PASSWORD + "x")
    rc, _, err = run(["pacs", "find", *web_args(env)], capsys, caplog)
    assert rc == 2 and "authentication refused (HTTP 401)" in err
    assert PASSWORD + "x" not in err
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    rc, _, err = run(["pacs", "echo", "--dicomweb", url, "--timeout", "3"],
                     capsys, caplog)  # fmt: skip
    assert rc == 2 and "connection refused" in err
    rc, _, err = run(["pacs", "get", *web_args(env)], capsys, caplog)
    assert rc == 2 and "--study" in err
    rc, _, err = run(["pacs", "get", *web_args(env), "--study", "1.2.3"],
                     capsys, caplog)  # fmt: skip
    assert rc == 2 and "get needs --out DIR" in err and "deleted at exit" in err
    rc, _, err = run(["pacs", "echo", "--dimse", "nonsense"], capsys, caplog)
    assert rc == 2 and "AET@HOST:PORT" in err


def test_cli_profile(env, capsys, caplog):
    rc, out, _ = run(["pacs", "echo", *web_args(env), "--save-profile", "lab"],
                     capsys, caplog)  # fmt: skip
    assert rc == 0 and "saved profile 'lab'" in out
    saved = load_profiles()["lab"]
    assert saved.password is None and saved.password_env == "PACS_PW"
    rc, out, _ = run(["pacs", "echo", "--profile", "lab"], capsys, caplog)
    assert rc == 0 and out.startswith("lab (http://127.0.0.1:")
    rc, _, err = run(["pacs", "echo", "--profile", "nope"], capsys, caplog)
    assert rc == 2 and "no PACS profile 'nope'" in err


def test_search_filters_stay_out_of_debug_logs(env, capsys, caplog):
    """dicomweb-client logs each request URL at DEBUG: the patient filter in
    its query string must not reach the log."""
    rc, out, _ = run(
        ["pacs", "find", *web_args(env), "--patient-id", "PID-SECRET-4711",
         "--patient-name", "Secretname^Jane"],
        capsys, caplog,
    )  # fmt: skip
    assert rc in (0, 1)
    assert "dicomweb_client" in caplog.text  # the library did log its requests
    assert "PID-SECRET-4711" not in caplog.text
    assert "Secretname" not in caplog.text
