import copy

import pytest
import torch

from stgraph.models import DataSizes, build_model
from stgraph.models.anchors import anchor_prediction
from stgraph.nn.diffusion_conv import DenseSupports, DiffusionSupports, fast_supports
from stgraph.nn.grin_cell import MPGRUCell, SpatialDecoder
from tests.models.contract import check_contract, make_batch

TINY = {"hidden_channels": 16, "ff_channels": 16, "kernel_size": 1, "k": 3}


def model_for(task, seed=0, **kw):
    batch, sizes = make_batch(task, seed=seed)
    torch.manual_seed(0)
    return build_model("grin", sizes, {**TINY, **kw}), batch, sizes


@pytest.mark.parametrize("anchor", ["none", "auto"])
@pytest.mark.parametrize("task", ["krige", "impute"])
def test_contract(task, anchor):
    check_contract("grin", {**TINY, "anchor": anchor}, task)


def test_mpgru_cell_is_the_official_gcgru_and_dense_equals_sparse():
    """r, u = sigmoid(SC([x, h])), c = tanh(SC([x, r h])) with SC a 1x1 conv over
    [z, P_f z, P_f^2 z, P_b z, P_b^2 z] (self term, order 2, two supports); the dense transitions
    give the same numbers as the sparse ones."""
    torch.manual_seed(0)
    n, b, c, hid = 5, 3, 2, 4
    ei = torch.tensor([[0, 2, 1, 3, 1, 4, 0, 2], [1, 1, 0, 0, 2, 3, 4, 3]])
    ew = torch.rand(8) + 0.1
    sparse = DiffusionSupports(ei, ew, n)
    dense = DenseSupports(sparse)
    assert isinstance(fast_supports(sparse), DenseSupports)
    w = torch.zeros(n, n).index_put_((ei[1], ei[0]), ew)  # W[i, j] = w(j -> i)
    pf, pb = w / w.sum(1, keepdim=True), w.T / w.T.sum(1, keepdim=True)
    cell = MPGRUCell(c, hid, K=2)
    x, h = torch.randn(n, b, c), torch.randn(n, b, hid)

    def sc(z, lin):  # the official SpatialConvOrderK on node-first z
        terms = [z, *(torch.einsum("wv,vbc->wbc", a, z) for a in (pf, pf @ pf, pb, pb @ pb))]
        return lin(torch.cat(terms, -1))

    r, u = torch.sigmoid(sc(torch.cat([x, h], -1), cell.gates)).split(hid, -1)
    cand = torch.tanh(sc(torch.cat([x, r * h], -1), cell.cand))
    want = u * h + (1 - u) * cand
    torch.testing.assert_close(cell(x, h, sparse), want)
    torch.testing.assert_close(cell(x, h, dense), want)
    dec = SpatialDecoder(c + hid, hid, 1)
    for a, b_ in zip(dec(torch.cat([x, h], -1), h, sparse), dec(torch.cat([x, h], -1), h, dense), strict=True):
        torch.testing.assert_close(a, b_)


def test_forecast_is_not_a_grin_task():
    _, sizes = make_batch("forecast")
    with pytest.raises(ValueError, match="not defined for task"):
        build_model("grin", sizes)


def test_parameter_count_matches_the_official_grinet_without_embedding():
    """Official GRINet(d_in=1, d_hidden=64, d_ff=64, d_emb=0): per direction the MPGRU's three
    1x1 convs over 5 x (2 + 64) channels, the first stage 64 -> 1, the decoder (66 -> 64, 128 -> 64,
    128 -> 64, PReLU, 128 -> 1); the merge 257 -> 64 -> 1."""
    sizes = DataSizes(1, 1, (0,), 36, 36, task="impute")
    model = build_model("grin", sizes)
    gril = 3 * (330 * 64 + 64) + 65 + (66 * 64 + 64) + 2 * (128 * 64 + 64) + 1 + 129
    assert sum(p.numel() for p in model.parameters()) == 2 * gril + (257 * 64 + 64) + 65


@pytest.mark.parametrize("task", ["krige", "impute"])
def test_aux_holds_the_four_stage_estimates(task):
    model, batch, _ = model_for(task)
    pred = model(batch)
    assert len(pred.aux) == 4  # second stage fwd, bwd; first stage fwd, bwd
    for a in pred.aux:
        assert a.src.shape == pred.src.shape == (4, 12, 5, 1)
        assert a.tgt.shape == pred.tgt.shape == (4, 12, 1, 1)
        assert not torch.allclose(a.src, pred.src)
        assert a.src.requires_grad and not a.aux


