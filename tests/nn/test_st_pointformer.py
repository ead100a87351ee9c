import pytest
import torch

from stgraph.nn.st_pointformer import LatLonEncoding, STPointFormer

B, T, N, C = 3, 6, 7, 1


def inputs(seed: int = 0, missing: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, N, C, generator=g)
    mask = torch.rand(B, T, N, C, generator=g) >= missing
    pos = torch.stack([39.6 + 0.8 * torch.rand(N, generator=g), 116.0 + torch.rand(N, generator=g)], -1)
    time_enc = torch.randn(B, T, 6, generator=g)
    node_feats = torch.randn(B, T, N, 2, generator=g)
    cell_feats = torch.randn(B, T, N, 3, generator=g)
    return x, mask, pos, time_enc, node_feats, cell_feats


def model(**kw) -> STPointFormer:
    torch.manual_seed(0)
    return STPointFormer(C, d_model=16, heads=4, node_features=2, cell_features=3, **kw).eval()


def test_shapes_and_gradients():
    m = model()
    x, mask, pos, te, nf, cf = inputs()
    cf.requires_grad_(True)
    out = m(x, mask, pos, te, nf, cf)
    assert out.shape == (B, T, N, 16) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert cf.grad is not None and cf.grad.abs().sum() > 0
    assert m.value_embed.weight.grad.abs().sum() > 0 and m.time_embed.weight.grad.abs().sum() > 0


def test_output_ignores_unobserved_values_but_not_observed_ones():
    m = model()
    x, mask, pos, te, nf, cf = inputs()
    out = m(x, mask, pos, te, nf, cf)
    noisy = torch.where(mask, x, torch.randn_like(x) * 100)
    noisy[~mask & (torch.rand_like(x) < 0.3)] = float("nan")
    assert torch.equal(m(noisy, mask, pos, te, nf, cf), out)
    moved = torch.where(mask, x + 1.0, x)
    assert (m(moved, mask, pos, te, nf, cf) - out).abs().amax(-1).min() > 0  # every cell reads the points


def test_permuting_nodes_permutes_the_output():
    m = model()
    x, mask, pos, te, nf, cf = inputs(1)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    out = m(x, mask, pos, te, nf, cf)
    out_p = m(x[:, :, perm], mask[:, :, perm], pos[perm], te, nf[:, :, perm], cf[:, :, perm])
    torch.testing.assert_close(out_p, out[:, :, perm], rtol=1e-4, atol=1e-5)


def test_sample_without_observations_is_finite_and_samples_are_independent():
    m = model()
    x, mask, pos, te, nf, cf = inputs(2)
    mask[1] = False
    out = m(x, mask, pos, te, nf, cf)
    assert torch.isfinite(out).all()
    alone = m(x[2:], mask[2:], pos, te[2:], nf[2:], cf[2:])  # a different padding length
    torch.testing.assert_close(alone, out[2:], rtol=1e-4, atol=1e-5)
    all_empty = m(x, torch.zeros_like(mask), pos, te, nf, cf)
    assert torch.isfinite(all_empty).all()


def test_optional_inputs_and_validation():
    torch.manual_seed(0)
    bare = STPointFormer(C, d_model=8, heads=2, time_features=0)
    x, mask, pos, *_ = inputs()
    assert bare(x, mask, pos).shape == (B, T, N, 8)
    m = model(max_steps=4)
    x, mask, pos, te, nf, cf = inputs()
    with pytest.raises(ValueError, match="max_steps"):
        m(x, mask, pos, te, nf, cf)
    m = model()
    with pytest.raises(ValueError, match="cell_feats"):
        m(x, mask, pos, te, nf, None)
    with pytest.raises(ValueError, match="mask"):
        m(x, mask.float(), pos, te, nf, cf)
    with pytest.raises(ValueError, match="pos"):
        m(x, mask, pos[:-1], te, nf, cf)
    with pytest.raises(ValueError, match="node_feats"):
        bare(x, mask, pos, node_feats=torch.zeros(B, T, N, 1))


def test_latlon_encoding_follows_nodes_and_a_fixed_origin_agrees_on_subsets():
    enc = LatLonEncoding(8)
    pos = torch.tensor([[40.0, 116.0], [40.1, 116.2], [39.9, 116.1]])
    assert enc(pos).shape == (3, 8)
    torch.testing.assert_close(enc(pos[[2, 0, 1]]), enc(pos)[[2, 0, 1]])
    fixed = LatLonEncoding(8, origin=(40.0, 116.0), scale_km=50.0)
    torch.testing.assert_close(fixed(pos[:2]), fixed(pos)[:2])  # origin and scale fixed: subsets agree
    assert not torch.allclose(enc(pos[:2]), enc(pos)[:2])  # default: both follow the node set
