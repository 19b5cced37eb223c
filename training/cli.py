"""``medview-train``: train the five papers' models into bundles, and verify bundles.

``medview-train <task> --data DIR`` runs that paper's protocol on a dataset in
its public layout (see each task's ``data`` module), writes the evaluation in
the paper's table layout with its figures into the run folder and, with
``--bundle-dir``, a bundle the workstation app loads.  ``--demo`` trains on the
public samples in ``../shared/data`` with the settings of the demo bundle that
ships in ``resources/models`` and writes that bundle, so the shipped bundles
can be reproduced.

With several GPUs, ``torchrun --nproc-per-node N -m training.cli <task> ...``
trains with DistributedDataParallel (one process per GPU).

``medview-train liver-compare`` segments CT volumes with the installed liver
bundle through the app's own engine and compares the masks with reference
liver masks (Dice, VOE, ASD, volume in mL, per case and mean, as a markdown
table); without ``--data`` it runs on the public samples of the demo bundle.

``medview-train verify BUNDLE...`` checks bundles exactly as the app will:
manifest schema and allow-listed architecture, the SHA-256 of every file, the
weights fitting the architecture, and a forward pass.  Hospital IT can run it
on a bundle before copying it to workstations.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medview.errors import MedviewError

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Task:
    """A training command: its entry point, its demo data and the demo bundle's folder name."""

    module: str  # training.<module>.train defines train_<module>(options)
    help: str
    demo_data: str  # relative to the sample-data root
    demo_bundle: str  # folder under resources/models
    demo_options: dict[str, Any]  # RunOptions fields the demo bundle was trained with
    settings: str | None = None  # the task's own settings dataclass in training.<module>.train
    arguments: tuple[tuple[str, dict[str, Any]], ...] = ()  # its command-line flags (dest = a settings field)
    demo_settings: dict[str, Any] = field(default_factory=dict)
    imagenet: bool = False  # the task has an ImageNet backbone to choose and load
    demo_more_data: tuple[str, ...] = ()  # further sample folders the demo reads with demo_data (more_data)

    def run(self, options: Any, values: dict[str, Any]) -> Any:
        from importlib import import_module

        module = import_module(f"training.{self.module}.train")
        entry = getattr(module, f"train_{self.module}")
        if self.settings is None:
            return entry(options)
        return entry(options, getattr(module, self.settings)(**values))


