import math

import pytest
import torch

from stgraph.nn.t_patternnet import InceptionBlock, TimesBlock, TPatternNet, fft_periods


def sinusoids(t: int, periods_amps, b: int = 4, n: int = 3, d: int = 8, seed: int = 0) -> torch.Tensor:
    """(B, T, N, D): sum of a·sin(2π t / p + phase) with a random phase per series and channel."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.arange(t, dtype=torch.float32)[None, :, None, None]
    out = torch.zeros(b, t, n, d)
    for p, a in periods_amps:
        phase = 2 * math.pi * torch.rand(b, 1, n, d, generator=g)
        out = out + a * torch.sin(2 * math.pi * steps / p + phase)
    return out


@pytest.mark.parametrize(("t", "period", "freq"), [(36, 12, 3), (48, 12, 4), (30, 8, 4)])
def test_fft_periods_finds_the_period_of_a_sinusoid(t, period, freq):
    x = sinusoids(t, [(t / freq, 1.0)]).permute(0, 2, 1, 3).reshape(-1, t, 8)
    periods, freqs, amp = fft_periods(x, 1)
    assert freqs == [freq] and periods == [period]  # p = ceil(T / f): 30 / 4 -> 8
    assert amp.shape == (x.size(0), 1)


def test_fft_periods_orders_by_amplitude_and_skips_the_mean():
    x = 5.0 + sinusoids(36, [(12, 2.0), (6, 1.0)]).permute(0, 2, 1, 3).reshape(-1, 36, 8)
    periods, freqs, amp = fft_periods(x, 2)
    assert freqs == [3, 6] and periods == [12, 6]
    assert (amp[:, 0] > amp[:, 1]).all()
    assert fft_periods(x[:, :1], 2)[0] == [1]  # one step: no frequency


def test_t_patternnet_shapes_periods_and_gradients():
    torch.manual_seed(0)
    net = TPatternNet(8, hidden=16, num_blocks=2, top_k=2)
    x = sinusoids(36, [(12, 3.0)], b=2, n=5).requires_grad_(True)
    out, used = net(x, return_periods=True)
    assert out.shape == (2, 36, 5, 8) and torch.isfinite(out).all()
    assert len(used) == 2 and used[0][0] == 12
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_nodes_are_folded_into_the_batch_equivariantly():
    torch.manual_seed(0)
    net = TPatternNet(4, num_blocks=1, top_k=3).eval()
    x = torch.randn(2, 20, 6, 4, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(net(x[:, :, perm]), net(x)[:, :, perm], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="TPatternNet"):
        net(x[..., :3])


def test_times_block_is_residual_with_padding_truncated():
    torch.manual_seed(0)
    block = TimesBlock(4, 8, top_k=2)
    for conv in block.conv[2].kernels:  # last inception at zero: the block is the identity
        torch.nn.init.zeros_(conv.weight)
    x = torch.randn(3, 29, 4)
    y, periods = block(x, return_periods=True)
    assert y.shape == x.shape and len(periods) == 2
    torch.testing.assert_close(y, x)


def test_inception_averages_odd_kernels():
    inc = InceptionBlock(2, 3, num_kernels=3)
    assert [c.kernel_size for c in inc.kernels] == [(1, 1), (3, 3), (5, 5)]
    x = torch.randn(1, 2, 4, 5)
    torch.testing.assert_close(inc(x), sum(c(x) for c in inc.kernels) / 3)
