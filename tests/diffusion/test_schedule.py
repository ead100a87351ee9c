"""The noise schedule against its closed forms (CSDI's quad and linear β, q(x_t|x0), the posterior)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stgraph.diffusion import NoiseSchedule


def test_quad_schedule_is_csdis():
    s = NoiseSchedule()  # CSDI defaults: T = 50, β 1e-4 .. 0.5, quad
    betas = np.linspace(1e-4**0.5, 0.5**0.5, 50) ** 2
    np.testing.assert_allclose(s.betas.numpy(), betas, rtol=1e-12)
    np.testing.assert_allclose(s.alphas.numpy(), 1 - betas, rtol=1e-12)
    np.testing.assert_allclose(s.alpha_bars.numpy(), np.cumprod(1 - betas), rtol=1e-12)
    np.testing.assert_allclose(s.alpha_bars_prev.numpy(), np.r_[1.0, np.cumprod(1 - betas)[:-1]], rtol=1e-12)
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.5)


def test_linear_schedule():
    s = NoiseSchedule(1000, 1e-4, 0.02, "linear")  # Ho et al.'s
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    np.testing.assert_allclose(s.alpha_bars.numpy(), np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-10)


def test_q_sample_closed_form_and_predict_x0_inverts_it():
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, 3, generator=g), torch.randn(6, 4, 3, generator=g)
    t = torch.tensor([0, 1, 10, 25, 48, 49])
    xt = s.q_sample(x0, t, noise)
    ab = np.cumprod(1 - np.linspace(1e-4**0.5, 0.5**0.5, 50) ** 2)[t.numpy()].reshape(-1, 1, 1)
    np.testing.assert_allclose(xt.numpy(), np.sqrt(ab) * x0.numpy() + np.sqrt(1 - ab) * noise.numpy(), rtol=1e-5)
    assert torch.allclose(s.q_sample(x0, 7, noise), s.q_sample(x0, torch.full((6,), 7), noise))  # int t broadcasts
    eps = noise.clone().requires_grad_(True)
    x0_hat = s.predict_x0(xt, t, eps)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
    x0_hat.sum().backward()  # differentiable: DiffRecon's joint training goes through it
    assert eps.grad is not None and torch.isfinite(eps.grad).all()


def test_q_sample_has_the_marginal_of_q_xt_given_x0():
    s = NoiseSchedule(20, 1e-3, 0.3, "linear")
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((200_000,), 1.5, dtype=torch.float64)
    xt = s.q_sample(x0, 12, torch.randn(200_000, generator=g, dtype=torch.float64))
    ab = float(s.alpha_bars[12])
    assert float(xt.mean()) == pytest.approx(ab**0.5 * 1.5, abs=0.01)
    assert float(xt.var()) == pytest.approx(1 - ab, rel=0.01)


def test_posterior_is_bayes_rule_of_the_two_gaussians():
    """q(x_{t-1}|x_t,x0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x0): precision-weighted product, per step."""
    for s in (NoiseSchedule(), NoiseSchedule(100, 1e-4, 0.05, "linear")):
        g = torch.Generator().manual_seed(2)
        x0, xt = (
            torch.randn(s.num_steps - 1, 5, generator=g, dtype=torch.float64),
            torch.randn(s.num_steps - 1, 5, generator=g, dtype=torch.float64),
        )
        t = torch.arange(1, s.num_steps)
        mean, var = s.posterior_mean_variance(x0, xt, t)
        beta = s.betas[t, None]
        ab_prev = s.alpha_bars[t - 1, None]
        precision = 1 / (1 - ab_prev) + (1 - beta) / beta
        want_var = 1 / precision
        want_mean = want_var * (ab_prev.sqrt() * x0 / (1 - ab_prev) + (1 - beta).sqrt() * xt / beta)
        torch.testing.assert_close(var.expand_as(mean), want_var.expand_as(mean), rtol=1e-9, atol=0)
        torch.testing.assert_close(mean, want_mean, rtol=1e-9, atol=1e-12)
        mean0, var0 = s.posterior_mean_variance(x0[:1], xt[:1], 0)  # the last step returns x0
        torch.testing.assert_close(mean0, x0[:1])
        assert float(var0) == 0.0


def test_sample_timesteps_and_errors():
    s = NoiseSchedule()
    t = s.sample_timesteps(10_000, torch.Generator().manual_seed(3))
    assert t.dtype == torch.long and int(t.min()) == 0 and int(t.max()) == 49
    assert torch.equal(t, s.sample_timesteps(10_000, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule(kind="cosine")
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule(beta_start=0.6, beta_end=0.5)
    with pytest.raises(ValueError, match="0..49"):
        s.q_sample(torch.zeros(2), torch.tensor([0, 50]), torch.zeros(2))
    with pytest.raises(ValueError, match="shaped like"):
        s.q_sample(torch.zeros(2, 3), 1, torch.zeros(2))
