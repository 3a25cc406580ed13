"""Bad input, each with a clear message, nothing half-written and no secret
in the output: a wrong port, refused authentication, a server that never
answers, an association rejected for the wrong called AE title, and a
retrieve cancelled half-way.  Every message names the server and never
holds the password or the token (checked in the exception, its repr, the
captured logs at DEBUG level and stdout/stderr)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from _pacs_helpers import PASSWORD, TOKEN, make_deid_series

from napari_medcnn._progress import drain
from napari_medcnn.pacs import PacsError, Server, connect, series_dir
from napari_medcnn.pacs.orthanc import free_port


@pytest.fixture(autouse=True)
def debug_logs(caplog):
    """Capture every log record (DEBUG and up) of every library."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_secret(exc_info, caplog, capsys) -> str:
    """The error's text; asserts no secret is in it, in its repr, in the
    logs or in what was printed."""
    text = str(exc_info.value)
    out = capsys.readouterr()
    everything = [text, repr(exc_info.value), caplog.text, out.out, out.err]
    for blob in everything:
        assert PASSWORD not in blob
        assert TOKEN not in blob
    return text


@pytest.fixture(scope="module")
def stored(orthanc, tmp_path_factory):
    """A 6-slice de-identified series stored in the test Orthanc."""
    sent = make_deid_series(tmp_path_factory.mktemp("stored"), seed=40)
    result = connect(orthanc.dicomweb()).store(sent.files)
    assert len(result.stored) == len(sent.files)
    return sent


# -- wrong URL or port -------------------------------------------------------
def test_dicomweb_wrong_port(orthanc, caplog, capsys):
    server = Server("nowhere", url=f"http://127.0.0.1:{free_port()}/dicom-web",
                    user="medcnn", password=PASSWORD, timeout=5)  # fmt: skip
    with pytest.raises(PacsError) as exc_info:
        connect(server).find_studies()
    text = assert_no_secret(exc_info, caplog, capsys)
    assert "connection refused" in text and "nowhere (http://127.0.0.1:" in text


