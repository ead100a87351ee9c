import numpy as np
import pytest

from stgraph.datasets.synthetic_field import field_covariance, gaussian_random_field, uniform_stations
from stgraph.geo import haversine_km


def test_uniform_stations_inside_bbox_and_seeded():
    s = uniform_stations(500, (20.0, 45.0, 100.0, 120.0), seed=3)
    assert len(s) == 500 and s.station.is_unique
    assert s.latitude.between(20, 45).all() and s.longitude.between(100, 120).all()
    assert s.equals(uniform_stations(500, (20.0, 45.0, 100.0, 120.0), seed=3))
    with pytest.raises(ValueError, match="bbox"):
        uniform_stations(5, (45.0, 20.0, 100.0, 120.0))


def test_field_has_its_stated_covariance_in_space_and_time():
    stations = uniform_stations(6, (39.0, 41.0, 115.0, 118.0), seed=1)
    kw = dict(seed=7, num_features=64, length_scale_km=80.0, std=3.0)
    data = gaussian_random_field(
        stations, num_steps=40_000, rho=0.9, mean=10.0, noise_std=0.0, missing_rate=0.0, **kw
    )
    x = data.values[:, :, 0].astype(np.float64) - 10.0
    emp = x.T @ x / len(x)  # (N, N) empirical lag-0 covariance
    exact = field_covariance(stations[["latitude", "longitude"]].to_numpy(), **kw)
    assert np.abs(emp - exact).max() < 0.1 * exact.diagonal().mean()
    lag1 = (x[1:] * x[:-1]).mean(0) / (x * x).mean(0)
    assert np.allclose(lag1, 0.9, atol=0.02)
    # the exact covariance tends to the squared-exponential kernel with many features
    many = field_covariance(stations[["latitude", "longitude"]].to_numpy(), seed=0, num_features=20_000,
                            length_scale_km=80.0, std=1.0)
    lat, lon = stations.latitude.to_numpy(), stations.longitude.to_numpy()
    d = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    assert np.abs(many - np.exp(-(d**2) / (2 * 80.0**2))).max() < 0.05


def test_missing_cells_are_zero_and_chunking_does_not_change_the_field():
    stations = uniform_stations(50, (30.0, 31.0, 110.0, 111.0), seed=0)
    a = gaussian_random_field(stations, num_steps=30, missing_rate=0.3, seed=2, chunk=7)
    assert a.values.dtype == np.float32 and a.values.shape == (30, 50, 1)
    assert (a.values[~a.mask] == 0).all() and 0.6 < a.mask.mean() < 0.8
    b = gaussian_random_field(stations, num_steps=30, missing_rate=0.0, noise_std=0.0, seed=2, chunk=7)
    c = gaussian_random_field(stations, num_steps=30, missing_rate=0.0, noise_std=0.0, seed=2, chunk=50)
    np.testing.assert_allclose(b.values, c.values, rtol=1e-6)
