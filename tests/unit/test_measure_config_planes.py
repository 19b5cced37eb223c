"""Qt-free pieces: measurements, settings persistence, plane cutting and orientation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from medview.config import (
    DEFAULT_WINDOW_PRESETS,
    MAX_RECENT,
    SCHEMA_VERSION,
    Settings,
    prepare_compute_environment,
)
from medview.io.volume import axis_letters, canonical_axes, reorient_array, reorient_geometry
from medview.measure import distance_mm, region_mask, region_stats


def test_distance_uses_anisotropic_spacing() -> None:
    assert distance_mm((0, 0), (3, 4), (1.0, 1.0)) == pytest.approx(5.0)
    assert distance_mm((0, 0), (10, 0), (2.5, 0.5)) == pytest.approx(25.0)
    assert distance_mm((0, 0), (0, 10), (2.5, 0.5)) == pytest.approx(5.0)


def test_rectangle_stats_count_pixels_whose_centres_are_inside() -> None:
    image = np.zeros((10, 10), np.int16)
    image[2:6, 3:8] = 100
    stats = region_stats(image, (0.5, 2.0), (2, 3), (4, 5), "rectangle")
    assert stats is not None
    assert stats.pixel_count == 20
    assert stats.mean == pytest.approx(100)
    assert stats.std == pytest.approx(0)
    assert stats.area_mm2 == pytest.approx(4 * 0.5 * 5 * 2.0)


def test_ellipse_stats_and_area() -> None:
    image = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    stats = region_stats(image, (1.0, 1.0), (10, 20), (40, 60), "ellipse")
    assert stats is not None
    assert stats.area_mm2 == pytest.approx(math.pi * 20 * 30)
    # pixel count approximates the area; the mean is the value at the centre by symmetry
    assert abs(stats.pixel_count - math.pi * 20 * 30) / (math.pi * 20 * 30) < 0.02
    assert stats.mean == pytest.approx(image[30, 50] - 0.5 * 100 - 0.5, rel=0.01)
    assert region_stats(image, (1.0, 1.0), (10.2, 10.2), (0.1, 0.1), "ellipse") is None


def test_settings_round_trip_and_recent_order(tmp_path: Path) -> None:
    settings = Settings()
    for index in range(MAX_RECENT + 3):
        settings.add_recent(f"/data/{index}")
    settings.add_recent("/data/5")
    settings.window_presets["Mediastinum"] = (50.0, 350.0)
    settings.save(tmp_path)
    loaded = Settings.load(tmp_path)
    assert loaded.recent_paths[0] == "/data/5"
    assert len(loaded.recent_paths) == MAX_RECENT
    assert loaded.recent_paths.count("/data/5") == 1
    assert loaded.window_presets["Mediastinum"] == (50.0, 350.0)
    assert loaded.window_presets["Lung"] == DEFAULT_WINDOW_PRESETS["Lung"]
    assert loaded.compute_threads == 0  # the measured default
    settings.compute_threads = 3
    settings.save(tmp_path)
    assert Settings.load(tmp_path).compute_threads == 3
    for unusable in (-1, "2", True, 10_000):  # kept out: the default stays
        raw = json.loads((tmp_path / "settings.json").read_text())
        (tmp_path / "settings.json").write_text(json.dumps({**raw, "compute_threads": unusable}))
        assert Settings.load(tmp_path).compute_threads == 0
    settings.decode_threads = 5
    settings.save(tmp_path)
    assert Settings.load(tmp_path).decode_threads == 5
    for unusable in (-1, "2", True, 10_000):
        raw = json.loads((tmp_path / "settings.json").read_text())
        (tmp_path / "settings.json").write_text(json.dumps({**raw, "decode_threads": unusable}))
        assert Settings.load(tmp_path).decode_threads == 0


def test_compute_environment_makes_openmp_waits_passive_unless_the_environment_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "ORT_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    prepare_compute_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prepare_compute_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    prepare_compute_environment()
    assert "OMP_WAIT_POLICY" not in os.environ


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps({"schema_version": SCHEMA_VERSION + 1, "recent_paths": ["/x"]}), "[]"]
)
def test_bad_or_newer_settings_fall_back_to_defaults(tmp_path: Path, content: str) -> None:
    (tmp_path / "settings.json").write_text(content)
    loaded = Settings.load(tmp_path)
    assert loaded.recent_paths == []
    assert loaded.window_presets == DEFAULT_WINDOW_PRESETS


def test_canonical_axes_undo_a_flipped_permuted_acquisition() -> None:
    """A coronal, feet-first-like stack re-orients to LPS with consistent geometry."""
    rng = np.random.default_rng(0)
    lps = rng.integers(-1000, 1000, size=(6, 7, 8)).astype(np.int16)  # [S, P, L]
    # store it as an acquisition whose array axes are (P, S reversed, L): direction columns x,y,z
    acquired = np.ascontiguousarray(lps[::-1].transpose(1, 0, 2))  # [P, I, L]
    direction = np.column_stack([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).astype(float)  # x→L, y→I, z→P
    order, flips = canonical_axes(direction)
    restored = reorient_array(acquired, order, flips)
    np.testing.assert_array_equal(restored, lps)
    spacing, origin, new_direction = reorient_geometry(
        acquired.shape, (3.0, 2.0, 1.0), np.zeros(3), direction, order, flips
    )
    np.testing.assert_allclose(new_direction, np.eye(3))
    assert spacing == (2.0, 3.0, 1.0)
    # voxel [0,0,0] of the LPS array is the most inferior row of the acquisition: 2 mm x 5 rows below
    np.testing.assert_allclose(origin, (0.0, 0.0, -2.0 * 5))


def test_axis_letters_for_oblique_axes() -> None:
    direction = np.eye(3)
    assert axis_letters(direction, 0) == ("R", "L")
    assert axis_letters(direction, 1) == ("A", "P")
    assert axis_letters(direction, 2) == ("I", "S")
    oblique = np.column_stack([[0.8, 0.6, 0], [-0.6, 0.8, 0], [0, 0, 1]])
    assert axis_letters(oblique, 0) == ("RA", "LP")


def test_region_mask_holds_the_pixels_whose_centres_are_inside() -> None:
    corner, size = (5.3, 7.8), (20.4, 31.1)
    rectangle = region_mask((40, 50), corner, size, "rectangle")
    # row centres 5.5..25.5 (21) and column centres 8.5..38.5 (31) fall inside
    assert rectangle.sum() == 21 * 31
    assert rectangle[5, 8]
    assert rectangle[25, 38]
    assert not rectangle[4, 8:39].any()
    assert not rectangle[5:26, 7].any()
    assert not rectangle[26, 8:39].any()
    ellipse = region_mask((40, 50), corner, size, "ellipse")
    assert abs(int(ellipse.sum()) - math.pi / 4 * 20.4 * 31.1) < 15  # ~498 px: the drawn area, to the pixel
    assert ellipse[15, 23]  # the centre
    assert not ellipse[6, 9]  # the rectangle's corner, outside the ellipse
    assert not (ellipse & ~rectangle).any()
    for kind in ("rectangle", "ellipse"):
        assert not region_mask((40, 50), corner, (0.0, 3.0), kind).any()
        stats = region_stats(np.zeros((40, 50), np.int16), (0.7, 0.7), corner, size, kind)
        assert stats is not None
        assert stats.pixel_count == int(region_mask((40, 50), corner, size, kind).sum())
