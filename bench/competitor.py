"""A busy workstation's other work, for ``bench.summary --contention N``: a multi-threaded numerical loop.

Run: ``.venv/bin/python -m bench.competitor [--seconds S] [--size N]``.

What runs beside MedView on a hospital workstation (a PACS client decoding, an antivirus scan, another AI
tool) is stood in for by what contends hardest for the same cores and caches: float32 matrix products in
torch with its default intra-op thread count (one per core), as a BLAS-heavy process would. It stops by
itself after ``--seconds`` (the summary also stops it when the contended run ends), and prints how many
products it computed.
"""

from __future__ import annotations

import argparse
import time

import torch

DEFAULT_SECONDS = 3600.0
DEFAULT_SIZE = 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="stop after this long")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of the square matrices")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    left = torch.rand(args.size, args.size, generator=generator)
    right = torch.rand(args.size, args.size, generator=generator)
    deadline = time.monotonic() + args.seconds
    products = 0
    while time.monotonic() < deadline:
        left = torch.mm(left, right)
        left /= left.max()  # keep the values finite, loop after loop
        products += 1
    print(
        f"{products} products of {args.size}x{args.size} float32 in {args.seconds:.0f} s, "
        f"{torch.get_num_threads()} threads"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
