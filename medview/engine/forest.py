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
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree
from skops import io as skops_io

from medview.engine.bundles import read_verified
from medview.engine.manifest import ModelCard
from medview.errors import ModelError

TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


def load_forest(card: ModelCard, n_features: int) -> RandomForestClassifier:
    """The bundle's forest (its one skops file), checksum-verified, checked to fit ``n_features`` inputs."""
    files = [w for w in card.weights if w.format == "skops"]
    if len(files) != 1:
        raise ModelError(f"bundle {card.label}: expected one skops forest file, got {len(files)}", path=card.bundle_dir)
    path = card.file_path(files[0])
    data = read_verified(card, files[0])
    try:
        untrusted = [name for name in skops_io.get_untrusted_types(data=data) if name not in TRUSTED_TYPES]
        if untrusted:
            raise ModelError(
                f"bundle {card.label}: the forest file holds types MedView does not load: {', '.join(untrusted[:5])}",
                path=path,
            )
        forest = skops_io.loads(data, trusted=list(TRUSTED_TYPES))
    except ModelError:
        raise
    except Exception as error:  # skops raises many kinds on a damaged file; all mean "unreadable"
        raise ModelError(f"bundle {card.label}: not a readable skops file ({error})", path=path) from error
    if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "estimators_"):
        raise ModelError(
            f"bundle {card.label}: expected a fitted RandomForestClassifier, got {type(forest).__name__}", path=path
        )
    if forest.n_features_in_ != n_features:
        raise ModelError(
            f"bundle {card.label}: the forest takes {forest.n_features_in_} features, the CNN gives {n_features}",
            path=path,
        )
    if not np.array_equal(forest.classes_, np.arange(len(card.class_names))):
        raise ModelError(
            f"bundle {card.label}: expected forest classes 0..{len(card.class_names) - 1} (indices into the "
            f"manifest's class names), got {list(forest.classes_)[:5]}",
            path=path,
        )
    for index, estimator in enumerate(forest.estimators_):
        problem = (
            _tree_problem(estimator.tree_, n_features)
            if isinstance(estimator, DecisionTreeClassifier) and hasattr(estimator, "tree_")
            else f"a {type(estimator).__name__}, not a fitted decision tree"
        )
        if problem:
            raise ModelError(f"bundle {card.label}: tree {index + 1} of the forest is malformed ({problem})", path=path)
    # one photo is 1-4 rows: joblib's worker threads cost more than they save (300 trees, 4 rows: 77 ms with the
    # 2 jobs training stored, 34 ms with 1)
    forest.n_jobs = 1
    return forest


def forest_votes(forest: RandomForestClassifier, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (rows, classes), as ``predict_proba`` gives them, and every tree's vote (trees, rows)
    as a class index, from one walk down the trees.

    ``predict_proba`` and then a ``predict`` per tree walked every tree twice (131 ms for 300 trees and a
    photo's 4 views, against 34 ms); a tree votes for the class its leaf holds most of, as its ``predict`` does.
    """
    leaves = forest.apply(features)  # (rows, trees)
    per_tree = np.stack([tree.tree_.value[leaves[:, index], 0, :] for index, tree in enumerate(forest.estimators_)])
    per_tree = per_tree / per_tree.sum(axis=2, keepdims=True)  # leaf class fractions, as DecisionTree.predict_proba
    return per_tree.mean(axis=0), per_tree.argmax(axis=2)


def _tree_problem(tree: Tree, n_features: int) -> str:
    """Why a fitted tree's node arrays are unsafe to use, or "" when they are sound.

    scikit-learn indexes with these arrays without bounds checks, in ``predict``
    (child and feature indices) and in ``feature_importances_`` (which writes into
    an array of ``tree.n_features`` entries at each split's feature).  Nodes are
    stored depth-first, so a child always has a larger index than its parent:
    requiring that rules out cycles as well as out-of-range children.  The arrays'
    lengths and the value array's shape are checked by scikit-learn's own loader.
    """
    if tree.n_features != n_features or tree.n_outputs != 1:
        return f"built for {tree.n_features} features and {tree.n_outputs} outputs, expected {n_features} and 1"
    count = tree.node_count
    left, right, feature = tree.children_left, tree.children_right, tree.feature
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
    return ""
