"""Synthetic station networks with a known spatiotemporal field, for fast unit tests.

Accuracy claims never come from here; real data lives in :mod:`stgraph.datasets`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from stgraph.data.station_data import StationData
from stgraph.geo import EARTH_RADIUS_KM


def synthetic_stations(
    num_nodes: int = 16,
    num_steps: int = 24 * 14,
    num_channels: int = 1,
    *,
    seed: int = 0,
    start: str = "2024-01-01",
    freq: str = "1h",
    missing_rate: float = 0.1,
    bbox: tuple[float, float, float, float] = (39.6, 40.4, 116.0, 117.0),
    length_scale_km: float = 40.0,
    rho: float = 0.95,
    noise_std: float = 1.0,
) -> StationData:
    """A smooth field sampled at random stations.

    value(t, n) = 50 + 15·sin(2π·hour/24 + phase(n)) + 6·weekend(t) + 20·g(t, pos_n) + noise, where
    g is a sum of random Fourier features of the position (length scale ``length_scale_km``,
    so nearby stations are similar) with AR(1) coefficients in time (lag-1 correlation ``rho``).
    Channel c is the field scaled by (1 + 0.5c) and shifted by 10c.

    Args:
        bbox: (lat_min, lat_max, lon_min, lon_max) in degrees.
    Returns:
        StationData whose ``meta["truth"]`` is the noise-free (T, N, C) field.
    """
    rng = np.random.default_rng(seed)
    lat = rng.uniform(bbox[0], bbox[1], num_nodes)
    lon = rng.uniform(bbox[2], bbox[3], num_nodes)
    # local planar km coordinates for the spatial features
    xy = (
        np.stack([np.deg2rad(lon - lon.mean()) * np.cos(np.deg2rad(lat.mean())), np.deg2rad(lat - lat.mean())], 1)
        * EARTH_RADIUS_KM
    )  # (N, 2)
    num_features = 8
    w = rng.normal(0, 1 / length_scale_km, (num_features, 2))
    b = rng.uniform(0, 2 * np.pi, num_features)
    basis = np.sqrt(2 / num_features) * np.cos(xy @ w.T + b)  # (N, F)
    shocks = rng.normal(0, np.sqrt(1 - rho**2), (num_steps, num_features))
    shocks[0] = rng.normal(0, 1, num_features)  # stationary start
    coef = lfilter([1.0], [1.0, -rho], shocks, axis=0)  # AR(1): a_t = rho a_{t-1} + e_t
    times = pd.date_range(start, periods=num_steps, freq=freq)
    hour = (times.hour + times.minute / 60).to_numpy(np.float64)
    weekend = np.asarray(times.day_of_week >= 5, dtype=np.float64)
    phase = 0.5 * xy[:, 0] / length_scale_km
    base = (
        50 + 15 * np.sin(2 * np.pi * hour[:, None] / 24 + phase[None]) + 6 * weekend[:, None] + 20 * coef @ basis.T
    )  # (T, N)
    scale = 1 + 0.5 * np.arange(num_channels)
    truth = (base[..., None] * scale + 10 * np.arange(num_channels)).astype(np.float32)  # (T, N, C)
    values = truth + rng.normal(0, noise_std, truth.shape).astype(np.float32)
    mask = rng.random(truth.shape) >= missing_rate
    stations = pd.DataFrame(
        {
            "station": [f"S{i:03d}" for i in range(num_nodes)],
            "name": [f"synthetic {i}" for i in range(num_nodes)],
            "latitude": lat,
            "longitude": lon,
        }
    )
    return StationData(
        values=values,
        mask=mask,
        times=times.to_numpy(),
        stations=stations,
        channels=tuple(f"x{c}" for c in range(num_channels)),
        units=("1",) * num_channels,
        name="synthetic",
        meta={"truth": truth, "seed": seed},
    )
