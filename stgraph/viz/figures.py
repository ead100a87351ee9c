"""The plots a researcher looks at, one function each, all matplotlib (Agg), PNG, nothing downloaded.

* :func:`reanalysis_map`: a reanalysis NetCDF at one time, stations on top coloured by their
  observed value then (same colour scale);
* :func:`station_series`: a run's hidden station over time: truth, estimate and, for sampling
  models, the 5-95 % band;
* :func:`error_vs_distance`: every model of a benchmark folder, each hidden station's MAE against
  its distance to the nearest visible station of its fold, points and a binned mean per model;
* :func:`leaderboard_bars`: a task's metric per model, mean ± std over folds × seeds;
* :func:`learning_curves`: a run's train loss and validation MAE per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stgraph.geo import geodesic_km  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found ({what})")
    return path


def reanalysis_map(nc: str | Path, out: str | Path, *, time: str | None = None, variable: str | None = None) -> Path:
    """The field of ``variable`` (default the first estimate) at ``time`` (default the first step);
    the source run's stations drawn on top, coloured by their observed value at that time (hollow
    where unobserved)."""
    import xarray as xr

    from stgraph.engine.config import load_config
    from stgraph.engine.experiment import load_experiment_data

    with xr.open_dataset(_need(Path(nc), "a reanalysis NetCDF written by `stgraph reanalyse`")) as ds:
        suffixes = ("_std", "_q05", "_q50", "_q95")
        names = [v for v in ds.data_vars if ds[v].dims[:1] == ("time",) and not v.endswith(suffixes)]
        var = variable or names[0]
        if var not in ds:
            raise KeyError(f"{nc}: no variable {var!r}; estimates here: {names}")
        if "lat" not in ds[var].dims:
            raise ValueError(f"{nc}: a map needs a grid file (dims time, lat, lon), not points")
        t = pd.Timestamp(time) if time else pd.Timestamp(ds.time.values[0])
        times = pd.DatetimeIndex(ds.time.values)
        if t not in times:
            raise ValueError(f"--time {time}: not a step of {nc} ({times[0]} to {times[-1]})")
        field = ds[var].sel(time=t).values
        lat, lon, unit = ds.lat.values, ds.lon.values, ds[var].attrs.get("units", "")
        run_dir, source = ds.attrs.get("run_dir"), ds.attrs.get("source_stations", "")
    fig, ax = plt.subplots(figsize=(7, 6))
    vmin, vmax = np.nanpercentile(field, [1, 99])
    mesh = ax.pcolormesh(lon, lat, field, shading="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(mesh, ax=ax, label=f"{var} [{unit}]")
    if run_dir and Path(run_dir, "config.yaml").exists():
        cfg = load_config(Path(run_dir) / "config.yaml")
        data = load_experiment_data(cfg.data)
        ids = set(source.split(","))
        rows = [i for i, s in enumerate(data.station_ids) if s in ids]
        step = np.flatnonzero(pd.DatetimeIndex(data.times) == t)
        c = data.channels.index(cfg.data.target_channels[0])
        if len(step):
            v, m = data.values[step[0], rows, c], data.mask[step[0], rows, c]
            ll = data.latlon[rows]
            ax.scatter(ll[m, 1], ll[m, 0], c=v[m], cmap="viridis", vmin=vmin, vmax=vmax, edgecolors="white", s=60,
                       linewidths=1.2, label="stations (observed)")  # fmt: skip
            ax.scatter(ll[~m, 1], ll[~m, 0], facecolors="none", edgecolors="white", s=60, label="stations (missing)")
            ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect(1 / np.cos(np.deg2rad(np.mean(lat))))
    ax.set(xlabel="longitude", ylabel="latitude", title=f"{var} at {t}")
    return _save(fig, out)


def station_series(run_dir: str | Path, station: str, out: str | Path, *, start=None, end=None) -> Path:
    """Truth, estimate and (sampling models) the 5-95 % band of a hidden station of a run."""
    from stgraph.engine.run_folder import RunDir

    run = RunDir(run_dir)
    preds = dict(np.load(_need(run.predictions_path, "the run's predictions: finish it with `stgraph train`")))
    ids = [str(s) for s in preds["stations"]]
    if station not in ids:
        raise KeyError(f"station {station!r} is not a hidden station of {run.path}; hidden: {ids}")
    j = ids.index(station)
    cfg_times = _run_times(run)
    h = preds["pred"].shape[1]
    steps = (preds["start"][:, None] + np.arange(h)[None]).ravel()
    order = np.argsort(steps, kind="stable")
    steps = steps[order]
    pick = lambda a: a[:, :, j, 0].ravel()[order]  # noqa: E731
    pred, true, mask = pick(preds["pred"]), pick(preds["true"]), pick(preds["mask"]).astype(bool)
    _, first = np.unique(steps, return_index=True)  # overlapping windows: the first estimate of a step
    t = pd.DatetimeIndex(cfg_times[steps[first]])
    sel = np.ones(len(first), dtype=bool)
    if start:
        sel &= t >= pd.Timestamp(start)
    if end:
        sel &= t < pd.Timestamp(end)
    if not sel.any():
        raise ValueError(f"--start {start} --end {end}: no estimate of {station} in that range ({t[0]} to {t[-1]})")
    fig, ax = plt.subplots(figsize=(10, 4))
    if "quantiles" in preds:
        q = preds["quantiles"][:, :, :, j, 0].reshape(3, -1)[:, order][:, first]
        ax.fill_between(t[sel], q[0][sel], q[2][sel], alpha=0.3, label="5-95 % of samples")
    y = np.where(mask[first], true[first], np.nan)
    ax.plot(t[sel], y[sel], color="black", lw=1, label="observed")
    ax.plot(t[sel], pred[first][sel], color="tab:red", lw=1, label="estimate")
    ax.set(title=f"{station} (never seen by the model) — {run.path.name}", ylabel=_unit(run))
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, out)


def _run_times(run) -> np.ndarray:
    from stgraph.engine.config import load_config
    from stgraph.engine.experiment import load_experiment_data

    cfg = load_config(run.config_path)
    return load_experiment_data(cfg.data).times


def _unit(run) -> str:
    metrics = run.path / "metrics.json"
    return json.loads(metrics.read_text())["test"].get("unit", "") if metrics.exists() else ""


def error_vs_distance(bench_out: str | Path, out: str | Path, *, task: str, bins: int = 6) -> Path:
    """Each hidden station's MAE (per model, mean over its folds × seeds) against the great-circle
    distance to the nearest train-role station of its run; one colour per model, binned means joined."""
    from stgraph.datasets import load_dataset
    from stgraph.engine.config import load_config

    root = Path(bench_out) / "runs" / task
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no runs of task {task!r} in {bench_out}")
    rows = []
    latlon = None
    for split_path in sorted(root.glob("*/*/split.json")):
        run = split_path.parent
        if not (run / "predictions.npz").exists():
            continue
        if latlon is None:
            data = load_dataset(load_config(run / "config.yaml").data.dataset)
            latlon = dict(zip(data.station_ids, map(tuple, data.latlon), strict=True))
        roles = json.loads(split_path.read_text())["stations"]
        preds = np.load(run / "predictions.npz")
        err = np.abs(preds["pred"] - preds["true"]) * preds["mask"]
        mae = err.sum(axis=(0, 1, 3)) / np.maximum(preds["mask"].sum(axis=(0, 1, 3)), 1)
        train = np.array([latlon[s] for s in roles["train"]])
        for s, e in zip(preds["stations"], mae, strict=True):
            la, lo = latlon[str(s)]
            d = geodesic_km(np.full(len(train), la), np.full(len(train), lo), train[:, 0], train[:, 1]).min()
            rows.append({"model": run.parent.name, "station": str(s), "distance_km": float(d), "mae": float(e)})
    if not rows:
        raise FileNotFoundError(f"{root}: no finished runs (predictions.npz) to plot")
    df = pd.DataFrame(rows).groupby(["model", "station"], as_index=False).mean()
    fig, ax = plt.subplots(figsize=(8, 5))
    edges = np.quantile(df.distance_km, np.linspace(0, 1, bins + 1))
    for i, (model, g) in enumerate(df.groupby("model")):
        color = plt.cm.tab20(i % 20)
        ax.scatter(g.distance_km, g.mae, s=12, color=color, alpha=0.5)
        which = np.clip(np.searchsorted(edges, g.distance_km, side="right") - 1, 0, bins - 1)
        curve = g.groupby(which).agg(d=("distance_km", "mean"), m=("mae", "mean"))
        ax.plot(curve.d, curve.m, "-o", color=color, ms=3, label=model)
    ax.set(xlabel="distance to the nearest visible station [km]", ylabel="MAE at the hidden station",
           title=f"{Path(bench_out).name} / {task}: error against distance")  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out)


def leaderboard_bars(bench_out: str | Path, out: str | Path, *, task: str, metric: str = "mae") -> Path:
    """A task's metric per model (mean ± std over folds × seeds), best first."""
    table = pd.read_csv(_need(Path(bench_out) / "leaderboard.csv", "a benchmark output folder's leaderboard"))
    rows = table[(table.task == task) & (table.metric == metric)].dropna(subset=["mean"]).sort_values("mean")
    if rows.empty:
        raise ValueError(f"{bench_out}: no {metric!r} for task {task!r}; tasks: {sorted(table.task.unique())}")
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    ax.barh(rows.model, rows["mean"], xerr=rows["std"].fillna(0), color="tab:blue", alpha=0.8, capsize=3)
    ax.invert_yaxis()
    ax.set(xlabel=f"{metric} (mean ± std over folds × seeds)", title=f"{Path(bench_out).name} / {task}")
    fig.tight_layout()
    return _save(fig, out)


def learning_curves(run_dir: str | Path, out: str | Path) -> Path:
    """Train loss and validation MAE (standardised) per epoch, best epoch marked (a fitting model's
    own loop: its own validation score, ``val_score``, :mod:`stgraph.engine.fit_curve`)."""
    table = pd.read_csv(_need(Path(run_dir) / "learning_curve.csv", "a trained run's learning curve"))
    key, label = ("val_mae_scaled", "validation MAE (standardised)")
    if key not in table.columns and "val_score" in table.columns:
        key, label = "val_score", "validation score (the model's own loop)"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(table.epoch, table.train_loss, "-o", ms=3, label="train loss")
    ax.plot(table.epoch, table[key], "-o", ms=3, label=label)
    best = table[key].idxmin()
    ax.axvline(table.epoch[best], color="grey", ls=":", label=f"best epoch {table.epoch[best]}")
    ax.set(xlabel="epoch", title=Path(run_dir).name)
    ax.legend(fontsize=8)
    return _save(fig, out)
