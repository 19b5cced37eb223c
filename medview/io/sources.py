"""What a file name says before it is read: which files open as volumes, and ``archive.zip!member`` labels."""

from __future__ import annotations

from pathlib import Path

#: files SimpleITK opens as volumes (NIfTI, NRRD, MetaImage); everything else is scanned as DICOM
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume_name(path: Path) -> bool:
    """Whether ``path``'s name ends in one of ``VOLUME_SUFFIXES`` (case-insensitive; ``.nii.gz`` included)."""
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def split_archive_label(label: str) -> tuple[Path, str | None]:
    """``"archive.zip!inner/file.dcm"`` -> (archive, member); a plain file -> (file, None).

    The inverse of ``medview.io.volume.source_path_label``.  A file whose own
    name holds a "!" stays a file.
    """
    if "!" not in label or Path(label).is_file():
        return Path(label), None
    archive, _, member = label.partition("!")
    return Path(archive), member or None