TASKS = {
    "skin": Task(
        "skin",
        "paper 003: ImageNet CNN features + random forest (benign / malignant)",
        "skin",
        "skin-demo",
        {},
        settings="SkinSettings",
        arguments=(
            (
                "--paper-forest",
                {"action": "store_true", "help": "only the paper's forest (50 trees, majority vote), no variants"},
            ),
            (
                "--target-sensitivity",
                {"type": float, "default": 0.9, "help": "the operating point chosen on the validation photos"},
            ),
            ("--cache", {"type": Path, "help": "feature cache folder (default ~/.cache/medview-train)"}),
            ("--no-cache", {"action": "store_true", "help": "compute every CNN feature afresh, store none"}),
            (
                "--validation-set",
                {
                    "action": "store_true",
                    "help": "fit the forest on the training photos and choose the threshold on the validation photos "
                    "(1.3.0); default: threshold from the selection folds' out-of-fold scores, forest fitted on both",
                },
            ),
            (
                "--compare-bundle",
                {"type": Path, "help": "a previous skin bundle to evaluate on the same test photos"},
            ),
        ),
        imagenet=True,
    ),
    "kidney": Task(
        "kidney",
        "paper 000: hybrid CNN (frozen ImageNet branch + custom CNN), stone / no stone",
        "kidney_ct",
        "kidney-demo",
        {},
        settings="KidneySettings",
        arguments=(
            ("--baseline", {"action": "store_true", "help": "train the transfer-learning baseline instead"}),
            (
                "--search",
                {"type": int, "default": 0, "help": "Bayesian search of the custom branch, N trials (paper: 30)"},
            ),
            ("--search-epochs", {"type": int, "default": 5, "help": "epochs per search trial"}),
            ("--cv", {"action": "store_true", "help": "also run the 5 cross-validation folds (CV5)"}),
            (
                "--every",
                {"type": int, "help": "train on every Nth slice of each scan (default 2; 1 with --paper)"},
            ),
            ("--cases", {"help": "CSV of CT volumes + kidney masks, paths relative to --data (default: cases.csv)"}),
            (
                "--paper",
                {
                    "action": "store_true",
                    "help": "the paper's exact setting (custom branch 128-32-96-64-256-224, Adam 1e-4, 50 epochs) "
                    "instead of the shipped narrow-branch variant",
                },
            ),
            (
                "--more-data",
                {
                    "type": Path,
                    "action": "append",
                    "default": [],
                    "help": "another folder of Normal/ and Stone/ slices of the same numbering (repeatable)",
                },
            ),
            (
                "--target-sensitivity",
                {"type": float, "default": 0.9, "help": "the operating point chosen on the validation scans"},
            ),
            ("--compare-bundle", {"type": Path, "help": "a previous kidney bundle to evaluate on the same slices"}),
            (
                "--threshold-folds",
                {
                    "type": int,
                    "default": 3,
                    "help": "patient-level folds of the non-test scans whose out-of-fold scores set the calibration "
                    "and threshold, the shipped network trained on all of them (0: one validation set, as 1.3.0)",
                },
            ),
        ),
        demo_more_data=("kidney_ct_kaggle",),
        imagenet=True,
    ),
    "lung": Task(
        "lung",
        "paper 004: lung-sound CNN snapshot ensemble (normal / crackle / wheeze / both per cycle)",
        "lung_sound/icbhi_sample",
        "lung-sound-demo",
        {},
        settings="LungSettings",
        arguments=(
            ("--cycles", {"type": int, "default": 8, "help": "snapshots M (paper: 8)"}),
            ("--epochs-per-cycle", {"type": int, "default": 20, "help": "epochs per annealing cycle (paper: 20)"}),
            ("--repeats", {"type": int, "default": 10, "help": "random 80/20 patient splits (paper: 10)"}),
            (
                "--lopo",
                {"action": "store_true", "help": "leave-one-patient-out scores; the bundle trains on every patient"},
            ),
            ("--paper", {"action": "store_true", "help": "the paper's unweighted focal loss (no class weights)"}),
        ),
        demo_settings={"cycles": 4, "epochs_per_cycle": 10, "lopo": True},
    ),
    "liver": Task(
        "liver",
        "paper 001: EAS U-Net liver segmentation",
        "",
        "liver-demo",
        {"epochs": 20, "batch_size": 8},
        settings="LiverSettings",
        arguments=(
            ("--cases", {"help": "CSV of image/mask pairs, paths relative to --data (default: cases.csv or LiTS)"}),
            ("--channels", {"type": int, "default": 1, "choices": (1, 3), "help": "3: adjacent slices as channels"}),
            ("--base-channels", {"type": int, "default": 32, "help": "width of the first U-Net stage"}),
        ),
        demo_settings={"cases": str(Path(__file__).parent / "liver" / "demo_cases.csv")},
    ),
    "covid": Task(
        "covid",
        "paper 002: lung U-Net, slice CNN, CNN + biLSTM, patient vote (COVID / other pneumonia / healthy)",
        "covid_ct",
        "covid-demo",
        {},
        settings="CovidSettings",
        arguments=(
            ("--unet-epochs", {"type": int, "default": 30, "help": "lung U-Net epochs"}),
            ("--cnn-epochs", {"type": int, "default": 100, "help": "slice CNN epochs (paper: 100)"}),
            ("--lstm-epochs", {"type": int, "default": 200, "help": "CNN + biLSTM epochs (paper: 200)"}),
            ("--patience", {"type": int, "default": 25, "help": "early stopping patience (paper: 25)"}),
            ("--unet-every", {"type": int, "default": 1, "help": "train the U-Net on every Nth slice"}),
            (
                "--paper",
                {
                    "action": "store_true",
                    "help": "every slice carries its patient's label (the paper), not the slice-level infection labels",
                },
            ),
        ),
        demo_settings={"unet_epochs": 4, "unet_every": 2, "cnn_epochs": 30, "lstm_epochs": 30},
    ),
}