def test_dimse_wrong_port(orthanc, caplog, capsys):
    server = Server.dimse(f"ORTHANC@127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    text = assert_no_secret(exc_info, caplog, capsys)
    assert "connection refused" in text and "ORTHANC@127.0.0.1:" in text


def test_wrong_dicomweb_path_is_not_found(orthanc, caplog, capsys):
    server = orthanc.dicomweb(url=orthanc.orthanc.url + "/no-such-root")
    with pytest.raises(PacsError) as exc_info:
        connect(server).find_studies()
    assert "HTTP 404" in assert_no_secret(exc_info, caplog, capsys)


# -- refused authentication --------------------------------------------------
def test_refused_password(orthanc, caplog, capsys, monkeypatch):
    monkeypatch.setenv("PACS_PW", PASSWORD + "-wrong")
    server = orthanc.dicomweb(password=None, password_env="PACS_PW")
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    text = assert_no_secret(exc_info, caplog, capsys)
    assert "authentication refused (HTTP 401)" in text
    assert PASSWORD + "-wrong" not in text + caplog.text


def test_refused_bearer_token(orthanc, caplog, capsys, monkeypatch):
    monkeypatch.setenv("PACS_TOKEN", TOKEN)
    server = orthanc.dicomweb(user=None, password=None, token_env="PACS_TOKEN")
    with pytest.raises(PacsError) as exc_info:
        connect(server).find_studies()
    assert "HTTP 401" in assert_no_secret(exc_info, caplog, capsys)


def test_bearer_token_is_sent(bearer_server, caplog, capsys, monkeypatch):
    url, seen = bearer_server
    monkeypatch.setenv("PACS_TOKEN", TOKEN)
    client = connect(Server("bearer", url=url, token_env="PACS_TOKEN", timeout=5))
    assert client.find_studies() == []
    assert seen == [f"Bearer {TOKEN}"]
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err + repr(client)


def test_https_needs_the_ca_bundle(https_bearer_server, caplog, capsys,
                                   monkeypatch):  # fmt: skip
    """HTTPS is verified: an unknown CA is refused with a clear message (and
    the token is never sent); with ``ca_bundle`` the same server works."""
    url, seen, ca = https_bearer_server
    monkeypatch.setenv("PACS_TOKEN", TOKEN)
    server = Server("tls", url=url, token_env="PACS_TOKEN", timeout=5)
    with pytest.raises(PacsError) as exc_info:
        connect(server).find_studies()
    assert "certificate not trusted" in assert_no_secret(exc_info, caplog, capsys)
    assert seen == []
    assert connect(server.with_(ca_bundle=str(ca))).find_studies() == []
    assert seen == [f"Bearer {TOKEN}"]


def test_missing_secret_variable(orthanc, monkeypatch):
    monkeypatch.delenv("NO_SUCH_PACS_PW", raising=False)
    server = orthanc.dicomweb(password=None, password_env="NO_SUCH_PACS_PW")
    with pytest.raises(PacsError, match="NO_SUCH_PACS_PW .* is not set"):
        connect(server)


# -- a server that never answers ---------------------------------------------
def test_dicomweb_timeout(silent_server, caplog, capsys):
    host, port = silent_server
    server = Server("hung", url=f"http://{host}:{port}/dicom-web", user="medcnn",
                    password=PASSWORD, timeout=1.0)  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(PacsError) as exc_info:
        connect(server).find_studies()
    assert time.monotonic() - t0 < 15
    text = assert_no_secret(exc_info, caplog, capsys)
    assert "no answer within 1 s" in text and "hung (http://" in text


def test_dimse_timeout(silent_server, caplog, capsys):
    host, port = silent_server
    server = Server.dimse(f"PACS@{host}:{port}", timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    assert time.monotonic() - t0 < 15
    assert "no answer within 1 s" in assert_no_secret(exc_info, caplog, capsys)


# -- association rejected ------------------------------------------------------
def test_wrong_called_aet_is_rejected(orthanc, caplog, capsys):
    server = orthanc.dimse()
    # a generous timeout: on a busy machine a slow answer is not a rejection
    server = Server.dimse(f"WRONG_AET@127.0.0.1:{server.port}", timeout=30)
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    text = assert_no_secret(exc_info, caplog, capsys)
    assert "association rejected" in text
    assert "called AE title" in text and "WRONG_AET" in text


# -- cancelled retrieve ---------------------------------------------------------
def _nothing_left(dest, sent) -> None:
    """Not the series, nor a temporary folder, nor the folders made for it."""
    assert not series_dir(dest, sent.study_uid, sent.series_uid).exists()
    assert not dest.exists()


@pytest.mark.parametrize("kind", ["dicomweb", "get", "move"])
def test_cancelled_retrieve_leaves_nothing(orthanc, stored, tmp_path, kind):
    server = orthanc.dicomweb() if kind == "dicomweb" else orthanc.dimse(retrieve=kind)
    client = connect(server)
    cancel = threading.Event()
    dest = tmp_path / "cache"
    gen = client.retrieve_series(stored.study_uid, stored.series_uid, dest, cancel)
    with pytest.raises(PacsError, match="retrieve cancelled") as exc_info:
        for _stage, i, _n in gen:
            if i >= 2:
                cancel.set()
    assert "test-orthanc" in str(exc_info.value)
    _nothing_left(dest, stored)
    # the server still works afterwards
    folder = drain(client.retrieve_series(stored.study_uid, stored.series_uid, dest))
    assert len(list(folder.glob("*.dcm"))) == len(stored.files)


def test_closed_retrieve_leaves_nothing(orthanc, stored, tmp_path):
    """``worker.quit()`` closes the generator: same guarantee."""
    client = connect(orthanc.dicomweb())
    dest = tmp_path / "cache"
    gen = client.retrieve_series(stored.study_uid, stored.series_uid, dest)
    for _ in range(3):
        next(gen)
    gen.close()
    _nothing_left(dest, stored)


def test_unknown_series(orthanc, stored, tmp_path):
    for server in (orthanc.dicomweb(), orthanc.dimse()):
        with pytest.raises(PacsError, match="no instance|not found|C-GET failed"):
            drain(
                connect(server).retrieve_series(
                    stored.study_uid, "1.2.3.4.5.6.7", tmp_path / "cache"
                )
            )
        _nothing_left(tmp_path / "cache", stored)
