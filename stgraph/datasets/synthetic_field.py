"""A Gaussian random field of known covariance at any set of stations, for scale benchmarks.

The field is separable: a squared-exponential kernel in space (approximated by ``num_features``
random Fourier features of the stations' unit-sphere positions, Rahimi & Recht 2007) times an
AR(1) process in time::

    value(t, n) = mean + std · Σ_f a_f(t) φ_f(x_n) + noise,   a_f(t) = ρ a_f(t-1) + sqrt(1-ρ²) e_f(t)
    φ_f(x) = sqrt(2 / F) cos(w_f · x + b_f),   w_f ~ N(0, I / ℓ²),  b_f ~ U(0, 2π)

so the covariance of the noise-free field, given the drawn features, is exactly
``std² · φ(x)·φ(x') · ρ^|t - t'|`` (:func:`field_covariance`), which tends to
``std² · exp(-|x - x'|² / 2ℓ²) · ρ^|t - t'|`` as F grows (|x - x'| the chord distance in km, equal
to the great-circle distance to 0.1 % below 500 km). It is built in chunks of stations, so peak
memory is the output (T, N) float32 values and bool mask plus one chunk: 10⁵ stations × 1 year
hourly is 3.5 GB of values and 0.9 GB of mask.

This is for measuring cost (time, memory) at sizes no real network has; accuracy claims never come
from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from stgraph.data.station_data import StationData
from stgraph.geo import EARTH_RADIUS_KM, latlon_to_xyz


def _features(latlon: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, F) float32 random Fourier features of (N, 2) lat/lon for (F, 3) frequencies (1/km), (F,) phases."""
    xyz = np.asarray(latlon_to_xyz(np.asarray(latlon, dtype=np.float64))) * EARTH_RADIUS_KM  # (N, 3) km
    return (np.sqrt(2.0 / len(b)) * np.cos(xyz @ w.T + b)).astype(np.float32)


def _draw_features(num_features: int, length_scale_km: float, rng: np.random.Generator):
    return rng.normal(0.0, 1.0 / length_scale_km, (num_features, 3)), rng.uniform(0.0, 2 * np.pi, num_features)


def field_covariance(latlon: np.ndarray, *, seed: int, num_features: int, length_scale_km: float, std: float):
    """(N, N) exact spatial covariance std² φ(x)·φ(x') of the noise-free field at lag 0 for the same
    ``seed`` and settings as :func:`gaussian_random_field` (multiply by ρ^|lag| for other lags)."""
    rng = np.random.default_rng(seed)
    w, b = _draw_features(num_features, length_scale_km, rng)
    phi = _features(latlon, w, b).astype(np.float64)
    return std**2 * phi @ phi.T


def uniform_stations(num_stations: int, bbox: tuple[float, float, float, float], *, seed: int = 0) -> pd.DataFrame:
    """``num_stations`` stations uniformly on the sphere inside ``bbox`` = (lat0, lat1, lon0, lon1)."""
    lat0, lat1, lon0, lon1 = bbox
    if not (-90 <= lat0 < lat1 <= 90 and lon0 < lon1) or num_stations < 1:
        raise ValueError(f"bbox must be (lat0 < lat1, lon0 < lon1) in degrees and num_stations >= 1, got {bbox}")
    rng = np.random.default_rng(seed)
    s0, s1 = np.sin(np.deg2rad(lat0)), np.sin(np.deg2rad(lat1))  # uniform in sin(lat): equal area
    lat = np.rad2deg(np.arcsin(rng.uniform(s0, s1, num_stations)))
    lon = rng.uniform(lon0, lon1, num_stations)
    ids = [f"G{i:06d}" for i in range(num_stations)]
    return pd.DataFrame({"station": ids, "name": ids, "latitude": lat, "longitude": lon})


def gaussian_random_field(
    stations: pd.DataFrame,
    *,
    num_steps: int = 24 * 365,
    start: str = "2024-01-01",
    freq: str = "1h",
    length_scale_km: float = 100.0,
    rho: float = 0.97,
    mean: float = 50.0,
    std: float = 20.0,
    noise_std: float = 2.0,
    missing_rate: float = 0.05,
    num_features: int = 128,
    seed: int = 0,
    chunk: int = 4096,
    channel: str = "x",
    unit: str = "1",
) -> StationData:
    """The field at ``stations`` (a table with ``station``, ``latitude``, ``longitude``; e.g.
    :func:`uniform_stations` or a real network's), one channel, ``num_steps`` steps.

    Returns:
        StationData (T, N, 1) float32 values (0 where ``mask`` is False), ``meta`` holding the
        settings (``meta["field"]``) so the covariance can be rebuilt with :func:`field_covariance`.
    """
    if not 0.0 <= rho < 1.0 or num_steps < 1 or num_features < 1 or length_scale_km <= 0:
        raise ValueError("need 0 <= rho < 1, num_steps >= 1, num_features >= 1 and length_scale_km > 0")
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    rng = np.random.default_rng(seed)
    w, b = _draw_features(num_features, length_scale_km, rng)
    shocks = rng.normal(0.0, np.sqrt(1 - rho**2), (num_steps, num_features))
    shocks[0] = rng.normal(0.0, 1.0, num_features)  # stationary start
    coef = (std * lfilter([1.0], [1.0, -rho], shocks, axis=0)).astype(np.float32)  # (T, F)
    latlon = stations[["latitude", "longitude"]].to_numpy(np.float64)
    n = len(latlon)
    values = np.empty((num_steps, n, 1), dtype=np.float32)
    mask = np.empty((num_steps, n, 1), dtype=bool)
    for lo in range(0, n, chunk):  # chunks of stations bound the temporaries (a few hundred MB)
        hi = min(n, lo + chunk)
        v = coef @ _features(latlon[lo:hi], w, b).T  # (T, n_chunk)
        v += mean
        v += rng.standard_normal(v.shape, dtype=np.float32) * np.float32(noise_std)
        m = rng.random(v.shape, dtype=np.float32) >= missing_rate
        v[~m] = 0.0
        values[:, lo:hi, 0], mask[:, lo:hi, 0] = v, m
    settings = dict(
        seed=seed, num_features=num_features, length_scale_km=length_scale_km, std=std, rho=rho,
        mean=mean, noise_std=noise_std, missing_rate=missing_rate,
    )  # fmt: skip
    return StationData(
        values=values,
        mask=mask,
        times=pd.date_range(start, periods=num_steps, freq=freq).to_numpy(),
        stations=stations.reset_index(drop=True),
        channels=(channel,),
        units=(unit,),
        name=f"grf-{n}",
        meta={"field": settings},
    )
