"""``python -m medview`` and the ``medview`` command."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``medview`` console script."""
    from medview.app import run

    sys.exit(run())


if __name__ == "__main__":
    main()
