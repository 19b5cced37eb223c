"""The import contracts in .importlinter hold, and they are live (a planted violation breaks them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / ".importlinter"
EXPECTED_CONTRACTS = 12


def _lint_imports_executable() -> str:
    """lint-imports from this interpreter's environment, else from PATH; skip the test without one."""
    beside = Path(sys.executable).with_name("lint-imports.exe" if os.name == "nt" else "lint-imports")
    found = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("lint-imports is not installed (pip install import-linter)")
    return found


def _run_lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with ``root`` first on the path, so it analyses that copy of ``medview``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "200"  # keep each contract's name and verdict on one line
    return subprocess.run(
        [_lint_imports_executable(), "--no-cache", "--no-logo", "--config", str(CONFIG)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_contracts_are_kept() -> None:
    """All contracts kept in the real tree (ui stays torch-free, io stays numpy-only, ...)."""
    proc = _run_lint_imports(REPO_ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"lint-imports failed:\n{output}"
    match = re.search(r"Contracts: (\d+) kept, (\d+) broken", output)
    assert match, output
    assert (int(match[1]), int(match[2])) == (EXPECTED_CONTRACTS, 0), output


@pytest.mark.parametrize(
    ("relative_path", "source", "broken_contract"),
    [
        ("medview/ui/_planted.py", "import torch\n", "ui: no torch"),
        ("medview/ui/_planted.py", "def f():\n    from medview.models import x\n", "ui: no torch"),
        ("medview/ui/_planted.py", "import medview.engine._planted_service\n", "ui: from medview.engine only"),
        ("medview/engine/api.py", "import torch\n", "engine.bundles and engine.fitness: torch-free"),
        ("medview/engine/fitness.py", "import torch\n", "engine.bundles and engine.fitness: torch-free"),
        ("medview/engine/bundles.py", "import torch\n", "engine.bundles and engine.fitness: torch-free"),
        ("medview/engine/__init__.py", "import torch\n", "__init__: torch-free"),
        ("medview/models/_planted.py", "import pyqtgraph\n", "no Qt, no medview.ui"),
        ("medview/io/_planted.py", "import torch\n", "pacs: numpy only"),
        ("medview/pacs/_planted.py", "import torch\n", "pacs: numpy only"),
        ("medview/pacs/_planted.py", "import PySide6\n", "no Qt, no medview.ui"),
        ("medview/_planted.py", "import training\n", "medview: never imports training"),
        ("medview/models/_planted.py", "from medview.engine import manifest\n", "models: never the engine"),
        ("medview/workflows/_planted.py", "import PySide6\n", "workflows: no Qt"),
        ("medview/engine/_planted.py", "import medview.workflows\n", "medview's layers"),
        ("medview/io/_planted.py", "import medview.measure\n", "medview's layers"),
        ("medview/preprocess/_planted.py", "import medview.pacs\n", "medview's layers"),
        ("training/_planted.py", "import medview.ui\n", "training: the app's engine"),
        ("medview/workflows/_planted.py", "import medview.engine.service\n", "workflows: no Qt"),
    ],
)
def test_planted_violation_breaks_a_contract(
    tmp_path: Path, relative_path: str, source: str, broken_contract: str
) -> None:
    """Each contract is live: on a copy of the package, one forbidden import makes lint-imports fail."""
    for package in ("medview", "training"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "medview" / "engine" / "_planted_service.py").write_text("import torch\n")
    planted = tmp_path / relative_path
    planted.write_text(source)
    proc = _run_lint_imports(tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"lint-imports accepted {relative_path}:\n{output}"
    # a contract with ignored imports reports "BROKEN (1 ignored import)"
    broken = [line for line in output.splitlines() if re.search(r"\bBROKEN\b", line)]
    assert any(broken_contract in line for line in broken), output
    assert "does not exist" not in output, output  # broken for the planted import, not a config error
