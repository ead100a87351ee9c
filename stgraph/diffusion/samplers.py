"""Reverse-process samplers: ancestral DDPM over all T steps, and DDIM over any sub-sequence.

Both take a model-agnostic noise predictor ``eps_model(x_t, t) -> ε̂``: x_t is shaped like the
target tensor with the S samples folded into the batch axis, ``(S·B, ...)``, sample-major (rows
s·B .. s·B + B - 1 are sample s; :func:`repeat_for_samples` tiles a condition the same way), and
t is an (S·B,) int64 tensor holding the current step. Conditioning is the callable's business.

Conditional sampling in the CSDI way (Tashiro et al. 2021, Algorithm 2): with ``infer_mask``
(True at the cells to infer) only those cells are noised and denoised; the state is held at 0
elsewhere, so ``eps_model`` sees exactly CSDI's ``(1 - cond_mask) * x_t`` and supplies the
observed cells itself as the condition. The output is 0 outside ``infer_mask``: the caller
combines it with the observations.

- **DDPM** (Ho et al. 2020; CSDI's ``impute``): x_{t-1} ~ N(μ̃_t(x̂0, x_t), β̃_t I) with
  x̂0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t), the posterior of q(x_{t-1} | x_t, x̂0) (see
  :mod:`stgraph.diffusion.schedule`); σ_t² = β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) as CSDI; no noise
  is added at the last step. Algebraically equal to CSDI's ε-form
  (x_t - β_t / sqrt(1 - ᾱ_t) ε̂) / sqrt(α_t) (a test checks it). x̂0 is not clipped.
- **DDIM** (Song, Meng and Ermon, ICLR 2021, eq. 12 and 16): on steps τ_n > … > τ_1 (evenly
  spaced over 0..T-1, both ends included, :func:`ddim_timesteps`),
  x_{τ_{i-1}} = sqrt(ᾱ_{τ_{i-1}}) x̂0 + sqrt(1 - ᾱ_{τ_{i-1}} - σ²) ε̂ + σ z,
  σ = η sqrt((1 - ᾱ_{τ_{i-1}}) / (1 - ᾱ_{τ_i})) sqrt(1 - ᾱ_{τ_i} / ᾱ_{τ_{i-1}}), and ᾱ = 1 after the
  last step (which returns x̂0). η = 0 is deterministic given x_T; η = 1 over all T steps is DDPM.

A ``torch.Generator`` draws every random number (x_T first, then one (S·B, ...) draw per step
with σ > 0, in step order); samplers run under ``torch.no_grad``. The S samples are one batched
call per step, never a Python loop over samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from stgraph.diffusion.schedule import NoiseSchedule

EpsModel = Callable[[Tensor, Tensor], Tensor]
SAMPLERS = ("ddpm", "ddim")


def repeat_for_samples(x: Tensor, num_samples: int) -> Tensor:
    """(B, ...) -> (S·B, ...), sample-major (``x.repeat(S, 1, ...)``): a condition laid out like
    the x_t that the samplers pass to ``eps_model``."""
    return x.repeat(num_samples, *([1] * (x.dim() - 1)))


def ddim_timesteps(num_train_steps: int, num_steps: int) -> Tensor:
    """(num_steps,) int64 ascending steps evenly spaced over 0..T-1, both ends included
    (``round(linspace(0, T - 1, n))``; one step: [T - 1]). Distinct for any n <= T."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"DDIM steps must be in 1..{num_train_steps} (the schedule's T), got {num_steps}")
    if num_steps == 1:
        return torch.tensor([num_train_steps - 1])
    return torch.linspace(0, num_train_steps - 1, num_steps, dtype=torch.float64).round().long()


def ddpm_step_stats(schedule: NoiseSchedule, x_t: Tensor, t: int, eps: Tensor) -> tuple[Tensor, float]:
    """Mean and standard deviation of the ancestral step x_t -> x_{t-1}.

    Args:
        schedule: the noise schedule; x_t: (B, ...); t: the step, 0..T-1; eps: ε̂ shaped like x_t.
    Returns:
        (μ̃_t(x̂0, x_t) shaped like x_t, sqrt(β̃_t)); σ = 0 at t = 0.
    """
    x0 = schedule.predict_x0(x_t, t, eps)
    mean, var = schedule.posterior_mean_variance(x0, x_t, t)
    return mean, math.sqrt(max(float(var), 0.0))


def ddim_step_stats(
    schedule: NoiseSchedule, x_t: Tensor, t: int, t_prev: int, eps: Tensor, eta: float
) -> tuple[Tensor, float]:
    """Mean and standard deviation of the DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12).

    Args:
        schedule: the noise schedule; x_t: (B, ...); t: the current step;
        t_prev: the next step, < t, or -1 for the end (ᾱ = 1: the step returns x̂0);
        eps: ε̂ shaped like x_t; eta: η in [0, 1].
    Returns:
        (sqrt(ᾱ_prev) x̂0 + sqrt(1 - ᾱ_prev - σ²) ε̂ shaped like x_t, σ).
    """
    if not -1 <= t_prev < t:
        raise ValueError(f"DDIM step needs -1 <= t_prev < t, got t={t}, t_prev={t_prev}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
    ab = float(schedule.alpha_bars[t])
    ab_prev = 1.0 if t_prev < 0 else float(schedule.alpha_bars[t_prev])
    sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    x0 = schedule.predict_x0(x_t, t, eps)
    mean = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
    return mean, sigma


def _randn(shape: Sequence[int], generator: torch.Generator | None, dtype: torch.dtype, device) -> Tensor:
    """Standard normal draw from ``generator`` (on the generator's device), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=where).to(device)


@torch.no_grad()
def _reverse(
    eps_model: EpsModel,
    shape: Sequence[int],
    step: Callable[[Tensor, int, int, Tensor], tuple[Tensor, float]],
    steps: Tensor,
    num_samples: int,
    generator: torch.Generator | None,
    infer_mask: Tensor | None,
    x_start: Tensor | None,
    dtype: torch.dtype,
    device,
) -> Tensor:
    """Run ``step(x_t, t, t_prev, ε̂) -> (mean, σ)`` down ``steps`` (ascending) from x_T; (S, *shape)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or num_samples < 1:
        raise ValueError(f"need a (B, ...) target shape and num_samples >= 1, got shape {shape}, S={num_samples}")
    folded = (num_samples * shape[0], *shape[1:])
    if x_start is None:
        x = _randn((num_samples, *shape), generator, dtype, device)
    else:
        if tuple(x_start.shape) != (num_samples, *shape):
            raise ValueError(f"x_start must be (S, *shape) = {(num_samples, *shape)}, got {tuple(x_start.shape)}")
        x = x_start.to(dtype=dtype, device=device)
    x, device = x.reshape(folded), x.device
    keep = None
    if infer_mask is not None:
        try:
            m = torch.as_tensor(infer_mask, device=device).bool().expand(shape)
        except RuntimeError as e:
            raise ValueError(f"infer_mask {tuple(infer_mask.shape)} does not broadcast to the target {shape}") from e
        keep = repeat_for_samples(m, num_samples).to(dtype)
        x = x * keep
    order = steps.flip(0).tolist()
    for i, t in enumerate(order):
        t_prev = order[i + 1] if i + 1 < len(order) else -1
        eps = eps_model(x, torch.full((folded[0],), t, dtype=torch.long, device=device))
        if eps.shape != x.shape:
            raise ValueError(f"eps_model returned {tuple(eps.shape)}, expected x_t's shape {tuple(x.shape)}")
        mean, sigma = step(x, t, t_prev, eps)
        x = mean + sigma * _randn(folded, generator, dtype, device) if sigma > 0 else mean
        if keep is not None:
            x = x * keep
    return x.reshape(num_samples, *shape)


def sample_ddpm(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    infer_mask: Tensor | None = None,
    x_start: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Tensor:
    """Ancestral DDPM sampling over all T steps (CSDI's Algorithm 2).

    Args:
        eps_model: ε̂ = eps_model(x_t (S·B, ...), t (S·B,)), see the module docstring.
        schedule: the noise schedule the model was trained with.
        shape: (B, ...) of the target tensor.
        num_samples: S.
        generator: draws x_T and every step's noise.
        infer_mask: bool, broadcastable to ``shape``: the cells to infer (None: all).
        x_start: (S, *shape) x_T to start from instead of a draw.
        dtype, device: of the samples.
    Returns:
        (S, *shape) samples of x_0 (0 outside ``infer_mask``).
    """
    steps = torch.arange(schedule.num_steps)

    def step(x, t, t_prev, eps):
        return ddpm_step_stats(schedule, x, t, eps)

    return _reverse(eps_model, shape, step, steps, num_samples, generator, infer_mask, x_start, dtype, device)


def sample_ddim(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    eta: float = 0.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    infer_mask: Tensor | None = None,
    x_start: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Tensor:
    """DDIM sampling over ``steps`` evenly spaced steps (default: all T), stochasticity ``eta``.

    Arguments as :func:`sample_ddpm`, plus ``steps`` (1..T) and ``eta`` (0: deterministic given
    x_T, no noise drawn after it; 1 with all T steps: DDPM). Returns (S, *shape).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
    taus = ddim_timesteps(schedule.num_steps, schedule.num_steps if steps is None else steps)

    def step(x, t, t_prev, eps):
        return ddim_step_stats(schedule, x, t, t_prev, eps, eta)

    return _reverse(eps_model, shape, step, taus, num_samples, generator, infer_mask, x_start, dtype, device)


def sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    **kwargs,
) -> Tensor:
    """:func:`sample_ddpm` (``sampler="ddpm"``; ``steps`` must be None or T) or :func:`sample_ddim`;
    other keyword arguments are passed on. Returns (S, *shape)."""
    if sampler == "ddpm":
        if steps not in (None, schedule.num_steps):
            raise ValueError(f"sampler 'ddpm' runs all {schedule.num_steps} steps; got steps={steps} (use 'ddim')")
        return sample_ddpm(eps_model, schedule, shape, **kwargs)
    if sampler == "ddim":
        return sample_ddim(eps_model, schedule, shape, steps=steps, eta=eta, **kwargs)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
