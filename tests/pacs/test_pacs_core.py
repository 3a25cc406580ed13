"""The PACS core without a network: profiles and their secrets, search
filters, the atomic cache folder, and :class:`FolderPacs` (the local
implementation of the same protocol)."""

from __future__ import annotations

import json
import stat

import pytest
from _pacs_helpers import PASSWORD, PHI_NAME, TOKEN, make_deid_series

from napari_medcnn._progress import drain
from napari_medcnn.io import load
from napari_medcnn.pacs import (
    PacsClient,
    PacsError,
    Secret,
    Server,
    cache_root,
    clear_session_cache,
    delete_profile,
    load_profiles,
    profiles_path,
    save_profile,
    series_dir,
    session_cache,
)
from napari_medcnn.pacs.client import (
    SeriesStaging,
    date_range,
    in_session_cache,
    normalise_filters,
)
from napari_medcnn.pacs.dicomweb import DicomWebClient
from napari_medcnn.pacs.dimse import DimseClient
from napari_medcnn.pacs.folder import FolderPacs
from napari_medcnn.pacs.server import mask_secrets, parse_dimse_address


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """Config and cache folders of a fresh user (platformdirs honours XDG)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_secret_never_shows():
    s = Secret(PASSWORD)
    assert s.reveal() == PASSWORD
    for text in (repr(s), str(s), f"{s}", f"{s!r}", "%s" % s):  # noqa: UP031
        assert PASSWORD not in text and "***" in text
    server = Server("pacs", url="https://pacs.example/dicom-web", user="u",
                    password=PASSWORD, token=TOKEN)  # fmt: skip
    for text in (repr(server), str(server), server.label, str(server.to_dict())):
        assert PASSWORD not in text and TOKEN not in text
    assert "password" not in server.to_dict() and "token" not in server.to_dict()
    err = PacsError(server, f"echo said {PASSWORD} and {TOKEN}")
    assert PASSWORD not in str(err) and TOKEN not in str(err)
    assert str(err).startswith("pacs (https://pacs.example/dicom-web): ")
    assert mask_secrets("http://u:pw@h/x", []) == "http://u:***@h/x"


def test_credentials_in_url_are_refused():
    with pytest.raises(ValueError, match="no user or password in the URL") as e:
        Server("p", url=f"https://bob:{PASSWORD}@pacs.example/dicom-web")
    assert PASSWORD not in str(e.value)


def test_profiles_round_trip_mode_0600(user_dirs):
    assert load_profiles() == {}
    web = Server("web", url="https://pacs/dicom-web", user="u",
                 password_env="PACS_PW", qido_prefix="qido",
                 ca_bundle="/ca.pem")  # fmt: skip
    node = Server.dimse("PACS@10.0.0.5:104", name="node", calling_aet="ME",
                       token=TOKEN)  # fmt: skip
    path = save_profile(web)
    save_profile(node)
    assert path == profiles_path() and path.is_relative_to(user_dirs / "config")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["web"]["password_env"] == "PACS_PW" and "password" not in data["web"]
    assert data["node"]["token"] == TOKEN  # only here, in the 0600 file
    loaded = load_profiles()
    assert loaded["web"] == web and loaded["node"].token == Secret(TOKEN)
    assert loaded["node"].label == "node (PACS@10.0.0.5:104)"
    assert delete_profile("web") and set(load_profiles()) == {"node"}
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid PACS profiles file"):
        load_profiles()


def test_dimse_address_and_server_checks():
    assert parse_dimse_address("ORTHANC@127.0.0.1:4242") == (
        "ORTHANC",
        "127.0.0.1",
        4242,
    )
    for bad in ("ORTHANC@host", "@host:1", "A" * 17 + "@h:1", "X@h:70000"):
        with pytest.raises(ValueError):
            parse_dimse_address(bad)
    with pytest.raises(ValueError, match="http"):
        Server("x", url="ftp://pacs")
    with pytest.raises(ValueError, match="kind"):
        Server("x", kind="carrier-pigeon")


def test_filters():
    assert date_range("20240101-20241231") == "20240101-20241231"
    assert date_range("2024-01-01..2024-12-31") == "20240101-20241231"
    assert date_range("20240101-") == "20240101-"
    assert date_range(("2024-03-01", None)) == "20240301-"
    assert date_range("2024-05-06") == "20240506"
    with pytest.raises(ValueError):
        date_range("last week")
    got = normalise_filters({"patient_id": "P*", "date": "20240101-", "modality": "MR",
                             "accession": None, "description": ""})  # fmt: skip
    assert got == {"PatientID": "P*", "StudyDate": "20240101-",
                   "ModalitiesInStudy": "MR"}  # fmt: skip
    with pytest.raises(ValueError, match="unknown study filter 'colour'"):
        normalise_filters({"colour": "red"})


def test_clients_follow_the_protocol(tmp_path):
    web = DicomWebClient(Server("w", url="http://127.0.0.1:1/dicom-web"))
    node = DimseClient(Server.dimse("A@127.0.0.1:1"))
    for client in (web, node, FolderPacs(tmp_path)):
        assert isinstance(client, PacsClient)
        for name in ("echo", "find_studies", "find_series", "retrieve_series",
                     "store"):  # fmt: skip
            assert callable(getattr(client, name))


def test_series_dir_refuses_paths(tmp_path):
    assert series_dir(tmp_path, "1.2", "3.4") == tmp_path / "1.2" / "3.4"
    for bad in ("..", "../../etc", "1.2/3", ""):
        with pytest.raises(ValueError):
            series_dir(tmp_path, bad, "1.2")


@pytest.fixture
def session(tmp_path, monkeypatch):
    """A fresh session cache under ``tmp_path`` (removed afterwards)."""
    import tempfile

    clear_session_cache()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    yield tmp_path / "tmp"
    clear_session_cache()


def test_session_cache_is_private_and_temporary(session, user_dirs):
    root = cache_root()
    assert root == session_cache() and root.parent == session
    assert root.name.startswith("napari-medcnn-pacs-")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert not (user_dirs / "cache").exists()  # nothing in the user cache
    folder = series_dir(None, "1.2", "3.4")
    assert folder == root / "1.2" / "3.4"


def test_clear_session_cache_removes_everything(session, tmp_path):
    sent = make_deid_series(tmp_path / "src", seed=4, n=2)
    pacs = FolderPacs(tmp_path / "pacs")
    pacs.store([sent.folder])
    folder = drain(pacs.retrieve_series(sent.study_uid, sent.series_uid))
    root = session_cache()
    assert folder.is_relative_to(root) and len(list(folder.glob("*.dcm"))) == 2
    assert in_session_cache(folder) and not in_session_cache(sent.folder)
    assert clear_session_cache()
    assert not root.exists() and list(session.iterdir()) == []
    assert not clear_session_cache()  # nothing left to clear
    again = session_cache()  # a later retrieve gets a fresh folder
    assert again != root and stat.S_IMODE(again.stat().st_mode) == 0o700


_AT_EXIT = """
import sys
from pathlib import Path
from napari_medcnn._progress import drain
from napari_medcnn.pacs.folder import FolderPacs
pacs = FolderPacs(Path(sys.argv[1]))
folder = drain(pacs.retrieve_series(sys.argv[2], sys.argv[3]))
assert len(list(folder.glob("*.dcm"))) == 2
print(folder)
"""


def test_session_cache_is_removed_at_exit(tmp_path):
    """A process that retrieves into the session cache and exits leaves
    nothing on disk (``atexit``)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    sent = make_deid_series(tmp_path / "src", seed=5, n=2)
    FolderPacs(tmp_path / "pacs").store([sent.folder])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT, str(tmp_path / "pacs"),
         sent.study_uid, sent.series_uid],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(tmp) and folder.name == sent.series_uid
    assert not folder.exists() and list(tmp.iterdir()) == []


