"""``medview-train``: the training package's command line.

``medview-train verify BUNDLE...`` checks bundles exactly as the workstation app
will: manifest schema and allow-listed architecture, the SHA-256 of every file,
the weights fitting the architecture, and a forward pass.  Hospital IT can run
it on a bundle before copying it to workstations.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from medview.errors import MedviewError


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medview-train", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check model bundles as the app loads them")
    verify.add_argument("bundles", nargs="+", type=Path, help="bundle folders (each holding manifest.json)")
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify(args.bundles)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
