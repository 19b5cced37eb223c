"""CT and photo pipelines with small random-weight bundles on real inputs: shapes, ranges, the input grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.ensemble import RandomForestClassifier

from medview.engine.manifest import ARCHITECTURES, DataProvenance, InputSpec
from medview.engine.pipelines.skin import MIRROR_VOTES, VOTE_VIEWS
from medview.engine.service import Engine
from medview.errors import InputError, ModelError
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.models import create_model
from medview.preprocess.image import PHOTO_VIEWS, adjacent_slices, photo_view, resize_back, resize_stack, window_to_unit
from training.export import export_bundle

DEMO = DataProvenance(dataset="random weights", split="none", counts={}, demo=True)
LIVER_ARGS = {"in_channels": 1, "num_classes": 2, "base_channels": 8, "depth": 4}


@pytest.fixture(scope="module")
def sample_volume(sample_series_dir: Path) -> Volume:
    return load_dicom([sample_series_dir])


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    _random_bundle(
        folder,
        "liver-random",
        "liver_eas_unet",
        LIVER_ARGS,
        InputSpec(modality="CT", size=(64, 64), channels=1, hu_window=(-200.0, 250.0)),
        ("background", "liver"),
        thresholds={"liver": 0.5},
    )
    return folder


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Engine:
    return Engine([models_dir], device_preference="cpu")


def _random_bundle(
    folder: Path,
    model_id: str,
    arch: str,
    arch_args: dict,
    spec: InputSpec,
    class_names: tuple[str, ...],
    *,
    network: torch.nn.Module | None = None,
    trained_on: DataProvenance = DEMO,
    **extra: object,
) -> None:
    """Bundle ``folder/model_id`` of ``arch`` with random weights (or ``network``), for its allow-listed task."""
    export_bundle(
        [network if network is not None else create_model(arch, **arch_args).eval()],
        folder / model_id,
        model_id=model_id,
        version="0.0.1",
        task=ARCHITECTURES[arch],
        arch=arch,
        arch_args=arch_args,
        input_spec=spec,
        class_names=class_names,
        trained_on=trained_on,
        metrics={},
        **extra,
    )


# --------------------------------------------------------------------------- shared preprocessing


def test_window_resize_and_neighbours() -> None:
    hu = np.array([[-1000, -200], [25, 3000]], dtype=np.int16)
    np.testing.assert_allclose(window_to_unit(hu, (-200, 250)), [[0, 0], [0.5, 1]])
    with pytest.raises(ValueError, match="low < high"):
        window_to_unit(hu, (250, -200))
    stack = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    assert resize_stack(stack, (3, 4)).shape == (4, 3, 4)
    assert resize_back(resize_stack(stack, (12, 16)), (6, 8)).shape == (4, 6, 8)
    neighbours = adjacent_slices(stack, [0, 3], 3)
    assert neighbours.shape == (2, 3, 6, 8)
    np.testing.assert_array_equal(neighbours[0, 0], stack[0])  # the edge repeats
    np.testing.assert_array_equal(neighbours[1, 2], stack[3])
    np.testing.assert_array_equal(neighbours[1, 0], stack[2])


# --------------------------------------------------------------------------- liver


def test_liver_pipeline_on_the_bundled_ct(engine: Engine, sample_volume: Volume) -> None:
    (card,) = engine.cards("liver_segmentation")
    painted: dict[int, np.ndarray] = {}
    result = engine.segment_liver(
        card, sample_volume, on_slices=lambda first, maps: painted.update({first + i: m for i, m in enumerate(maps)})
    )
    assert result.probability.shape == sample_volume.shape
    assert result.mask.shape == sample_volume.shape
    assert sorted(painted) == list(range(sample_volume.shape[0]))  # every slice painted as it was computed
    assert float(result.probability.min()) >= 0.0
    assert float(result.probability.max()) <= 1.0
    np.testing.assert_array_equal(result.mask, result.probability >= 0.5)
    voxel_ml = float(np.prod(sample_volume.spacing)) / 1000
    assert result.volume_ml == pytest.approx(result.mask.sum() * voxel_ml)
    assert result.provenance.threshold == 0.5
    assert result.provenance.demo

    # one slice by hand: window, resize to the model grid, softmax, back to the CT grid
    network = engine.networks(card)[0]
    z = sample_volume.shape[0] // 2
    unit = window_to_unit(sample_volume.voxels[z : z + 1], (-200.0, 250.0))
    with torch.no_grad():
        logits = network(torch.from_numpy(resize_stack(unit, (64, 64))[:, None]))
    expected = resize_back(torch.softmax(logits, 1)[:, 1].numpy(), sample_volume.shape[1:])[0]
    np.testing.assert_allclose(result.probability[z].astype(np.float32), expected, atol=2e-3)


def test_liver_pipeline_refuses_an_unknown_structure(engine: Engine, sample_volume: Volume) -> None:
    from medview.engine.pipelines import segmentation
    from medview.engine.pipelines.context import RunContext

    (card,) = engine.cards("liver_segmentation")
    context = RunContext(card=card, networks=engine.networks(card), device=torch.device("cpu"), device_name="CPU")
    with pytest.raises(ModelError, match="no class 'spleen'"):
        segmentation.segment(context, sample_volume, structure="spleen")


# --------------------------------------------------------------------------- skin


def _skin_bundle(folder: Path, name: str, size: tuple[int, int] = (224, 224), **extra: object) -> None:
    """A random-weight skin bundle whose forest of 50 trees was fitted on random features."""
    torch.manual_seed(0)
    network = create_model("skin_cnn_features", backbone="efficientnet_lite0").eval()
    rng = np.random.default_rng(0)
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(rng.random((60, 1000)), np.arange(60) % 2)
    _random_bundle(
        folder,
        name,
        "skin_cnn_features",
        {"backbone": "efficientnet_lite0"},
        InputSpec(
            modality="photo",
            size=size,
            channels=3,
            normalisation="minmax",
            extra={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "positive_class": "malignant", **extra},
        ),
        ("benign", "malignant"),
        network=network,
        thresholds={"malignant": 0.5},
        forest=forest,
    )


@pytest.fixture(scope="module")
def skin_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("skin-models")
    _skin_bundle(folder, "skin-random")
    return folder


def _isic_photo(shared_data: Path) -> np.ndarray:
    photo = next(iter(sorted((shared_data / "skin").rglob("*.jp*g"))))
    return np.asarray(Image.open(photo).convert("RGB"))


def test_skin_pipeline_votes_and_saliency_on_a_real_photo(skin_models: Path, shared_data: Path) -> None:
    engine = Engine([skin_models], device_preference="cpu")
    (card,) = engine.cards("skin_lesion")
    rgb = _isic_photo(shared_data)
    result = engine.classify_skin(card, rgb)
    assert sum(result.votes.values()) == 50
    # a forest of fully grown trees: the probability is the vote share
    assert result.scores.probabilities["malignant"] == pytest.approx(result.votes["malignant"] / 50)
    assert result.label == ("malignant" if result.scores.probabilities["malignant"] >= 0.5 else "benign")
    assert result.saliency is not None
    assert result.saliency.values.shape == rgb.shape[:2]
    assert result.saliency.values.max() > 0


def test_forest_votes_are_predict_proba_and_each_trees_predict_in_one_walk() -> None:
    from medview.engine.forest import forest_votes

    rng = np.random.default_rng(3)
    forest = RandomForestClassifier(
        n_estimators=30, min_samples_leaf=3, class_weight="balanced_subsample", random_state=0
    ).fit(rng.random((80, 20)), (np.arange(80) % 3 == 0).astype(int))  # impure leaves, weighted classes
    rows = rng.random((4, 20))
    probabilities, votes = forest_votes(forest, rows)
    np.testing.assert_allclose(probabilities, forest.predict_proba(rows))
    assert votes.shape == (30, 4)
    np.testing.assert_array_equal(votes, np.stack([tree.predict(rows) for tree in forest.estimators_]))


def test_mirror_votes_average_the_photo_and_its_three_mirror_images(
    skin_models: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A ``mirror_votes`` bundle gives what the plain one gives, averaged over the four mirrored photos."""
    _skin_bundle(tmp_path, "skin-mirrors", **{MIRROR_VOTES: True})
    plain_engine, mirror_engine = Engine([skin_models], "cpu"), Engine([tmp_path], "cpu")
    (plain,), (mirrors,) = plain_engine.cards("skin_lesion"), mirror_engine.cards("skin_lesion")
    rgb = _isic_photo(shared_data)
    result = mirror_engine.classify_skin(mirrors, rgb, explain=False)
    views = (rgb, rgb[:, ::-1], rgb[::-1], rgb[::-1, ::-1])
    each = [plain_engine.classify_skin(plain, np.ascontiguousarray(view), explain=False) for view in views]
    assert len({one.votes["malignant"] for one in each}) > 1  # the mirror images vote differently: the test can fail
    assert result.views == 4
    assert sum(result.votes.values()) == 4 * 50
    assert result.votes["malignant"] == sum(one.votes["malignant"] for one in each)
    assert result.scores.probabilities["malignant"] == pytest.approx(
        np.mean([one.scores.probabilities["malignant"] for one in each])
    )
    assert "50 trees, each voting on the photo and 3 mirrored or turned copies of it" in result.votes_text()
    assert each[0].votes_text().startswith(f"{each[0].votes['benign']} of 50 trees vote benign")


