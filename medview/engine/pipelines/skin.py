"""Paper 003 at inference: ImageNet CNN features of the photo -> random forest of 50 trees.

The photo is resized to the backbone's input size and min-max normalised (then
the backbone's channel mean/std), the frozen CNN gives its 1000-d last layer,
and the forest gives each class's probability (the mean of its trees' leaf
distributions: the vote share for fully grown trees, whose leaves are pure).

The saliency map explains the CNN part only, since the decision is the
forest's (paper 003 has no saliency map: it is MedView's, computed beside the
paper's resize, min-max, CNN features and forest, which it leaves untouched).
Its score is how far the photo's 1000 features lie from those of a
featureless photo (the photo's own mean colour, flat, in the network's input
space), weighted by the forest's feature importances: ``sum_i importance_i *
|feature_i - reference_i|``, i.e. how much the photo shows of what the forest
relies on.  Distances, because a tree splits on a feature being high or low:
with the signed sum the map was empty on 49 of 60 ISIC photos.

The map is the integrated gradients of that score from the featureless photo
to the photo, per 8x8 pixel block (``medview.explain.integrated_gradients``),
not Grad-CAM of the bundle's ``target_layer``: EfficientNet-Lite0's last map
is 7x7, and its cells next to the image border answer to the zero padding of
the convolutions whatever the photo shows, so Grad-CAM drew the same square
frame, one cell in from the edges, on every photo (and on a flat skin-coloured
image), beside or across the lesion.  On 61 ISIC photos (tests/gui/test_skin_panel
measures a few), the frame ring (10-30% in from the edges, 48% of the area) held
56% of the Grad-CAM saliency and the lesion 1.25x the skin's saliency per pixel;
with integrated gradients the ring holds 39% and the lesion 2.1x the skin's.
It does not say which way those features pushed the vote.

A bundle whose input spec lists ``vote_views`` (test-time augmentation of the
features, chosen in training by cross-validated AUC) has the forest vote on the
photo in each of those orientations (``medview.preprocess.image.PHOTO_VIEWS``:
mirrored, turned; a dermoscopy photo has no up or left), and the class
probabilities are the mean over them.  ``mirror_votes`` (bundles 1.2.x) means
the photo and its three mirror images.  The saliency map stays the photo's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from medview.engine.api import ClassScores, Heatmap, PhotoResult
from medview.engine.manifest import ModelCard
from medview.engine.pipelines.context import RunContext
from medview.errors import ModelError
from medview.explain import integrated_gradients
from medview.preprocess.image import MIRROR_VIEWS, PHOTO_VIEWS, photo_batch, resize_back

#: input-spec key: the orientations of the photo the forest votes on (``PHOTO_VIEWS`` names); vote shares averaged
VOTE_VIEWS = "vote_views"
#: input-spec key of the 1.2.x bundles: the forest votes on the photo and its 3 mirror images
MIRROR_VOTES = "mirror_votes"

#: each view of ``PHOTO_VIEWS`` on a prepared (n, 3, h, w) batch; ``photo_view`` does the same to a photo
_TENSOR_VIEWS = {
    "photo": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "hvflip": lambda x: x.flip(-2, -1),
    "rot90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "antitranspose": lambda x: x.flip(-2, -1).transpose(-2, -1),
}


def vote_views(card: ModelCard) -> tuple[str, ...]:
    """The orientations of the photo that ``card``'s forest votes on (just the photo, for the paper's setting)."""
    extra = card.input.extra
    views = tuple(extra.get(VOTE_VIEWS) or (MIRROR_VIEWS if extra.get(MIRROR_VOTES) else ("photo",)))
    unknown = [view for view in views if view not in PHOTO_VIEWS]
    if unknown or not views or views[0] != "photo":
        raise ModelError(
            f"bundle {card.label}: {VOTE_VIEWS} must start with 'photo' and name only {', '.join(PHOTO_VIEWS)}",
            path=card.bundle_dir,
        )
    size = tuple(card.input.size)
    if set(views) - set(MIRROR_VIEWS) and (len(size) != 2 or size[0] != size[1]):
        message = f"bundle {card.label}: turned views need a square input.size, not {size}"
        raise ModelError(message, path=card.bundle_dir)
    return views


if TYPE_CHECKING:  # scikit-learn loads with the first forest (Engine.forest), not with the engine
    from sklearn.ensemble import RandomForestClassifier


def classify_photo(
    context: RunContext, forest: RandomForestClassifier, rgb: np.ndarray, *, explain: bool = True
) -> PhotoResult:
    """Benign / malignant of one RGB photo (h, w, 3), with the forest's votes and a saliency map."""
    card = context.card
    positive = str(card.input.extra.get("positive_class", card.class_names[-1]))
    if positive not in card.class_names:
        raise ModelError(f"bundle {card.label}: positive_class {positive!r} is not a class name", path=card.bundle_dir)
    network = context.networks[0]
    context.step(0, 2 if explain else 1, "computing CNN features")
    batch = _prepared(context, rgb)
    # turning the prepared tensor equals preparing the turned photo (the resize to a square, min-max and the
    # channel statistics commute with it), which is how training computed each view's features
    views = torch.cat([_TENSOR_VIEWS[view](batch) for view in vote_views(card)])
    with torch.no_grad():
        features = network(views).float().cpu().numpy()
    from medview.engine.forest import forest_votes  # scikit-learn is loaded: the forest exists

    view_probabilities, tree_votes = forest_votes(forest, features)
    probabilities = view_probabilities.mean(axis=0)
    names = [card.class_names[int(label)] for label in forest.classes_]
    scores = ClassScores(dict(zip(names, probabilities.tolist(), strict=True)))
    votes = {name: int((tree_votes == index).sum()) for index, name in enumerate(names)}

    saliency = None
    if explain:
        context.step(1, 2, "saliency map")
        saliency = _saliency(context, forest, batch, (rgb.shape[0], rgb.shape[1]))
    context.step(1, 1, "done")
    return PhotoResult(
        provenance=context.provenance(threshold=context.threshold(positive)),
        scores=scores,
        positive_class=positive,
        votes=votes,
        saliency=saliency,
        views=len(views),
    )


