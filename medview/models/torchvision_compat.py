"""Make torchvision (and so timm) importable next to a CPU-only torch.

Every Linux torchvision wheel on PyPI is a CUDA build. Next to the CPU torch
its compiled extension (``torchvision/_C.so``) fails to load, torchvision then
skips registering its operators, and ``import torchvision`` (hence
``import timm``) dies in ``torchvision/_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist``.

:func:`ensure_torchvision`, called before torchvision or timm is imported,
probes the extension exactly the way torchvision does (``torch.ops.load_library``
on ``_C``) *without* importing torchvision. Only when that load fails does it
define the ``torchvision::nms`` and ``torchvision::qnms`` schemas (the two ops
torchvision's Python side touches at import) with a vectorised pure-torch CPU
kernel, import torchvision, and let ``torchvision.ops.nms`` use that kernel.
Where the extension loads (CUDA Linux, Windows, macOS) it changes nothing.

With the fallback active, model constructors (torchvision and timm),
``transforms.v2``, feature extraction, forward hooks and ``torchvision.ops.nms``
/ ``batched_nms`` work; ``roi_align`` uses torchvision's own pure-Python path.
Not available: ``torchvision.io`` image/video decoding (its ``image`` extension
is a CUDA build too; decode with Pillow or OpenCV: it raises "Couldn't load the
image extension"), the other compiled ops (``roi_pool``, ``ps_roi_*``,
``deform_conv2d`` raise torchvision's "Couldn't load custom C++ ops";
``box_iou`` with a rotated ``fmt`` raises ``AttributeError`` for
``torchvision::box_iou_rotated``) and any CUDA kernel.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import threading

import torch

__all__ = ["ensure_torchvision", "extension_loads", "fallback_active", "nms_cpu"]

_log = logging.getLogger(__name__)

#: The schema torchvision declares for both ops (torchvision/csrc/ops/nms.cpp).
NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"

_lock = threading.Lock()
_fallback_active = False
_extension_ok: bool | None = None  # probe result, cached: the probe loads a shared library
# Kept alive on purpose: a torch.library.Library removes its registrations when collected.
_library: torch.library.Library | None = None


def fallback_active() -> bool:
    """Whether this process runs torchvision on the pure-torch ``nms``/``qnms`` fallback."""
    return _fallback_active


def extension_loads() -> bool:
    """Whether torchvision's compiled ``_C`` extension loads here, found without importing torchvision.

    Mirrors ``torchvision.extension._load_library("_C")``: locate the shared object
    beside the package and ``torch.ops.load_library`` it. On success the library stays
    loaded, which is what ``import torchvision`` would do next anyway.

    Returns:
        True if the extension loaded (or torchvision is not installed, so there is
        nothing to fix); False if torchvision is installed but its ``_C`` does not load.
    """
    spec = importlib.util.find_spec("torchvision")  # top-level: locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return True
    loader_details = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    for location in spec.submodule_search_locations:
        ext_spec = importlib.machinery.FileFinder(os.fspath(location), loader_details).find_spec("_C")
        if ext_spec is None or ext_spec.origin is None:
            continue
        try:
            torch.ops.load_library(ext_spec.origin)
        except (ImportError, OSError) as exc:  # the same exceptions torchvision treats as "no ops"
            _log.info("torchvision extension %s does not load: %s", ext_spec.origin, exc)
            return False
        return True
    _log.info("torchvision extension _C not found in %s", list(spec.submodule_search_locations))
    return False


_PAIR_BLOCK = 1 << 22  # IoU values computed at once (~16 MB of float32): bounds memory for large N


def nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with the arithmetic of torchvision's CPU kernel.

    Boxes are visited by decreasing score (stable sort: ties keep input order); each
    kept box drops every later box whose IoU with it is ``> iou_threshold``. Zero-area
    pairs give IoU NaN and are never suppressed, as in torchvision.

    Vectorised: the "i suppresses j" pairs are found in blocks of rows, then the
    greedy choice is the unique fixed point of ``keep[j] = no kept i before j
    suppresses j``, reached by iterating from "keep all" (each pass settles at least
    one more box in score order; usually a handful of passes in all).

    Args:
        dets: ``(N, 4)`` boxes as ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou_threshold: boxes overlapping a kept box by more than this are dropped.

    Returns:
        int64 indices of the kept boxes, in decreasing score order.
    """
    if dets.dim() != 2 or dets.size(1) != 4:
        raise RuntimeError(f"boxes should be a (N, 4) tensor, got shape {tuple(dets.shape)}")
    if scores.dim() != 1 or scores.size(0) != dets.size(0):
        raise RuntimeError(f"scores should be a ({dets.size(0)},) tensor, got shape {tuple(scores.shape)}")
    n = dets.size(0)
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    if not dets.is_floating_point():  # qnms hands over integer representations
        dets = dets.to(torch.float64)
    order = torch.sort(scores, descending=True, stable=True).indices
    x1, y1, x2, y2 = (c.contiguous() for c in dets.index_select(0, order).unbind(1))
    areas = (x2 - x1) * (y2 - y1)
    positions = torch.arange(n, device=dets.device)
    sources: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    rows = max(1, _PAIR_BLOCK // n)
    for start in range(0, n, rows):
        r = slice(start, min(start + rows, n))
        c = slice(start, n)  # only later boxes can be suppressed by these rows
        w = (torch.minimum(x2[r, None], x2[c]) - torch.maximum(x1[r, None], x1[c])).clamp(min=0)
        h = (torch.minimum(y2[r, None], y2[c]) - torch.maximum(y1[r, None], y1[c])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[r, None] + areas[c] - inter)
        # Double comparison like the C++ kernel (scalar_t iou vs double threshold); NaN never suppresses.
        hit = (iou.double() > iou_threshold) & (positions[r, None] < positions[c])
        src, dst = hit.nonzero(as_tuple=True)
        sources.append(src + start)
        targets.append(dst + start)
    src = torch.cat(sources)
    dst = torch.cat(targets)
    keep = torch.ones(n, dtype=torch.bool, device=dets.device)
    while True:
        suppressed = torch.zeros_like(keep)
        suppressed[dst[keep[src]]] = True
        if torch.equal(~suppressed, keep):
            break
        keep = ~suppressed
    return order[keep]


def _register_fallback() -> torch.library.Library:
    """Define ``torchvision::nms``/``qnms`` with :func:`nms_cpu` as the CPU kernel.

    No Meta kernel: torchvision's ``_meta_registrations`` registers the fake ones itself.
    """
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in ("nms", "qnms"):
        library.define(name + NMS_SCHEMA)
        library.impl(name, nms_cpu, "CPU")
    return library


def _allow_python_nms() -> None:
    """Let ``torchvision.ops.nms``/``batched_nms`` run the fallback.

    ``torchvision.ops.boxes`` guards ``nms`` with ``_assert_has_ops()``, which reads
    "extension loaded". Only that module's reference is replaced, so ``roi_align`` keeps
    choosing its pure-Python path and the other compiled ops keep their clear error.
    """
    import torchvision.ops.boxes as boxes

    def _nms_ops_present() -> None:
        """Stand-in for ``_assert_has_ops`` inside ``torchvision.ops.boxes`` (nms is registered)."""

    boxes._assert_has_ops = _nms_ops_present  # type: ignore[attr-defined]


def ensure_torchvision() -> bool:
    """Make ``import torchvision`` / ``import timm`` work on this machine; call before importing them.

    Idempotent and thread-safe. Does nothing where torchvision's extension loads.
    Otherwise registers the pure-torch ``nms``/``qnms`` ops, imports torchvision and
    routes ``torchvision.ops.nms`` to them.

    Returns:
        True if the fallback is in use (installed by this call or an earlier one).
    """
    global _extension_ok, _fallback_active, _library
    with _lock:
        if _fallback_active:
            return True
        if _extension_ok is None:
            _extension_ok = extension_loads()
        if _extension_ok:
            return False
        if not hasattr(torch.ops.torchvision, "nms"):  # else defined already (e.g. a second copy of this module)
            # Also fine after a failed `import torchvision`: its half-imported modules are harmless.
            _library = _register_fallback()
            _log.info(
                "torchvision's compiled extension does not load with torch %s: using the pure-torch nms "
                "fallback (torchvision.io decoding and the other compiled ops are unavailable)",
                torch.__version__,
            )
        import torchvision  # noqa: F401  (safe now; torchvision.ops.boxes must exist to be patched)

        _allow_python_nms()
        _fallback_active = True
        return True
