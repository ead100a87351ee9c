"""Graph features: shapes and names per task, hand-computed numbers on a tiny network, leak-freedom
(unobserved and hidden cells never read), NaN where undefined, agreement with the baselines, determinism."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from stgraph.features import FeatureConfig, station_features
from stgraph.models import DataSizes, GraphBatch
from stgraph.models.anchors import anchor_prediction
from stgraph.models.baselines.idw import IDW, IDWParams
from stgraph.models.baselines.knn_mean import KNNMean, KNNMeanParams

A_KM = 6378.137  # WGS84 equatorial radius: geodesic distance along the equator is A_KM * dlon (rad)
NAN = float("nan")


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-identical, NaN equal to NaN."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Some entry differs (NaN equal to NaN)."""
    return bool((~((a == b) | (torch.isnan(a) & torch.isnan(b)))).any())


def random_batch(task: str, *, seed: int = 0, b: int = 3, w: int = 8, h: int = 3, n_src: int = 7, n_tgt: int = 2):
    """Random visible stations with 3 input channels (target channel 1, 25% unobserved), static
    covariates and a 2-channel anchor at the targets; unobserved cells hold 0 as the engine's do."""
    g = torch.Generator().manual_seed(seed)
    hh = h if task == "forecast" else w
    pos = torch.stack(
        [39.6 + 0.8 * torch.rand(n_src + n_tgt, generator=g), 116 + torch.rand(n_src + n_tgt, generator=g)], 1
    )
    mask = torch.rand(b, w, n_src, 3, generator=g) > 0.25
    batch = GraphBatch(
        x=torch.randn(b, w, n_src, 3, generator=g) * mask,
        x_mask=mask,
        x_time=torch.randn(b, w, 6, generator=g),
        y_time=torch.randn(b, hh, 6, generator=g),
        pos_src=pos[:n_src],
        pos_tgt=pos[n_src:],
        static_src=torch.randn(n_src, 2, generator=g),
        static_tgt=torch.randn(n_tgt, 2, generator=g),
    )
    am = torch.rand(b, w, n_tgt, 2, generator=g) > 0.3
    batch.colocated_tgt = torch.randn(b, w, n_tgt, 2, generator=g) * am
    batch.colocated_tgt_mask = am
    sizes = DataSizes(
        in_channels=3, out_channels=1, target_channels=(1,), window=w, horizon=hh, num_static=2, task=task
    )
    return batch, sizes


# ------------------------------------------------------------------ shapes and names