def test_vote_views_average_the_photo_in_all_eight_orientations(
    skin_models: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A ``vote_views`` bundle turns the prepared tensor; the result equals the plain bundle's on each turned photo,
    as training computed them (``photo_view``), averaged."""
    _skin_bundle(tmp_path, "skin-dihedral", **{VOTE_VIEWS: list(PHOTO_VIEWS)})
    plain_engine, turning_engine = Engine([skin_models], "cpu"), Engine([tmp_path], "cpu")
    (plain,), (turning,) = plain_engine.cards("skin_lesion"), turning_engine.cards("skin_lesion")
    rgb = _isic_photo(shared_data)
    assert rgb.shape[0] == rgb.shape[1]  # a square photo: turning and resizing commute exactly
    result = turning_engine.classify_skin(turning, rgb, explain=False)
    each = [
        plain_engine.classify_skin(plain, np.ascontiguousarray(photo_view(rgb, view)), explain=False)
        for view in PHOTO_VIEWS
    ]
    assert len({one.votes["malignant"] for one in each}) > 1
    assert result.views == 8
    assert result.scores.probabilities["malignant"] == pytest.approx(
        np.mean([one.scores.probabilities["malignant"] for one in each]), abs=1e-6
    )
    assert "each voting on the photo and 7 mirrored or turned copies of it" in result.votes_text()


def test_photo_views_are_the_eight_symmetries_of_the_square() -> None:
    grid = np.arange(9).reshape(3, 3)
    views = {view: photo_view(grid, view) for view in PHOTO_VIEWS}
    assert len({view.tobytes() for view in views.values()}) == 8
    assert views["rot90"].tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]  # counter-clockwise
    assert views["antitranspose"].tolist() == [[8, 5, 2], [7, 4, 1], [6, 3, 0]]
    with pytest.raises(ValueError, match="unknown photo view"):
        photo_view(grid, "rot45")


@pytest.mark.parametrize(
    ("size", "views", "refusal"),
    [
        ((224, 224), ["photo", "rot45"], "vote_views must start with 'photo'"),
        ((224, 224), ["hflip", "photo"], "vote_views must start with 'photo'"),
        ((224, 192), ["photo", "rot90"], "turned views need a square input.size"),
    ],
)
def test_a_bundle_whose_views_cannot_be_computed_is_refused(
    shared_data: Path, tmp_path: Path, size: tuple[int, int], views: list[str], refusal: str
) -> None:
    _skin_bundle(tmp_path, "skin-bad-views", size, **{VOTE_VIEWS: views})
    engine = Engine([tmp_path], "cpu")
    (card,) = engine.cards("skin_lesion")
    with pytest.raises(ModelError, match=refusal):
        engine.classify_skin(card, _isic_photo(shared_data), explain=False)


def test_a_forest_with_out_of_range_nodes_is_refused(skin_models: Path, tmp_path: Path) -> None:
    import shutil

    from skops import io as skops_io

    from medview.engine.bundles import sha256_file
    from medview.engine.manifest import load_manifest, write_manifest

    folder = Path(shutil.copytree(skin_models / "skin-random", tmp_path / "skin-crafted"))
    card = load_manifest(folder)
    forest_file = next(w for w in card.weights if w.format == "skops")
    forest = skops_io.load(card.file_path(forest_file), trusted=["sklearn.tree._tree.Tree"])
    forest.estimators_[3].tree_.children_left[0] = 10_000  # would read out of bounds in predict
    skops_io.dump(forest, card.file_path(forest_file))
    # re-sign the manifest: the checksum passes, the structural check must still refuse it
    from dataclasses import replace

    weights = tuple(
        replace(w, sha256=sha256_file(card.file_path(w))) if w.format == "skops" else w for w in card.weights
    )
    write_manifest(replace(card, weights=weights))
    engine = Engine([tmp_path], device_preference="cpu")
    (crafted,) = engine.cards("skin_lesion")
    with pytest.raises(ModelError, match="tree 4 of the forest is malformed"):
        engine.classify_skin(crafted, np.zeros((32, 32, 3), dtype=np.uint8))


def test_a_forest_whose_classes_are_not_indices_is_refused(skin_models: Path, tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace

    from skops import io as skops_io

    from medview.engine.bundles import sha256_file
    from medview.engine.manifest import load_manifest, write_manifest

    folder = Path(shutil.copytree(skin_models / "skin-random", tmp_path / "skin-labels"))
    card = load_manifest(folder)
    forest_file = next(w for w in card.weights if w.format == "skops")
    rng = np.random.default_rng(1)
    labels = np.where(np.arange(40) % 2, "malignant", "benign")
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(rng.random((40, 1000)), labels)
    skops_io.dump(forest, card.file_path(forest_file))
    weights = tuple(replace(w, sha256=sha256_file(card.file_path(w))) if w is forest_file else w for w in card.weights)
    write_manifest(replace(card, weights=weights))
    engine = Engine([tmp_path], device_preference="cpu")
    with pytest.raises(ModelError, match=r"expected forest classes 0\.\.1"):
        engine.classify_skin(engine.cards("skin_lesion")[0], np.zeros((32, 32, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- kidney


@pytest.fixture(scope="module")
def kidney_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kidney-models")
    torch.manual_seed(0)
    args = {"backbone": "efficientnet_lite0"}
    _random_bundle(
        folder,
        "kidney-random",
        "kidney_hybrid",
        args,
        InputSpec(
            modality="CT",
            size=(224, 224),
            channels=3,
            hu_window=(-200.0, 600.0),
            normalisation="imagenet",
            extra={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "positive_class": "stone"},
        ),
        ("no stone", "stone"),
        thresholds={"stone": 0.5},
    )
    return folder


def test_kidney_pipeline_per_slice_with_roi_and_grad_cam(kidney_models: Path, sample_volume: Volume) -> None:
    engine = Engine([kidney_models], device_preference="cpu")
    (card,) = engine.cards("kidney_stone")
    slices = [0, 5, 10]
    roi = np.zeros(sample_volume.shape[1:], dtype=bool)
    roi[100:300, 100:300] = True
    result = engine.classify_kidney_slices(
        card, sample_volume, slices, roi=roi, roi_source="drawn rectangle", explain_slices=[5]
    )
    assert result.slice_indices == (0, 5, 10)
    assert result.probabilities.shape == (3,)
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()
    assert result.roi == "drawn rectangle"
    assert set(result.positive_slices()) == {s for s, p in zip(slices, result.probabilities, strict=True) if p >= 0.5}
    heatmap = result.heatmaps[5]
    assert heatmap.values.shape == sample_volume.shape[1:]
    assert heatmap.target_class == "stone"
    # the ROI decides what the model sees: changing the CT outside it changes nothing
    outside = sample_volume.with_voxels(np.where(roi, sample_volume.voxels, 3000).astype(sample_volume.voxels.dtype))
    again = engine.classify_kidney_slices(card, outside, slices, roi=roi)
    np.testing.assert_allclose(again.probabilities, result.probabilities, atol=1e-6)
    with pytest.raises(InputError, match="expected indices"):
        engine.classify_kidney_slices(card, sample_volume, [sample_volume.shape[0]])


# --------------------------------------------------------------------------- COVID


def _covid_bundles(folder: Path, *, lung_bias: float | None = None, covid_demo: bool = True) -> None:
    torch.manual_seed(0)
    _random_bundle(
        folder,
        "covid-random",
        "covid_cnn_bilstm",
        {},
        InputSpec(modality="CT", size=(256, 256), hu_window=(-1000.0, 400.0)),
        ("covid_pneumonia", "non_covid_pneumonia", "healthy"),
        thresholds={"switch": 0.9},
        trained_on=DEMO if covid_demo else DataProvenance("COVID-CT-MD", "test", {"patients": 1}, demo=False),
    )
    if lung_bias is not None:
        unet = create_model("lung_unet", base_filters=4).eval()
        with torch.no_grad():  # a U-Net that calls everything lung: the pipeline must use its mask, not its own
            unet.head.weight.zero_()
            unet.head.bias.copy_(torch.tensor([0.0, lung_bias]))
        _random_bundle(
            folder,
            "lung-unet-random",
            "lung_unet",
            {"base_filters": 4},
            InputSpec(modality="CT", size=(256, 256), hu_window=(-1000.0, 400.0)),
            ("background", "lung"),
            network=unet,
            thresholds={"lung": 0.5},
        )


@pytest.fixture(scope="module")
def covid_volume(shared_data: Path) -> Volume:
    return load_dicom([shared_data / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"])


def test_covid_pipeline_on_a_real_chest_ct(tmp_path: Path, covid_volume: Volume) -> None:
    _covid_bundles(tmp_path)
    engine = Engine([tmp_path], device_preference="cpu")
    (card,) = engine.cards("covid_ct")
    result = engine.classify_covid(card, covid_volume, explain=True)
    assert result.lung_mask.shape == covid_volume.shape
    assert "classical" in result.lung_mask_source
    assert any("lung mask: classical" in note for note in result.provenance.notes)
    assert len(result.slice_reasons) == covid_volume.shape[0]
    assert all(result.slice_reasons[i].startswith("kept") for i in result.kept_slices)
    assert sum(1 for r in result.slice_reasons if r.startswith("kept")) == len(result.kept_slices)
    n = len(result.kept_slices)
    expected_groups = n // 50 + (1 if n % 50 > 25 else 0) or 1
    assert len(result.groups) == expected_groups
    for group in result.groups:
        assert len(group.sources) == 50
        assert sum(group.scores.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.verdict in card.class_names
    assert sum(result.votes.values()) == len(result.groups)
    assert result.reason
    # Grad-CAM on every kept slice that is a real slot of a group, in the CT grid
    real = {s for g in result.groups for s in g.sources if isinstance(s, int)}
    assert set(result.heatmaps) == real
    assert next(iter(result.heatmaps.values())).values.shape == covid_volume.shape[1:]


def test_covid_pipeline_uses_the_lung_unet_bundle_when_given(tmp_path: Path, sample_volume: Volume) -> None:
    _covid_bundles(tmp_path, lung_bias=8.0, covid_demo=False)
    engine = Engine([tmp_path], device_preference="cpu")
    (card,), (lung_card,) = engine.cards("covid_ct"), engine.cards("lung_segmentation")
    result = engine.classify_covid(card, sample_volume, lung_card=lung_card)
    assert result.provenance.demo  # a demo lung U-Net drew the mask the verdict rests on
    assert result.lung_mask.all()  # the U-Net's mask (all lung), not the classical one
    assert result.lung_mask_source == "lung U-Net lung-unet-random 0.0.1 (demo model)"
    assert result.kept_slices == tuple(range(sample_volume.shape[0]))  # equal areas: every slice kept
    assert len(result.groups) == 1
    assert result.groups[0].kind == "padded"  # 20 slices: one group padded with black slices
    with pytest.raises(ModelError, match="expected a 'lung_segmentation' model"):
        engine.classify_covid(card, sample_volume, lung_card=card)


def test_a_tree_built_for_fewer_features_than_it_splits_on_is_refused() -> None:
    """feature_importances_ writes at each split's feature into an array of tree.n_features entries, unchecked."""
    from sklearn.tree._tree import Tree

    from medview.engine.forest import _tree_problem

    rng = np.random.default_rng(0)
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(rng.random((40, 1000)), np.arange(40) % 2)
    sound = forest.estimators_[0].tree_
    assert _tree_problem(sound, 1000) == ""
    crafted = Tree(1, np.array([2], dtype=np.intp), 1)
    crafted.__setstate__(sound.__getstate__())  # the same nodes, splitting on features up to 999
    assert "built for 1 features" in _tree_problem(crafted, 1000)
