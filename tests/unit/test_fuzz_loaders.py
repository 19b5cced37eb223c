"""Fast subset of the loader fuzzing (``python -m bench.fuzz_loaders`` is the long run), and regressions it found.

Every loader the user can reach gets a few dozen mutated inputs (fixed Hypothesis
seed, so the same inputs every run) through the same worker process, memory cap
and per-input timeout as the long run: none may crash or hang, and every
rejection must be a ``MedviewError`` naming the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.fuzz_loaders import WorkerPool, run_loader
from bench.fuzzing import (
    BUILDERS,
    TARGETS,
    Case,
    Context,
    Corpus,
    _replace_value,
    dicom_elements,
    prepare_corpus,
    run_target,
)
from medview.errors import DicomError, InputError, MedviewError, ModelError

#: inputs per loader: about 250 in all, a few seconds per loader on two cores
INPUTS = {
    "dicom_file": 24,
    "dicom_folder": 12,
    "dicom_zip": 16,
    "dicomdir": 20,
    "volume": 30,
    "label_map": 16,
    "audio": 30,
    "annotations": 24,
    "photo": 30,
    "manifest": 24,
    "bundle_zip": 24,
}


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return prepare_corpus(tmp_path_factory.mktemp("fuzz_corpus"))


@pytest.fixture(scope="module")
def pool(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> WorkerPool:
    workers = WorkerPool(corpus, jobs=1, work_root=tmp_path_factory.mktemp("fuzz_work"))
    yield workers
    workers.close()


def test_every_loader_has_a_fast_subset() -> None:
    assert set(INPUTS) == set(BUILDERS) == set(TARGETS)


@pytest.mark.parametrize("loader", list(INPUTS))
def test_loader_survives_fuzzing(loader: str, pool: WorkerPool, corpus: Corpus) -> None:
    stats = run_loader(loader, INPUTS[loader], pool, corpus, seed=20240601)
    failures = "\n".join(f"{f.status}: {f.message}\n{f.details}" for f in stats.failures)
    assert stats.tried == INPUTS[loader]
    assert (stats.crashed, stats.hung, stats.generator_errors) == (0, 0, 0), failures
    assert stats.accepted + stats.rejected == stats.tried
    assert stats.rejected > 0, "the mutations never reached the loader's error paths"


# --------------------------------------------------------------------------- the verdicts themselves


def test_a_rejection_that_does_not_name_the_file_is_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case({"annotations-0001.txt": b"0.1 0.2 0 0\n"}, "annotations-0001.txt")

    def unnamed(*_args: object) -> tuple[str, list[str]]:
        raise InputError("something is wrong")

    def named(path: Path, *_args: object) -> tuple[str, list[str]]:
        raise InputError("something is wrong", path=path)

    monkeypatch.setitem(TARGETS, "annotations", unnamed)
    assert run_target("annotations", case, tmp_path / "a", Context()).status == "crashed"
    monkeypatch.setitem(TARGETS, "annotations", named)
    assert run_target("annotations", case, tmp_path / "b", Context()).status == "rejected"


def test_any_other_exception_is_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> tuple[str, list[str]]:
        raise IndexError("list index out of range")

    monkeypatch.setitem(TARGETS, "annotations", broken)
    outcome = run_target("annotations", Case({"a-1.txt": b""}, "a-1.txt"), tmp_path / "c", Context())
    assert outcome.status == "crashed"
    assert "IndexError" in outcome.message


# --------------------------------------------------------------------------- regressions found by the fuzzing


def _with_value(data: bytes, tag: int, value: bytes) -> bytes:
    element = next(e for e in dicom_elements(data) if e.tag == tag and e.depth == 0)
    return _replace_value(data, element, value)


def test_tag_browser_lists_an_element_pydicom_cannot_convert(shared_data: Path, tmp_path: Path) -> None:
    """HighBit (US) with 3 bytes: iterating the dataset raised BytesLengthException out of ``tag_rows``."""
    from medview.io.dicom import DicomSource, tag_rows

    data = (shared_data / "dicom_ct" / "pydicom-3.0.2-testfiles" / "CT_small.dcm").read_bytes()
    path = tmp_path / "high-bit.dcm"
    path.write_bytes(_with_value(data, 0x00280102, b"\x01\x02\x03"))
    rows = tag_rows(DicomSource(path))
    unreadable = [row for row in rows if row.tag == "(0028,0102)"]
    assert len(unreadable) == 1
    assert unreadable[0].value.startswith("<unreadable:")
    assert any(row.keyword == "PatientName" for row in rows)  # the elements after it are still listed


def test_dicom_whose_photometric_contradicts_its_jpeg2000_data_does_not_abort(
    shared_data: Path, tmp_path: Path
) -> None:
    """An RGB PhotometricInterpretation over a one-component JPEG 2000 plane made GDCM call std::terminate.

    Both decoders took the file to GDCM (SimpleITK, and pydicom's gdcm plugin);
    the process died with SIGABRT.  Now pylibjpeg decodes the one plane there is.
    Run in a child process: a regression must fail this test, not kill the run.
    """
    data = (shared_data / "dicom_ct" / "pydicom-data" / "693_J2KR.dcm").read_bytes()
    path = tmp_path / "rgb-j2k.dcm"
    path.write_bytes(_with_value(data, 0x00280004, b"RGB "))
    script = (
        "import sys\n"
        "from medview.errors import DicomError\n"
        "from medview.io.dicom import load_series, scan_paths\n"
        "scan = scan_paths([sys.argv[1]])\n"
        "try:\n"
        "    print('loaded', load_series(scan.series[0]).shape)\n"
        "except DicomError as error:\n"
        "    print('refused:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("loaded (1, 512, 512)"), done.stdout


def test_manifest_nested_too_deeply_is_a_model_error(tmp_path: Path) -> None:
    """``[[[[...]]]]`` 100,000 deep overflowed json's recursion: RecursionError instead of ModelError."""
    from medview.engine.manifest import load_manifest

    bundle = tmp_path / "deep-bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ModelError, match="deep-bundle"):
        load_manifest(bundle)


def test_corpus_seeds_load_unmutated(corpus: Corpus) -> None:
    """The seeds are valid files: a rejection in the fuzzing comes from a mutation, not from the seed."""
    from medview.io.audio import read_recording
    from medview.io.photo import read_photo
    from medview.io.volume_files import read_volume

    for path in corpus.audio:
        assert read_recording(path).samples.size > 0
    for path in corpus.photos:
        assert read_photo(path).rgb.ndim == 3
    for path in corpus.volumes:
        assert read_volume(path).voxels.ndim == 3
    for path in corpus.manifests:
        assert json.loads(path.read_text(encoding="utf-8"))["schema_version"] == 1
    assert issubclass(DicomError, MedviewError)


def test_zip_with_a_damaged_central_directory_is_a_dicom_error(shared_data: Path, tmp_path: Path) -> None:
    """``is_zipfile`` only checks the end record: ``ZipFile`` then raised BadZipFile out of ``scan_paths``."""
    import zipfile

    from medview.io.dicom import scan_paths

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.write(shared_data / "dicom_ct" / "pydicom-3.0.2-testfiles" / "CT_small.dcm", "CT_small.dcm")
    data = bytearray(archive.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central : central + 4] = b"XXXX"
    archive.write_bytes(bytes(data))
    with pytest.raises(DicomError, match=r"study\.zip: not a readable zip archive"):
        scan_paths([archive])


def _scan_problem(path: Path) -> str:
    from medview.io.dicom import scan_paths

    scan = scan_paths([path])
    assert not scan.series
    assert len(scan.problems) == 1
    return str(scan.problems[0])


def test_number_of_frames_the_file_cannot_hold_is_refused_at_scan(shared_data: Path, tmp_path: Path) -> None:
    """NumberOfFrames 65536 inserted in a 39 kB file: 65536 headers were built and decoded one by one (a hang)."""
    from bench.fuzzing import _encode_element

    data = (shared_data / "dicom_ct" / "pydicom-3.0.2-testfiles" / "CT_small.dcm").read_bytes()
    rows = next(e for e in dicom_elements(data) if e.tag == 0x00280010 and e.depth == 0)
    path = tmp_path / "frames.dcm"
    path.write_bytes(data[: rows.offset] + _encode_element(0x00280008, b"IS", b"65536 ", True) + data[rows.offset :])
    problem = _scan_problem(path)
    assert "frames.dcm" in problem
    assert "NumberOfFrames 65536" in problem


@pytest.mark.parametrize("slope", [b"nan ", b"inf "])
def test_non_finite_rescale_slope_is_refused_at_scan(shared_data: Path, tmp_path: Path, slope: bytes) -> None:
    """RescaleSlope NaN or inf passed the scan and failed in ``load_series`` with ValueError/OverflowError."""
    data = (shared_data / "dicom_ct" / "pydicom-3.0.2-testfiles" / "CT_small.dcm").read_bytes()
    path = tmp_path / "slope.dcm"
    path.write_bytes(_with_value(data, 0x00281053, slope))
    problem = _scan_problem(path)
    assert "slope.dcm" in problem
    assert "RescaleSlope" in problem


def _header(z: float, index: int, *, position: tuple[float, float, float] | None = None, size: int = 4) -> object:
    from medview.io.dicom import DicomSource, SliceHeader

    return SliceHeader(
        source=DicomSource(Path(f"slice-{index}.dcm")),
        frame=None,
        sop_instance_uid=str(index),
        position=position or (0.0, 0.0, z),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0) if position is None else (0.6, 0.0, 0.8, 0.0, 1.0, 0.0),
        rows=size,
        columns=size,
        pixel_spacing=(1.0, 1.0),
        slice_thickness=1.0,
        instance_number=index,
        rescale=(1.0, 0.0),
    )