@pytest.mark.parametrize("task", ["krige", "impute", "forecast"])
def test_shapes_and_names(task):
    cfg = FeatureConfig(k=3, lags=(1, 2))
    batch, sizes = random_batch(task)
    h = sizes.horizon
    tgt, names_t = station_features(batch, sizes, cfg, "tgt")
    src, names_s = station_features(batch, sizes, cfg, "src")
    assert tgt.shape == (3, h, 2, 1, len(names_t)) and tgt.dtype == torch.float32
    assert src.shape == (3, h, 7, 1, len(names_s)) and src.dtype == torch.float32
    assert len(set(names_t)) == len(names_t) and len(set(names_s)) == len(names_s)
    nbr = "value" if sizes.aligned else "last"
    for names in (names_t, names_s):
        assert names[:6] == [
            "cal_hour_sin",
            "cal_hour_cos",
            "cal_weekday_sin",
            "cal_weekday_cos",
            "cal_month_sin",
            "cal_month_cos",
        ]
        assert {"lat", "lon", "static0", "static1", "n_observed", f"nbr3_{nbr}", "nbr3_dist_km", "nbr1_lag2"} <= set(
            names
        )
        assert "nbr4_dist_km" not in names
        assert ("lead" in names) == (task == "forecast")
        assert {
            "cov0_idw" if sizes.aligned else "cov0_idw_last",
            "cov2_idw" if sizes.aligned else "cov2_idw_last",
        } <= set(names)
        assert not any(n.startswith("cov1") for n in names)  # the target channel is no covariate
    # own history and own co-located channels for src only; the anchor for tgt only
    own = (
        {"own_locf", "own_nocb_gap", "own_lerp", "own_lag1", "own_cov0"}
        if sizes.aligned
        else {"own_last", "own_age", "own_lag2", "own_cov2_last"}
    )
    assert own <= set(names_s) and not any(n.startswith("own") for n in names_t)
    anchor = {"colocated0", "colocated1"} if sizes.aligned else {"colocated0_last", "colocated1_age", "colocated1_lag2"}
    assert anchor <= set(names_t) and not any(n.startswith("colocated") for n in names_s)
    # calendar and coordinates are the batch's
    same(tgt[..., 0, names_t.index("cal_month_cos")], batch.y_time[:, :, None, 5].expand(-1, -1, 2))
    same(src[0, 0, :, 0, names_s.index("lat")], batch.pos_src[:, 0])
    same(tgt[0, 0, :, 0, names_t.index("static1")], batch.static_tgt[:, 1])
    if task == "forecast":
        same(tgt[0, :, 0, 0, names_t.index("lead")], torch.tensor([1.0, 2.0, 3.0]))
    # the columns depend on (sizes, cfg, which, anchor) only, not on the batch's contents or size
    other, _ = random_batch(task, seed=5, b=2, n_tgt=4)
    assert station_features(other, sizes, cfg, "tgt")[1] == names_t
    assert station_features(other, sizes, cfg, "src")[1] == names_s
    # without an anchor in the batch, exactly the anchor columns go
    bare = copy.copy(batch)
    bare.colocated_tgt, bare.colocated_tgt_mask = None, None
    _, names_bare = station_features(bare, sizes, cfg, "tgt")
    assert names_bare == [n for n in names_t if not n.startswith("colocated")]


def test_switches_and_multiple_output_channels():
    batch, _ = random_batch("impute")
    sizes = DataSizes(
        in_channels=3, out_channels=2, target_channels=(2, 0), window=8, horizon=8, num_static=2, task="impute"
    )
    off = FeatureConfig(k=2, lags=(1,), own_history=False, covariates=False, co_located=False)
    feats, names = station_features(batch, sizes, off, "src")
    assert feats.shape == (3, 8, 7, 2, len(names))
    assert not any(n.startswith(("own", "cov", "colocated")) for n in names)
    assert station_features(batch, sizes, off, "tgt")[1] == names
    # each output channel takes its own input channel's neighbours
    full, full_names = station_features(batch, sizes, FeatureConfig(k=2, lags=(1,)), "tgt")
    i = full_names.index("idw")
    one = DataSizes(
        in_channels=3, out_channels=1, target_channels=(0,), window=8, horizon=8, num_static=2, task="impute"
    )
    torch.testing.assert_close(
        full[..., 1, i],
        station_features(batch, one, FeatureConfig(k=2, lags=(1,)), "tgt")[0][..., 0, i],
        equal_nan=True,
    )
    assert "cov1_idw" in full_names and "cov0_idw" not in full_names


def test_no_target_stations_and_a_single_visible_station():
    batch, sizes = random_batch("krige", n_tgt=0)
    batch.colocated_tgt, batch.colocated_tgt_mask = None, None
    feats, names = station_features(batch, sizes, FeatureConfig(k=2), "tgt")
    assert feats.shape == (3, 8, 0, 1, len(names))
    alone, _ = random_batch("impute", n_src=1)
    feats, names = station_features(alone, sizes, FeatureConfig(k=2), "src")
    assert feats.shape == (3, 8, 1, 1, len(names))  # no other station: every neighbour feature NaN
    for n in names:
        if n.startswith(("nbr", "idw", "knn", "cov")):
            assert torch.isnan(feats[..., names.index(n)]).all(), n
    assert (feats[..., names.index("n_observed")] == 0).all()