def photo_saliency(context: RunContext, forest: RandomForestClassifier, rgb: np.ndarray) -> Heatmap:
    """The saliency map of one RGB photo, on its own: for a photo whose verdict came first (``explain=False``).

    The map costs ~3x the verdict (integrated gradients, 0.4 s on 2 cores), so the app asks for it only
    when the map is to be shown.
    """
    context.step(0, 1, "saliency map")
    saliency = _saliency(context, forest, _prepared(context, rgb), (rgb.shape[0], rgb.shape[1]))
    context.step(1, 1, "done")
    return saliency


def _prepared(context: RunContext, rgb: np.ndarray) -> torch.Tensor:
    """The photo as the network's input batch (1, 3, h, w): resized, min-max, channel statistics."""
    size = context.card.input.size
    if len(size) != 2:
        card = context.card
        raise ModelError(f"bundle {card.label}: input.size must be (height, width)", path=card.bundle_dir)
    mean, std = context.channel_stats()
    return context.tensor(photo_batch(rgb, (size[0], size[1]), mean, std))


def _saliency(
    context: RunContext, forest: RandomForestClassifier, batch: torch.Tensor, shape: tuple[int, int]
) -> Heatmap:
    """Integrated gradients of the forest-weighted feature distance from a featureless photo (module docstring)."""
    network = context.networks[0]
    reference = batch.mean(dim=(2, 3), keepdim=True).expand_as(batch).contiguous()  # featureless: mean colour
    with torch.no_grad():
        reference_features = network(reference).float()
    importances = torch.as_tensor(forest.feature_importances_, dtype=torch.float32, device=context.device)
    maps = integrated_gradients(
        network, batch, reference, lambda output: (output.float() - reference_features).abs() @ importances
    )
    return Heatmap(
        resize_back(maps, shape)[0], target_class="forest evidence", layer="input pixels (integrated gradients)"
    )