@pytest.mark.parametrize("anchor", ["none", "auto"])
def test_holes_are_filled_with_second_stage_estimates_observed_values_kept(anchor):
    """As in the official GRIL: the spatial decoder's input at step t is x_t where observed and
    the first-stage estimate elsewhere; the MPGRU's, x_t where observed and the second-stage
    estimate elsewhere (target nodes: always the estimates)."""
    model, batch, _ = model_for("krige", anchor=anchor)
    seen, dec = [], []
    model.fwd.cells[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    model.fwd.decoder.lin_in.register_forward_hook(lambda mod, args, out: dec.append(args[0].detach()))
    pred = model(batch)
    assert len(seen) == len(dec) == 12
    first = torch.cat([pred.aux[2].src, pred.aux[2].tgt], dim=2)  # forward first stage
    second = torch.cat([pred.aux[0].src, pred.aux[0].tgt], dim=2)  # (B, W, N, 1) forward second stage
    mask = torch.cat([batch.x_mask[..., :1], torch.zeros(4, 12, 1, 1, dtype=torch.bool)], dim=2)
    x = torch.cat([batch.x[..., :1], torch.zeros(4, 12, 1, 1)], dim=2)
    for t, inp in enumerate(seen):
        want = torch.where(mask[:, t], x[:, t], second[:, t]).transpose(0, 1)  # (N, B, 1)
        torch.testing.assert_close(inp[..., :1], want)
        torch.testing.assert_close(dec[t][..., :1], torch.where(mask[:, t], x[:, t], first[:, t]).transpose(0, 1))
        torch.testing.assert_close(inp[..., 1:2], mask[:, t].transpose(0, 1).float())
        cov = torch.cat([batch.x[:, t, :, 1:] * batch.x_mask[:, t, :, 1:], batch.x_mask[:, t, :, 1:].float()], -1)
        torch.testing.assert_close(inp[:5, ..., 2:], cov.transpose(0, 1))  # covariates [x * m, m]
        assert torch.all(inp[5:, ..., 1:] == 0)  # target node: unobserved, no covariates


def test_no_node_sees_its_own_value_at_the_same_step():
    """Training mode: every estimate at (t, i) is independent of x[t, i] (the decoder's graph
    convolution has no self-loop, states are from t -/+ 1), so observed cells are scored fairly;
    evaluation mode echoes them (``impute_only_holes``), and without it they are estimates."""
    model, batch, _ = model_for("impute")
    model.train()
    x = batch.x.clone().requires_grad_(True)
    b = copy.copy(batch)
    b.x = x
    pred = model(b)
    t, i = 5, 2
    for est in [pred, *pred.aux]:
        (g,) = torch.autograd.grad(est.src[:, t, i].sum(), x, retain_graph=True)
        assert torch.all(g[:, t, i, 0] == 0)
        assert g[:, :, torch.arange(5) != i].abs().sum() > 0  # neighbours matter
    model.eval()
    out = model(batch)
    m = batch.x_mask[..., :1]
    torch.testing.assert_close(out.src[m], batch.x[..., :1][m])
    model.params.impute_only_holes = False
    assert not torch.allclose(model(batch).src[m], batch.x[..., :1][m])


def test_bidirectional():
    """A later observation moves earlier imputations (backward pass) and not the forward stages."""
    model, batch, _ = model_for("krige")
    model.eval()
    changed = copy.copy(batch)
    changed.x = batch.x.clone()
    changed.x[:, 8, :, 0] += batch.x_mask[:, 8, :, 0] * 2.0
    a, b = model(batch), model(changed)
    assert not torch.allclose(a.tgt[:, 2], b.tgt[:, 2])  # final imputation at step 2
    holes = ~batch.x_mask[:, 2, :, :1]
    assert not torch.allclose(a.src[:, 2][holes], b.src[:, 2][holes])
    for k in (0, 2):  # forward second and first stage: only steps >= 8 move
        torch.testing.assert_close(a.aux[k].tgt[:, :8], b.aux[k].tgt[:, :8])
        assert not torch.allclose(a.aux[k].tgt[:, 9:], b.aux[k].tgt[:, 9:])
    for k in (1, 3):  # backward: only steps <= 8 move
        torch.testing.assert_close(a.aux[k].tgt[:, 9:], b.aux[k].tgt[:, 9:])
        assert not torch.allclose(a.aux[k].tgt[:, :8], b.aux[k].tgt[:, :8])


def test_covariate_channels_are_inputs_only():
    model, batch, sizes = model_for("impute")
    assert model.covariates == [1]
    model.eval()
    moved = copy.copy(batch)
    moved.x = batch.x.clone()
    moved.x[..., 1] += batch.x_mask[..., 1] * 1.0
    assert not torch.allclose(model(batch).tgt, model(moved).tgt)
    both = DataSizes(2, 2, (0, 1), 12, 12, task="impute")
    model = build_model("grin", both, TINY)
    assert model.covariates == []
    assert model(batch).src.shape == (4, 12, 5, 2)


@pytest.mark.parametrize("task", ["krige", "impute"])
def test_untrained_anchored_model_is_its_anchor(task):
    model, batch, sizes = model_for(task, anchor="auto")
    want = anchor_prediction(batch, sizes, "auto")
    for _ in range(2):
        for train in (True, False):
            pred = model.train(train)(batch)
            for est in [pred, *pred.aux]:
                torch.testing.assert_close(est.src, want.src)
                torch.testing.assert_close(est.tgt, want.tgt)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        model.reset_parameters()  # the zero readouts survive a reset


def test_unanchored_is_not_zero_and_bad_options():
    model, batch, _ = model_for("krige")
    assert model(batch).tgt.abs().sum() > 0
    _, sizes = make_batch("krige")
    with pytest.raises(ValueError, match="anchor"):
        build_model("grin", sizes, {"anchor": "mean"})
    with pytest.raises(ValueError, match="hidden_channels"):
        build_model("grin", sizes, {"hidden_channels": 0})
