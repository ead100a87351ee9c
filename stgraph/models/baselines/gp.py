"""Gaussian-process kriging on station coordinates, one regression per step and channel.

Ordinary geostatistical kriging as GP regression (Rasmussen & Williams, *Gaussian Processes for
Machine Learning*, MIT Press 2006, §2.2): at each step and channel the field over space is a GP
with a stationary kernel of the 3-D chord distance (km) between stations (latitude/longitude ->
unit-sphere xyz × Earth radius, a valid distance for any positive-definite kernel of Euclidean
distance), Matérn-3/2 or squared-exponential (``rbf``), plus observation noise. The prior mean
per step is the mean of the visible stations observed then (``mean="observed"``) or 0. The
prediction is the posterior mean given the visible stations observed at that step, at the
targets and at the visible stations (``pred.src`` echoes observed cells and fills unobserved
ones with that posterior mean).

The per-step observation mask is folded into one batched solve: unobserved rows and columns of
K_oo + noise·I become the identity and their residuals 0, so they drop out exactly, and one
batched Cholesky factorisation over all (B, W, C) steps solves every system (in float64, with a
small jitter).

The three kernel hyperparameters (length scale, signal variance, noise variance; stored as
log-parameters in buffers, not gradient-trained weights) are fitted by the engine's ``fit`` hook
(:meth:`GPKriging.fit`): Adam on the node-masking objective, predicting hidden training stations
from the others over the training batches (masked L1 or MSE in standardised units), a fixed
number of passes with early stopping on the validation score, the best pass kept. That is
cross-validation fitting of GP hyperparameters (Sundararajan & Keerthi, Neural Computation 13(5),
2001). :meth:`GPKriging.log_marginal_likelihood` gives the textbook alternative objective (R&W
§5.4.1). Deviation from R&W's ML-II: the objective is the engine's held-out-station error, not the
marginal likelihood, so the fit optimises what kriging is scored on, and the hyperparameters are
shared by every step and channel rather than fitted per step.

Local GP (``neighbours: k``, for large networks): each target is predicted from its own k nearest
visible stations (chord distance), and each visible station's missing cells from its k nearest
*other* visible stations: one small k × k system per (station, step, channel), all solved by one
batched Cholesky factorisation (memory O(B·W·C·N·k²) instead of O(B·W·C·N²); the cost grows
linearly with the number of stations). The prior mean (``mean="observed"``) is then the mean of
the observed neighbours at that step. A prediction depends on its k nearest visible stations
only, so evaluation in chunks of targets (``train.eval_target_chunk`` with ``eval_neighbours`` >= k)
gives the same numbers. Deviation: the neighbourhood is a local approximation of the global GP
(the nearest-neighbour GP of Datta et al., JASA 111(514), 2016, at prediction time), not the
exact posterior given every station.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from stgraph.geo import EARTH_RADIUS_KM, latlon_to_xyz
from stgraph.graph.knn import knn, knn_graph
from stgraph.models.base import DataSizes, FitContext, GraphBatch, Prediction, StationModel

KERNELS = ("matern32", "rbf")
MEANS = ("observed", "zero")
FIT_LOSSES = ("l1", "mse")
JITTER = 1e-6  # added to the diagonal of K_oo (float64)
MIN_IMPROVEMENT = 1e-4  # relative validation improvement that counts as one while fitting


@dataclass
class GPParams:
    """Kernel, initial hyperparameters, prior mean, and the fit: ``fit_passes`` passes of Adam
    (learning rate ``fit_lr``) over the training batches on the ``fit_loss`` node-masking
    objective, stopping after ``fit_patience`` passes without validation improvement
    (``fit_passes: 0`` keeps the initial hyperparameters). ``fit_lr`` 0.01: on UCI-12 krige fold 0,
    0.05 overshot (no pass beat the initial kernel on validation: test MAE 15.78 µg/m³), 0.01 and
    0.002 reached the same kernel (ℓ ≈ 27 km; 15.27 and 15.28): the ``gp-lr*`` rows of
    ``configs/bench/explore/uci12_amlsg_variants.yaml``."""

    kernel: str = "matern32"
    lengthscale_km: float = 20.0
    variance: float = 1.0
    noise: float = 0.1
    mean: str = "observed"
    fit_loss: str = "l1"
    fit_passes: int = 20
    fit_lr: float = 0.01
    fit_patience: int = 3
    neighbours: int | None = None  # local GP: each station from its k nearest visible ones; None: all


def masked_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``mse``) error over the cells where ``mask`` holds."""
    err = (pred - true).abs() if kind == "l1" else (pred - true) ** 2
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def chord_km(pos_a: torch.Tensor, pos_b: torch.Tensor) -> torch.Tensor:
    """(..., N_a, 2), (..., N_b, 2) latitude/longitude in degrees -> (..., N_a, N_b) 3-D chord
    distance in km (float64); leading dimensions broadcast (the local GP's per-query systems)."""
    a = latlon_to_xyz(pos_a.double()) * EARTH_RADIUS_KM
    b = latlon_to_xyz(pos_b.double()) * EARTH_RADIUS_KM
    return (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1).clamp_min(0).sqrt()