def test_a_far_away_slice_is_an_irregular_gap_not_millions_of_missing_slices() -> None:
    """A position damaged to 1e300 mm made ``sort_slices`` add 1e300 "missing" slices (memory, then a hang)."""
    from medview.io.dicom import sort_slices

    geometry = sort_slices([_header(z, i) for i, z in enumerate((0.0, 1.0, 2.0, 1e300))])
    assert geometry.depth == 4
    assert not geometry.missing
    assert any("irregular gap" in note for note in geometry.warnings)


def test_positions_whose_projection_overflows_fall_back_to_instance_numbers() -> None:
    """Distances along the normal overflowed to inf: ``round(inf)`` raised OverflowError."""
    from medview.io.dicom import sort_slices

    headers = [_header(0, 1, position=(-1.7e308, 0.0, 1.7e308)), _header(0, 2, position=(0.0, 0.0, 1.0))]
    geometry = sort_slices(headers)
    assert geometry.depth == 2
    assert [h.instance_number for h in geometry.slices] == [1, 2]


def test_a_series_too_large_to_hold_is_refused_before_allocating() -> None:
    """Rows and Columns 65535: ``np.full`` raised MemoryError (or, without a cap, ate the machine's memory)."""
    from medview.io.dicom import SeriesInfo, load_series

    info = SeriesInfo("1.2", "", "", "", "", "", "", None, "CT", [_header(0.0, 1, size=65535)])
    with pytest.raises(DicomError, match=r"slice-1\.dcm: the series would be 1x65535x65535 voxels"):
        load_series(info)


