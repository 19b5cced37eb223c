"""Model bundles: the manifest, its validation, checksums and discovery (torch-free).

A bundle is a folder holding ``manifest.json`` and the files it lists (safetensors
weights; for the skin model also a skops forest).  The manifest is pure data: no
expressions and no import strings.  ``task`` and ``arch`` must be ids this build of
MedView knows (``ARCHITECTURES``), and every file must match the SHA-256 the
manifest records before anything reads it.  The UI may import this module: it
parses and verifies, it never loads weights (that is ``medview.engine.weights``).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medview.errors import ChecksumError, ModelError
from medview.tasks import ARCHITECTURES, ClinicalTask

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a manifest is a page of JSON; anything larger is not one

#: clinical tasks the engine has a pipeline for (the manifest's ``task``)
TASKS = frozenset(ClinicalTask)

#: what a weights file may be: safetensors tensors or a skops random forest
WEIGHT_FORMATS = frozenset({"safetensors", "skops"})


@dataclass(frozen=True)
class WeightFile:
    """One file of a bundle: where it is (relative to the bundle), its format and checksum."""

    path: str
    sha256: str
    format: str
    role: str = "weights"  # "weights", "snapshot-3", "forest", ...


@dataclass(frozen=True)
class InputSpec:
    """What the model expects, so pipelines prepare inputs exactly as training did."""

    modality: str  # "CT", "audio", "photo"
    size: tuple[int, ...] = ()  # (height, width) of an image input, () for audio
    channels: int = 1
    hu_window: tuple[float, float] | None = None  # CT intensity clip (low, high) in HU
    normalisation: str = "none"  # "zscore", "minmax", "imagenet", "none"
    sample_rate: int | None = None  # audio, Hz
    extra: Mapping[str, Any] = field(default_factory=dict)  # task-specific (segment length, chunks, ...)
    #: DICOM Body Part Examined terms (PS3.16 Annex L) of the series the model is meant for; () = any
    body_parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataProvenance:
    """Where the weights came from; ``demo`` puts the "not for diagnosis" banner on every result."""

    dataset: str
    split: str
    counts: Mapping[str, int]
    demo: bool
    synthetic: bool = False
    imagenet_backbone: str | None = None  # which backbone was ImageNet-initialised, if any
    notes: str = ""


@dataclass(frozen=True)
class ModelCard:
    """A validated manifest, with the folder its files are in."""

    id: str
    version: str
    task: str
    arch: str
    arch_args: Mapping[str, Any]
    weights: tuple[WeightFile, ...]
    input: InputSpec
    class_names: tuple[str, ...]
    thresholds: Mapping[str, float]
    target_layer: str | None
    trained_on: DataProvenance
    metrics: Mapping[str, float]
    library_versions: Mapping[str, str]
    created: str
    bundle_dir: Path

    @property
    def label(self) -> str:
        """``id`` and ``version`` as shown next to every result."""
        return f"{self.id} {self.version}"

    @property
    def is_demo(self) -> bool:
        return self.trained_on.demo or self.trained_on.synthetic

    @property
    def identity(self) -> tuple[str, tuple[str, ...]]:
        """The bundle's folder and the checksums of its files: what caches of its loaded networks are keyed by
        (a bundle replaced in place has other checksums)."""
        return str(self.bundle_dir), tuple(weight.sha256 for weight in self.weights)

    def file_path(self, weight: WeightFile) -> Path:
        return self.bundle_dir / weight.path


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Typed access to a JSON object that raises ``ModelError`` naming the manifest and the key."""

    def __init__(self, data: object, where: str, path: Path) -> None:
        if not isinstance(data, dict):
            raise ModelError(f"{where}: expected a JSON object, got {type(data).__name__}", path=path)
        self.data, self.where, self.path = data, where, path

    def _fail(self, key: str, expected: str, value: object) -> ModelError:
        return ModelError(f"{self.where}{key}: expected {expected}, got {json.dumps(value)[:80]}", path=self.path)

    def get(self, key: str, expected: type | tuple[type, ...], label: str, *, default: object = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise ModelError(f"{self.where}{key}: missing (expected {label})", path=self.path)
            return default
        value = self.data[key]
        if value is None and default is None:  # an optional field written as null
            return None
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _as_tuple(expected)):
            raise self._fail(key, label, value)
        return value

    def text(self, key: str, *, default: object = ...) -> str:
        value = self.get(key, str, "a string", default=default)
        if value is not None and not value.strip() and default is ...:
            raise self._fail(key, "a non-empty string", value)
        return value

    def number(self, key: str, *, default: object = ...) -> float:
        value = self.get(key, (int, float), "a number", default=default)
        if value is not None and not _finite(value):
            raise self._fail(key, "a finite number", value)
        return value

    def child(self, key: str, *, default: object = ...) -> _Reader:
        value = self.get(key, dict, "an object", default=default)
        return _Reader(value if value is not None else {}, f"{self.where}{key}.", self.path)

    def numbers(self, key: str) -> dict[str, float]:
        child = self.child(key, default={})
        return {name: child.number(name) for name in child.data}