# ------------------------------------------------------------------ hand-computed numbers
# Target at (0, 0). Visible: s0 0.1 deg east, s1 0.25 deg east, s2 0.2 deg north (22.1149 km on
# the meridian). Distance order from the target: s0, s2, s1.
TINY_SRC = torch.tensor([[0.0, 0.1], [0.0, 0.25], [0.2, 0.0]])
TINY_TGT = torch.tensor([[0.0, 0.0]])
D0, D1, D2 = A_KM * math.radians(0.1), A_KM * math.radians(0.25), 22.1149
TINY_X = torch.tensor([[1.0, 10.0, 100.0], [2.0, 20.0, 0.0], [0.0, 30.0, 0.0], [4.0, 40.0, 400.0]]).view(1, 4, 3, 1)
TINY_M = torch.tensor([[True, True, True], [True, True, False], [False, True, False], [True, True, True]]).view(
    1, 4, 3, 1
)


def tiny(task: str, mask: torch.Tensor = TINY_M, h: int = 4):
    batch = GraphBatch(TINY_X * mask, mask, torch.zeros(1, 4, 6), torch.zeros(1, h, 6), TINY_SRC, TINY_TGT)
    return batch, DataSizes(1, 1, (0,), window=4, horizon=h, task=task)


def column(feats, names, name, n=0):
    return feats[0, :, n, 0, names.index(name)]


def close(a: torch.Tensor, b: list[float], tol: float = 1e-5) -> None:
    torch.testing.assert_close(a, torch.tensor(b), rtol=tol, atol=tol, equal_nan=True)


def test_tiny_krige_target_by_hand():
    batch, sizes = tiny("krige")
    f, names = station_features(batch, sizes, FeatureConfig(k=2, lags=(1,)), "tgt")
    col = lambda name: column(f, names, name)  # noqa: E731
    # the 2 nearest observed at each step: t0 s0, s2; t1 s0, s1 (s2 missing); t2 s1 only; t3 s0, s2
    close(col("nbr1_value"), [1.0, 2.0, 30.0, 4.0])
    close(col("nbr2_value"), [100.0, 20.0, NAN, 400.0])
    close(col("nbr1_dist_km"), [D0, D0, D1, D0], 1e-4)
    close(col("nbr2_dist_km"), [D2, D1, NAN, D2], 1e-4)
    close(col("nbr1_bearing_sin"), [1.0, 1.0, 1.0, 1.0])  # east
    close(col("nbr2_bearing_cos"), [1.0, 0.0, NAN, 1.0])  # north, east, -, north
    close(col("knn_mean"), [50.5, 11.0, 30.0, 202.0])
    close(col("n_observed"), [3.0, 2.0, 1.0, 3.0])
    # lag 1: the picked station's value one step earlier (t3: s0 and s2 were unobserved at t2)
    close(col("nbr1_lag1"), [NAN, 1.0, 20.0, NAN])
    close(col("nbr2_lag1"), [NAN, 10.0, NAN, NAN])
    # IDW, power 2: t1 from s0 = 2 and s1 = 20 with weights 1 : (D0/D1)^2 = 1 : 0.16; t2: s1 alone
    w = [1 / D0**2, 1 / D1**2, 1 / D2**2]
    t0 = (1 * w[0] + 10 * w[1] + 100 * w[2]) / sum(w)
    close(col("idw"), [t0, 5.2 / 1.16, 30.0, (4 * w[0] + 40 * w[1] + 400 * w[2]) / sum(w)], 1e-4)


