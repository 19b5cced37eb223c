"""Model bundles on disk: checksums, discovery in the model folders, and import (torch-free).

Every file a manifest lists must match its SHA-256 before anything reads it
(``verify_bundle``, ``read_verified``); ``find_bundles`` lists the bundles of the
built-in and user folders; ``import_bundle`` installs a bundle folder or zip
after verifying it.  The UI may import this module: it never loads weights.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from medview.engine.manifest import MANIFEST_NAME, ModelCard, WeightFile, load_manifest
from medview.errors import ChecksumError, ModelError

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
