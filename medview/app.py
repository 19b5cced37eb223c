"""Composition root: build the window, open what was asked, run the event loop."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medview import __version__
from medview.config import prepare_compute_environment, resources_dir

if TYPE_CHECKING:
    from medview.ui.main_window import MainWindow
    from medview.ui.selftest import SelfTest
    from medview.ui.workers import Task

SHUTDOWN_WAIT_MS = 15_000
#: when the engine starts at the latest: with nothing opened, and when what was opened shows no slice
ENGINE_START_MS = 300
ENGINE_START_OPENING_MS = 2_000
ENGINE_AFTER_SLICE_MS = 100
SAMPLE_SERIES = Path("samples") / "totalsegmentator_ct" / "dicom"
SAMPLE_MASK = Path("samples") / "totalsegmentator_ct" / "liver_mask.nii.gz"
SAMPLE_PHOTOS = Path("samples") / "isic_dermoscopy"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command line: paths to open, --sample for the bundled study, --self-test to check an install.

    Every resources path the help names is one that ships (a test checks): IT reads it to find the files."""
    series, photos = (Path("resources") / path for path in (SAMPLE_SERIES, SAMPLE_PHOTOS))
    parser = argparse.ArgumentParser(prog="medview", description="MedView: offline medical image viewer.")
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="DICOM folders/files/zips, NIfTI or NRRD volumes, lesion photos or a lung sound recording to open",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help=f"open the bundled sample CT ({series}) with its liver mask, and the sample photos ({photos})",
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help=f"check an install: open the sample CT series, run every installed model once (liver, kidney stone "
        f"and COVID-19 on that series, skin on a photo of {photos}, lung sound on --self-test-recording), "
        "check that nothing used the network, print one line per step; exit 0 only when every step passed",
    )
    parser.add_argument(
        "--self-test-recording",
        type=Path,
        metavar="FILE",
        help="the lung sound recording (WAV/FLAC, its ICBHI .txt annotation beside it, or the cycles are found "
        "automatically) the self-test classifies; without one it classifies a synthetic breathing signal, which "
        "shows the model runs but not what it finds (no real recording may be bundled: resources/samples/README.md)",
    )
    parser.add_argument(
        "--self-test-hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the self-test's session open this long before checking for network use and closing "
        "(lets a network monitor watch an idle MedView)",
    )
    parser.add_argument("--version", action="version", version=f"MedView {__version__}")
    return parser.parse_args(list(argv))


def run(argv: Sequence[str] | None = None) -> int:
    """Start the GUI; returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    prepare_compute_environment()  # before anything can load torch or onnxruntime
    self_test = None
    if args.self_test:
        from medview.ui.selftest import SelfTest

        self_test = SelfTest()  # before the window: it watches the whole process for network use

    from medview.audit import audit_log

    audit = audit_log()
    audit.record_app_start()
    try:
        return _run_window(args, self_test)
    finally:
        audit.record_app_stop()


def _run_window(args: argparse.Namespace, self_test: SelfTest | None) -> int:
    """Build the window, open what was asked (or run the self-test), run the event loop; the exit code."""
    from medview.ui.dialogs import install_excepthook
    from medview.ui.main_window import MainWindow
    from medview.ui.qt import QtWidgets
    from medview.ui.theme import apply_dark_theme

    running = QtWidgets.QApplication.instance()
    app = running if isinstance(running, QtWidgets.QApplication) else QtWidgets.QApplication([sys.argv[0]])
    app.setApplicationName("MedView")
    app.setApplicationVersion(__version__)
    apply_dark_theme(app)
    window = MainWindow()
    install_excepthook(lambda: window)
    window.show()
    if self_test is not None:
        return self_test.run(window, start_engine(window), args.self_test_recording, hold_s=args.self_test_hold)
    if args.sample:
        open_sample(window)
    elif args.paths:
        window.open_paths(args.paths)
    start_engine_after_first_frames(window, opening=bool(args.sample or args.paths))
    code = app.exec()
    # a background task that cannot stop mid-step (torch still importing) finishes before Python tears down
    window.tasks.pool.waitForDone(SHUTDOWN_WAIT_MS)
    return code


def start_engine(window: MainWindow) -> Task:
    """Build the inference engine on a worker thread once the window is up: torch loads there, not before.

    The window works as a viewer meanwhile and if the engine cannot start (the
    device chosen in the settings is absent, a broken install) it says why.
    """
    from medview.ui.workers import Task

    settings = window.settings

    def work(_progress: object, _cancelled: object, _partial: object) -> object:
        from medview.engine.service import Engine

        return Engine(
            settings.model_folders(), device_preference=settings.device, compute_threads=settings.compute_threads
        )

    task = Task(work, "Loading the AI engine", background=True)
    task.signals.succeeded.connect(window.set_engine)
    task.signals.errored.connect(lambda message, _details: window.set_engine_problem(message))
    return window.tasks.start(task)


def start_engine_after_first_frames(window: MainWindow, *, opening: bool) -> None:
    """Start the engine once the window, and the first slice of a series being opened, are on screen.

    torch's import on the engine's worker holds the GIL for most of a second:
    started with the window it delayed the window's first frame by 0.4-0.8 s and
    the sample's first slice as much (``bench.startup``).  A series being opened
    starts it with its first slice; photos, a recording or a failed load, by a
    timer.
    """
    from medview.ui.qt import QtCore

    started: list[Task] = []

    def start() -> None:
        if not started:
            started.append(start_engine(window))

    if opening:  # a moment later, so that the slice is painted before torch's import takes the GIL
        window.ct.first_slice_shown.connect(lambda: QtCore.QTimer.singleShot(ENGINE_AFTER_SLICE_MS, start))
    QtCore.QTimer.singleShot(ENGINE_START_OPENING_MS if opening else ENGINE_START_MS, start)


def open_sample(window: MainWindow) -> None:
    """Open the bundled CT series and, once it is loaded, its reference liver mask; list the sample
    lesion photos in the skin workspace (classified as soon as the engine is ready)."""
    from medview.io.photo import split_photo_paths

    series, mask = resources_dir() / SAMPLE_SERIES, resources_dir() / SAMPLE_MASK

    def add_mask(_volume: object) -> None:
        window.ct.volume_loaded.disconnect(add_mask)
        window.ct.load_mask(mask, "Liver, reference mask [liver_mask.nii.gz]")

    window.ct.volume_loaded.connect(add_mask)
    window.open_paths([series])
    photos, _ = split_photo_paths([resources_dir() / SAMPLE_PHOTOS])
    window.skin.add_photos(photos)
