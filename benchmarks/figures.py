"""The documentation's figures (docs/figures), from the UCI-12 suite's local outputs (run `make bench` first).

    python benchmarks/figures.py      # -> docs/figures/*.png
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "outputs" / "bench" / "uci12"
FIGURES = [
    ["error-distance", str(BENCH), "--task", "krige", "--out", "docs/figures/uci12_krige_error_distance.png"],
    ["leaderboard", str(BENCH), "--task", "krige", "--out", "docs/figures/uci12_krige_leaderboard.png"],
    ["attention", str(BENCH / "runs" / "krige" / "aqnet" / "fold0-seed0"), "--out",
     "docs/figures/uci12_aqnet_attention.png"],
]  # fmt: skip


def main() -> None:
    for args in FIGURES:
        subprocess.run([sys.executable, "-m", "stgraph.cli", "plot", *args], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
