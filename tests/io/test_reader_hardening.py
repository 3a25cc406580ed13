"""The reader against hostile files: native decoder panics become clear
errors, native decoder output stays off the terminal, folder-wide findings
are reported once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from napari_medcnn._reader import napari_get_reader
from napari_medcnn.cli import main
from napari_medcnn.deid.pixels import blank_rectangles
from napari_medcnn.io import ScanReadError, load
from napari_medcnn.io.dicom.decoders import decode
from napari_medcnn.io.dicom.native import (
    NativeDecoderPanic,
    is_native_panic,
    native_decoder,
    summarise_output,
)

#: The mutation that makes pylibjpeg-rle panic (found by a search over
#: single-byte changes of the frame): byte 1948 of the RLE frame of
#: MR_small_RLE.dcm is a run header 0x3F ("copy the next 64 bytes"); as 0x00
#: ("copy 1 byte") the bytes after it are read as run headers, and the
#: decoder writes past its 8,192-byte output.
RLE_PANIC_OFFSET = 1948
RLE_PANIC_ORIGINAL = 0x3F
RLE_PANIC_VALUE = 0x00
RLE_PANIC_MESSAGE = "index out of bounds: the len is 8192"


def _rle_frame(path: str | Path) -> bytes:
    return next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))


@pytest.fixture
def rle_panic(tmp_path) -> Path:
    """MR_small_RLE.dcm (pydicom) with the one byte changed that makes
    pylibjpeg-rle panic; written to ``tmp_path/rle_panic.dcm``."""
    src = get_testdata_file("MR_small_RLE.dcm", download=False)
    raw = bytearray(Path(src).read_bytes())
    at = raw.find(_rle_frame(src))  # the frame's first byte in the file
    assert at > 0 and raw[at + RLE_PANIC_OFFSET] == RLE_PANIC_ORIGINAL
    raw[at + RLE_PANIC_OFFSET] = RLE_PANIC_VALUE
    out = tmp_path / "rle_panic.dcm"
    out.write_bytes(bytes(raw))
    return out


def test_the_recipe_makes_pylibjpeg_rle_panic(rle_panic):
    """The precondition: the mutated frame really panics the Rust decoder,
    with an exception that ``except Exception`` would not catch."""
    from rle.utils import decode_pixel_data

    frame = _rle_frame(rle_panic)
    with pytest.raises(BaseException) as info:
        decode_pixel_data(frame, version=2, rows=64, columns=64, bits_allocated=16)
    assert not isinstance(info.value, Exception), (
        "pylibjpeg-rle no longer panics on this frame; find a new recipe with "
        "scripts/fuzz_reader.py"
    )
    assert is_native_panic(info.value)
    assert RLE_PANIC_MESSAGE in str(info.value)


def test_rle_panic_is_a_clear_error_naming_file_and_syntax(rle_panic, capfd):
    with pytest.raises(ScanReadError) as err:
        load(rle_panic)
    msg = str(err.value)
    assert msg.startswith(f"{rle_panic}: ")
    assert "RLE Lossless" in msg and "panicked" in msg and RLE_PANIC_MESSAGE in msg
    assert isinstance(err.value.__cause__, NativeDecoderPanic)
    # the Rust panic hook's text (and backtrace) did not reach the terminal
    err_text = capfd.readouterr().err
    assert "panicked" not in err_text and RLE_PANIC_MESSAGE not in err_text


def test_rle_panic_through_the_napari_reader(rle_panic):
    reader = napari_get_reader(str(rle_panic))
    assert reader is not None
    with pytest.raises(ScanReadError, match="RLE Lossless"):
        reader(str(rle_panic))


def test_rle_panic_when_blanking_pixels_for_deidentification(rle_panic):
    ds = pydicom.dcmread(rle_panic)
    with pytest.raises(ValueError, match="cannot decode the pixels") as err:
        blank_rectangles(ds, [(0, 0, 4, 4)])
    assert str(rle_panic) in str(err.value) and "panicked" in str(err.value)
    assert isinstance(err.value.__cause__.__cause__, NativeDecoderPanic)


def test_the_unmutated_file_still_decodes_with_pylibjpeg_rle():
    src = get_testdata_file("MR_small_RLE.dcm", download=False)
    (scan,) = load(src)
    np.testing.assert_array_equal(scan.data, pydicom.dcmread(src).pixel_array)


def _sof_precision_157(tmp_path) -> Path:
    """SC_rgb_dcmtk_+eb+cy+s2.dcm (JPEG baseline) with the sample precision
    of its SOF0 segment set to 157 (found by scripts/fuzz_reader.py: Pillow
    rejects the frame, python-gdcm segfaults on it)."""
    src = get_testdata_file("SC_rgb_dcmtk_+eb+cy+s2.dcm", download=False)
    raw = bytearray(Path(src).read_bytes())
    frame = next(generate_frames(pydicom.dcmread(src).PixelData, number_of_frames=1))
    at, sof = raw.find(frame), frame.find(b"\xff\xc0")
    assert at > 0 and sof > 0 and raw[at + sof + 4] == 8  # 8-bit samples
    raw[at + sof + 4] = 157
    out = tmp_path / "sof157.dcm"
    out.write_bytes(bytes(raw))
    return out


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gdcm_is_never_handed_a_frame_that_pillow_rejected(tmp_path):
    path = _sof_precision_157(tmp_path)
    # the precondition, in a child process: python-gdcm dies on this frame
    gdcm = _python(
        "import sys, pydicom, napari_medcnn.io.dicom.decoders\n"
        "from pydicom.pixels import get_decoder\n"
        "from pydicom.pixels.utils import as_pixel_options\n"
        "ds = pydicom.dcmread(sys.argv[1])\n"
        "get_decoder(ds.file_meta.TransferSyntaxUID).as_array(\n"
        "    ds, decoding_plugin='gdcm', **as_pixel_options(ds))\n",
        str(path),
    )
    assert gdcm.returncode < 0, "python-gdcm no longer crashes on this frame"
    # the reader, also in a child process (a crash would end the tests)
    reader = _python(
        "import sys\n"
        "from napari_medcnn.io import ScanReadError, load\n"
        "try:\n    load(sys.argv[1])\n"
        "except ScanReadError as exc:\n    print(exc)\n",
        str(path),
    )
    assert reader.returncode == 0, reader.stderr
    msg = reader.stdout.strip()
    assert msg.startswith(f"{path}: could not decode the pixel data (JPEG Baseline")
    reasons = msg[len(str(path)) :]
    assert "pillow:" in reasons and "imagecodecs:" in reasons
    assert "gdcm" not in reasons


def test_plugin_order_leaves_out_crash_prone_plugins():
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        JPEGLossless,
        JPEGLosslessSV1,
    )

    from napari_medcnn.io.dicom.decoders import plugin_order

    assert plugin_order(JPEGBaseline8Bit, ("gdcm", "pillow", "imagecodecs")) == [
        "pillow",
        "imagecodecs",
    ]
    assert plugin_order(JPEGLosslessSV1, ("gdcm", "imagecodecs")) == ["imagecodecs"]
    assert plugin_order(JPEGLossless, ("gdcm",)) == ["gdcm"]  # nothing else
    assert plugin_order(ExplicitVRLittleEndian, ()) == [""]


def test_jpeg_lossless_decodes_like_gdcm_through_imagecodecs():
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import as_pixel_options

    for name in ("JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"):
        path = get_testdata_file(name, download=False)
        ds = pydicom.dcmread(path)
        dec = get_decoder(ds.file_meta.TransferSyntaxUID)
        ref, _ = dec.as_array(ds, decoding_plugin="gdcm", **as_pixel_options(ds))
        arr, _ = decode(path, ds)
        np.testing.assert_array_equal(arr, ref)


def test_a_real_native_library_printing_is_captured(capfd):
    """OpenJPEG inside python-gdcm prints "Invalid number of tiles" for
    this file: the text is captured, none reaches the terminal."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import as_pixel_options

    path = get_testdata_file("JPEG2000-embedded-sequence-delimiter.dcm", download=False)
    ds = pydicom.dcmread(path)
    dec = get_decoder(ds.file_meta.TransferSyntaxUID)
    with pytest.raises(Exception), native_decoder() as out:  # noqa: B017
        dec.as_array(ds, decoding_plugin="gdcm", **as_pixel_options(ds))
    assert "Invalid number of tiles" in out.text
    assert "Invalid number of tiles" not in capfd.readouterr().err


