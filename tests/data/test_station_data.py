import numpy as np
import pandas as pd
import pytest

from stgraph.data import StationData


def test_selections_and_missing_rate(synthetic):
    sub = synthetic.select_stations(["S003", "S001"])
    assert sub.station_ids == ["S003", "S001"]
    np.testing.assert_array_equal(sub.values[:, 0], synthetic.values[:, 3])
    two = synthetic.select_channels(["x1", "x0"])
    assert two.channels == ("x1", "x0")
    np.testing.assert_array_equal(two.values[..., 0], synthetic.values[..., 1])
    part = synthetic.select_times("2024-01-02", "2024-01-03")
    assert part.num_steps == 24 and str(part.times[0]).startswith("2024-01-02T00")
    rate = synthetic.missing_rate()
    assert list(rate.index) == ["x0", "x1"] and 0.05 < rate.iloc[0] < 0.15
    assert (synthetic.values[~synthetic.mask] == 0).all()


def test_constructor_checks_shapes():
    st = pd.DataFrame({"station": ["a"], "name": ["a"], "latitude": [0.0], "longitude": [0.0]})
    t = pd.date_range("2024", periods=3, freq="h").to_numpy()
    with pytest.raises(ValueError, match="mask shape"):
        StationData(np.zeros((3, 1, 1)), np.ones((3, 1, 2), bool), t, st, ("x",), ("1",))
    with pytest.raises(ValueError, match="increasing"):
        StationData(np.zeros((3, 1, 1)), np.ones((3, 1, 1), bool), t[::-1], st, ("x",), ("1",))
    with pytest.raises(KeyError, match="unknown station"):
        StationData(np.zeros((3, 1, 1)), np.ones((3, 1, 1), bool), t, st, ("x",), ("1",)).station_index(["b"])
