"""DDPM and DDIM samplers: per-step formulas, their equivalence, determinism, layout, a Gaussian oracle."""

from __future__ import annotations

import math

import pytest
import torch

from stgraph.diffusion import (
    NoiseSchedule,
    ddim_step_stats,
    ddim_timesteps,
    ddpm_step_stats,
    repeat_for_samples,
    sample,
    sample_ddim,
    sample_ddpm,
)

SCHEDULES = [NoiseSchedule(), NoiseSchedule(100, 1e-4, 0.05, "linear")]


def wiggly_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear stand-in for a trained noise predictor (depends on x_t and t)."""
    return torch.tanh(x) * 0.7 + 0.01 * t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


@pytest.mark.parametrize("s", SCHEDULES, ids=["quad50", "linear100"])
def test_ddpm_step_is_csdis_epsilon_form(s):
    """CSDI: x_{t-1} = (x_t - β_t / sqrt(1 - ᾱ_t) ε̂) / sqrt(α_t) + σ z, σ² = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)."""
    g = torch.Generator().manual_seed(0)
    xt, eps = torch.randn(3, 7, generator=g, dtype=torch.float64), torch.randn(3, 7, generator=g, dtype=torch.float64)
    for t in range(s.num_steps):
        beta, ab = float(s.betas[t]), float(s.alpha_bars[t])
        mean, sigma = ddpm_step_stats(s, xt, t, eps)
        torch.testing.assert_close(
            mean, (xt - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta), rtol=1e-9, atol=1e-9
        )
        want = 0.0 if t == 0 else math.sqrt((1 - float(s.alpha_bars[t - 1])) / (1 - ab) * beta)
        assert sigma == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("s", SCHEDULES, ids=["quad50", "linear100"])
def test_ddim_with_eta_1_over_all_steps_has_ddpms_mean_and_variance(s):
    g = torch.Generator().manual_seed(1)
    xt, eps = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    for t in range(s.num_steps):
        m_ddpm, s_ddpm = ddpm_step_stats(s, xt, t, eps)
        m_ddim, s_ddim = ddim_step_stats(s, xt, t, t - 1, eps, eta=1.0)
        torch.testing.assert_close(m_ddim, m_ddpm, rtol=1e-9, atol=1e-9)
        assert s_ddim == pytest.approx(s_ddpm, rel=1e-9, abs=1e-15)
    # and the whole path: the same seed draws the same noise in the same order
    a = sample_ddpm(
        wiggly_eps, s, (3, 4), num_samples=2, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    b = sample_ddim(
        wiggly_eps, s, (3, 4), eta=1.0, num_samples=2, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_ddim_eta_0_is_deterministic_given_the_seed_and_draws_no_noise_after_the_start():
    s = NoiseSchedule()
    run = lambda g, **kw: sample_ddim(wiggly_eps, s, (2, 6, 3), steps=10, eta=0.0, num_samples=4, generator=g, **kw)  # noqa: E731
    a, b = run(torch.Generator().manual_seed(7)), run(torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, run(torch.Generator().manual_seed(8)))
    x_start = torch.randn(4, 2, 6, 3, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    c = run(g, x_start=x_start)
    assert torch.equal(g.get_state(), state)  # no random number drawn at all
    assert torch.equal(c, run(torch.Generator().manual_seed(0), x_start=x_start))
    # with η > 0 the path does draw noise after x_T
    sample_ddim(wiggly_eps, s, (2, 6, 3), steps=10, eta=0.5, num_samples=4, generator=g, x_start=x_start)
    assert not torch.equal(g.get_state(), state)


def test_ddim_timesteps_are_evenly_spaced_and_span_the_schedule():
    assert ddim_timesteps(50, 5).tolist() == [0, 12, 24, 37, 49]  # round half to even: 24.5 -> 24
    assert ddim_timesteps(50, 50).tolist() == list(range(50))
    assert ddim_timesteps(50, 1).tolist() == [49]
    for n in range(2, 51):
        steps = ddim_timesteps(50, n)
        assert len(set(steps.tolist())) == n and steps[0] == 0 and steps[-1] == 49
    with pytest.raises(ValueError, match="1..50"):
        ddim_timesteps(50, 51)


def test_samples_are_folded_sample_major_into_the_batch():
    """S samples in one call: eps_model sees (S·B, ...), rows s·B..s·B+B-1 are sample s, and a
    condition tiled by repeat_for_samples lines up; equal to S separate one-sample runs."""
    s, S, B = NoiseSchedule(), 3, 2
    cond = torch.arange(B * 5, dtype=torch.float32).reshape(B, 5, 1)
    seen = []

    def eps_model(x, t, c=cond):
        seen.append((tuple(x.shape), tuple(t.shape)))
        return 0.3 * x + 0.05 * repeat_for_samples(c, x.size(0) // c.size(0))

    x_start = torch.randn(S, B, 5, 1, generator=torch.Generator().manual_seed(0))
    out = sample_ddim(eps_model, s, (B, 5, 1), steps=8, num_samples=S, x_start=x_start)
    assert out.shape == (S, B, 5, 1)
    assert set(seen) == {((S * B, 5, 1), (S * B,))} and len(seen) == 8  # one batched call per step
    for k in range(S):
        one = sample_ddim(eps_model, s, (B, 5, 1), steps=8, num_samples=1, x_start=x_start[k : k + 1])
        torch.testing.assert_close(out[k], one[0])
    ddpm = sample(eps_model, s, (B, 5, 1), sampler="ddpm", num_samples=S, generator=torch.Generator().manual_seed(1))
    assert ddpm.shape == (S, B, 5, 1) and not torch.equal(ddpm[0], ddpm[1]) and not ddpm.requires_grad


def test_infer_mask_noises_and_denoises_only_the_cells_to_infer():
    s = NoiseSchedule()
    infer = torch.rand(2, 6, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    seen_outside = []

    def eps_model(x, t):
        seen_outside.append(float(x[~repeat_for_samples(infer, 3)].abs().max()))
        return torch.tanh(x)  # elementwise: a cell's path does not depend on other cells

    kw = dict(
        num_samples=3, generator=None, x_start=torch.randn(3, 2, 6, 4, generator=torch.Generator().manual_seed(1))
    )
    masked = sample_ddpm(
        eps_model, s, (2, 6, 4), infer_mask=infer, **{**kw, "generator": torch.Generator().manual_seed(2)}
    )
    full = sample_ddpm(eps_model, s, (2, 6, 4), **{**kw, "generator": torch.Generator().manual_seed(2)})
    assert max(seen_outside[: s.num_steps]) == 0.0  # the model sees 0 at the conditioning cells (CSDI)
    assert (masked[:, ~infer] == 0).all()
    torch.testing.assert_close(masked[:, infer], full[:, infer])
    with pytest.raises(ValueError, match="broadcast"):
        sample_ddpm(eps_model, s, (2, 6, 4), infer_mask=torch.ones(3, 6, 4, dtype=torch.bool))


def _oracle(s: NoiseSchedule, mu: float, sd: float):
    """The optimal ε̂ for x0 ~ N(mu, sd²): E[ε | x_t] = b (x_t - a mu) / (a² sd² + b²)."""

    def eps_model(x, t):
        ab = s.alpha_bars[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        a, b = ab.sqrt(), (1 - ab).sqrt()
        return b * (x - a * mu) / (a * a * sd * sd + b * b)

    return eps_model


def _exact_ddpm_output(s: NoiseSchedule, mu: float, sd: float) -> tuple[float, float]:
    """Mean and std of DDPM's output with the oracle, by the linear-Gaussian recursion written
    out from the paper's formulas (x̂0 = E[x0 | x_t] is affine in x_t, so every step is too)."""
    m, v = 0.0, 1.0
    for t in range(s.num_steps - 1, -1, -1):
        beta, ab = float(s.betas[t]), float(s.alpha_bars[t])
        ab_prev = float(s.alpha_bars[t - 1]) if t else 1.0
        a, b = math.sqrt(ab), math.sqrt(1 - ab)
        d = a * a * sd * sd + b * b
        k, c = a * sd * sd / d, mu * b * b / d  # x̂0 = k x_t + c
        c1, c2 = math.sqrt(ab_prev) * beta / (1 - ab), math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
        slope, offset = c1 * k + c2, c1 * c
        m, v = slope * m + offset, slope * slope * v + beta * (1 - ab_prev) / (1 - ab)
    return m, math.sqrt(v)