def test_tiny_impute_source_by_hand():
    batch, sizes = tiny("impute")
    f, names = station_features(batch, sizes, FeatureConfig(k=2, lags=(1, 2)), "src")
    col = lambda name, n: column(f, names, name, n)  # noqa: E731
    # s0: observed 1, 2, -, 4. The observations strictly around each step, whatever the step holds.
    close(col("own_locf", 0), [NAN, 1.0, 2.0, 2.0])
    close(col("own_locf_gap", 0), [NAN, 1.0, 1.0, 2.0])
    close(col("own_nocb", 0), [2.0, 4.0, 4.0, NAN])
    close(col("own_nocb_gap", 0), [1.0, 2.0, 1.0, NAN])
    close(col("own_lerp", 0), [NAN, 1 + 3 * 1 / 3, 3.0, NAN])
    close(col("own_lag1", 0), [NAN, 1.0, 2.0, NAN])
    close(col("own_lag2", 0), [NAN, NAN, 1.0, 2.0])
    # s2: 100, -, -, 400: step 1 lies a third of the way
    close(col("own_lerp", 2), [NAN, 200.0, 300.0, NAN])
    close(col("own_nocb_gap", 2), [3.0, 2.0, 1.0, NAN])
    # neighbours exclude the station itself: s0's are s1 (0.15 deg east) then s2
    d01 = A_KM * math.radians(0.15)
    close(col("nbr1_value", 0), [10.0, 20.0, 30.0, 40.0])
    close(col("nbr1_dist_km", 0), [d01] * 4, 1e-4)
    close(col("nbr2_value", 0), [100.0, NAN, NAN, 400.0])
    close(col("n_observed", 0), [2.0, 1.0, 1.0, 2.0])
    close(col("nbr1_bearing_sin", 1), [-1.0, -1.0, NAN, -1.0])  # s1 looks west to s0 (t2: none observed)
    close(col("idw", 1)[1:2], [2.0])  # t1: s0 (2) alone, s2 unobserved
    # s1 at t2: only s1 itself observed, so no neighbour: NaN, count 0
    close(col("nbr1_value", 1)[2:3], [NAN])
    close(col("idw", 1)[2:3], [NAN])
    close(col("knn_mean", 1)[2:3], [NAN])
    close(col("n_observed", 1)[2:3], [0.0])


def test_tiny_forecast_by_hand():
    mask = TINY_M.clone()
    mask[0, 3, 0, 0] = False  # s0 last observed at step 1 (value 2), age 2
    batch, sizes = tiny("forecast", mask, h=2)
    f, names = station_features(batch, sizes, FeatureConfig(k=2, lags=(1, 3)), "tgt")
    col = lambda name: column(f, names, name)  # noqa: E731
    close(col("lead"), [1.0, 2.0])
    close(col("nbr1_last"), [2.0, 2.0])
    close(col("nbr1_age"), [2.0, 2.0])
    close(col("nbr1_lag1"), [NAN, NAN])  # input step 3: unobserved
    close(col("nbr1_lag3"), [2.0, 2.0])  # input step 1
    close(col("nbr2_last"), [400.0, 400.0])
    close(col("nbr2_age"), [0.0, 0.0])
    close(col("nbr2_lag3"), [NAN, NAN])
    close(col("n_observed"), [3.0, 3.0])
    w = [1 / D0**2, 1 / D1**2, 1 / D2**2]
    idw = (2 * w[0] + 40 * w[1] + 400 * w[2]) / sum(w)
    close(col("idw_last"), [idw, idw], 1e-4)
    close(col("knn_mean_last"), [201.0, 201.0])
    fs, ns = station_features(batch, sizes, FeatureConfig(k=2, lags=(1, 3)), "src")
    close(column(fs, ns, "own_last", 0), [2.0, 2.0])
    close(column(fs, ns, "own_age", 0), [2.0, 2.0])
    close(column(fs, ns, "own_lag3", 0), [2.0, 2.0])
    close(column(fs, ns, "own_lag1", 2), [400.0, 400.0])


def test_tiny_anchor_at_the_target():
    batch, sizes = tiny("krige")
    batch.colocated_tgt = torch.tensor([5.0, 6.0, 7.0, 8.0]).view(1, 4, 1, 1)
    batch.colocated_tgt_mask = torch.tensor([True, False, True, True]).view(1, 4, 1, 1)
    f, names = station_features(batch, sizes, FeatureConfig(k=1, lags=(2,)), "tgt")
    close(column(f, names, "colocated0"), [5.0, NAN, 7.0, 8.0])
    batch.colocated_tgt_mask = torch.tensor([True, True, False, False]).view(1, 4, 1, 1)
    fc, names = station_features(
        batch, DataSizes(1, 1, (0,), window=4, horizon=4, task="forecast"), FeatureConfig(k=1, lags=(2, 3)), "tgt"
    )
    close(column(fc, names, "colocated0_last"), [6.0] * 4)
    close(column(fc, names, "colocated0_age"), [2.0] * 4)
    close(column(fc, names, "colocated0_lag2"), [NAN] * 4)  # input step 2: unobserved
    close(column(fc, names, "colocated0_lag3"), [6.0] * 4)


