import numpy as np
import pandas as pd
import pytest
import torch

from stgraph.data import CYCLIC_FEATURES, MaskedStandardScaler, WindowDataset, cyclic_time_encoding, window_starts


def test_scaler_ignores_unobserved_and_other_stations(synthetic):
    data = synthetic
    data.values[:, 5:] = 1e6  # stations outside the fit set
    data.values[0, 0, 0], data.mask[0, 0, 0] = 0.0, False
    stations = np.arange(5)
    sc = MaskedStandardScaler().fit(data, stations)
    x = data.values[:, :5, 0][data.mask[:, :5, 0]]
    assert sc.mean[0] == pytest.approx(x.mean(), rel=1e-6) and sc.std[0] == pytest.approx(x.std(), rel=1e-5)
    back = sc.inverse_transform(sc.transform(data.values[:, :5]))
    np.testing.assert_allclose(back, data.values[:, :5], rtol=1e-5, atol=1e-3)
    t = torch.as_tensor(data.values[:, :5])
    torch.testing.assert_close(sc.transform(t), torch.as_tensor(sc.transform(data.values[:, :5])))
    assert MaskedStandardScaler.from_state_dict(sc.state_dict()).mean.tolist() == sc.mean.tolist()


def test_scaler_refuses_constant_channel(synthetic):
    synthetic.values[..., 1] = 3.0
    with pytest.raises(ValueError, match="x1"):
        MaskedStandardScaler().fit(synthetic, np.arange(4))


def test_window_starts_respect_period():
    period = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], dtype=bool)
    np.testing.assert_array_equal(window_starts(period, 2, 1), [0, 1, 2, 6, 7, 8, 9])
    np.testing.assert_array_equal(window_starts(period, 2, 1, stride=2), [0, 2, 7, 9])
    assert len(window_starts(period, 20, 1)) == 0


def test_windows_equal_direct_slices(synthetic):
    starts = window_starts(np.ones(synthetic.num_steps, bool), 6, 3)
    ds = WindowDataset(synthetic.values, synthetic.mask, synthetic.times, starts, 6, 3)
    b = ds[torch.tensor([0, 17, 40])]
    assert b.x.shape == (3, 6, 12, 2) and b.y.shape == (3, 3, 12, 2) and b.x_time.shape == (3, 6, 6)
    for i, s in enumerate([0, 17, 40]):
        np.testing.assert_array_equal(b.x[i].numpy(), synthetic.values[s : s + 6])
        np.testing.assert_array_equal(b.y_mask[i].numpy(), synthetic.mask[s + 6 : s + 9])
    total = sum(len(w.start) for w in ds.batches(50, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert total == len(ds)


def test_cyclic_encoding_values():
    times = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 06:00", "2024-07-04 18:00"])  # Mon, Mon, Thu
    enc = cyclic_time_encoding(times.to_numpy())
    assert enc.shape == (3, len(CYCLIC_FEATURES))
    np.testing.assert_allclose(enc[0], [0, 1, 0, 1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(enc[1, :2], [1, 0], atol=1e-6)  # 06:00 is a quarter turn
    np.testing.assert_allclose(enc[2, :2], [-1, 0], atol=1e-6)  # 18:00 is three quarters
    np.testing.assert_allclose(enc[2, 2:4], [np.sin(2 * np.pi * 3 / 7), np.cos(2 * np.pi * 3 / 7)], atol=1e-6)
    np.testing.assert_allclose(enc[2, 4:], [np.sin(np.pi), np.cos(np.pi)], atol=1e-6)  # July = half year
    np.testing.assert_allclose((enc[:, 0::2] ** 2 + enc[:, 1::2] ** 2), 1, atol=1e-6)


def test_per_station_scaler_keeps_each_stations_own_statistics(synthetic):
    data = synthetic
    data.values[:, 2] = data.values[:, 2] * 10 + 100  # one station on another scale
    data.values[3, 1, 0], data.mask[3, 1, 0] = 1e9, False  # unobserved: never in the statistics
    fit_on = np.array([0, 1, 2, 4])
    period = np.zeros(data.num_steps, dtype=bool)
    period[: data.num_steps // 2] = True  # statistics from this period only
    sc = MaskedStandardScaler(per_station=True).fit(data, fit_on, period)
    assert sc.mean.shape == (data.num_nodes, data.num_channels)
    for n in fit_on:
        for c in range(data.num_channels):
            x = data.values[period, n, c][data.mask[period, n, c]]
            assert sc.mean[n, c] == pytest.approx(x.mean(), rel=1e-6) and sc.std[n, c] == pytest.approx(
                x.std(), rel=1e-5
            )
    assert np.isnan(sc.mean[3]).all()  # not fitted: no statistics borrowed from others
    nodes = np.array([2, 0])
    z = sc.transform(data.values[:, nodes], nodes)
    np.testing.assert_allclose(z[period][:, 0][data.mask[period, 2]].std(), 1.0, rtol=1e-4)  # station 2 unit std
    np.testing.assert_allclose(sc.inverse_transform(z, nodes), data.values[:, nodes], rtol=1e-5, atol=1e-3)
    mean, std = sc.stats(channels=[1], nodes=nodes)
    assert mean.shape == (2, 1) and mean[0, 0] == sc.mean[2, 1]
    back = MaskedStandardScaler.from_state_dict(sc.state_dict())
    assert back.per_station and np.array_equal(back.std[fit_on], sc.std[fit_on])


def test_per_station_scaler_names_a_constant_station(synthetic):
    synthetic.values[:, 3, 1] = 7.0
    with pytest.raises(ValueError, match=f"'x1' is constant at station '{synthetic.station_ids[3]}'"):
        MaskedStandardScaler(per_station=True).fit(synthetic, np.arange(5))
