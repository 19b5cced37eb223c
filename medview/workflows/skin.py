"""The skin workspace's work on lesion photos, without Qt: read, classify, audit, explain.

Two generators that a UI worker iterates, each yielding a typed update per
photo for the GUI thread to apply:

- :func:`classify_photos` reads each photo not read yet and classifies it
  with the forest's votes but no saliency map, so a dropped photo's verdict
  shows in a quarter of a second and the gallery sorts by suspicion at once;
- :func:`explain_photos` computes the saliency maps (integrated gradients,
  ~3x a verdict's time), which the workspace asks for only while the map is
  to be shown.

The audit records are written here, on the worker: each is fsync-ed (up to
~150 ms), which the GUI thread must not wait for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medview.audit import Outcome, audit_log
from medview.engine.api import InferenceService, PhotoResult
from medview.engine.fitness import photo_fitness
from medview.engine.manifest import ModelCard
from medview.errors import InputError
from medview.io.photo import Photo, read_photo, thumbnail
from medview.progress import CancelCheck, ProgressCallback
from medview.workflows.audit import audit_model_run


@dataclass(frozen=True)
class PhotoJob:
    """One photo to work on: where it is, and the picture when it was read before."""

    path: Path
    photo: Photo | None = None


@dataclass(frozen=True)
class PhotoRead:
    """The photo ``index`` of the jobs was read."""

    index: int
    photo: Photo
    thumbnail: np.ndarray


@dataclass(frozen=True)
class PhotoUnreadable:
    """The photo ``index`` could not be read: ``problem`` names the file and says why."""

    index: int
    problem: str


@dataclass(frozen=True)
class PhotoClassified:
    """The photo ``index`` has a verdict (without a saliency map), and what about it the model was not validated on."""

    index: int
    result: PhotoResult
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class PhotoExplained:
    """The photo ``index``'s result, now with its saliency map."""

    index: int
    result: PhotoResult


PhotoUpdate = PhotoRead | PhotoUnreadable | PhotoClassified | PhotoExplained


def classify_photos(
    jobs: Sequence[PhotoJob],
    engine: InferenceService | None,
    card: ModelCard | None,
    progress: ProgressCallback,
    cancelled: CancelCheck,
    *,
    thumbnail_side: int,
) -> Iterator[PhotoUpdate]:
    """Read (when not read yet), audit and classify each photo in turn; stop between photos when cancelled.

    Without an engine or a model the photos are only read.  A photo read here comes with its thumbnail,
    ``thumbnail_side`` pixels on its longer side.
    """
    for index, job in enumerate(jobs):
        if cancelled():
            return
        progress(index, len(jobs), f"photo {index + 1} of {len(jobs)}")
        photo = job.photo
        if photo is None:
            try:
                photo = read_photo(job.path)
            except InputError as error:
                audit_log().record_open(
                    "photo", job.path, outcome=Outcome.SERIOUS_FAILURE, outcome_description=str(error)
                )
                yield PhotoUnreadable(index, str(error))
                continue
            audit_log().record_open("photo", job.path)
            yield PhotoRead(index, photo, thumbnail(photo.rgb, thumbnail_side))
        if engine is not None and card is not None:
            result = engine.classify_skin(card, photo.rgb, explain=False)
            audit_model_run(result.provenance, target=job.path)
            yield PhotoClassified(index, result, tuple(photo_fitness(card, photo.rgb)))
    progress(len(jobs), len(jobs), "photos done")


def explain_photos(
    jobs: Sequence[tuple[Photo, PhotoResult]],
    engine: InferenceService,
    card: ModelCard,
    progress: ProgressCallback,
    cancelled: CancelCheck,
) -> Iterator[PhotoExplained]:
    """The saliency map of each classified photo (by ``card``, which gave its result), in the order given."""
    for index, (photo, result) in enumerate(jobs):
        if cancelled():
            return
        progress(index, len(jobs), f"saliency map {index + 1} of {len(jobs)}")
        saliency = engine.explain_skin(card, photo.rgb)
        yield PhotoExplained(index, replace(result, saliency=saliency))
    progress(len(jobs), len(jobs), "saliency maps done")
