"""The documentation site builds with no warning (``mkdocs build --strict``): every API page's
module imports and its docstrings render."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path):
    exe = Path(sys.executable).with_name("mkdocs")
    assert exe.exists(), "mkdocs is not installed: pip install -e '.[docs]'"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([str(exe), "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "models" / "index.html").exists()