_READ_VOLUME_SCRIPT = (
    "import sys\n"
    "from medview.errors import MedviewError\n"
    "from medview.io.volume_files import read_volume\n"
    "try:\n"
    "    read_volume(sys.argv[1])\n"
    "    print('loaded')\n"
    "except MedviewError as error:\n"
    "    print('refused:', error)\n"
)


def _read_volume_in_child(path: Path) -> str:
    """``read_volume`` in a child process: these inputs crashed or hung ITK, which must not take the test run along."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_VOLUME_SCRIPT, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def test_metaimage_with_a_negative_ndims_line_is_refused_not_a_segfault(shared_data: Path, tmp_path: Path) -> None:
    """A second ``NDims = -1`` line (MetaIO takes the last) made ITK's reader segfault or never return."""
    import SimpleITK as sitk

    path = tmp_path / "mask.mha"
    mask = shared_data / "liver_ct" / "totalsegmentator" / "example_seg_fast" / "liver.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(mask)), str(path))
    head, _, rest = path.read_bytes().partition(b"\n")
    path.write_bytes(head + b"\nNDims = -1\n" + rest)
    assert _read_volume_in_child(path).startswith(f"refused: {path}: expected NDims of 1 to 10")


def test_nrrd_claiming_ascii_data_that_is_binary_is_refused_not_a_segfault(shared_data: Path, tmp_path: Path) -> None:
    """``encoding: ascii`` over gzip data made ITK's NRRD reader segfault."""
    data = (shared_data / "liver_ct" / "dcmqi" / "liver_seg.nrrd").read_bytes()
    assert b"encoding: gzip" in data
    path = tmp_path / "ascii.nrrd"
    path.write_bytes(data.replace(b"encoding: gzip", b"encoding: ascii", 1))
    assert "says encoding ascii, but its data is not text" in _read_volume_in_child(path)


