"""Drop-to-result time of lesion photos in the real window, beside the engine's own time per photo.

Run: ``.venv/bin/python -m bench.skin_drop`` (``--photos N`` for the folder run, default 100).
Photos are ISIC dermoscopy images from ../shared/data/skin, dropped on the main
window (offscreen) by real drop events with the shipped skin bundle loaded.

- "engine only" (the reference): ``read_photo`` + ``Engine.classify_skin``
  (the verdict, no saliency map), called directly, median per photo; and
  the same with the saliency map computed with it;
- "drop one photo": from the drop event to the photo's result in the gallery,
  one photo per drop, median; the app computes a saliency map only while the
  Saliency box is ticked, and after the verdict ("drop one photo, map shown"
  ticks it: from the drop to the map on screen);
- "drop a folder": one folder of N photos, total time / N, and the time to the
  first result;
- the GUI thread's longest stall during the folder run, from a 5 ms timer whose
  late ticks are the stalls.

Targets (issue 7): ≤ 0.3 s per photo; the GUI stays responsive (< 100 ms stall).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.gui import StallMeter, offscreen_window, spin_until
from bench.results import Row, report
from medview.engine.service import Engine
from medview.io.photo import read_photo
from medview.ui.qt import QtCore, QtGui, QtWidgets

REPO = Path(__file__).resolve().parents[1]
ISIC = REPO.parent / "shared" / "data" / "skin" / "isic_uda1_250px"
TARGET_S = 0.3
STALL_TARGET_MS = 100.0


def drop(window: QtWidgets.QWidget, paths: list[Path]) -> None:
    """Drag-enter and drop ``paths`` on the window, as a file manager does."""
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(path)) for path in paths])
    point = QtCore.QPoint(window.width() // 2, window.height() // 2)
    rest = (QtCore.Qt.DropAction.CopyAction, mime, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier(0))
    QtWidgets.QApplication.sendEvent(window, QtGui.QDragEnterEvent(point, *rest))
    QtWidgets.QApplication.sendEvent(window, QtGui.QDropEvent(QtCore.QPointF(point), *rest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100, help="photos in the folder run")
    args = parser.parse_args()
    photos = sorted(ISIC.glob("*.jpg"))
    if len(photos) < args.photos + 25:
        raise SystemExit(f"need {args.photos + 25} photos in {ISIC}")

    engine = Engine([REPO / "resources" / "models"])
    card = engine.cards("skin_lesion")[0]
    engine.classify_skin(card, read_photo(photos[0]).rgb)  # warm-up: weights loaded and checked once

    reference, explained = [], []
    for path in photos[:10]:
        for explain, times in ((False, reference), (True, explained)):
            start = time.perf_counter()
            engine.classify_skin(card, read_photo(path).rgb, explain=explain)
            times.append(time.perf_counter() - start)

    with offscreen_window(engine) as window:
        entries = window.skin.entries

        singles = []
        for path in photos[10:20]:
            start = time.perf_counter()
            drop(window, [path])
            spin_until(lambda p=path: any(e.path == p and e.result for e in entries))
            singles.append(time.perf_counter() - start)

        window.skin.saliency_box.setChecked(True)
        mapped = []
        for path in photos[20 + args.photos : 25 + args.photos]:
            start = time.perf_counter()
            drop(window, [path])
            spin_until(lambda p=path: any(e.path == p and e.result and e.result.saliency for e in entries))
            mapped.append(time.perf_counter() - start)
        window.skin.saliency_box.setChecked(False)
        listed = len(entries)

        with tempfile.TemporaryDirectory() as folder:
            for path in photos[20 : 20 + args.photos]:
                shutil.copy(path, folder)
            meter = StallMeter()
            meter.start()
            start = time.perf_counter()
            drop(window, [Path(folder)])
            spin_until(lambda: sum(e.result is not None for e in entries) > listed)
            first = time.perf_counter() - start
            spin_until(lambda: sum(e.result is not None for e in entries) == listed + args.photos)
            folder_total = time.perf_counter() - start
            meter.timer.stop()

    reference_s = statistics.median(reference)
    folder_case = f"drop a folder of {args.photos}, per photo"
    rows = [
        Row("engine only (reference)", reference_s, best=min(reference), reference=reference_s, target=TARGET_S),
        Row("engine only, with the saliency map", statistics.median(explained), reference=reference_s),
        Row(
            "drop one photo, median of 10",
            statistics.median(singles),
            best=min(singles),
            reference=reference_s,
            target=TARGET_S,
        ),
        Row("drop one photo, map shown, median of 5", statistics.median(mapped), reference=reference_s),
        Row(folder_case, folder_total / args.photos, reference=reference_s, target=TARGET_S),
        Row(f"drop a folder of {args.photos}, first result", first, reference=reference_s),
        Row("GUI longest stall, folder run", meter.longest_ms, "ms", target=STALL_TARGET_MS),
    ]
    report(
        "skin_drop",
        f"Skin lesion drop-to-result, {card.label}, CPU ({engine.device_name()}), ISIC 250x250 JPEGs",
        rows,
    )


if __name__ == "__main__":
    main()