def _sorted_by_distance(nb: torch.Tensor, pos_src: torch.Tensor, pos_q: torch.Tensor) -> torch.Tensor:
    """(Q, k) neighbour indices reordered nearest first (stable), so a query's system does not
    depend on the search's internal order."""
    d = chord_km(pos_q[:, None], pos_src[nb]).squeeze(1)  # (Q, k)
    return nb.gather(1, torch.argsort(d, dim=1, stable=True))


def nearest(pos_src: torch.Tensor, pos_q: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, min(k, N_src)) indices of each query's nearest sources (great-circle order), nearest
    first; O((N_src + Q)·k) memory (the package's kNN)."""
    k = min(k, pos_src.size(0))
    if k == 0 or pos_q.size(0) == 0:
        return torch.zeros(pos_q.size(0), 0, dtype=torch.long)
    xs, xq = latlon_to_xyz(pos_src.double().cpu()), latlon_to_xyz(pos_q.double().cpu())
    nb = knn(xs, xq, k)[0].view(pos_q.size(0), k)
    return _sorted_by_distance(nb, pos_src.cpu(), pos_q.cpu()).to(pos_src.device)


def nearest_others(pos: torch.Tensor, k: int) -> torch.Tensor:
    """(N, min(k, N - 1)) indices of each station's nearest other stations, nearest first."""
    n = pos.size(0)
    k = min(k, n - 1)
    ei = knn_graph(latlon_to_xyz(pos.double().cpu()), k)  # grouped by receiver, exactly k each
    nb = ei[0].view(n, k)
    return _sorted_by_distance(nb, pos.cpu(), pos.cpu()).to(pos.device)


class GPKriging(StationModel):
    """Args:
        sizes: data-derived sizes (task ``krige`` or ``impute``). params: :class:`GPParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, W, N_src, C_out) and
    (B, W, N_tgt, C_out). Cost per forward: one batched (B·W·C_out) Cholesky of N_src × N_src.
    """

    trainable = False  # nothing for gradient training: the kernel is fitted by ``fit``
    fits = True
    learns_interpolation = True
    tasks = frozenset({"krige", "impute", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: GPParams | None = None):
        super().__init__(sizes)
        self.params = p = params or GPParams()
        if p.kernel not in KERNELS:
            raise ValueError(f"gp: kernel must be one of {KERNELS}, got {p.kernel!r}")
        if p.mean not in MEANS:
            raise ValueError(f"gp: mean must be one of {MEANS}, got {p.mean!r}")
        if p.fit_loss not in FIT_LOSSES:
            raise ValueError(f"gp: fit_loss must be one of {FIT_LOSSES}, got {p.fit_loss!r}")
        for name in ("lengthscale_km", "variance", "noise", "fit_lr"):
            if not getattr(p, name) > 0:
                raise ValueError(f"gp: {name} must be > 0, got {getattr(p, name)}")
        if not (isinstance(p.fit_passes, int) and p.fit_passes >= 0):
            raise ValueError(f"gp: fit_passes must be an integer >= 0, got {p.fit_passes!r}")
        if not (isinstance(p.fit_patience, int) and p.fit_patience >= 1):
            raise ValueError(f"gp: fit_patience must be an integer >= 1, got {p.fit_patience!r}")
        if p.neighbours is not None and not (isinstance(p.neighbours, int) and p.neighbours >= 1):
            raise ValueError(f"gp: neighbours must be an integer >= 1 or null (all visible), got {p.neighbours!r}")
        self.register_buffer("log_lengthscale", torch.empty(()))
        self.register_buffer("log_variance", torch.empty(()))
        self.register_buffer("log_noise", torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Restore the initial length scale, variance and noise of :class:`GPParams`."""
        with torch.no_grad():
            self.log_lengthscale.fill_(math.log(self.params.lengthscale_km))
            self.log_variance.fill_(math.log(self.params.variance))
            self.log_noise.fill_(math.log(self.params.noise))

    @contextmanager
    def fitting(self) -> Iterator[list[torch.Tensor]]:
        """The three log-parameters (length scale, variance, noise) as leaf tensors that require
        gradients, for an optimiser; frozen again on exit."""
        theta = [self.log_lengthscale, self.log_variance, self.log_noise]
        for t in theta:
            t.requires_grad_(True)
        try:
            yield theta
        finally:
            for t in theta:
                t.requires_grad_(False)

    def fit(self, ctx: FitContext) -> dict:
        """Fit the three hyperparameters on the training batches (see :class:`GPParams`).

        Each pass runs Adam over ``ctx.train_batches()`` (training stations in the training period
        only, some hidden as targets, or cells hidden for ``impute``) on the weighted masked loss of
        the batch's terms; after each pass ``ctx.validate()`` scores the val-role stations. The
        hyperparameters of the best validation score (the initial ones included) are kept.
        Deterministic: the batches are seeded and the optimiser has no randomness.

        Returns:
            ``lengthscale_km``, ``variance``, ``noise`` (chosen), ``objective`` (the loss),
            ``train_loss`` (mean objective of the last pass), ``steps`` (Adam steps), ``passes``,
            ``best_pass`` (0 = the initial values), ``val_mae`` and ``initial_val_mae``
            (standardised).
        """
        p = self.params
        best_val = initial_val = ctx.validate()
        best, best_pass, passes, steps, bad, train_loss = self._snapshot(), 0, 0, 0, 0, float("nan")
        with self.fitting() as theta:
            opt = torch.optim.Adam(theta, lr=p.fit_lr)
            for passes in range(1, p.fit_passes + 1):
                total, count = 0.0, 0
                for batch, terms in ctx.train_batches():
                    pred = self(batch)
                    loss = pred.src.new_zeros(())
                    for which, y, mask, weight in terms:
                        if weight:
                            loss = loss + weight * masked_loss(getattr(pred, which), y, mask, p.fit_loss)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    steps, total, count = steps + 1, total + float(loss.detach()), count + 1
                train_loss = total / max(count, 1)
                val = ctx.validate()
                if val < best_val * (1 - MIN_IMPROVEMENT):
                    best_val, best, best_pass, bad = val, self._snapshot(), passes, 0
                else:
                    bad += 1
                    if bad >= p.fit_patience:
                        break
        with torch.no_grad():
            for t, b in zip((self.log_lengthscale, self.log_variance, self.log_noise), best, strict=True):
                t.copy_(b)
        return {
            "lengthscale_km": self.lengthscale_km,
            "variance": self.variance,
            "noise": self.noise,
            "objective": f"node-masking masked {p.fit_loss} (standardised)",
            "train_loss": train_loss,
            "steps": steps,
            "passes": passes,
            "best_pass": best_pass,
            "val_mae": best_val,
            "initial_val_mae": initial_val,
        }

    def _snapshot(self) -> list[torch.Tensor]:
        return [t.detach().clone() for t in (self.log_lengthscale, self.log_variance, self.log_noise)]

    @property
    def lengthscale_km(self) -> float:
        return float(self.log_lengthscale.detach().exp())

    @property
    def variance(self) -> float:
        return float(self.log_variance.detach().exp())

    @property
    def noise(self) -> float:
        return float(self.log_noise.detach().exp())

    def kernel(self, dist_km: torch.Tensor) -> torch.Tensor:
        """Covariance of the latent field at the given distances (float64, same shape)."""
        ell = self.log_lengthscale.double().exp()
        var = self.log_variance.double().exp()
        if self.params.kernel == "rbf":
            return var * torch.exp(-0.5 * (dist_km / ell) ** 2)
        r = math.sqrt(3.0) * dist_km / ell
        return var * (1 + r) * torch.exp(-r)

    def _solve(self, batch: GraphBatch):
        """Masked residuals, the Cholesky factor of the masked K_oo + noise·I, and alpha = K⁻¹ r.

        Returns float64 tensors: x (B, W, C, N) observed values (0 elsewhere), obs (B, W, C, N)
        bool, mu (B, W, C, 1) prior mean, resid (B, W, C, N), chol (B, W, C, N, N), alpha (B, W, C, N).
        """
        tc = list(self.sizes.target_channels)
        m = batch.x_mask[..., tc].permute(0, 1, 3, 2)  # (B, W, C, N)
        x = torch.where(m, batch.x[..., tc].permute(0, 1, 3, 2), 0).double()
        obs = m.double()
        if self.params.mean == "observed":
            mu = x.sum(-1, keepdim=True) / obs.sum(-1, keepdim=True).clamp_min(1)
        else:
            mu = torch.zeros_like(x[..., :1])
        resid = (x - mu) * obs
        n = x.size(-1)
        eye = torch.eye(n, dtype=torch.float64, device=x.device)
        k_oo = self.kernel(chord_km(batch.pos_src, batch.pos_src).to(x.device))
        k_oo = k_oo + (self.log_noise.double().exp() + JITTER) * eye
        both = obs.unsqueeze(-1) * obs.unsqueeze(-2)  # (B, W, C, N, N): 1 where both rows observed
        k_masked = both * k_oo + (1 - both) * eye  # unobserved rows/columns -> identity
        chol = torch.linalg.cholesky(k_masked)
        alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)  # 0 at unobserved rows
        return x, m, mu, resid, chol, alpha

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        if self.params.neighbours is not None:
            return self._forward_local(batch)
        x, m, mu, _, _, alpha = self._solve(batch)
        dev = x.device
        k_so = self.kernel(chord_km(batch.pos_src, batch.pos_src).to(dev))  # latent covariance, no noise
        k_to = self.kernel(chord_km(batch.pos_tgt, batch.pos_src).to(dev))
        post_src = mu + torch.einsum("ij,bwcj->bwci", k_so, alpha)
        post_tgt = mu + torch.einsum("ij,bwcj->bwci", k_to, alpha)
        src = torch.where(m, x, post_src)
        dtype = batch.x.dtype
        pred = Prediction(src.permute(0, 1, 3, 2).to(dtype), post_tgt.permute(0, 1, 3, 2).to(dtype))
        if self.predict_std:  # the latent field's posterior std: k(0) - k_to K⁻¹ k_ot (observed sources)
            chol = self._solve(batch)[4]
            k_ot = k_to.T.expand(*m.shape[:3], -1, -1) * m.double().unsqueeze(-1)  # (B, W, C, N, M)
            v = torch.linalg.solve_triangular(chol, k_ot, upper=False)
            prior = self.kernel(torch.zeros((), dtype=torch.float64, device=dev))
            var = (prior - v.pow(2).sum(-2)).clamp_min(0)  # (B, W, C, M)
            pred.std_tgt = var.sqrt().permute(0, 1, 3, 2).to(dtype)
        return pred

    def _forward_local(self, batch: GraphBatch) -> Prediction:
        """The local GP (``neighbours: k``): targets from their k nearest visible stations, the
        visible stations' missing cells from their k nearest other visible stations."""
        tc = list(self.sizes.target_channels)
        m = batch.x_mask[..., tc].permute(0, 1, 3, 2)  # (B, W, C, N_src)
        x = torch.where(m, batch.x[..., tc].permute(0, 1, 3, 2), 0).double()
        n_src, k = batch.pos_src.size(0), self.params.neighbours
        dtype = batch.x.dtype
        near = nearest(batch.pos_src, batch.pos_tgt, k)
        post_tgt, std_tgt = self._local_posterior(x, m, batch.pos_src, batch.pos_tgt, near)
        if n_src > 1:
            post_src, _ = self._local_posterior(x, m, batch.pos_src, batch.pos_src, nearest_others(batch.pos_src, k))
        else:
            post_src = torch.zeros_like(x)
        src = torch.where(m, x, post_src)
        pred = Prediction(src.permute(0, 1, 3, 2).to(dtype), post_tgt.permute(0, 1, 3, 2).to(dtype))
        if self.predict_std:
            pred.std_tgt = std_tgt.permute(0, 1, 3, 2).to(dtype)
        return pred

    def _local_posterior(
        self, x: torch.Tensor, m: torch.Tensor, pos_src: torch.Tensor, pos_q: torch.Tensor, nb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean (and, with ``predict_std``, the latent std) at each query from its own
        neighbours. x, m: (B, W, C, N_src) float64 values (0 where unobserved) and mask; nb: (Q, k)
        indices into the sources. Returns (B, W, C, Q) tensors (std None unless asked)."""
        b, w, c, _ = x.shape
        q, k = nb.shape
        if q == 0 or k == 0:
            return x.new_zeros(b, w, c, q), (x.new_zeros(b, w, c, q) if self.predict_std else None)
        xn, on = x[..., nb], m[..., nb].double()  # (B, W, C, Q, k)
        if self.params.mean == "observed":
            mu = xn.sum(-1, keepdim=True) / on.sum(-1, keepdim=True).clamp_min(1)
        else:
            mu = torch.zeros_like(xn[..., :1])
        resid = (xn - mu) * on
        ps = pos_src[nb]  # (Q, k, 2)
        eye = torch.eye(k, dtype=torch.float64, device=x.device)
        k_nn = self.kernel(chord_km(ps, ps)) + (self.log_noise.double().exp() + JITTER) * eye  # (Q, k, k)
        both = on.unsqueeze(-1) * on.unsqueeze(-2)  # (B, W, C, Q, k, k)
        chol = torch.linalg.cholesky(both * k_nn + (1 - both) * eye)  # unobserved rows/columns -> identity
        alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)  # (B, W, C, Q, k)
        k_qn = self.kernel(chord_km(pos_q[:, None], ps)).squeeze(1)  # (Q, k)
        post = mu.squeeze(-1) + (k_qn * alpha).sum(-1)
        if not self.predict_std:
            return post, None
        v = torch.linalg.solve_triangular(chol, (k_qn * on).unsqueeze(-1), upper=False).squeeze(-1)
        prior = self.kernel(torch.zeros((), dtype=torch.float64, device=x.device))
        return post, (prior - v.pow(2).sum(-1)).clamp_min(0).sqrt()

    def log_marginal_likelihood(self, batch: GraphBatch) -> torch.Tensor:
        """(B, W, C_out) log p(y_obs | hyperparameters) of each step's observed visible values
        (residuals from the prior mean) under the GP: -½ rᵀK⁻¹r - ½ log|K| - n_obs/2 log 2π over
        the observed stations only. Sum (or average) it for a fitting objective; float64."""
        _, m, _, resid, chol, alpha = self._solve(batch)
        quad = (resid * alpha).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # identity rows add 0
        n_obs = m.sum(-1).double()
        return -0.5 * quad - 0.5 * logdet - 0.5 * n_obs * math.log(2 * math.pi)
