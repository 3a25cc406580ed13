"""Bad cohort inputs: a clear message, exit status 2, nothing overwritten;
and the journal's crash safety (fast, no model run)."""

from __future__ import annotations

import json

import pytest

from napari_medcnn.cli import main
from napari_medcnn.cohort.items import CohortInputError, discover, read_manifest
from napari_medcnn.cohort.journal import Journal
from napari_medcnn.io.synth import write_cohort


@pytest.fixture
def small(tmp_path):
    root = tmp_path / "in"
    write_cohort(
        root, n_dicom=1, n_nifti=1, n_png=1, corrupt=(), non_image_folder=False,
        shape=(4, 32, 32),
    )  # fmt: skip
    return root


def run(capsys, *args) -> tuple[int, str]:
    rc = main(["cohort", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_empty_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, text = run(capsys, empty, "--out", tmp_path / "out")
    assert rc == 2
    assert f"{empty}: the folder is empty" in text
    assert not (tmp_path / "out").exists()


def test_manifest_without_path_column(tmp_path, capsys):
    m = tmp_path / "m.csv"
    m.write_text("file,label\na.nii.gz,tumor\n")
    rc, text = run(capsys, m, "--out", tmp_path / "out")
    assert rc == 2
    assert "has no 'path' column" in text and "'file'" in text
    assert not (tmp_path / "out").exists()
    with pytest.raises(CohortInputError, match="no 'path' column"):
        read_manifest(str(m))


def test_unreachable_scheduler(small, tmp_path, capsys):
    out = tmp_path / "out"
    rc, text = run(
        capsys, small, "--out", out, "--executor", "dask",
        "--scheduler", "tcp://127.0.0.1:9",
    )  # fmt: skip
    assert rc == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in text
    assert not out.exists()


def test_output_folder_that_is_a_file(small, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("my notes\n")
    rc, text = run(capsys, small, "--out", out)
    assert rc == 2 and "the output folder is a file" in text
    assert out.read_text() == "my notes\n"


def test_foreign_non_empty_folder_is_not_written_into(small, tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "results.csv").write_text("precious\n")
    rc, text = run(capsys, small, "--out", out)
    assert rc == 2 and "not a cohort output folder" in text
    assert (out / "results.csv").read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]


def test_missing_input_and_bad_options(tmp_path, capsys):
    rc, text = run(capsys, tmp_path / "nope", "--out", tmp_path / "o")
    assert rc == 2 and "nope: no such file or folder" in text
    rc, text = run(capsys, tmp_path, "--out", tmp_path / "o", "--workers", "0")
    assert rc == 2
    rc, text = run(capsys, tmp_path, "--out", tmp_path / "o", "--scheduler", "x")
    assert rc == 2 and "--scheduler needs --executor dask" in text
    rc, text = run(capsys, tmp_path, "--out", tmp_path / "o", "--model", tmp_path)
    assert rc == 2


def test_keys_are_stable_and_free_of_phi(small):
    a, b = discover([small]), discover([small])
    assert [i.key for i in a] == [i.key for i in b]
    for it in a:
        assert len(it.key) == 16 and all(c in "0123456789abcdef" for c in it.key)


def test_journal_survives_a_torn_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        j.append("t", {"key": "a", "status": "ok"})
        j.append("t", {"key": "b", "status": "error"})
    # a crash in the middle of the third write
    with open(path, "ab") as fh:
        fh.write(b'{"task":"t","row":{"key":"c","sta')
    j = Journal(path)
    assert [e["row"]["key"] for e in j.entries()] == ["a", "b"]
    assert j.done("t") == {"a", "b"}
    assert j.done("t", redo_errors=True) == {"a"}
    assert j.done("other") == set()
    with j:
        j.append("t", {"key": "b", "status": "ok"})  # redone: the latest wins
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    assert j.latest("t")["b"]["status"] == "ok"
    assert (path.stat().st_mode & 0o777) == 0o600


def test_task_id_changes_with_the_card_not_only_the_weights():
    """A card refitted on the same weights (temperature, mirror average,
    domain guard) keeps the model id but gives other rows: a rerun must not
    take the old rows as done."""
    import dataclasses

    from napari_medcnn.cohort.task import CohortOptions, task_id
    from napari_medcnn.models.checkpoint import default_model_path, read_card

    card = read_card(default_model_path())
    opts = CohortOptions()
    same = task_id(card.model_id, opts, card)
    assert same == task_id(card.model_id, opts, dataclasses.replace(card))
    assert same.startswith(card.model_id + ":")
    for change in (
        {"temperature": card.temperature * 1.1},
        {"tta": ["flip"]},
        {"domain": {**card.domain, "threshold": 0.5}},
    ):
        other = dataclasses.replace(card, **change)
        assert task_id(card.model_id, opts, other) != same
    volume = dataclasses.replace(opts, scope="volume")
    assert task_id(card.model_id, volume, card) != same