def sample_data_root() -> Path:
    """Where the public samples are: $MEDVIEW_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("MEDVIEW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _verify(paths: Sequence[Path]) -> int:
    from training.export import check_bundle

    failures = 0
    for path in paths:
        try:
            card = check_bundle(path)
        except MedviewError as error:
            failures += 1
            print(f"FAILED  {error}")
            continue
        demo = "  [demo model: not for diagnosis]" if card.is_demo else ""
        print(f"OK      {path}: {card.label} ({card.arch}, {card.task}, {len(card.weights)} file(s)){demo}")
    return 1 if failures else 0


def _train(name: str, args: argparse.Namespace) -> int:
    from training.common.run import RunOptions

    task = TASKS[name]
    data = args.data
    bundle_dir = args.bundle_dir
    settings: dict[str, Any] = {}
    values = {flag.lstrip("-").replace("-", "_"): None for flag, _ in task.arguments}
    values = {key: getattr(args, key) for key in values}
    if args.demo:
        data = data or sample_data_root() / task.demo_data
        bundle_dir = bundle_dir or REPO_ROOT / "resources" / "models" / task.demo_bundle
        settings = dict(task.demo_options)
        values |= task.demo_settings
        if task.demo_more_data and not values.get("more_data"):
            values["more_data"] = [sample_data_root() / folder for folder in task.demo_more_data]
    if data is None:
        print(f"medview-train {name}: give the dataset with --data DIR (or --demo for the public samples)")
        return 2
    # absolute, so that the ids of a second folder (--more-data, the demo's) are paths relative to the same root
    data = data.resolve()
    if values.get("more_data"):
        values["more_data"] = [Path(folder).resolve() for folder in values["more_data"]]
    for key in ("epochs", "batch_size", "backbone", "backbone_weights"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    run_dir = args.run_dir or Path("runs") / (f"{name}-demo" if args.demo else name)
    checkpoint_dir = None
    rank = int(os.environ.get("RANK", "0"))
    if rank:  # under torchrun only the first process writes; the others log beside it and resume from its files
        bundle_dir, checkpoint_dir, run_dir = None, run_dir / "checkpoints", run_dir / f"rank-{rank}"
    options = RunOptions(
        data=Path(data),
        run_dir=run_dir,
        bundle_dir=bundle_dir,
        seed=args.seed,
        device=args.device,
        demo=args.demo,
        version=args.version,
        resume=args.resume,
        progress=not args.quiet,
        half=not args.fp32,
        checkpoint_dir=checkpoint_dir,
        **settings,
    )
    try:
        outcome = task.run(options, values)
    except ModuleNotFoundError as error:
        print(
            f"medview-train {name}: {error.name} is missing; install the training extras: pip install 'medview[train]'"
        )
        return 1
    except (MedviewError, ValueError) as error:  # bad data, or options the data cannot satisfy
        print(f"medview-train {name}: {error}")
        return 1
    print(f"evaluation: {options.run_dir / 'evaluation.txt'}")
    if outcome.card is not None:
        print(f"bundle: {outcome.card.bundle_dir}")
    return 0


def _liver_compare(args: argparse.Namespace) -> int:
    import time

    from medview.engine.service import Engine
    from training.liver.compare import choose_card, compare_cases, describe_bundle, markdown_table
    from training.liver.data import list_liver_cases

    data, table = args.data, args.cases
    if data is None:
        data = sample_data_root()
        table = table or REPO_ROOT / "training" / "liver" / "demo_cases.csv"
    bundle = args.bundle
    started = time.perf_counter()
    try:
        cases = list_liver_cases(data, table)[: args.limit]
        engine = Engine([bundle.parent] if bundle is not None else [REPO_ROOT / "resources" / "models"], args.device)
        card = choose_card(engine, bundle)
        print(describe_bundle(card))
        print(f"device: {engine.device_name()}; {len(cases)} case(s) from {table or data}")
        engine.networks(card)  # checksums and weights once, outside the per-case times
        print(f"bundle loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        results = compare_cases(
            engine,
            card,
            cases,
            on_case=lambda r: print(f"  {r.name}: Dice {r.dice:.4f}, {r.segment_seconds:.1f} s", file=sys.stderr),
        )
    except MedviewError as error:
        print(f"medview-train liver-compare: {error}")
        return 1
    print()
    print(markdown_table(results))
    print()
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medview-train", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check model bundles as the app loads them")
    verify.add_argument("bundles", nargs="+", type=Path, help="bundle folders (each holding manifest.json)")
    compare = commands.add_parser(
        "liver-compare", help="the liver bundle's masks against reference masks: Dice, VOE, ASD, volume"
    )
    compare.add_argument(
        "--data", type=Path, help="dataset folder (LiTS layout or cases.csv; default: the public samples)"
    )
    compare.add_argument("--cases", type=Path, help="CSV of image/mask pairs, paths relative to --data")
    compare.add_argument("--bundle", type=Path, help="liver bundle folder (default: the one in resources/models)")
    compare.add_argument("--limit", type=int, help="only the first N cases")
    compare.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    evaluate = commands.add_parser(
        "evaluate", help="a bundle on a labelled folder of the task's layout, through the app's engine: the paper table"
    )
    evaluate.add_argument("bundle", type=Path, help="bundle folder (holding manifest.json)")
    evaluate.add_argument("--data", type=Path, required=True, help="labelled folder in the task's public layout")
    evaluate.add_argument("--output", type=Path, help="also write the table to this file")
    evaluate.add_argument("--items", type=Path, help="write each item's result (class, probabilities) to this CSV")
    evaluate.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    for name, task in TASKS.items():
        command = commands.add_parser(name, help=task.help)
        command.add_argument("--data", type=Path, help="dataset folder in the task's public layout")
        command.add_argument("--run-dir", type=Path, help="where the log, split, checkpoints and report go")
        command.add_argument("--bundle-dir", type=Path, help="write the trained bundle here")
        command.add_argument("--demo", action="store_true", help="train the shipped demo bundle from the samples")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
        command.add_argument("--version", default="1.0.0", help="the bundle's version")
        if task.imagenet:
            command.add_argument("--backbone", help="ImageNet backbone (default efficientnet_lite0)")
            command.add_argument("--backbone-weights", type=Path, help="local ImageNet checkpoint (timm/torchvision)")
        command.add_argument("--epochs", type=int, help="override the paper's number of epochs")
        command.add_argument("--batch-size", type=int, help="override the paper's batch size")
        command.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
        command.add_argument("--fp32", action="store_true", help="store fp32 weights (default fp16)")
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        for flag, kwargs in task.arguments:
            command.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify(args.bundles)
    if args.command == "liver-compare":
        return _liver_compare(args)
    if args.command == "evaluate":
        from training.evaluate import run_evaluate

        return run_evaluate(
            args.bundle, args.data, device=args.device, output=args.output, items=args.items, progress=not args.quiet
        )
    return _train(args.command, args)


if __name__ == "__main__":
    sys.exit(main())
