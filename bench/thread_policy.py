"""Which compute-thread count MedView's engine should use: every pipeline timed quiet and beside competitors.

Run: ``.venv/bin/python -m bench.thread_policy [--policies 1 2 2:passive ...] [--contention N] [--repeats R]
[--logs DIR]``.

A workstation is never idle, and a thread pool as wide as the machine pays for
it: each parallel region waits for its slowest thread, and a thread that another
process has taken the core from makes every other one spin or sleep (issue 23:
the kidney pass 8.5x slower beside two numerical processes, with torch's
default of one thread per core).  So the policy is measured, not assumed: for
each policy (a thread count, and ``:passive`` for OpenMP threads that sleep
at once instead of spinning a while when they wait, as the app sets them;
without it libgomp's default spin; the competitors keep the default),
``bench.inference`` (every pipeline through ``Engine``, as
the viewer calls it) runs once quiet and once beside ``--contention`` competitor
processes (``bench.competitor``), in fresh processes, in this one invocation.

The table gives each timing under each policy and condition as a ratio to the
best policy's time in the same condition.  The recommended policy is the one
with the lowest geometric mean of those ratios over both conditions: quiet and
busy count the same, since a workstation is both in a day.  The settings
file's ``compute_threads`` takes a count (0: ``medview.engine.device.default_compute_threads``,
measured on the reference machine, see its docstring); the app always makes
OpenMP waits passive (``medview.config.prepare_compute_environment``).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from bench.summary import run_benchmark, start_competitors, stop_process
from medview.config import LIBGOMP_DEFAULT_SPINCOUNT
from medview.engine.device import usable_cores

COMPETITOR_LIMIT_S = 1800.0  # a competitor stops by itself after this, should the bench die first


def default_policies(cores: int) -> list[str]:
    """1 thread, half the cores and all of them, each with more than one thread also with passive waits."""
    counts = sorted({1, max(1, cores // 2), cores})
    return [f"{count}{suffix}" for count in counts for suffix in ("", ":passive") if count > 1 or not suffix]


def parse_policy(policy: str) -> tuple[int, dict[str, str]]:
    """``"2"`` or ``"2:passive"`` -> the thread count and the environment the run gets."""
    count, _, wait = policy.partition(":")
    if wait not in ("", "passive") or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"policy: expected THREADS or THREADS:passive, got {policy!r}")
    if wait:
        return int(count), {"OMP_WAIT_POLICY": "PASSIVE"}
    # libgomp's default spin; a GOMP_SPINCOUNT set wins over the passive policy inherited (bench/__init__.py)
    return int(count), {"GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPINCOUNT}


def main(argv: list[str] | None = None) -> int:
    cores = usable_cores()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=default_policies(cores), help="e.g. 1 2 2:passive")
    parser.add_argument("--contention", type=int, default=2, help="competitor processes in the busy condition")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each pipeline (bench.inference)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one bench.inference run may take")
    parser.add_argument("--logs", type=Path, help="keep each run's output in this folder")
    args = parser.parse_args(argv)
    policies = {policy: parse_policy(policy) for policy in args.policies}

    times: dict[tuple[str, str], dict[str, float]] = {}  # (policy, condition) -> case -> seconds
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.logs or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for condition in ("quiet", f"{args.contention} competitors"):
            for policy, (threads, environment) in policies.items():
                busy = condition != "quiet"
                competitors = start_competitors(args.contention, COMPETITOR_LIMIT_S, folder) if busy else []
                try:
                    run = run_benchmark("inference", ["--threads", str(threads), "--repeats", str(args.repeats)],
                                        args.timeout, folder, environment)  # fmt: skip
                finally:
                    for competitor in competitors:
                        stop_process(competitor)
                if run.crashed or run.timed_out:
                    print(f"bench.inference, policy {policy} ({condition}) failed: {run.stderr_tail[-3:]}")
                    return 1
                times[(policy, condition)] = {
                    row.case: row.median for _, row in run.rows if row.unit == "s" and "load" not in row.case
                }
                print(f"done: policy {policy}, {condition} ({run.seconds:.0f} s)", flush=True)

    conditions = list(dict.fromkeys(condition for _, condition in times))
    cases = list(times[(args.policies[0], conditions[0])])
    header = [f"{policy}, {condition}" for condition in conditions for policy in policies]
    print(f"\nSeconds per case, and the ratio to the best policy in the same condition ({cores} cores)\n")
    print("| case | " + " | ".join(header) + " |")
    print("| --- |" + " --- |" * len(header))
    log_ratios: dict[str, list[float]] = {policy: [] for policy in policies}
    for case in cases:
        cells = []
        for condition in conditions:
            best = min(times[(policy, condition)][case] for policy in policies)
            for policy in policies:
                seconds = times[(policy, condition)][case]
                ratio = seconds / best if best > 0 else 1.0
                log_ratios[policy].append(math.log(ratio))
                cells.append(f"{seconds:.3g} ({ratio:.2f}x)")
        print(f"| {case} | " + " | ".join(cells) + " |")
    scores = {policy: math.exp(sum(values) / len(values)) for policy, values in log_ratios.items()}
    print("\ngeometric mean of the ratios, quiet and busy together: "
          + ", ".join(f"{policy} {score:.3f}" for policy, score in scores.items()))  # fmt: skip
    print(f"recommended policy on this machine: {min(scores, key=scores.__getitem__)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