def test_nifti_with_an_infinite_sform_is_refused_not_a_hang(shared_data: Path, tmp_path: Path) -> None:
    """srow_y set to inf: ITK's NIfTI reader never returned."""
    import gzip
    import struct

    volume = shared_data / "liver_ct" / "totalsegmentator" / "example_ct_sm.nii.gz"
    raw = bytearray(gzip.decompress(volume.read_bytes()))
    struct.pack_into("<f", raw, 300, float("inf"))  # srow_y[1]
    path = tmp_path / "inf.nii"
    path.write_bytes(bytes(raw))
    assert "infinite or NaN spacing or orientation" in _read_volume_in_child(path)


def test_dicom_seg_without_segmentation_type_is_an_input_error(shared_data: Path, tmp_path: Path) -> None:
    """highdicom raised AttributeError (SegmentationType) while the mask was being placed."""
    from medview.io.dicom import load_series, scan_paths
    from medview.io.volume_files import read_label_map

    data = (shared_data / "liver_ct" / "dcmqi" / "liver.dcm").read_bytes()
    element = next(e for e in dicom_elements(data) if e.tag == 0x00620001 and e.depth == 0)
    path = tmp_path / "no-type-seg.dcm"
    path.write_bytes(data[: element.offset] + data[element.value_offset + element.length :])
    reference = load_series(scan_paths([shared_data / "dicom_ct" / "dcmqi_ct-3slice"]).series[0])
    with pytest.raises(InputError, match=r"no-type-seg\.dcm: unreadable DICOM SEG"):
        read_label_map(path, reference)


def test_flac_announcing_more_samples_than_memory_holds_is_an_input_error(shared_data: Path, tmp_path: Path) -> None:
    """STREAMINFO total samples set to 2^36-1: soundfile sized its buffer from it and raised MemoryError.

    Run in a child with a 2 GiB address-space cap, as the fuzzing runs it.
    """
    import soundfile

    path = tmp_path / "long.flac"
    samples, rate = soundfile.read(shared_data / "lung_sound" / "icbhi_sample" / "104_1b1_Lr_sc_Litt3200.wav")
    soundfile.write(path, samples[: rate * 2], rate, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    total_at = 4 + 4 + 13  # "fLaC", the block header, then STREAMINFO's 36-bit total sample count ends 18 bytes in
    data[total_at] |= 0x0F
    data[total_at + 1 : total_at + 5] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    script = (
        "import resource, sys\n"
        "from medview.errors import InputError\n"
        "from medview.io.audio import read_recording\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "try:\n"
        "    read_recording(sys.argv[1])\n"
        "    print('loaded')\n"
        "except InputError as error:\n"
        "    print('refused:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"refused: {path}:"), done.stdout


KIDNEY_MANIFEST = Path(__file__).resolve().parents[2] / "resources" / "models" / "kidney-demo" / "manifest.json"


def _manifest(tmp_path: Path, edit: Callable[[dict], object]) -> Path:
    document = json.loads(KIDNEY_MANIFEST.read_text(encoding="utf-8"))
    edit(document)
    bundle = tmp_path / "huge-bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps(document), encoding="utf-8")
    return bundle


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["trained_on"]["counts"].update(volumes=10**400),
        lambda d: d["input"].update(hu_window=[10**400, 10**401]),
    ],
    ids=["count", "hu_window"],
)
def test_manifest_integer_beyond_float_range_is_a_model_error(tmp_path: Path, edit: Callable[[dict], object]) -> None:
    """JSON integers like 10**400: ``math.isfinite``/``float`` raised OverflowError instead of ModelError."""
    from medview.engine.manifest import load_manifest

    with pytest.raises(ModelError, match="huge-bundle"):
        load_manifest(_manifest(tmp_path, edit))


