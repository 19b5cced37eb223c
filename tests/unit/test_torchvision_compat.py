"""The torchvision fallback: imports work, nms is right, and it stays out of the way where not needed.

Tests that import torchvision for real, or that must see a process where nothing was
registered yet, run in a subprocess so this test process stays clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from medview.models import torchvision_compat

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_python(code: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (same venv, repo importable); fail the test on a non-zero exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def reference_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Textbook greedy NMS, pair by pair, in the boxes' own precision (as torchvision's C++ kernel)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    suppressed = [False] * len(scores)
    keep: list[int] = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        x1, y1, x2, y2 = boxes[i]
        area_i = (x2 - x1) * (y2 - y1)
        for j in order[a + 1 :]:
            if suppressed[j]:
                continue
            u1, v1, u2, v2 = boxes[j]
            w = max(boxes.dtype.type(0), min(x2, u2) - max(x1, u1))
            h = max(boxes.dtype.type(0), min(y2, v2) - max(y1, v1))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = inter / (area_i + (u2 - u1) * (v2 - v1) - inter)
            if float(iou) > iou_threshold:  # NaN (two zero-area boxes) never suppresses
                suppressed[j] = True
    return keep


def _random_case(seed: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes on a coarse grid (exact IoU ties with the threshold happen), tied scores, zero-area and duplicates."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 40, (n, 2), generator=gen).to(dtype)
    wh = torch.randint(0, 16, (n, 2), generator=gen).to(dtype)
    wh[torch.rand(n, generator=gen) < 0.15] = 0  # zero-area boxes
    boxes = torch.cat([xy, xy + wh], dim=1)
    if seed % 2:  # half the cases: continuous coordinates instead of the grid
        boxes = boxes + torch.rand(n, 4, generator=gen).to(dtype)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
    if n >= 10:
        boxes[n // 2 : n // 2 + 5] = boxes[:5]  # exact duplicates (IoU 1)
    scores = torch.randint(0, 6, (n,), generator=gen).to(torch.float32) / 5  # many ties
    return boxes, scores


CASES = [
    pytest.param(seed, n, dtype, id=f"seed{seed}-n{n}-{str(dtype)[6:]}")
    for seed, n in [(0, 1), (1, 2), (2, 17), (3, 60), (4, 150), (5, 300)]
    for dtype in (torch.float32, torch.float64)
]


@pytest.fixture(scope="module")
def torchvision_module() -> ModuleType:
    """torchvision, importable in this process thanks to the fallback where needed."""
    torchvision_compat.ensure_torchvision()
    import torchvision

    return torchvision


# (a) ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchvision_and_timm_import_and_run_in_a_fresh_process() -> None:
    """The whole point: import torchvision + timm, build models, run them (and the usual helpers)."""
    proc = _run_python(
        """
        from medview.models.torchvision_compat import ensure_torchvision, extension_loads, fallback_active
        probe = extension_loads()
        installed = ensure_torchvision()
        import torch, torchvision, timm
        from torchvision.extension import _has_ops
        from torchvision.models.feature_extraction import create_feature_extractor
        from torchvision.transforms import v2

        # Our probe and torchvision's own loader must agree, and the fallback is on exactly when they fail.
        assert probe == _has_ops(), (probe, _has_ops())
        assert installed == (not probe) == fallback_active(), (installed, probe, fallback_active())

        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            tm = timm.create_model("resnet18", pretrained=False).eval()
            assert tm(x).shape == (2, 1000)
            tv = torchvision.models.resnet18().eval()
            seen = []
            tv.layer4.register_forward_hook(lambda m, i, o: seen.append(o.shape))
            assert tv(x).shape == (2, 1000)
            assert seen == [torch.Size([2, 512, 2, 2])], seen
            feats = create_feature_extractor(tv, {"layer3": "f"})(x)["f"]
            assert feats.shape == (2, 256, 4, 4), feats.shape
        img = torch.randint(0, 256, (3, 80, 60), dtype=torch.uint8)
        out = v2.Compose([v2.Resize(32), v2.ToDtype(torch.float32, scale=True)])(img)
        assert out.shape == (3, 42, 32) and out.dtype == torch.float32, (out.shape, out.dtype)
        print("OK", installed)
        """
    )
    assert "OK" in proc.stdout


@pytest.mark.slow
def test_fallback_recovers_after_a_failed_torchvision_import() -> None:
    """A first ``import torchvision`` that died leaves half-imported modules; ensure_torchvision still works."""
    if torchvision_compat.extension_loads():
        pytest.skip("torchvision's extension loads here, so a plain import does not fail")
    _run_python(
        """
        try:
            import torchvision
        except RuntimeError as exc:
            assert "torchvision::nms" in str(exc), exc
        else:
            raise AssertionError("expected the CUDA torchvision wheel to fail to import")
        from medview.models.torchvision_compat import ensure_torchvision
        assert ensure_torchvision() is True
        import timm, torch, torchvision
        boxes = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1]])
        assert torchvision.ops.nms(boxes, torch.tensor([0.5, 0.9]), 0.5).tolist() == [1]
        """
    )


# (b) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n", "dtype"), CASES)
@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_reference(
    torchvision_module: ModuleType, seed: int, n: int, dtype: torch.dtype, iou_threshold: float
) -> None:
    """torchvision.ops.nms (the fallback here) and the kernel itself equal the textbook algorithm."""
    boxes, scores = _random_case(seed, n, dtype)
    expected = reference_nms(boxes.numpy(), scores.numpy(), iou_threshold)
    got = torchvision_module.ops.nms(boxes, scores, iou_threshold)
    assert got.dtype == torch.int64
    assert got.tolist() == expected
    assert torchvision_compat.nms_cpu(boxes, scores, iou_threshold).tolist() == expected


def test_nms_cases_exercise_ties_zero_area_and_suppression() -> None:
    """Guard for the test data itself: the cases above really contain what they claim."""
    boxes, scores = _random_case(5, 300, torch.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (areas == 0).sum() > 10
    assert scores.unique().numel() < scores.numel() // 10
    kept = reference_nms(boxes.numpy(), scores.numpy(), 0.5)
    assert 10 < len(kept) < 300


def test_nms_small_known_answer(torchvision_module: ModuleType) -> None:
    """A hand-checked case: overlap 0.6 suppresses at 0.5, not at 0.7; zero-area boxes survive."""
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 6], [20, 20, 30, 30], [5, 5, 5, 5], [5, 5, 5, 5]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.95, 0.1, 0.5, 0.5])
    assert torchvision_module.ops.nms(boxes, scores, 0.5).tolist() == [1, 3, 4, 2]
    assert torchvision_module.ops.nms(boxes, scores, 0.7).tolist() == [1, 0, 3, 4, 2]
    assert torchvision_module.ops.nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_nms_threshold_compared_in_double_like_the_cpp_kernel(torchvision_module: ModuleType) -> None:
    """IoU 3/10 in float32 is 0.300000012 > 0.3; in float64 it is exactly 0.3 (kept). The C++ kernel agrees."""
    boxes = torch.tensor([[0, 0, 10, 1], [0, 0, 3, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert torchvision_module.ops.nms(boxes.float(), scores, 0.3).tolist() == [0]
    assert torchvision_module.ops.nms(boxes.double(), scores.double(), 0.3).tolist() == [0, 1]


def test_nms_disjoint_boxes_never_overlap(torchvision_module: ModuleType) -> None:
    """Diagonally separated boxes: negative width and height must not multiply into a positive overlap."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [11, 11, 21, 21]])
    assert torchvision_module.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.0).tolist() == [0, 1]


