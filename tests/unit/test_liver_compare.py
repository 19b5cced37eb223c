"""``medview-train liver-compare``: the shipped liver bundle through the app's engine against reference masks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from medview.config import resources_dir
from medview.engine.manifest import load_manifest
from medview.errors import ModelError
from training.cli import main as train_cli
from training.liver.compare import CaseComparison, choose_card, compare_case, markdown_table
from training.liver.data import list_liver_cases

LIVER_BUNDLE = resources_dir() / "models" / "liver-demo"
#: the dcmqi case only (3 slices): the shipped bundle's held-out test volume, seconds on a CPU
DCMQI_TABLE = "image,mask,liver_labels,patient,side\ndicom_ct/dcmqi_ct-3slice,liver_ct/dcmqi/liver.dcm,1,dcmqi,test\n"


@pytest.fixture(scope="module")
def engine() -> object:
    from medview.engine.service import Engine

    return Engine([LIVER_BUNDLE.parent], device_preference="cpu")


def test_engine_path_reproduces_the_bundle_s_own_test_metrics(
    engine: object, shared_data: Path, tmp_path: Path
) -> None:
    """The manifest's metrics come from training's evaluation of the one test volume (dcmqi); the viewer's
    path (load_dicom, read_label_map, Engine.segment_liver) must give the same numbers."""
    table = tmp_path / "cases.csv"
    table.write_text(DCMQI_TABLE)
    [case] = list_liver_cases(shared_data, table)
    card = choose_card(engine, LIVER_BUNDLE)
    result = compare_case(engine, card, case)
    assert result.shape == (3, 512, 512)
    assert result.side == "test"
    assert result.dice == pytest.approx(card.metrics["dice"], abs=5e-4)
    assert result.voe == pytest.approx(card.metrics["voe"], abs=5e-4)
    assert result.asd_mm == pytest.approx(card.metrics["asd_mm"], abs=5e-3)
    # 107,098 reference voxels (data README) of 0.810547^2 x 1.0 mm
    assert result.reference_ml == pytest.approx(107_098 * 0.810547**2 / 1000, rel=1e-4)
    assert 0 < result.predicted_ml < result.reference_ml  # the demo bundle under-segments (precision 1.0)


def test_choose_card_names_what_is_wrong(engine: object, tmp_path: Path) -> None:
    assert choose_card(engine, None).id == load_manifest(LIVER_BUNDLE).id
    with pytest.raises(ModelError, match=r"no liver_segmentation bundle in .*nowhere"):
        choose_card(engine, tmp_path / "nowhere")


def test_markdown_table_per_case_and_mean() -> None:
    rows = [
        CaseComparison("a", "train", (2, 4, 4), (2.0, 1.0, 1.0), 0.9, 0.2, 1.5, 90.0, 100.0, 1.0, 2.0),
        CaseComparison("b", None, (2, 4, 4), (2.0, 1.0, 1.0), 0.7, 0.4, math.inf, 0.0, 50.0, 1.0, 4.0),
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 5
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len({line.count("|") for line in lines}) == 1  # every row has every column
    assert "| a | train |" in lines[2]
    assert "| 0.9000 | 0.2000 | 1.50 | 90.0 | 100.0 | -10.0% |" in lines[2]
    assert "| b | - |" in lines[3]
    assert "| inf |" in lines[3]  # an empty prediction has no surface: ASD is undefined, not 0
    assert "**mean of 2**" in lines[4]
    assert "**0.8000** | **0.3000** | **inf** | 45.0 | 75.0 | -55.0% | 2.0 (sum) | 6.0 (sum) |" in lines[4]


def test_cli_prints_the_table(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "cases.csv"
    table.write_text(DCMQI_TABLE)
    arguments = ["--data", str(shared_data), "--cases", str(table), "--bundle", str(LIVER_BUNDLE)]
    code = train_cli(["liver-compare", *arguments, "--device", "cpu", "--limit", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "demo model: not for diagnosis" in out
    assert "| dcmqi_ct-3slice (liver.dcm) | test | 3×512×512 |" in out
    assert "**mean of 1**" in out
    assert train_cli(["liver-compare", "--data", str(tmp_path / "empty")]) == 1
    assert "not a folder" in capsys.readouterr().out
