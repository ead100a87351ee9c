"""kNN mean, persistence and seasonal naive: exact numbers on hand-made examples, and the contract."""

import pytest
import torch

from stgraph.models import DataSizes, GraphBatch, build_model
from stgraph.models.baselines.knn_mean import KNNMean, KNNMeanParams
from stgraph.models.baselines.persistence import Persistence, PersistenceParams
from stgraph.models.baselines.seasonal_naive import SeasonalNaive, SeasonalNaiveParams, seasonal_steps
from stgraph.ops.observed import locf_nocb

TINY = {"knn": {"k": 2}, "persistence": {}, "seasonal-naive": {"season": 4}}


def _batch(x, mask, pos_src, pos_tgt, h=None):
    b, w = x.shape[:2]
    return GraphBatch(
        torch.where(mask, x, torch.zeros_like(x)),
        mask,
        torch.zeros(b, w, 6),
        torch.zeros(b, h or w, 6),
        pos_src,
        pos_tgt,
    )


# ---------------------------------------------------------------- kNN mean
# Four visible stations east of the target along the equator, nearest first: 0.1, 0.25, 0.45, 0.7 deg.
KNN_POS_SRC = torch.tensor([[0.0, 0.1], [0.0, 0.25], [0.0, 0.45], [0.0, 0.7]])
KNN_POS_TGT = torch.tensor([[0.0, 0.0]])


def test_knn_skips_unobserved_neighbours():
    vals = torch.tensor([1.0, 10.0, 100.0, 1000.0])
    x = vals.repeat(5, 1).view(1, 5, 4, 1)
    mask = torch.tensor(
        [
            [True, True, True, True],  # the 2 nearest: (1 + 10) / 2
            [False, True, True, True],  # nearest unobserved: the next takes its place, (10 + 100) / 2
            [True, False, False, True],  # skip two: (1 + 1000) / 2
            [False, False, False, True],  # fewer than k observed: the one there is
            [False, False, False, False],  # none: the standardised mean 0
        ]
    ).view(1, 5, 4, 1)
    sizes = DataSizes(1, 1, (0,), window=5, horizon=5, task="krige")
    out = KNNMean(sizes, KNNMeanParams(k=2))(_batch(x, mask, KNN_POS_SRC, KNN_POS_TGT))
    assert out.tgt.flatten().tolist() == [5.5, 55.0, 500.5, 1000.0, 0.0]
    # the completed visible series: observed cells echo; a gap is the mean of the 2 nearest *other*
    # stations observed then (station 0 at step 1: stations 1 and 2; station 1 at step 2: 0 and 3)
    src = out.src[0, :, :, 0]
    assert src[0].tolist() == [1.0, 10.0, 100.0, 1000.0]
    assert src[1].tolist() == [55.0, 10.0, 100.0, 1000.0]
    assert src[2].tolist() == [1.0, 500.5, 500.5, 1000.0]
    assert src[3].tolist() == [1000.0, 1000.0, 1000.0, 1000.0]
    assert src[4].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_knn_uses_the_target_channel_and_k():
    """Two input channels, the second one predicted; k = 3 averages three stations."""
    x = torch.stack([torch.full((4,), -7.0), torch.tensor([2.0, 4.0, 6.0, 8.0])], -1).view(1, 1, 4, 2)
    mask = torch.tensor([[True, False], [True, True], [True, True], [True, True]]).view(1, 1, 4, 2)
    sizes = DataSizes(2, 1, (1,), window=1, horizon=1, task="impute")
    out = KNNMean(sizes, KNNMeanParams(k=3))(_batch(x, mask, KNN_POS_SRC, KNN_POS_TGT))
    assert out.tgt.flatten().tolist() == [6.0]  # stations 1, 2, 3 (station 0 unobserved in channel 1)
    assert out.src.flatten().tolist() == [6.0, 4.0, 6.0, 8.0]


def test_knn_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        KNNMean(DataSizes(1, 1, (0,), 2, 2, task="krige"), KNNMeanParams(k=0))