def _body_parts(spec: _Reader) -> tuple[str, ...]:
    """``input.body_parts``: optional list of Body Part Examined terms, kept upper-case as DICOM writes them."""
    terms = spec.get("body_parts", list, "a list of DICOM Body Part Examined terms", default=[])
    if not all(isinstance(term, str) and term.strip() for term in terms):
        raise spec._fail("body_parts", "a list of non-empty strings", terms)
    return tuple(term.strip().upper() for term in terms)


def _finite(value: float) -> bool:
    """Whether a JSON number is finite as a float (an integer beyond float's range is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _relative_file(text: str, where: str, path: Path) -> str:
    """A bundle-relative POSIX path that cannot leave the bundle folder."""
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or "\\" in text or ":" in text:
        raise ModelError(f"{where}: expected a file name inside the bundle, got {text!r}", path=path)
    return str(pure)


def parse_manifest(data: object, bundle_dir: Path, *, source: Path | None = None) -> ModelCard:
    """Validate manifest ``data`` (already decoded JSON) into a ``ModelCard``.

    Unknown schema versions, tasks and architectures are refused: a bundle made for
    a newer MedView must not be half-understood by this one.
    """
    path = source or bundle_dir / MANIFEST_NAME
    root = _Reader(data, "", path)
    schema = root.get("schema_version", int, "an integer")
    if schema != SCHEMA_VERSION:
        raise ModelError(
            f"schema_version: expected {SCHEMA_VERSION}, got {schema} (made for another MedView version)", path=path
        )
    task = root.text("task")
    if task not in TASKS:
        raise ModelError(f"task: expected one of {sorted(map(str, TASKS))}, got {task!r}", path=path)
    arch = root.text("arch")
    if arch not in ARCHITECTURES:
        raise ModelError(f"arch: expected one of {sorted(ARCHITECTURES)}, got {arch!r}", path=path)
    if ARCHITECTURES[arch] != task:
        raise ModelError(f"arch: {arch!r} serves task {str(ARCHITECTURES[arch])!r}, not {task!r}", path=path)

    weights = []
    for index, item in enumerate(root.get("weights", list, "a list of files")):
        entry = _Reader(item, f"weights[{index}].", path)
        sha = entry.text("sha256").lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise entry._fail("sha256", "64 hexadecimal digits", sha)
        file_format = entry.text("format")
        if file_format not in WEIGHT_FORMATS:
            raise entry._fail("format", f"one of {sorted(WEIGHT_FORMATS)}", file_format)
        weights.append(
            WeightFile(
                path=_relative_file(entry.text("path"), f"weights[{index}].path", path),
                sha256=sha,
                format=file_format,
                role=entry.text("role", default="weights"),
            )
        )
    if not weights:
        raise ModelError("weights: expected at least one file", path=path)

    spec = root.child("input")
    size = spec.get("size", list, "a list of integers", default=[])
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise spec._fail("size", "a list of positive integers", size)
    window = spec.get("hu_window", list, "[low, high] in HU", default=None)
    if window is not None and (
        len(window) != 2
        or not all(isinstance(v, (int, float)) and _finite(v) for v in window)
        or window[0] >= window[1]
    ):
        raise spec._fail("hu_window", "[low, high] in HU with low < high", window)
    sample_rate = spec.get("sample_rate", int, "an integer (Hz)", default=None)
    input_spec = InputSpec(
        modality=spec.text("modality"),
        size=tuple(size),
        channels=int(spec.number("channels", default=1)),
        hu_window=(float(window[0]), float(window[1])) if window is not None else None,
        normalisation=spec.text("normalisation", default="none"),
        sample_rate=sample_rate,
        extra=dict(spec.get("extra", dict, "an object", default={})),
        body_parts=_body_parts(spec),
    )

    class_names = root.get("class_names", list, "a list of class names")
    if not class_names or not all(isinstance(name, str) and name for name in class_names):
        raise root._fail("class_names", "a non-empty list of names", class_names)
    thresholds = root.numbers("thresholds")
    for name, value in thresholds.items():
        if not 0.0 <= value <= 1.0:
            raise ModelError(f"thresholds.{name}: expected a probability in [0, 1], got {value}", path=path)

    trained = root.child("trained_on")
    counts = trained.child("counts", default={})
    provenance = DataProvenance(
        dataset=trained.text("dataset"),
        split=trained.text("split"),
        counts={name: int(counts.number(name)) for name in counts.data},
        demo=trained.get("demo", bool, "true or false"),
        synthetic=trained.get("synthetic", bool, "true or false", default=False),
        imagenet_backbone=trained.text("imagenet_backbone", default=None),
        notes=trained.text("notes", default=""),
    )
    versions = root.child("library_versions", default={})
    for key in ("id", "version"):  # they name the bundle's folder on import: no path separators, no ".."
        if not _NAME.fullmatch(root.text(key)):
            raise root._fail(key, "letters, digits, '.', '_' or '-' (starting with a letter or digit)", root.text(key))
    return ModelCard(
        id=root.text("id"),
        version=root.text("version"),
        task=task,
        arch=arch,
        arch_args=dict(root.get("arch_args", dict, "an object", default={})),
        weights=tuple(weights),
        input=input_spec,
        class_names=tuple(class_names),
        thresholds=thresholds,
        target_layer=root.text("target_layer", default=None),
        trained_on=provenance,
        metrics=root.numbers("metrics"),
        library_versions={name: versions.text(name) for name in versions.data},
        created=root.text("created", default=""),
        bundle_dir=bundle_dir,
    )


def load_manifest(bundle_dir: Path | str) -> ModelCard:
    """Read and validate ``bundle_dir/manifest.json`` (checksums are checked by ``verify_bundle``)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ModelError(f"expected a manifest of at most {MAX_MANIFEST_BYTES} bytes, got {size}", path=path)
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError("no manifest.json: not a model bundle", path=bundle_dir) from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"unreadable manifest ({error})", path=path) from error
    except RecursionError as error:  # json nests with Python's stack: "[[[[..." a few thousand deep overflows it
        raise ModelError("unreadable manifest (nested too deeply to be a manifest)", path=path) from error
    return parse_manifest(data, bundle_dir, source=path)