def test_batched_nms_matches_reference_per_class(torchvision_module: ModuleType) -> None:
    """batched_nms (what detection heads call) goes through the same op."""
    boxes, scores = _random_case(3, 200, torch.float32)
    idxs = torch.arange(200) % 3
    got = torchvision_module.ops.batched_nms(boxes, scores, idxs, 0.5)
    expected: list[int] = []
    for c in range(3):
        members = torch.nonzero(idxs == c).flatten()
        expected += members[reference_nms(boxes[members].numpy(), scores[members].numpy(), 0.5)].tolist()
    assert sorted(got.tolist()) == sorted(expected)
    assert scores[got].diff().le(0).all()


def test_qnms_path_on_integer_representations() -> None:
    """qnms receives int_repr() tensors; the kernel must treat them as coordinates, not fail."""
    boxes, scores = _random_case(2, 80, torch.float64)
    int_boxes = boxes.round().to(torch.uint8)
    int_scores = (scores * 50).to(torch.uint8)
    expected = reference_nms(int_boxes.double().numpy(), int_scores.double().numpy(), 0.4)
    assert torchvision_compat.nms_cpu(int_boxes, int_scores, 0.4).tolist() == expected


def test_nms_rejects_bad_shapes() -> None:
    """Same contract as the C++ op: (N, 4) boxes and (N,) scores."""
    with pytest.raises(RuntimeError, match="boxes"):
        torchvision_compat.nms_cpu(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match="scores"):
        torchvision_compat.nms_cpu(torch.zeros(3, 4), torch.zeros(2), 0.5)


