"""The forward (noising) process of a DDPM: a β schedule and what follows from it in closed form.

Ho, Jain and Abbeel (NeurIPS 2020, arXiv:2006.11239); the schedules and defaults are CSDI's
(Tashiro et al., NeurIPS 2021, arXiv:2107.03502, ``config/base.yaml``: T = 50, β from 1e-4 to 0.5,
``quad``), which DiffRecon (Sun et al., eq. 2-5) builds on:

    q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I),   α_t = 1 - β_t,   ᾱ_t = Π_{i<=t} α_i,
    q(x_t | x_0)     = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),
    q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I),
        μ̃_t = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) x_0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) x_t,
        β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t).

Steps are indexed as in CSDI's code, 0-based: t ∈ {0, …, T-1}, ``betas[t]`` is the paper's β_{t+1}
and ``alpha_bars[t]`` its ᾱ_{t+1}; ᾱ before the first step is 1. Coefficients are kept in float64
and cast to the data's dtype and device where they are used.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCHEDULES = ("quad", "linear")


class NoiseSchedule:
    """A β schedule of ``num_steps`` steps and the forward process it defines.

    Args:
        num_steps: T, the number of diffusion steps.
        beta_start: β of the first step (0 < beta_start <= beta_end < 1).
        beta_end: β of the last step.
        kind: ``"quad"`` (CSDI: ``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``) or
            ``"linear"`` (DDPM: ``linspace(beta_start, beta_end, T)``).

    Attributes:
        betas, alphas, alpha_bars: (T,) float64: β_t, α_t = 1 - β_t and ᾱ_t = cumprod(α).
        alpha_bars_prev: (T,) float64: ᾱ_{t-1}, with 1 before the first step.
    """

    def __init__(self, num_steps: int = 50, beta_start: float = 1e-4, beta_end: float = 0.5, kind: str = "quad"):
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"NoiseSchedule: num_steps must be a positive int, got {num_steps!r}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                f"NoiseSchedule: need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
            )
        if kind == "quad":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
        elif kind == "linear":
            betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        else:
            raise ValueError(f"NoiseSchedule: kind must be one of {SCHEDULES}, got {kind!r}")
        self.num_steps = num_steps
        self.kind = kind
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(num_steps={self.num_steps}, beta_start={self.beta_start}, "
            f"beta_end={self.beta_end}, kind={self.kind!r})"
        )

    def _at(self, values: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        """``values[t]`` shaped to broadcast over ``like`` (B, ...): a scalar for an int ``t``,
        (B, 1, ..., 1) for a (B,) tensor ``t``; in ``like``'s dtype and device."""
        if isinstance(t, int):
            self._check_steps(torch.tensor([t]))
            return values[t].to(dtype=like.dtype, device=like.device)
        t = torch.as_tensor(t)
        if t.dim() != 1 or t.size(0) != like.size(0):
            raise ValueError(f"t must be an int or a (B,) tensor with B = {like.size(0)}, got shape {tuple(t.shape)}")
        self._check_steps(t)
        out = values.to(like.device)[t.to(like.device).long()].to(like.dtype)
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def _check_steps(self, t: Tensor) -> None:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"diffusion steps must lie in 0..{self.num_steps - 1}, got {t.min()}..{t.max()}")

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """(batch,) int64 steps drawn uniformly from 0..T-1 (training, one per sample as in CSDI)."""
        return torch.randint(0, self.num_steps, (batch,), generator=generator, device=device)

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε: a draw of q(x_t | x0) given the noise ε.

        Args:
            x0: (B, ...) clean data.
            t: int, or (B,) int64 steps in 0..T-1 (one per sample).
            noise: ε, shaped like x0.
        Returns:
            x_t, shaped like x0.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"q_sample: noise {tuple(noise.shape)} must be shaped like x0 {tuple(x0.shape)}")
        ab = self._at(self.alpha_bars, t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def predict_x0(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """The one-step estimate x̂0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) (inverts :meth:`q_sample`).

        Differentiable in ``x_t`` and ``eps``: DiffRecon's joint training conditions stage 2 on
        stage 1's x̂0. Not clipped (the data are standardised, not bounded).

        Args:
            x_t: (B, ...) noisy data; t: int or (B,) steps; eps: ε̂ shaped like x_t.
        Returns:
            x̂0, shaped like x_t.
        """
        if eps.shape != x_t.shape:
            raise ValueError(f"predict_x0: eps {tuple(eps.shape)} must be shaped like x_t {tuple(x_t.shape)}")
        ab = self._at(self.alpha_bars, t, x_t)
        return (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()

    def posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """Mean μ̃_t and variance β̃_t of q(x_{t-1} | x_t, x0) (see the module docstring).

        Args:
            x0: (B, ...) clean data (or its estimate x̂0); x_t: (B, ...); t: int or (B,) steps.
        Returns:
            (mean shaped like x_t, variance broadcastable to it); at t = 0 the variance is 0 and
            the mean is x0.
        """
        beta = self._at(self.betas, t, x_t)
        ab = self._at(self.alpha_bars, t, x_t)
        ab_prev = self._at(self.alpha_bars_prev, t, x_t)
        mean = ab_prev.sqrt() * beta / (1.0 - ab) * x0 + (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab) * x_t
        return mean, beta * (1.0 - ab_prev) / (1.0 - ab)