def test_ddpm_with_an_oracle_noise_model_samples_the_gaussian():
    mu, sd = 2.0, 0.5
    # Ho et al.'s T = 1000 linear schedule: the discretisation error is small, samples ~ N(mu, sd²)
    s = NoiseSchedule(1000, 1e-4, 0.02, "linear")
    x = sample_ddpm(
        _oracle(s, mu, sd), s, (5000,), num_samples=4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert x.shape == (4, 5000)
    assert float(x.mean()) == pytest.approx(mu, abs=0.02)
    assert float(x.std()) == pytest.approx(sd, abs=0.02)
    assert _exact_ddpm_output(s, mu, sd)[1] == pytest.approx(sd, rel=0.01)
    # CSDI's 50-step quad schedule: β̃ under-disperses a little; the samples match the exact recursion
    s = NoiseSchedule()
    x = sample_ddpm(
        _oracle(s, mu, sd), s, (10_000,), num_samples=4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    m, v = _exact_ddpm_output(s, mu, sd)
    assert float(x.mean()) == pytest.approx(m, abs=0.01)
    assert float(x.std()) == pytest.approx(v, rel=0.02)
    assert m == pytest.approx(mu, abs=1e-3) and 0.85 * sd < v < sd


def test_deterministic_ddim_with_all_steps_transports_the_gaussian():
    mu, sd = -1.0, 0.3
    s = NoiseSchedule(1000, 1e-4, 0.02, "linear")
    x = sample_ddim(
        _oracle(s, mu, sd), s, (20_000,), eta=0.0, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    assert float(x.mean()) == pytest.approx(mu, abs=0.01)
    assert float(x.std()) == pytest.approx(sd, abs=0.01)


def test_bad_arguments_are_errors():
    s = NoiseSchedule()
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(wiggly_eps, s, (2, 3), eta=1.5)
    with pytest.raises(ValueError, match="eps_model returned"):
        sample_ddim(lambda x, t: x[:1], s, (2, 3), steps=2)
    with pytest.raises(ValueError, match="x_start"):
        sample_ddpm(wiggly_eps, s, (2, 3), num_samples=2, x_start=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ddim"):
        sample(wiggly_eps, s, (2, 3), sampler="ddpm", steps=10)
    with pytest.raises(ValueError, match="sampler"):
        sample(wiggly_eps, s, (2, 3), sampler="euler")
