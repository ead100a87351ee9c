"""The model contract, as a function: ``test_contract`` runs it for every registered model and
task; a model's own tests may call it with other hyperparameters."""

from __future__ import annotations

import copy

import torch

from stgraph.models import DataSizes, GraphBatch, build_model

POS = torch.tensor(
    [[39.90, 116.30], [39.95, 116.35], [40.00, 116.40], [39.92, 116.45], [40.05, 116.28], [39.85, 116.38]]
)


def make_batch(task: str, seed: int = 0, b: int = 4, w: int = 12, h: int = 3) -> tuple[GraphBatch, DataSizes]:
    """5 visible stations with 2 channels (20% unobserved), 1 target station."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, w, 5, 2, generator=g)
    mask = torch.rand(b, w, 5, 2, generator=g) > 0.2
    hh = h if task == "forecast" else w
    batch = GraphBatch(
        x=x * mask,
        x_mask=mask,
        x_time=torch.randn(b, w, 6, generator=g),
        y_time=torch.randn(b, hh, 6, generator=g),
        pos_src=POS[:5],
        pos_tgt=POS[5:],
    )
    return batch, DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=w, horizon=hh, task=task)


def check_contract(name: str, hparams: dict, task: str, *, overfit: bool = True) -> None:
    """Shapes, finiteness, masked inputs ignored, station order irrelevant, no targets, reset,
    and (``overfit``) that 150 Adam steps fit one random batch to under 30% of the initial loss.
    A model with its own training objective (``has_training_loss``) is trained by it, on every
    cell of the batch (src and tgt terms)."""
    torch.manual_seed(0)
    batch, sizes = make_batch(task)
    h = sizes.horizon
    model = build_model(name, sizes, hparams)
    assert task in model.tasks
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

    # no per-station parameters: reordering the visible stations reorders their outputs only
    perm = torch.tensor([3, 0, 4, 1, 2])
    shuffled = copy.copy(batch)
    shuffled.x, shuffled.x_mask, shuffled.pos_src = batch.x[:, :, perm], batch.x_mask[:, :, perm], batch.pos_src[perm]
    out = model(shuffled)
    torch.testing.assert_close(out.src, ref.src[:, :, perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.tgt, ref.tgt, rtol=1e-4, atol=1e-5)

    # no target stations (in-sample imputation, or a forecast at the visible stations only)
    alone = copy.copy(batch)
    alone.pos_tgt = POS[:0]
    solo = model(alone)
    assert solo.src.shape == (4, h, 5, 1) and solo.tgt.shape == (4, h, 0, 1)

    if not model.trainable:
        assert not list(model.parameters())
        return
    model.train()
    y = torch.randn(4, h, 6, 1, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    every = torch.ones_like(y, dtype=torch.bool)
    # aligned tasks: the visible stations' cells to estimate are the missing ones (anchored models
    # output their observed input cells unchanged: anchors.keep_observed)
    free = ~batch.x_mask[..., :1] if sizes.aligned else every[:, :, :5]
    terms = [("src", y[:, :, :5], free, 1.0), ("tgt", y[:, :, 5:], every[:, :, 5:], 1.0)]
    for _ in range(150 if overfit else 5):
        if model.has_training_loss:  # its own objective on the same cells (a diffusion model's noise prediction)
            loss = model.training_loss(batch, terms, lambda p, t, m: ((p - t) ** 2 * m).sum() / m.sum())
        else:
            p = model(batch)
            loss = ((p.src - y[:, :, :5]) ** 2 * free).sum() / free.sum()
            if model.learns_interpolation:  # otherwise targets are a fixed readout of the visible predictions
                loss = loss + ((p.tgt - y[:, :, 5:]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if overfit:
        assert losses[-1] < 0.3 * losses[0]
    trained = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    assert any(not torch.equal(a, p) for a, p in zip(trained, model.parameters(), strict=True))
