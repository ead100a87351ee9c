import numpy as np

from stgraph.geo import geodesic_km
from stgraph.testing import synthetic_stations


def test_synthetic_field_is_smooth_cyclic_and_seeded():
    d = synthetic_stations(num_nodes=30, num_steps=24 * 28, seed=5, noise_std=0.0, missing_rate=0.0)
    again = synthetic_stations(num_nodes=30, num_steps=24 * 28, seed=5, noise_std=0.0, missing_rate=0.0)
    np.testing.assert_array_equal(d.values, again.values)
    x = d.meta["truth"][..., 0]  # (T, N)
    # smooth in space: near pairs correlate more than far pairs
    ll = d.latlon
    i, j = np.triu_indices(30, 1)
    dist = geodesic_km(ll[i, 0], ll[i, 1], ll[j, 0], ll[j, 1])
    corr = np.corrcoef(x.T)[i, j]
    assert corr[dist < np.quantile(dist, 0.2)].mean() > corr[dist > np.quantile(dist, 0.8)].mean()
    # temporal correlation and a diurnal cycle
    assert np.corrcoef(x[1:, 0], x[:-1, 0])[0, 1] > 0.9
    hourly = x.reshape(28, 24, 30).mean(axis=(0, 2))
    assert hourly.max() - hourly.min() > 10