def test_tiny_aggregate_for_downscaling():
    batch, sizes = tiny("krige")
    batch.aggregate = torch.tensor([3.0, 1e9, 5.0, 6.0]).view(1, 4, 1)  # 1e9: unobserved, never read
    batch.aggregate_mask = torch.tensor([True, False, True, True]).view(1, 4, 1)
    for which in ("tgt", "src"):
        f, names = station_features(batch, sizes, FeatureConfig(k=1), which)
        close(column(f, names, "aggregate", n=0), [3.0, NAN, 5.0, 6.0])
        assert "aggregate" not in station_features(batch, sizes, FeatureConfig(k=1, aggregate=False), which)[1]
    fc_batch, fc_sizes = tiny("forecast", h=2)
    fc_batch.aggregate, fc_batch.aggregate_mask = batch.aggregate, batch.aggregate_mask.clone()
    fc_batch.aggregate_mask[0, 3] = False
    f, names = station_features(fc_batch, fc_sizes, FeatureConfig(k=1, lags=(1, 3)), "tgt")
    close(column(f, names, "aggregate_last"), [5.0, 5.0])
    close(column(f, names, "aggregate_age"), [1.0, 1.0])
    close(column(f, names, "aggregate_lag1"), [NAN, NAN])
    close(column(f, names, "aggregate_lag3"), [NAN, NAN])  # input step 1: unobserved (1e9 there)
    bad = copy.copy(batch)
    bad.aggregate_mask = None
    with pytest.raises(ValueError, match="aggregate_mask"):
        station_features(bad, sizes, FeatureConfig(), "tgt")


# ------------------------------------------------------------------ agreement with the baselines


def test_idw_and_knn_columns_match_the_baselines():
    batch, sizes = random_batch("krige", n_src=9)
    f, names = station_features(batch, sizes, FeatureConfig(k=3, idw_power=1.5), "tgt")
    idw = IDW(sizes, IDWParams(power=1.5))(batch).tgt
    knn = KNNMean(sizes, KNNMeanParams(k=3))(batch).tgt
    got_idw, got_knn = f[..., names.index("idw")], f[..., names.index("knn_mean")]
    defined = ~torch.isnan(got_idw)
    assert defined.all()  # 9 stations, 25% missing: someone is always observed here
    torch.testing.assert_close(got_idw, idw)
    torch.testing.assert_close(got_knn, knn)
    fc_batch, fc_sizes = random_batch("forecast")
    fc, fc_names = station_features(fc_batch, fc_sizes, FeatureConfig(), "tgt")
    torch.testing.assert_close(
        fc[..., fc_names.index("idw_last")], anchor_prediction(fc_batch, fc_sizes, power=2.0).tgt
    )


# ------------------------------------------------------------------ leak-freedom


@pytest.mark.parametrize("task", ["krige", "impute", "forecast"])
def test_unobserved_cells_are_never_read(task):
    batch, sizes = random_batch(task)
    poisoned = copy.copy(batch)
    poisoned.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e9))
    poisoned.colocated_tgt = torch.where(
        batch.colocated_tgt_mask, batch.colocated_tgt, torch.full_like(batch.colocated_tgt, 1e9)
    )
    cfg = FeatureConfig(k=3)
    for which in ("tgt", "src"):
        ref, names = station_features(batch, sizes, cfg, which)
        got, got_names = station_features(poisoned, sizes, cfg, which)
        assert got_names == names
        same(got, ref)
        assert (got.nan_to_num().abs() < 1e6).all()  # nor does 1e9 appear anywhere


