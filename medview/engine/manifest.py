"""Model bundles: the manifest and its validation (torch-free; checksums, discovery and import: ``bundles``).

A bundle is a folder holding ``manifest.json`` and the files it lists (safetensors
weights; for the skin model also a skops forest).  The manifest is pure data: no
expressions and no import strings.  ``task`` and ``arch`` must be ids this build of
MedView knows (``ARCHITECTURES``), and every file must match the SHA-256 the
manifest records before anything reads it (``medview.engine.bundles``).  The UI may
import this module: it parses, it never loads weights (that is ``medview.engine.weights``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medview.errors import ModelError
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
