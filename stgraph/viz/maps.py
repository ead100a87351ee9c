"""Maps of stations and their graph edges."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

from stgraph.data.station_data import StationData  # noqa: E402


def plot_station_map(
    data: StationData,
    graph: Data | None,
    path: str | Path,
    *,
    title: str | None = None,
    color=None,
    label_max: int = 40,
) -> Path:
    """Stations as points (longitude, latitude; aspect corrected for latitude) and graph edges as
    lines (width by weight). ``color``: optional (N,) values for a colour scale.
    Returns the written PNG path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ll = data.latlon
    fig, ax = plt.subplots(figsize=(8, 7), dpi=120)
    if graph is not None and graph.num_edges:
        src, dst = graph.edge_index.numpy()
        nodes = graph.station_index.numpy() if hasattr(graph, "station_index") else np.arange(len(ll))
        seg = np.stack([ll[nodes[src]][:, ::-1], ll[nodes[dst]][:, ::-1]], axis=1)  # (E, 2, [lon, lat])
        w = graph.edge_weight.numpy() if graph.edge_weight is not None else np.ones(len(src))
        ax.add_collection(
            LineCollection(seg, linewidths=0.4 + 1.6 * w / max(w.max(), 1e-12), colors="tab:gray", alpha=0.6, zorder=1)
        )
    sc = ax.scatter(
        ll[:, 1],
        ll[:, 0],
        c=color if color is not None else "tab:blue",
        s=30 if len(ll) <= 200 else 4,
        zorder=2,
        edgecolors="k" if len(ll) <= 200 else "none",
        linewidths=0.5,
    )
    if color is not None:
        fig.colorbar(sc, ax=ax, shrink=0.8)
    if len(ll) <= label_max:
        for name, (lat, lon) in zip(data.stations["name"], ll, strict=True):
            ax.annotate(str(name), (lon, lat), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_aspect(1 / np.cos(np.deg2rad(ll[:, 0].mean())))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(title or data.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
