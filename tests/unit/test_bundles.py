"""Model bundles end to end: export, manifest validation, checksums, discovery, loading, the CLI."""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import pytest
import torch

from medview.engine.bundles import find_bundles, verify_bundle
from medview.engine.manifest import MANIFEST_NAME, DataProvenance, InputSpec, ModelCard, load_manifest
from medview.engine.weights import load_networks
from medview.errors import ChecksumError, ModelError
from medview.models import create_model
from training.cli import main as train_cli
from training.export import export_bundle

CLASSES = ("normal", "crackle", "wheeze", "both")


def _export(folder: Path, snapshots: int = 1, *, demo: bool = True) -> tuple[ModelCard, list[torch.nn.Module]]:
    torch.manual_seed(0)
    networks = [create_model("lung_sound_cnn", num_classes=4).eval() for _ in range(snapshots)]
    card = export_bundle(
        networks,
        folder,
        model_id="lung-sound-test",
        version="0.0.1",
        task="lung_sound",
        arch="lung_sound_cnn",
        arch_args={"num_classes": 4},
        input_spec=InputSpec(modality="audio", normalisation="zscore", sample_rate=22050, extra={"n_mels": 50}),
        class_names=CLASSES,
        trained_on=DataProvenance(dataset="random weights (test)", split="none", counts={}, demo=demo),
        metrics={"icbhi_score": 0.5},
    )
    return card, networks


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "lung-sound-test"
    _export(folder, snapshots=2)
    return folder


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / bundle.name))


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_export_round_trip(bundle: Path) -> None:
    card = load_manifest(bundle)
    assert card.label == "lung-sound-test 0.0.1"
    assert [w.role for w in card.weights] == ["snapshot-1", "snapshot-2"]
    assert card.class_names == CLASSES
    assert card.input.sample_rate == 22050
    assert card.input.hu_window is None
    assert card.target_layer == "features.6"
    assert card.is_demo
    assert card.library_versions["torch"] == metadata.version("torch")
    assert card.created.startswith("20")
    verify_bundle(card)


def test_reloaded_networks_compute_what_was_exported(tmp_path: Path) -> None:
    card, networks = _export(tmp_path / "bundle")
    (reloaded,) = load_networks(card)
    example = torch.randn(3, 1, 50, 193)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(example), networks[0](example))


def test_one_changed_byte_is_refused_naming_the_file(bundle: Path, tmp_path: Path) -> None:
    folder = _copy(bundle, tmp_path)
    target = folder / "lung-sound-test-0.0.1-snapshot-2.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    card = load_manifest(folder)
    with pytest.raises(ChecksumError, match="checksum mismatch") as caught:
        load_networks(card)
    assert caught.value.path == target


def test_missing_weights_file_is_named(bundle: Path, tmp_path: Path) -> None:
    folder = _copy(bundle, tmp_path)
    (folder / "lung-sound-test-0.0.1-snapshot-1.safetensors").unlink()
    with pytest.raises(ModelError, match="missing") as caught:
        verify_bundle(load_manifest(folder))
    assert caught.value.path is not None
    assert caught.value.path.name == "lung-sound-test-0.0.1-snapshot-1.safetensors"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 2}, "schema_version: expected 1, got 2"),
        ({"arch": "os.system"}, "arch: expected one of"),
        ({"task": "mind_reading"}, "task: expected one of"),
        ({"class_names": []}, "class_names"),
        ({"thresholds": {"crackle": 1.5}}, "thresholds.crackle"),
        ({"weights": [{"path": "../../etc/passwd", "sha256": "0" * 64, "format": "safetensors"}]}, "inside the bundle"),
        ({"weights": [{"path": "w.pt", "sha256": "0" * 64, "format": "pickle"}]}, "format: expected one of"),
        ({"weights": [{"path": "w.safetensors", "sha256": "abc", "format": "safetensors"}]}, "64 hexadecimal"),
        ({"trained_on": {"dataset": "x", "split": "y"}}, "trained_on.demo: missing"),
        ({"id": "../../escaped"}, "id: expected letters, digits"),
        ({"version": "/etc"}, "version: expected letters, digits"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(
    bundle: Path, tmp_path: Path, changes: dict, message: str
) -> None:
    folder = _copy(bundle, tmp_path)
    _edit_manifest(folder, **changes)
    with pytest.raises(ModelError, match=message) as caught:
        load_manifest(folder)
    assert caught.value.path == folder / MANIFEST_NAME


def test_body_parts_are_read_upper_case_and_a_malformed_list_is_refused(bundle: Path, tmp_path: Path) -> None:
    folder = _copy(bundle, tmp_path)
    spec = json.loads((folder / MANIFEST_NAME).read_text())["input"]
    _edit_manifest(folder, input={**spec, "body_parts": ["chest", "Abdomen "]})
    assert load_manifest(folder).input.body_parts == ("CHEST", "ABDOMEN")
    _edit_manifest(folder, input={**spec, "body_parts": ["CHEST", 3]})
    with pytest.raises(ModelError, match=r"input\.body_parts: expected a list of non-empty strings"):
        load_manifest(folder)


def test_not_json_and_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="unreadable manifest"):
        load_manifest(tmp_path / "broken")
    with pytest.raises(ModelError, match="not a model bundle"):
        load_manifest(tmp_path)


