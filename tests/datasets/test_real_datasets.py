"""The built-in datasets, read from the mirror, hold what their cards say."""

import numpy as np
import pandas as pd
import pytest

from stgraph.datasets import load_dataset


def test_uci_beijing_12(uci12):
    assert (uci12.num_steps, uci12.num_nodes, uci12.num_channels) == (35064, 12, 13)
    assert str(uci12.times[0]) == "2013-03-01T00:00:00.000000000" and uci12.freq == pd.Timedelta("1h")
    assert uci12.units[uci12.channel_index("PM2.5")] == "µg/m³"
    rate = uci12.missing_rate()
    assert 0.01 < rate["PM2.5"] < 0.03 and rate["TEMP"] < 0.01
    # spot check against the raw file: Aotizhongxin, 2013-03-01 00:00, PM2.5 = 4, wd = NNW
    i, t = uci12.station_index(["Aotizhongxin"])[0], 0
    assert uci12.values[t, i, uci12.channel_index("PM2.5")] == 4
    assert uci12.values[t, i, uci12.channel_index("wd_cos")] == pytest.approx(np.cos(np.deg2rad(337.5)), abs=1e-6)
    assert uci12.meta["sha256"]["stations.csv"] and uci12.stations["latitude"].between(39.8, 40.4).all()


def test_aqi36_with_evaluation_mask(aqi36):
    assert (aqi36.num_steps, aqi36.num_nodes, aqi36.num_channels) == (8759, 36, 1)
    assert aqi36.station_ids[0] == "001001"  # leading zeros kept
    assert aqi36.missing_rate()["PM2.5"] == pytest.approx(0.132, abs=0.001)
    assert aqi36.eval_mask is not None and not (aqi36.eval_mask & ~aqi36.mask).any()
    assert aqi36.meta["released_mask_missing_rate"] == pytest.approx(0.246, abs=0.001)
    assert aqi36.meta["protocol"]["test_months"] == [3, 6, 9, 12]


def test_cn_stations_coordinates_only():
    cn = load_dataset("cn-stations", download=False)
    assert (cn.num_steps, cn.num_nodes, cn.num_channels) == (0, 1498, 0)
    assert cn.meta["report"]["counts"] == {"stations sharing coordinates with another (kept)": 4}
    assert cn.stations["longitude"].between(73, 135).all()
