"""The random forest of a skin bundle, read with skops: only scikit-learn's own types, never a pickle.

``skops.io.load`` rebuilds objects from a schema and refuses every type that is
not on its trusted list.  Beyond skops' defaults MedView trusts exactly one
type, ``sklearn.tree._tree.Tree`` (a forest cannot exist without it), and
because scikit-learn indexes a tree's node arrays without bounds checks, every
tree's child and feature indices are checked before the forest is used: a
crafted file is refused instead of crashing the process in ``predict``.  The
result must be a ``RandomForestClassifier`` that takes the CNN's feature vector.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from skops import io as skops_io

from medview.engine.manifest import ModelCard, verify_bundle
from medview.errors import ModelError

TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


def load_forest(card: ModelCard, n_features: int) -> RandomForestClassifier:
    """The bundle's forest (file with role "forest"), checksum-verified, checked to fit ``n_features`` inputs."""
    verify_bundle(card)
    files = [w for w in card.weights if w.format == "skops"]
    if len(files) != 1:
        raise ModelError(f"bundle {card.label}: expected one skops forest file, got {len(files)}", path=card.bundle_dir)
    path = card.file_path(files[0])
    try:
        untrusted = [name for name in skops_io.get_untrusted_types(file=path) if name not in TRUSTED_TYPES]
        if untrusted:
            raise ModelError(
                f"bundle {card.label}: the forest file holds types MedView does not load: {', '.join(untrusted[:5])}",
                path=path,
            )
        forest = skops_io.load(path, trusted=list(TRUSTED_TYPES))
    except ModelError:
        raise
    except Exception as error:  # skops raises many kinds on a damaged file; all mean "unreadable"
        raise ModelError(f"bundle {card.label}: not a readable skops file ({error})", path=path) from error
    if not isinstance(forest, RandomForestClassifier):
        raise ModelError(
            f"bundle {card.label}: expected a RandomForestClassifier, got {type(forest).__name__}", path=path
        )
    if forest.n_features_in_ != n_features:
        raise ModelError(
            f"bundle {card.label}: the forest takes {forest.n_features_in_} features, the CNN gives {n_features}",
            path=path,
        )
    if len(forest.classes_) != len(card.class_names):
        raise ModelError(
            f"bundle {card.label}: the forest knows {len(forest.classes_)} classes, the manifest names "
            f"{len(card.class_names)}",
            path=path,
        )
    for index, estimator in enumerate(forest.estimators_):
        problem = _tree_problem(estimator.tree_, n_features, len(forest.classes_))
        if problem:
            raise ModelError(f"bundle {card.label}: tree {index + 1} of the forest is malformed ({problem})", path=path)
    return forest


def _tree_problem(tree: object, n_features: int, n_classes: int) -> str:
    """Why a fitted tree's node arrays are unsafe to predict with, or "" when they are sound.

    scikit-learn stores nodes depth-first, so a child always has a larger index
    than its parent: that rules out cycles as well as out-of-range indices.
    """
    count = tree.node_count
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if count < 1 or not (len(left) == len(right) == len(feature) == count):
        return "node arrays of unequal length"
    nodes = np.arange(count)
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        return "a node with only one child"
    if np.any((left[~leaf] <= nodes[~leaf]) | (left[~leaf] >= count)):
        return "a left child index out of order or out of range"
    if np.any((right[~leaf] <= nodes[~leaf]) | (right[~leaf] >= count)):
        return "a right child index out of order or out of range"
    if np.any((feature[~leaf] < 0) | (feature[~leaf] >= n_features)):
        return "a split on a feature the CNN does not give"
    if tree.value.shape[0] != count or tree.value.shape[-1] != n_classes:
        return f"leaf values of shape {tree.value.shape} for {count} nodes and {n_classes} classes"
    return ""