# (c) ------------------------------------------------------------------------------------------------


def test_does_nothing_where_the_extension_loads() -> None:
    """Simulated CUDA-Linux/Windows/macOS machine: no op defined, torchvision not even imported."""
    proc = _run_python(
        """
        import sys, torch
        import medview.models.torchvision_compat as compat
        compat.extension_loads = lambda: True  # what the probe says where _C loads
        assert compat.ensure_torchvision() is False
        assert compat.ensure_torchvision() is False
        assert compat.fallback_active() is False
        assert not hasattr(torch.ops.torchvision, "nms"), "an op was registered"
        assert not hasattr(torch.ops.torchvision, "qnms"), "an op was registered"
        assert "torchvision" not in sys.modules, "torchvision was imported"
        print("NOOP")
        """
    )
    assert "NOOP" in proc.stdout


def test_no_registration_when_probe_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process variant: with a successful probe the registration code is never reached."""

    def forbidden() -> None:
        raise AssertionError("_register_fallback called although the extension loads")

    monkeypatch.setattr(torchvision_compat, "_fallback_active", False)
    monkeypatch.setattr(torchvision_compat, "_extension_ok", None)
    monkeypatch.setattr(torchvision_compat, "extension_loads", lambda: True)
    monkeypatch.setattr(torchvision_compat, "_register_fallback", forbidden)
    assert torchvision_compat.ensure_torchvision() is False
    assert torchvision_compat.fallback_active() is False


# (d) ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_idempotent_in_a_fresh_process() -> None:
    """Repeated calls: same answer, one probe, one registration (a second define would raise)."""
    _run_python(
        """
        import torch
        import medview.models.torchvision_compat as compat
        calls = []
        real_probe = compat.extension_loads
        compat.extension_loads = lambda: calls.append(1) or real_probe()
        first = compat.ensure_torchvision()
        library = compat._library
        assert [compat.ensure_torchvision() for _ in range(3)] == [first] * 3
        assert len(calls) == 1, calls
        assert compat._library is library
        assert compat.fallback_active() is first
        if first:
            import torchvision
            boxes = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2]])
            assert torchvision.ops.nms(boxes, torch.tensor([1.0, 2.0]), 0.5).tolist() == [1]
            try:
                compat._register_fallback()
            except RuntimeError:
                pass  # proves a second registration is an error, so ensure_torchvision must skip it
            else:
                raise AssertionError("defining torchvision::nms twice did not fail")
        """
    )


def test_idempotent_in_process(torchvision_module: ModuleType) -> None:
    """Calling again after torchvision is imported changes nothing."""
    first = torchvision_compat.fallback_active()
    assert torchvision_compat.ensure_torchvision() is first
    assert torchvision_compat.ensure_torchvision() is first
    assert torchvision_module.ops.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5).tolist() == [0]
