"""Paper 003 at inference: ImageNet CNN features of the photo -> random forest of 50 trees.

The photo is resized to the backbone's input size and min-max normalised (then
the backbone's channel mean/std), the frozen CNN gives its 1000-d last layer,
and the forest gives each class's probability (the mean of its trees' leaf
distributions: the vote share for fully grown trees, whose leaves are pure).

The saliency map explains the CNN part only, since the decision is the
forest's: it is the Grad-CAM of the feature vector's magnitudes weighted by the
forest's feature importances (the score ``sum_i importance_i * |feature_i|``),
i.e. where in the photo the CNN finds the features the forest relies on most.
Magnitudes, because a tree splits on a feature being high or low: with the
signed sum the ReLU of Grad-CAM left the map empty on 49 of 60 ISIC photos
(the weighted logits fall wherever the image is), with magnitudes on none.  It
does not say which way those features pushed the vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from medview.engine.api import ClassScores, Heatmap, PhotoResult
from medview.engine.pipelines.context import RunContext
from medview.errors import ModelError
from medview.explain import grad_cam
from medview.preprocess.image import photo_batch, resize_back

if TYPE_CHECKING:  # scikit-learn loads with the first forest (Engine.forest), not with the engine
    from sklearn.ensemble import RandomForestClassifier


def classify_photo(
    context: RunContext, forest: RandomForestClassifier, rgb: np.ndarray, *, explain: bool = True
) -> PhotoResult:
    """Benign / malignant of one RGB photo (h, w, 3), with the forest's votes and a saliency map."""
    card = context.card
    if len(card.input.size) != 2:
        raise ModelError(f"bundle {card.label}: input.size must be (height, width)", path=card.bundle_dir)
    positive = str(card.input.extra.get("positive_class", card.class_names[-1]))
    if positive not in card.class_names:
        raise ModelError(f"bundle {card.label}: positive_class {positive!r} is not a class name", path=card.bundle_dir)
    mean, std = context.channel_stats()
    network = context.networks[0]
    context.step(0, 2 if explain else 1, "computing CNN features")
    batch = context.tensor(photo_batch(rgb, (card.input.size[0], card.input.size[1]), mean, std))
    with torch.no_grad():
        features = network(batch).float().cpu().numpy()
    probabilities = forest.predict_proba(features)[0]
    tree_votes = np.array([tree.predict(features)[0] for tree in forest.estimators_], dtype=int)
    names = [card.class_names[int(label)] for label in forest.classes_]
    scores = ClassScores(dict(zip(names, probabilities.tolist(), strict=True)))
    votes = {name: int((tree_votes == index).sum()) for index, name in enumerate(names)}

    saliency = None
    if explain and card.target_layer:
        context.step(1, 2, "saliency map")
        importances = torch.as_tensor(forest.feature_importances_, dtype=torch.float32, device=context.device)
        maps = grad_cam(network, batch, card.target_layer, lambda output: output.float().abs() @ importances)
        saliency = Heatmap(resize_back(maps, rgb.shape[:2])[0], target_class="forest evidence", layer=card.target_layer)
    context.step(1, 1, "done")
    return PhotoResult(
        provenance=context.provenance(threshold=context.threshold(positive)),
        scores=scores,
        positive_class=positive,
        votes=votes,
        saliency=saliency,
    )
