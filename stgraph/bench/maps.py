"""Maps of per-station errors at hidden stations: where does a model generalise worst?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.bench.suite import Suite
from stgraph.engine.experiment import load_experiment_data
from stgraph.viz.maps import plot_station_map


def write_error_maps(suite: Suite, out: str | Path) -> list[Path]:
    """For each task, a map of the best model's (lowest mean MAE) hidden-station MAE, averaged
    over the folds × seeds in which each station was hidden. Draws from the ``leaderboard.csv``
    and ``station_errors.csv`` that :func:`~stgraph.bench.write_leaderboard` wrote into ``out``.
    Returns the written PNGs."""
    out = Path(out)
    try:
        table = pd.read_csv(out / "leaderboard.csv")
        errors = pd.read_csv(out / "station_errors.csv", dtype={"station": str})
    except (FileNotFoundError, pd.errors.EmptyDataError):  # no finished run yet
        return []
    paths = []
    for task in suite.tasks:
        mae = table[(table.task == task) & (table.metric == "mae") & (table.n > 0)]
        if not len(mae):
            continue
        best = mae.sort_values("mean").iloc[0]["model"]
        spec = next(r for r in suite.runs if r.task == task and r.model == best)
        data = load_experiment_data(spec.config.data)
        per = errors[(errors.task == task) & (errors.model == best)].set_index("station")["mae"]
        color = pd.Series(data.station_ids).map(per).to_numpy(float)
        if np.isnan(color).all():
            continue
        unit = data.units[data.channel_index(spec.config.data.target_channels[0])]
        title = f"{suite.name} · {task} · {best}: hidden-station MAE ({unit})"
        paths.append(plot_station_map(data, None, out / "maps" / f"{task}_{best}.png", title=title, color=color))
    return paths