def manifest_dict(card: ModelCard) -> dict[str, Any]:
    """The JSON form of ``card`` (what ``training`` writes as manifest.json)."""
    data = asdict(card)
    del data["bundle_dir"]
    data["schema_version"] = SCHEMA_VERSION
    spec = data["input"]
    spec["size"] = list(spec["size"])
    if spec["hu_window"] is not None:
        spec["hu_window"] = list(spec["hu_window"])
    spec["body_parts"] = list(spec["body_parts"])
    data["class_names"] = list(card.class_names)
    return data


def write_manifest(card: ModelCard) -> Path:
    """Write ``card`` as the manifest of its bundle folder; returns the manifest path."""
    path = card.bundle_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest_dict(card), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- checksums


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (weights can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_bundle(card: ModelCard) -> None:
    """Check every file of the bundle against its recorded SHA-256; ``ChecksumError`` names the first that fails."""
    for weight in card.weights:
        path = card.file_path(weight)
        try:
            actual = sha256_file(path)
        except FileNotFoundError as error:
            raise ModelError(f"bundle {card.label}: file listed in the manifest is missing", path=path) from error
        except OSError as error:
            raise ModelError(f"bundle {card.label}: file cannot be read ({error})", path=path) from error
        _check_digest(card, weight, actual)


def read_verified(card: ModelCard, weight: WeightFile) -> bytes:
    """The bytes of one bundle file, checked against its SHA-256: what is parsed is exactly what was verified."""
    path = card.file_path(weight)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ModelError(f"bundle {card.label}: file listed in the manifest is missing", path=path) from error
    except OSError as error:
        raise ModelError(f"bundle {card.label}: file cannot be read ({error})", path=path) from error
    _check_digest(card, weight, hashlib.sha256(data).hexdigest())
    return data


def _check_digest(card: ModelCard, weight: WeightFile, actual: str) -> None:
    if actual != weight.sha256:
        raise ChecksumError(
            f"bundle {card.label}: checksum mismatch (manifest {weight.sha256[:12]}…, file {actual[:12]}…); "
            "the file was changed or damaged, the model will not be loaded",
            path=card.file_path(weight),
        )


# --------------------------------------------------------------------------- discovery


@dataclass
class BundleScan:
    """Bundles found in the model folders, and the folders that are not valid bundles (with why)."""

    cards: list[ModelCard] = field(default_factory=list)
    problems: list[ModelError] = field(default_factory=list)


def find_bundles(folders: Sequence[Path | str] | Iterable[Path | str]) -> BundleScan:
    """Every bundle directly inside ``folders`` (one sub-folder per bundle), manifests validated.

    Checksums are not computed here (that reads every weight file); they are
    checked by ``verify_bundle`` right before a model loads.  When two folders hold
    the same id and version, the first folder wins (built-in before user folder).
    """
    scan = BundleScan()
    seen: set[tuple[str, str]] = set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for candidate in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not (candidate / MANIFEST_NAME).is_file():
                continue
            try:
                card = load_manifest(candidate)
            except ModelError as error:
                scan.problems.append(error)
                continue
            if (card.id, card.version) in seen:
                continue
            seen.add((card.id, card.version))
            scan.cards.append(card)
    return scan


# --------------------------------------------------------------------------- import

MAX_BUNDLE_BYTES = 4 << 30  # a zip that unpacks to more than this is refused (zip bombs)


def import_bundle(
    source: Path | str, models_dir: Path | str, *, other_folders: Sequence[Path | str] = (), replace: bool = False
) -> ModelCard:
    """Copy a bundle folder or zip into ``models_dir`` after validating its manifest and every checksum.

    The bundle lands in ``models_dir/<id>-<version>``.  A bundle with the same id
    and version in ``models_dir`` is refused unless ``replace``; one in
    ``other_folders`` (the built-in bundles, which take precedence) always is,
    since the import would be hidden.  Nothing is left behind when the bundle is
    refused: it is staged in a temporary folder next to the destination and
    renamed into place only once it has verified; a replaced bundle is moved
    aside first and put back if the swap fails.
    """
    source, models_dir = Path(source), Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=models_dir))
    try:
        if source.is_dir():
            _copy_folder(source, staging / "bundle")
        elif zipfile.is_zipfile(source):
            _extract_zip(source, staging / "bundle")
        elif source.suffix.lower() == ".zip" and source.is_file():
            raise ModelError("not a readable zip archive (damaged, or another kind of file)", path=source)
        elif source.exists():
            raise ModelError("expected a bundle folder or a .zip of one", path=source)
        else:
            raise ModelError("not found", path=source)
        root = _bundle_root(staging / "bundle", source)
        try:
            card = load_manifest(root)
            verify_bundle(card)
        except ModelError as error:  # it names the staged copy, a temporary folder: name what the user imported
            inside = str(error).replace(f"{root}{os.sep}", "").replace(str(root), "").lstrip(": ")
            raise type(error)(inside, path=source) from error
        for existing in find_bundles(other_folders).cards:
            if (existing.id, existing.version) == (card.id, card.version):
                raise ModelError(f"bundle {card.label} is already installed in {existing.bundle_dir}", path=source)
        installed = {(c.id, c.version): c.bundle_dir for c in find_bundles([models_dir]).cards}
        target = models_dir / f"{card.id}-{card.version}"
        previous = installed.get((card.id, card.version), target if target.exists() else None)
        if previous is not None and not replace:
            raise ModelError(f"bundle {card.label} is already installed in {previous}", path=source)
        if previous is not None:
            previous.rename(staging / "previous")
        try:
            root.rename(target)
        except OSError:
            if previous is not None:
                (staging / "previous").rename(previous)
            raise
        return load_manifest(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_folder(source: Path, destination: Path) -> None:
    """Copy a bundle folder, refusing symbolic links (they could point anywhere) and oversized contents."""
    total = 0
    for folder, subfolders, files in os.walk(source):
        for name in subfolders + files:
            path = Path(folder) / name
            if path.is_symlink():
                raise ModelError(f"the bundle holds a symbolic link ({path.relative_to(source)})", path=source)
            if path.is_file():
                total += path.stat().st_size
    if total > MAX_BUNDLE_BYTES:
        raise ModelError(f"the bundle holds more than {MAX_BUNDLE_BYTES >> 30} GiB", path=source)
    shutil.copytree(source, destination, symlinks=True)


def _extract_zip(source: Path, destination: Path) -> None:
    """Extract a bundle zip, refusing members that would land outside ``destination`` or unpack too large."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
            if sum(member.file_size for member in members) > MAX_BUNDLE_BYTES:
                raise ModelError(f"the zip unpacks to more than {MAX_BUNDLE_BYTES >> 30} GiB", path=source)
            for member in members:
                if not member.filename:
                    raise ModelError("the zip holds a member without a name", path=source)
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
                    raise ModelError(f"zip member {member.filename!r} points outside the bundle", path=source)
            archive.extractall(destination)
    # damaged, encrypted or oddly compressed members fail with any of these while they are extracted
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError, zlib.error,
            lzma.LZMAError) as error:  # fmt: skip
        raise ModelError(f"unreadable zip ({error})", path=source) from error


def _bundle_root(folder: Path, source: Path) -> Path:
    """The folder holding manifest.json: ``folder`` itself or its single sub-folder (a zipped folder)."""
    if (folder / MANIFEST_NAME).is_file():
        return folder
    if not folder.is_dir():  # a zip with no file in it extracts nothing
        raise ModelError("the zip holds no files: not a model bundle", path=source)
    # a zip made by macOS Finder carries resource forks in __MACOSX/: not part of the bundle
    children = [child for child in folder.iterdir() if child.is_dir() and child.name != "__MACOSX"]
    if len(children) == 1 and (children[0] / MANIFEST_NAME).is_file():
        return children[0]
    raise ModelError("no manifest.json at the top of the bundle: not a model bundle", path=source)
