import numpy as np
import pytest
import torch
from geopy.distance import geodesic

from stgraph.geo import geodesic_km, haversine_km, km_to_chord, latlon_to_xyz


def test_geodesic_agrees_with_geopy_within_half_a_percent():
    rng = np.random.default_rng(0)
    a = np.stack([rng.uniform(-85, 85, 300), rng.uniform(-180, 180, 300)], 1)
    # pairs from ~1 km to thousands of km, some across the antimeridian
    b = a + np.stack(
        [
            rng.normal(0, 1, 300) * rng.choice([0.01, 0.3, 5, 30], 300),
            rng.normal(0, 1, 300) * rng.choice([0.01, 0.3, 5, 30], 300),
        ],
        1,
    )
    b[:, 0] = np.clip(b[:, 0], -89, 89)
    b[:, 1] = (b[:, 1] + 180) % 360 - 180
    ours = geodesic_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    ref = np.array([geodesic(tuple(p), tuple(q)).km for p, q in zip(a, b, strict=True)])
    rel = np.abs(ours - ref) / ref
    assert rel.max() < 0.005
    assert rel.max() < 1e-4  # Lambert's formula is far better than the bound
    t = geodesic_km(*(torch.as_tensor(c) for c in (a[:, 0], a[:, 1], b[:, 0], b[:, 1])))
    np.testing.assert_allclose(t.numpy(), ours, rtol=1e-9)


def test_beijing_pair_and_zero_distance():
    d = geodesic_km(39.982, 116.397, 40.328, 116.628)  # Aotizhongxin -> Huairou
    assert d == pytest.approx(geodesic((39.982, 116.397), (40.328, 116.628)).km, rel=1e-5)
    assert geodesic_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert haversine_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(111.2, abs=0.1)


def test_unit_sphere_and_chord():
    xyz = latlon_to_xyz(np.array([[0, 0], [90, 0], [0, 90], [0, 180]]))
    np.testing.assert_allclose(xyz, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    # chord of a quarter great circle is sqrt(2)
    assert km_to_chord(np.pi / 2 * 6371.0088) == pytest.approx(np.sqrt(2))