def _bundle_zip(tmp_path: Path, weights: bytes, claimed: bytes) -> Path:
    import hashlib
    import zipfile

    document = json.loads(KIDNEY_MANIFEST.read_text(encoding="utf-8"))
    name = document["weights"][0]["path"]
    document["weights"] = [{**document["weights"][0], "sha256": hashlib.sha256(claimed).hexdigest()}]
    archive = tmp_path / "my-bundle.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("manifest.json", json.dumps(document))
        writer.writestr(name, weights)
    return archive


def test_bundle_import_errors_name_the_zip_not_the_staging_folder(tmp_path: Path) -> None:
    """A checksum mismatch named ``models/.import-xxxx/bundle/...``, a temporary folder deleted right after."""
    from medview.engine.bundles import import_bundle

    archive = _bundle_zip(tmp_path, b"damaged weights", b"the weights")
    with pytest.raises(ModelError, match=r"my-bundle\.zip: .*checksum mismatch") as caught:
        import_bundle(archive, tmp_path / "models")
    assert ".import-" not in str(caught.value)


def test_empty_bundle_zip_is_a_model_error(tmp_path: Path) -> None:
    """A zip without members extracted nothing: ``iterdir`` on the missing folder raised FileNotFoundError."""
    import zipfile

    from medview.engine.bundles import import_bundle

    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w"):
        pass
    with pytest.raises(ModelError, match=r"empty\.zip: the zip holds no files"):
        import_bundle(archive, tmp_path / "models")


def _nrrd_pair(shared_data: Path, folder: Path, edit: Callable[[bytes], bytes]) -> Path:
    """A detached NRRD (.nhdr + .raw) written by SimpleITK from a real mask, its header edited."""
    import SimpleITK as sitk

    header = folder / "mask.nhdr"
    mask = shared_data / "liver_ct" / "totalsegmentator" / "example_seg_fast" / "liver.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(mask)), str(header))
    header.write_bytes(edit(header.read_bytes()))
    return header


def test_detached_nrrd_claiming_ascii_over_raw_data_is_refused(shared_data: Path, tmp_path: Path) -> None:
    """``encoding: ascii`` in a .nhdr whose data file is binary: ITK's NRRD reader segfaulted."""
    header = _nrrd_pair(shared_data, tmp_path, lambda text: text.replace(b"encoding: raw", b"encoding: ascii"))
    assert b"encoding: ascii" in header.read_bytes()
    assert "says encoding ascii, but its data is not text" in _read_volume_in_child(header)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda text: text.replace(b"dimension: 3", b"dimension: 3.5"), "expected an NRRD dimension of 1 to 16"),
        (lambda text: text.replace(b"kinds:", b"kinds\x80\x80\x80:"), "the NRRD header holds a damaged line"),
    ],
    ids=["dimension", "garbage"],
)
def test_damaged_nrrd_header_is_refused_not_a_segfault(
    shared_data: Path, tmp_path: Path, edit: Callable[[bytes], bytes], reason: str
) -> None:
    """A fractional dimension or a run of 0x80 bytes in a field line made ITK's NRRD reader segfault."""
    assert reason in _read_volume_in_child(_nrrd_pair(shared_data, tmp_path, edit))


def test_nifti_with_a_damaged_header_size_is_refused_not_a_hang(shared_data: Path, tmp_path: Path) -> None:
    """sizeof_hdr -1: ITK's NIfTI reader never returned."""
    import gzip
    import struct

    mask = shared_data / "liver_ct" / "totalsegmentator" / "example_seg.nii.gz"
    raw = bytearray(gzip.decompress(mask.read_bytes()))
    struct.pack_into("<i", raw, 0, -1)
    path = tmp_path / "bad-size.nii"
    path.write_bytes(bytes(raw))
    assert "its header size is neither 348" in _read_volume_in_child(path)


def test_bundle_zip_member_without_a_name_is_a_model_error(tmp_path: Path) -> None:
    """A member whose name length was zeroed: zipfile raised IndexError while extracting."""
    from medview.engine.bundles import import_bundle

    archive = _bundle_zip(tmp_path, b"the weights", b"the weights")
    data = bytearray(archive.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central + 28 : central + 30] = b"\x00\x00"  # the first member's file name length
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"my-bundle\.zip: "):
        import_bundle(archive, tmp_path / "models")