def test_staging_is_all_or_nothing(tmp_path):
    target = tmp_path / "study" / "series"
    with pytest.raises(RuntimeError), SeriesStaging(target) as st:
        st.add_bytes("a.dcm", b"x")
        raise RuntimeError("network gone")
    assert not (tmp_path / "study").exists()  # nor the folder made for it
    with SeriesStaging(target) as st:
        st.add_bytes("b.dcm", b"y")
        st.commit()
    assert [p.name for p in target.iterdir()] == ["b.dcm"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_folder_pacs_round_trip(tmp_path, user_dirs, session):
    """The local implementation: store, find (filters), retrieve into the
    session cache (default), load; cancel leaves nothing."""
    sent = make_deid_series(tmp_path / "src", seed=3, n=4)
    pacs = FolderPacs(tmp_path / "pacs", name="offline")
    stored = pacs.store([sent.folder, tmp_path / "missing.dcm"])
    assert len(stored.stored) == 4 and len(stored.failed) == 1
    assert pacs.echo() >= 0
    (studies,) = pacs.find_studies(modality="MR")
    assert studies.study_uid == sent.study_uid and studies.n_instances == 4
    assert PHI_NAME not in repr(studies)
    assert pacs.find_studies(modality="CT") == []
    assert pacs.find_studies(date="19000101-19000102") == []
    (series,) = pacs.find_series(sent.study_uid, modality="M?")
    assert series.n_instances == 4 and series.series_uid == sent.series_uid
    with pytest.raises(PacsError, match="retrieve cancelled"):
        drain(pacs.retrieve_series(sent.study_uid, sent.series_uid,
                                   cancel=lambda: True))  # fmt: skip
    assert not series_dir(None, sent.study_uid, sent.series_uid).exists()
    folder = drain(pacs.retrieve_series(sent.study_uid, sent.series_uid))
    assert folder.is_relative_to(cache_root())
    scan, ref = load(folder)[0], load(sent.folder)[0]
    assert (scan.data == ref.data).all()
    with pytest.raises(PacsError, match="offline: no such folder"):
        FolderPacs(tmp_path / "nope", name="offline").find_studies()