def test_weights_of_another_architecture_are_refused(bundle: Path, tmp_path: Path) -> None:
    folder = _copy(bundle, tmp_path)
    _edit_manifest(folder, arch_args={"num_classes": 2})  # the files hold a 4-class output layer
    with pytest.raises(ModelError, match="do not fit"):
        load_networks(load_manifest(folder))


def test_find_bundles_lists_good_ones_and_explains_bad_ones(bundle: Path, tmp_path: Path) -> None:
    builtin, user = tmp_path / "builtin", tmp_path / "user"
    builtin.mkdir()
    shutil.copytree(bundle, builtin / "lung")
    shutil.copytree(bundle, user / "same-again")  # same id and version: the built-in one wins
    shutil.copytree(bundle, user / "future")
    _edit_manifest(user / "future", schema_version=99)
    (user / "not-a-bundle").mkdir()
    scan = find_bundles([builtin, user, tmp_path / "absent"])
    assert [card.bundle_dir for card in scan.cards] == [builtin / "lung"]
    assert len(scan.problems) == 1
    assert "schema_version" in str(scan.problems[0])
    assert "future" in str(scan.problems[0])


def test_cli_verify(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK")
    assert "demo model: not for diagnosis" in out
    bad = _copy(bundle, tmp_path)
    (bad / "lung-sound-test-0.0.1-snapshot-1.safetensors").write_bytes(b"\0" * 100)
    assert train_cli(["verify", str(bundle), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK")
    assert out[1].startswith("FAILED")
    assert "snapshot-1.safetensors" in out[1]
    assert "checksum mismatch" in out[1]


# --------------------------------------------------------------------------- import


def test_import_refuses_symlinks_and_bundles_hidden_by_built_in_ones(bundle: Path, tmp_path: Path) -> None:
    from medview.engine.bundles import import_bundle

    linked = _copy(bundle, tmp_path / "linked")
    (linked / "notes").symlink_to("/etc")
    user = tmp_path / "user"
    with pytest.raises(ModelError, match="symbolic link"):
        import_bundle(linked, user)
    assert not any(user.iterdir())
    built_in = tmp_path / "built-in"
    _copy(bundle, built_in)
    with pytest.raises(ModelError, match=r"already installed in .*built-in"):
        import_bundle(bundle, user, other_folders=[built_in])


def test_import_replace_swaps_the_installed_bundle(bundle: Path, tmp_path: Path) -> None:
    from medview.engine.bundles import import_bundle

    user = tmp_path / "user"
    first = import_bundle(bundle, user)
    marker = first.bundle_dir / "installed-first.txt"
    marker.write_text("old")
    with pytest.raises(ModelError, match="already installed"):
        import_bundle(bundle, user)
    assert marker.exists()
    again = import_bundle(bundle, user, replace=True)
    assert again.bundle_dir == first.bundle_dir
    assert not marker.exists()
    assert [p.name for p in user.iterdir()] == [first.bundle_dir.name]  # no staging folder left


def test_a_zip_made_on_macos_imports(bundle: Path, tmp_path: Path) -> None:
    import zipfile

    from medview.engine.bundles import import_bundle

    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in bundle.iterdir():
            handle.write(path, f"lung-sound-test/{path.name}")
        handle.writestr("__MACOSX/lung-sound-test/._manifest.json", b"\x00\x05")
    card = import_bundle(archive, tmp_path / "user")
    assert card.id == "lung-sound-test"


def test_a_text_file_named_zip_is_named_as_not_a_zip(tmp_path: Path) -> None:
    from medview.engine.bundles import import_bundle

    fake = tmp_path / "bundle.zip"
    fake.write_text("this is a text file")
    with pytest.raises(ModelError, match="not a readable zip archive") as caught:
        import_bundle(fake, tmp_path / "user")
    assert caught.value.path == fake