def test_a_cells_own_value_is_never_its_feature():
    """The impute training target is a hidden visible cell: its row is the same whether the cell is
    observed (any value) or hidden, while other rows do read it, so the check is not vacuous."""
    batch, sizes = random_batch("impute")
    cfg = FeatureConfig(k=3)
    ref, names = station_features(batch, sizes, cfg, "src")
    cells = [(0, 3, 2), (1, 0, 0), (2, 7, 6), (1, 4, 5)]
    for b, t, n in cells:
        for value, observed in ((1e9, True), (-3.0, True), (1e9, False)):
            other = copy.copy(batch)
            other.x, other.x_mask = batch.x.clone(), batch.x_mask.clone()
            other.x[b, t, n, 1], other.x_mask[b, t, n, 1] = value, observed
            got, _ = station_features(other, sizes, cfg, "src")
            same(got[b, t, n], ref[b, t, n])
            if observed and value == 1e9:  # ... and the cell does reach its neighbours' and later rows
                assert differs(got[b], ref[b])
    # the co-located (non-target) channels at the cell are features, as observed inputs
    assert "own_cov0" in names and "own_cov2" in names


def test_nan_where_no_neighbour_is_observed():
    batch, sizes = random_batch("krige")
    batch.x_mask[:, 2, :, 1] = False  # nobody observes the target channel at step 2
    batch.x = batch.x * batch.x_mask
    f, names = station_features(batch, sizes, FeatureConfig(k=2), "tgt")
    for name in names:
        if name.startswith("nbr") and "lag" not in name or name in ("idw", "knn_mean"):
            assert torch.isnan(f[:, 2, ..., names.index(name)]).all(), name
            assert not torch.isnan(f[:, 0, ..., names.index(name)]).all(), name
    assert (f[:, 2, ..., names.index("n_observed")] == 0).all()
    # the lags of step 3's neighbours read step 2: NaN there too
    assert torch.isnan(f[:, 3, ..., names.index("nbr1_lag1")]).all()
    # the covariate channels are still observed at step 2
    assert not torch.isnan(f[:, 2, ..., names.index("cov0_idw")]).all()


# ------------------------------------------------------------------ invariances and determinism


@pytest.mark.parametrize("task", ["krige", "forecast"])
def test_station_order_is_irrelevant_and_deterministic(task):
    batch, sizes = random_batch(task)
    cfg = FeatureConfig(k=4)
    tgt, _ = station_features(batch, sizes, cfg, "tgt")
    src, _ = station_features(batch, sizes, cfg, "src")
    same(station_features(batch, sizes, cfg, "tgt")[0], tgt)
    same(station_features(batch, sizes, cfg, "src")[0], src)
    perm = torch.tensor([3, 0, 6, 4, 1, 2, 5])
    shuffled = copy.copy(batch)
    shuffled.x, shuffled.x_mask = batch.x[:, :, perm], batch.x_mask[:, :, perm]
    shuffled.pos_src, shuffled.static_src = batch.pos_src[perm], batch.static_src[perm]
    torch.testing.assert_close(station_features(shuffled, sizes, cfg, "tgt")[0], tgt, equal_nan=True)
    torch.testing.assert_close(station_features(shuffled, sizes, cfg, "src")[0], src[:, :, perm], equal_nan=True)


# ------------------------------------------------------------------ bad input


def test_bad_input_is_named():
    batch, sizes = random_batch("krige")
    with pytest.raises(ValueError, match="which"):
        station_features(batch, sizes, FeatureConfig(), "all")
    with pytest.raises(ValueError, match="GraphBatch.x "):
        station_features(
            batch, DataSizes(4, 1, (1,), window=8, horizon=8, num_static=2, task="krige"), FeatureConfig(), "tgt"
        )
    no_static = copy.copy(batch)
    no_static.static_tgt = None
    with pytest.raises(ValueError, match="static_tgt"):
        station_features(no_static, sizes, FeatureConfig(), "tgt")
    bad_anchor = copy.copy(batch)
    bad_anchor.colocated_tgt_mask = None
    with pytest.raises(ValueError, match="colocated_tgt_mask"):
        station_features(bad_anchor, sizes, FeatureConfig(), "tgt")
    with pytest.raises(ValueError, match="lags"):
        FeatureConfig(lags=(1, 1))
    with pytest.raises(ValueError, match="k must"):
        FeatureConfig(k=0)
