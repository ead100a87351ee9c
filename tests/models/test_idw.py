import torch

from stgraph.geo import geodesic_km
from stgraph.models import IDW, DataSizes, GraphBatch, IDWParams
from stgraph.ops.observed import last_observed


def test_idw_krige_by_hand():
    pos_src = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    pos_tgt = torch.tensor([[0.0, 0.5]])  # 0.5 and 1.5 degrees away: weights 1/0.5 : 1/1.5 = 3 : 1
    x = torch.tensor([[10.0, 30.0], [10.0, 30.0]]).view(1, 2, 2, 1)
    mask = torch.tensor([[True, True], [True, False]]).view(1, 2, 2, 1)  # second step: only station 0
    sizes = DataSizes(1, 1, (0,), window=2, horizon=2, task="krige")
    out = IDW(sizes, IDWParams(power=1.0))(
        GraphBatch(x, mask, torch.zeros(1, 2, 6), torch.zeros(1, 2, 6), pos_src, pos_tgt)
    )
    d = geodesic_km(
        torch.zeros(2, dtype=torch.float64),
        torch.tensor([0.0, 2.0], dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        torch.full((2,), 0.5, dtype=torch.float64),
    )
    w = 1 / d
    expected0 = float((w[0] * 10 + w[1] * 30) / w.sum())
    assert abs(expected0 - 15.0) < 0.01  # the 3:1 weighting by hand
    torch.testing.assert_close(out.tgt[0, :, 0, 0], torch.tensor([expected0, 10.0]), rtol=1e-5, atol=1e-5)


def test_forecast_is_spatial_persistence_of_last_observed():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    mask = torch.tensor([True, True, True, False]).view(1, 4, 1, 1)
    value, has = last_observed(x, mask)
    assert float(value) == 3.0 and bool(has)
    sizes = DataSizes(1, 1, (0,), window=4, horizon=2)
    out = IDW(sizes)(
        GraphBatch(
            x, mask, torch.zeros(1, 4, 6), torch.zeros(1, 2, 6), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.1, 0.1]])
        )
    )
    assert out.tgt.flatten().tolist() == [3.0, 3.0] and out.src.flatten().tolist() == [3.0, 3.0]


def test_aligned_src_is_the_completed_series():
    """Observed cells echo the input; an unobserved cell is the IDW of the others observed then."""
    pos = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    x = torch.tensor([[5.0, 7.0, 11.0]]).view(1, 1, 3, 1)
    mask = torch.tensor([[False, True, True]]).view(1, 1, 3, 1)
    sizes = DataSizes(1, 1, (0,), window=1, horizon=1, task="impute")
    out = IDW(sizes)(GraphBatch(x * mask, mask, torch.zeros(1, 1, 6), torch.zeros(1, 1, 6), pos, pos[:0]))
    d = geodesic_km(
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        torch.tensor([1.0, 3.0], dtype=torch.float64),
    )
    expected = float((7 / d[0] + 11 / d[1]) / (1 / d[0] + 1 / d[1]))
    torch.testing.assert_close(out.src.flatten(), torch.tensor([expected, 7.0, 11.0]))
    assert out.tgt.shape == (1, 1, 0, 1)
