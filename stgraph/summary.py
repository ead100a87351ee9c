"""A dataset at a glance: stations, time span, missing rates, its kNN graph's structure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stgraph.data.station_data import StationData
from stgraph.graph.build import station_data_graph
from stgraph.graph.export import connectivity_summary


def _step(step: pd.Timedelta) -> str:
    """1h, 30min, 1d: the step as a short string."""
    for unit, name in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if step.total_seconds() % unit == 0:
            return f"{int(step.total_seconds() // unit)}{name}"
    return str(step)


def summarize(data: StationData, *, k: int = 4, backend: str | None = None) -> tuple[dict, object]:
    """Returns (summary dict, the symmetric kNN graph it describes)."""
    graph = station_data_graph(data, k, symmetric=True, backend=backend)
    info = {
        "dataset": data.name,
        "num_stations": data.num_nodes,
        "num_steps": data.num_steps,
        "start": f"{pd.Timestamp(data.times[0]):%Y-%m-%d %H:%M}" if data.num_steps else None,
        "end": f"{pd.Timestamp(data.times[-1]):%Y-%m-%d %H:%M}" if data.num_steps else None,
        "freq": _step(data.freq) if data.freq is not None else None,
        "channels": list(data.channels),
        "units": list(data.units),
        "missing_rate": {c: round(float(r), 4) for c, r in data.missing_rate().items()},
        "eval_targets": int(data.eval_mask.sum()) if data.eval_mask is not None else None,
        "report": data.meta.get("report", {}).get("counts", {}),
        "graph": {"k": k, "symmetric": True, "knn_backend": graph.knn_backend, **connectivity_summary(graph)},
    }
    return info, graph


def format_summary(info: dict) -> str:
    g = info["graph"]
    lines = [f"dataset          {info['dataset']}", f"stations         {info['num_stations']}"]
    if info["num_steps"]:
        lines.append(
            f"time span        {info['start']} .. {info['end']}  ({info['num_steps']:,d} steps of {info['freq']})"
        )
        lines.append("missing rate     " + "  ".join(f"{c} {100 * r:.1f}%" for c, r in info["missing_rate"].items()))
    else:
        lines.append("time span        none (coordinates only)")
    if info["eval_targets"] is not None:
        lines.append(f"eval targets     {info['eval_targets']} cells (official evaluation mask)")
    for key, n in info["report"].items():
        lines.append(f"reader           {key}: {n}")
    lines += [
        f"graph            symmetric kNN, k={g['k']}, backend={g['knn_backend']}: {g['num_edges']} directed edges",
        f"degree           min {g['degree_min']:.0f}  mean {g['degree_mean']:.2f}  max {g['degree_max']:.0f}",
        f"edge length km   min {g['edge_km_min']:.1f}  median {g['edge_km_median']:.1f}  max {g['edge_km_max']:.1f}",
        f"components       {g['num_components']} (sizes {g['component_sizes'][:10]}), "
        f"isolated nodes {g['isolated_nodes']}",
    ]
    return "\n".join(lines)


def run_summary(
    data: StationData, *, k: int = 4, map_path: str | Path | None = None, backend: str | None = None
) -> dict:
    """What ``stgraph summary`` does: print the summary and write the map (if asked)."""
    info, graph = summarize(data, k=k, backend=backend)
    print(format_summary(info))
    if map_path is not None:
        from stgraph.viz.maps import plot_station_map

        path = plot_station_map(data, graph, map_path, title=f"{data.name}: {data.num_nodes} stations, kNN k={k}")
        info["map"] = str(path)
        print(f"map              {path}")
    return info