# ---------------------------------------------------------------- persistence
def test_persistence_forecast_last_observed_and_fallback():
    # station 0: last observed value 2 (steps 2, 3 missing); station 1: last value 6;
    # station 2: never observed -> mean of the others' persisted values (2 + 6) / 2 = 4
    x = torch.tensor([[1.0, 5.0, 9.0], [2.0, 3.0, 9.0], [9.0, 6.0, 9.0], [9.0, 9.0, 9.0]]).view(1, 4, 3, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool).view(1, 4, 3, 1)
    pos_src = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    pos_tgt = torch.tensor([[0.0, 0.9], [0.0, 0.2]])  # nearest: station 1, station 0
    sizes = DataSizes(1, 1, (0,), window=4, horizon=3)
    out = Persistence(sizes)(_batch(x, mask, pos_src, pos_tgt, h=3))
    assert out.src[0, :, :, 0].tolist() == [[2.0, 6.0, 4.0]] * 3
    assert out.tgt[0, :, :, 0].tolist() == [[6.0, 2.0]] * 3
    # readout_k = 2, power 1: target 0 sits 0.9 and 0.1 degrees from stations 0 and 1 -> weights 1 : 9
    out2 = Persistence(sizes, PersistenceParams(readout_k=2))(_batch(x, mask, pos_src, pos_tgt, h=3))
    torch.testing.assert_close(out2.tgt[0, 0, 0, 0], torch.tensor((2.0 * 1 + 6.0 * 9) / 10), rtol=1e-3, atol=1e-3)


def test_locf_nocb_fills_gaps():
    x = torch.tensor([[0.0, 3.0, 0.0, 0.0, 5.0, 0.0, 0.0], [0.0] * 7, [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 4.0]]).T.reshape(
        1, 7, 3, 1
    )
    mask = torch.tensor([[0, 1, 0, 0, 1, 0, 0], [0] * 7, [1, 0, 0, 1, 0, 0, 1]], dtype=torch.bool).T.reshape(1, 7, 3, 1)
    filled = locf_nocb(torch.where(mask, x, torch.full_like(x, 1e6)), mask)[0, :, :, 0].T
    assert filled[0].tolist() == [3.0, 3.0, 3.0, 3.0, 5.0, 5.0, 5.0]  # NOCB at the start, LOCF after
    assert filled[1].tolist() == [0.0] * 7  # nothing observed: the mean 0
    assert filled[2].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0]
    sizes = DataSizes(1, 1, (0,), window=7, horizon=7, task="impute")
    pos = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    out = Persistence(sizes)(_batch(x, mask, pos, torch.tensor([[0.0, 1.9]])))
    assert out.src[0, :, :, 0].T.tolist() == filled.tolist()
    assert out.tgt[0, :, 0, 0].tolist() == filled[2].tolist()  # nearest visible station: 2


# ---------------------------------------------------------------- seasonal naive
def test_seasonal_indexing():
    assert seasonal_steps(6, 5, 3).tolist() == [3, 4, 5, 3, 4]
    assert seasonal_steps(24, 24, 24).tolist() == list(range(24))
    x = torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0, 15.0]).view(1, 6, 1, 1)
    mask = torch.tensor([True, True, True, True, False, True]).view(1, 6, 1, 1)
    sizes = DataSizes(1, 1, (0,), window=6, horizon=5)
    pos = torch.tensor([[0.0, 0.0]])
    out = SeasonalNaive(sizes, SeasonalNaiveParams(season=3))(_batch(x, mask, pos, torch.tensor([[0.0, 0.1]]), h=5))
    # h = 1..3: steps 3, 4, 5 (step 4 unobserved -> last observed 15); h = 4, 5 repeat steps 3, 4
    assert out.src.flatten().tolist() == [13.0, 15.0, 15.0, 13.0, 15.0]
    assert out.tgt.flatten().tolist() == [13.0, 15.0, 15.0, 13.0, 15.0]
    # season 1 is persistence of the last step
    out1 = SeasonalNaive(sizes, SeasonalNaiveParams(season=1))(_batch(x, mask, pos, pos[:0], h=5))
    assert out1.src.flatten().tolist() == [15.0] * 5


def test_seasonal_needs_a_full_season():
    with pytest.raises(ValueError, match="must be >= season"):
        SeasonalNaive(DataSizes(1, 1, (0,), window=12, horizon=3), SeasonalNaiveParams(season=24))


# ---------------------------------------------------------------- contract


def test_declared_tasks():
    sizes = DataSizes(2, 1, (0,), 12, 3)
    assert KNNMean.tasks == {"krige", "impute", "reconstruct"}
    assert Persistence.tasks == {"forecast", "impute"}
    assert SeasonalNaive.tasks == {"forecast"}
    with pytest.raises(ValueError, match="not defined for task"):
        build_model("knn", sizes)
