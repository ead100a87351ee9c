"""Every registered model passes one contract: shapes, backward, reset, overfit, masks."""

import copy

import pytest
import torch

from stgraph.models import MODELS, DataSizes, GraphBatch, build_model

TINY = {
    "aqnet": {"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0},
    "aqnet-ref": {"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0},
    "idw": {},
}
POS = torch.tensor(
    [[39.90, 116.30], [39.95, 116.35], [40.00, 116.40], [39.92, 116.45], [40.05, 116.28], [39.85, 116.38]]
)


def make_batch(aligned: bool, seed: int = 0, b: int = 4, w: int = 12, h: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, w, 5, 2, generator=g)
    mask = torch.rand(b, w, 5, 2, generator=g) > 0.2
    hh = w if aligned else h
    return GraphBatch(
        x=x * mask,
        x_mask=mask,
        x_time=torch.randn(b, w, 6, generator=g),
        y_time=torch.randn(b, hh, 6, generator=g),
        pos_src=POS[:5],
        pos_tgt=POS[5:],
    ), hh


def test_every_model_is_in_the_contract():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("aligned", [False, True], ids=["forecast", "krige"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_contract(name, aligned):
    torch.manual_seed(0)
    batch, h = make_batch(aligned)
    sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=h)
    model = build_model(name, sizes, TINY[name])
    pred = model(batch)
    assert pred.src.shape == (4, h, 5, 1) and pred.tgt.shape == (4, h, 1, 1)
    assert torch.isfinite(pred.src).all() and torch.isfinite(pred.tgt).all()

    # unobserved input cells are ignored: change them, nothing moves
    model.eval()
    ref = model(batch)
    noisy = copy.copy(batch)
    noisy.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e6))
    out = model(noisy)
    torch.testing.assert_close(out.src, ref.src)
    torch.testing.assert_close(out.tgt, ref.tgt)

    if not model.trainable:
        assert not list(model.parameters())
        return
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))

    # overfits one batch
    y = torch.randn(4, h, 6, 1, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        p = model(batch)
        loss = ((p.src - y[:, :, :5]) ** 2).mean()
        if model.learns_interpolation:  # aqnet-ref: targets are a fixed IDW of the visible predictions
            loss = loss + ((p.tgt - y[:, :, 5:]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_unknown_model_and_hparam_are_errors():
    sizes = DataSizes(2, 1, (0,), 12, 3)
    with pytest.raises(KeyError, match="choose one of"):
        build_model("aqnett", sizes)
    with pytest.raises(ValueError, match="hidden_size"):
        build_model("aqnet", sizes, {"hidden_size": 3})
    with pytest.raises(ValueError, match="k="):
        build_model("aqnet", sizes, {"k": "twenty"})
