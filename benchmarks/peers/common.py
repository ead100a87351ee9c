"""What every peer shares: the suite's protocol, the engine's scoring, one record per peer.

A peer is an implementation we did not write (PyPOTS's imputers, the GRIN authors' ``tsl``),
trained on the same AQI-36 cells as a suite's rows and scored by the same code, so its number sits
beside ours like for like. The protocol comes from the suite's ``lerp-knn`` row (roles, periods,
scaler, windows); the peer brings its own model and training step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stgraph.bench import load_suite  # noqa: E402
from stgraph.engine.evaluate import predict, score  # noqa: E402
from stgraph.engine.experiment import Experiment, prepare_experiment  # noqa: E402
from stgraph.models.base import Prediction  # noqa: E402


@dataclass
class Protocol:
    """The suite's impute protocol, as arrays a peer can train on.

    Attributes:
        exp: the engine's experiment (roles, periods, scaler, windows) of the suite's lerp-knn row.
        channel: index of the one target channel among the input channels.
        train_x: (B, W, N) standardised training windows (the training months, their evaluation cells
            restored: the official out-of-sample setting), NaN where unobserved.
        val_x: (B', W, N) standardised validation inputs, NaN where unobserved.
        val_truth: (B', W, N) standardised validation evaluation cells, NaN elsewhere.
    """

    exp: Experiment
    channel: int
    train_x: np.ndarray
    val_x: np.ndarray
    val_truth: np.ndarray


def as_array(windows, channel: int) -> np.ndarray:
    """(B, W, N) float32 with NaN where unobserved, from every window of a WindowDataset."""
    w = windows[torch.arange(len(windows))]
    return torch.where(w.x_mask[..., channel], w.x[..., channel], torch.nan).numpy()


def load_protocol(suite_path: str) -> Protocol:
    """The impute protocol of the suite's ``lerp-knn`` row, with one target channel."""
    suite = load_suite(suite_path)
    spec = next((r for r in suite.runs if r.model == "lerp-knn"), None)
    if spec is None:
        raise SystemExit(f"{suite_path}: the suite has no lerp-knn row to take the protocol from")
    exp = prepare_experiment(spec.config)
    if exp.task.name != "impute" or len(exp.targets) != 1:
        raise SystemExit(f"{suite_path}: a peer runs the impute task with one target channel")
    ch = int(exp.targets[0])
    cap = spec.config.train.max_val_windows
    val_in, val_truth = exp.eval_windows("val", cap, scaled_truth=True)
    return Protocol(exp, ch, as_array(exp.train.windows, ch), as_array(val_in, ch), as_array(val_truth, ch))


class CallableAsStationModel(nn.Module):
    """A fitted peer behind the engine's ``forward(batch) -> Prediction`` for ``impute`` (no station
    hidden): ``fill(x)`` takes (B, W, N) standardised windows with NaN where unobserved and returns
    the completed (B, W, N), or S samples of it (S, B, W, N): their median is the estimate and the
    engine scores CRPS and coverage from them, as for our sampling models."""

    trainable = False

    def __init__(self, fill, channel: int):
        super().__init__()
        self.fill, self.channel = fill, channel

    def forward(self, batch) -> Prediction:
        x = torch.where(batch.x_mask[..., self.channel], batch.x[..., self.channel], torch.nan)
        out = torch.as_tensor(np.asarray(self.fill(x.numpy())), dtype=torch.float32)[..., None]  # (B, W, N, 1)
        if out.dim() == 4:
            return Prediction(src=out, tgt=out.new_zeros(out.shape[0], out.shape[1], 0, 1))
        src = out.median(0).values  # (S, B, W, N, 1) samples
        empty = out.new_zeros(*out.shape[:3], 0, 1)
        return Prediction(src=src, tgt=empty[0], samples_src=out, samples_tgt=empty)


def score_peer(protocol: Protocol, fill) -> dict:
    """The engine's hidden-cell metrics (original units) of ``fill`` on every test window."""
    return score(protocol.exp, predict(CallableAsStationModel(fill, protocol.channel), protocol.exp))["hidden"]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def code_version() -> dict:
    """The commit and whether the package or the peers had uncommitted changes, taken when a peer
    starts (a commit made while it trains does not change what it ran)."""
    dirty = bool(_git("status", "--porcelain", "--", "stgraph", "benchmarks/peers"))
    return {"code": _git("rev-parse", "--short", "HEAD"), "dirty": dirty}


class Deadline:
    """A wall-clock budget in minutes, started now."""

    def __init__(self, minutes: float):
        self.minutes, self.start = minutes, time.perf_counter()
        self.end = self.start + 60.0 * minutes

    def passed(self) -> bool:
        return time.perf_counter() > self.end

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def save_record(result: Path, record: dict, json_path: Path | None = None) -> None:
    """Add (or replace) the peer's record in the JSON beside ``result`` and rewrite the table."""
    out = Path(json_path or Path(result).with_suffix(".json"))
    rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if r["model"] != record["model"]] + [record]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    write_table(Path(result), rows)


def write_table(path: Path, rows: list[dict]) -> None:
    """The peers' markdown table (one row per record); the protocol is each record's suite's."""
    suites = sorted({r.get("suite", "configs/bench/aqi36_steps.yaml") for r in rows})
    lines = [
        "# Peers at equal CPU time (AQI-36 impute, every test window)",
        "",
        "- commands: `python benchmarks/peers/pypots_peer.py SUITE --model NAME --minutes M --threads 1` and "
        "`python benchmarks/peers/tsl_grin_peer.py SUITE --minutes M --threads 1` (one row per model; the "
        "records in the `.json` beside this file); suites: " + ", ".join(f"`{s}`" for s in suites),
        "- protocol: the suite's (its `lerp-knn` row's config): roles, periods, scaler and windows; scored by "
        "the engine's `predict` and `score` on all test windows (MAE per cell = overlapping windows averaged; "
        "WINDOW MAE = SPIN's per-window scoring; with month-aligned windows both count each cell once). A "
        "sampling peer's median is scored, and its samples give CRPS and the 90 % interval's coverage.",
        "- training: the peer's own model and training step, stopped at the wall-clock budget, the best "
        "validation kept.",
        "",
        "| model | MAE | RMSE | WINDOW MAE | CRPS | coverage 90 | cells | minutes | steps | ms / step | best at "
        "| threads | suite | code |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]

    def fmt(r, key):
        return f"{r[key]:.2f}" if r.get(key) is not None else "—"

    for r in rows:
        library = r.get("library") or f"pypots {r.get('pypots', '?')}"  # first records named only pypots
        best_at = r.get("best_at") or f"epoch {r.get('best_epoch', '?')}"
        name = r["model"].removeprefix("pypots ")  # first records: "pypots SAITS"
        suite = Path(r.get("suite", "configs/bench/aqi36_steps.yaml")).stem
        lines.append(
            f"| {name} ({library}) | {r['mae']:.2f} | {r['rmse']:.2f} | {r['window_mae']:.2f} | {fmt(r, 'crps')} | "
            f"{fmt(r, 'coverage90')} | {r['cells']:,} | {r['train_seconds'] / 60:.1f} | {r['steps']:,} | "
            f"{r['ms_per_step']:.0f} | {best_at} | {r['threads']} | `{suite}` | "
            f"`{r['code']}`{' (dirty)' if r['dirty'] else ''} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def merge_records(result: Path, record_files: list[Path]) -> None:
    """Add the records of ``record_files`` (peers run apart, e.g. two at once into their own files)
    to the JSON beside ``result`` and rewrite its table."""
    for f in record_files:
        for record in json.loads(Path(f).read_text()):
            save_record(result, record)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="merge peer records into one results table")
    ap.add_argument("result", help="the table, e.g. benchmarks/results/peers.md (records in its .json)")
    ap.add_argument("records", nargs="+", help="record files written by a peer's --json")
    a = ap.parse_args()
    merge_records(Path(a.result), [Path(r) for r in a.records])
