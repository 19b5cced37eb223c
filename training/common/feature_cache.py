"""An on-disk cache of a frozen network's features, one ``.npy`` per (file, network, variant).

Paper 003's CNN is frozen, so a photo's features never change while the
network's weights and the preparation stay the same: a re-fit of the forest
(another seed, another forest setting, another split) reads them back instead
of running the CNN again.  The key is the SHA-256 of the file's bytes (a
renamed copy hits, an edited file misses), a digest of the network's weights
as they ship (fp16-rounded or not) and the name of the photo variant (the
photo itself, or a flip of it).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("training.cache")

#: bump when the preparation of an input changes (resize, min-max, channel statistics)
PREPARATION_VERSION = "photo_batch-1"


def default_cache_dir() -> Path:
    """``$MEDVIEW_TRAIN_CACHE``, else ``$XDG_CACHE_HOME/medview-train``, else ``~/.cache/medview-train``."""
    if os.environ.get("MEDVIEW_TRAIN_CACHE"):
        return Path(os.environ["MEDVIEW_TRAIN_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medview-train"


def network_digest(network: nn.Module, name: str) -> str:
    """A short digest of ``network``'s weights (and ``name``): the cache's network part of the key."""
    digest = hashlib.sha256(f"{name}|{PREPARATION_VERSION}".encode())
    for key, tensor in sorted(network.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{name}-{digest.hexdigest()[:16]}"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FeatureCache:
    """Features of files under ``root/<network key>/<file sha256>-<variant>.npy``.

    ``features(paths, variant, compute)`` returns one row per path, calling
    ``compute`` only for the paths not cached yet (in one call, so it can
    batch them) and storing what it returns.
    """

    def __init__(self, root: Path, network_key: str) -> None:
        self.folder = Path(root) / network_key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _entry(self, path: Path, variant: str) -> Path:
        return self.folder / f"{file_digest(path)}-{variant}.npy"

    def features(
        self, paths: Sequence[Path], variant: str, compute: Callable[[Sequence[Path]], np.ndarray]
    ) -> np.ndarray:
        """Features of every path (n, d), computed for the missing ones only."""
        entries = [self._entry(path, variant) for path in paths]
        missing = [index for index, entry in enumerate(entries) if not entry.is_file()]
        rows: dict[int, np.ndarray] = {}
        if missing:
            computed = np.asarray(compute([paths[index] for index in missing]), dtype=np.float32)
            if computed.shape[0] != len(missing):
                raise ValueError(f"feature computation returned {computed.shape[0]} rows for {len(missing)} files")
            for index, row in zip(missing, computed, strict=True):
                temporary = entries[index].with_suffix(".tmp.npy")
                np.save(temporary, row)
                temporary.replace(entries[index])  # atomic: a killed run never leaves half a file
                rows[index] = row
        for index, entry in enumerate(entries):
            if index not in rows:
                rows[index] = np.load(entry)
        self.hits += len(paths) - len(missing)
        self.misses += len(missing)
        return np.stack([rows[index] for index in range(len(paths))])


def cached_network_features(
    network: nn.Module,
    name: str,
    cache_dir: Path | None,
    paths: Sequence[Path],
    variant: str,
    compute: Callable[[Sequence[Path]], np.ndarray],
) -> np.ndarray:
    """``compute(paths)`` through a :class:`FeatureCache` for ``network`` (no cache when ``cache_dir`` is None)."""
    if cache_dir is None:
        return np.asarray(compute(paths), dtype=np.float32)
    with torch.no_grad():
        cache = FeatureCache(cache_dir, network_digest(network, name))
    result = cache.features(paths, variant, compute)
    log.info("features %s: %d cached, %d computed (%s)", variant, cache.hits, cache.misses, cache.folder)
    return result