def test_jpeg2000_error_names_file_syntax_and_each_plugin(capfd):
    path = get_testdata_file("JPEG2000-embedded-sequence-delimiter.dcm", download=False)
    with pytest.raises(ScanReadError) as err:
        load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: could not decode the pixel data (JPEG 2000")
    assert "pylibjpeg: " in msg and "gdcm" not in msg[len(path) :]
    assert capfd.readouterr().err == ""


def test_native_decoder_captures_descriptor_2_and_restores_it(capfd):
    before = os.fstat(2)
    with native_decoder() as out:
        os.write(2, b"[ERROR] Invalid number of tiles : 3 x 1\n")
    assert "Invalid number of tiles" in out.text
    assert out.summary() == "[ERROR] Invalid number of tiles : 3 x 1"
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)
    os.write(2, b"visible again\n")
    assert capfd.readouterr().err == "visible again\n"


def test_native_decoder_from_many_threads_restores_descriptor_2(capfd):
    before = os.fstat(2)
    texts: list[str] = []
    start = threading.Barrier(4)

    def work(i: int) -> None:
        start.wait()
        with native_decoder() as out:
            os.write(2, f"thread {i} says\n".encode())
        texts.append(out.text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(f"thread {i} says" in "".join(texts) for i in range(4))
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_native_decoder_never_catches_interrupts(exc):
    with pytest.raises(exc), native_decoder():
        raise exc()


def test_native_decoder_leaves_ordinary_errors_alone():
    with pytest.raises(ValueError, match="plain"), native_decoder():
        raise ValueError("plain")


def test_summary_drops_rust_boilerplate_and_known_text():
    text = (
        "thread '<unnamed>' panicked at src/lib.rs:10:5:\n"
        "index out of bounds: the len is 8192 but the index is 8192\n"
        "note: run with `RUST_BACKTRACE=1` environment variable\n"
        "stack backtrace:\n   0: rust_begin_unwind\n"
    )
    assert summarise_output(text) == (
        "index out of bounds: the len is 8192 but the index is 8192"
    )
    assert summarise_output(text, known="index out of bounds: the len is 8192 "
                            "but the index is 8192") == ""  # fmt: skip
    assert len(summarise_output("x" * 1000)) == 300


# -- folder-level findings, once ---------------------------------------------
@pytest.fixture
def folder_with_extras(two_series_folder, rle_panic):
    """Two image series, an SR and a file whose decoder panics."""
    root = two_series_folder.root
    shutil.copy(get_testdata_file("test-SR.dcm", download=False), root / "sr.dcm")
    bad = root / "broken" / "rle_panic.dcm"
    bad.parent.mkdir()
    shutil.copy(rle_panic, bad)
    return root, bad


def test_folder_findings_are_reported_once_at_folder_level(folder_with_extras):
    root, bad = folder_with_extras
    scans = load(root)
    assert sorted(s.modality for s in scans) == ["CT", "MR"]
    codes = [i.code for i in scans.folder_quality.issues]
    assert codes == ["skipped_non_image", "skipped_unreadable"]
    unreadable = scans.folder_quality.issues[1]
    assert unreadable.severity == "warning" and str(bad) in unreadable.message
    assert "RLE Lossless" in unreadable.message
    for scan in scans:
        assert not scan.quality.codes() & set(codes)
        assert str(bad) not in json.dumps(scan.layer_metadata())


def test_info_prints_folder_findings_once(folder_with_extras, capsys):
    root, bad = folder_with_extras
    main(["info", str(root)])
    text = capsys.readouterr().out
    out = json.loads(text)
    folders = [e for e in out if "folder_quality" in e]
    assert len(folders) == 1 and folders[0]["input"] == str(root)
    assert not folders[0]["folder_quality"]["ok"]
    assert sorted(e["modality"] for e in out if "name" in e) == ["CT", "MR"]
    assert text.count(str(bad)) == 1
    assert text.count("non-image DICOM series not loaded") == 1


def test_a_single_file_has_an_empty_folder_report(ct_small_path):
    scans = load(ct_small_path)
    assert len(scans) == 1 and scans.folder_quality.issues == []
