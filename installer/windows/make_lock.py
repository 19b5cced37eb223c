"""Write requirements.lock from pip's installation report: every wheel pinned by version and sha256.

    python make_lock.py REPORT.json WHEELHOUSE requirements.lock

The report comes from ``pip install --dry-run --ignore-installed --no-index --find-links WHEELHOUSE --report``,
so it names exactly the wheels pip resolved from the wheelhouse. Every wheel in the wheelhouse must be in the
lock, or the build stops: a stray wheel means the download and the resolution disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse


def main(report_path: str, wheelhouse_path: str, lock_path: str) -> int:
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    wheelhouse = Path(wheelhouse_path)
    lines, used = [], set()
    for item in sorted(report["install"], key=lambda entry: entry["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        info = item["download_info"]
        used.add(Path(unquote(urlparse(info["url"]).path)).name)
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{info['archive_info']['hashes']['sha256']}")
    stray = sorted({path.name for path in wheelhouse.glob("*.whl")} - used)
    if stray:
        sys.stderr.write(f"wheels that the lock does not use: {stray}\n")
        return 1
    header = "# Every package of the MedView install, pinned by version and sha256 (pip --require-hashes).\n"
    Path(lock_path).write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.write(f"{len(lines)} packages locked\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
