"""GP kriging: posterior mean and marginal likelihood against dense per-step references,
interpolation at zero noise, hyperparameter recovery, and the contract."""

import math

import numpy as np
import pytest
import torch

from stgraph.graph.geo import EARTH_RADIUS_KM, haversine_km
from stgraph.models import DataSizes, GraphBatch
from stgraph.models.baselines.gp import JITTER, GPKriging, GPParams

TINY = {"gp": {}}

POS_SRC = torch.tensor([[39.90, 116.30], [39.95, 116.35], [40.00, 116.40], [39.92, 116.45]])
POS_TGT = torch.tensor([[40.05, 116.28], [39.85, 116.38]])


def _chord_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chord length from the great-circle distance: 2 R sin(d / 2R) (independent of the model's xyz route)."""
    d = haversine_km(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])
    return 2 * EARTH_RADIUS_KM * np.sin(d / (2 * EARTH_RADIUS_KM))


def _kernel_np(r, kernel, ell, var):
    if kernel == "rbf":
        return var * np.exp(-0.5 * (r / ell) ** 2)
    s = math.sqrt(3) * r / ell
    return var * (1 + s) * np.exp(-s)


def _mixed_batch():
    """B=2, W=3, 4 visible stations, 2 channels (the second predicted), mixed observation masks."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 2, generator=g)
    mask = torch.ones(2, 3, 4, 2, dtype=torch.bool)
    mask[0, 1, [0, 2], 1] = False  # two observed
    mask[0, 2, :, 1] = False  # none observed
    mask[1, 0, 3, 1] = False
    mask[1, 2, [0, 1, 2], 1] = False  # one observed
    mask[:, :, 1, 0] = False  # the other channel's mask must not matter
    batch = GraphBatch(torch.where(mask, x, 0), mask, torch.zeros(2, 3, 6), torch.zeros(2, 3, 6), POS_SRC, POS_TGT)
    return batch, DataSizes(2, 1, (1,), window=3, horizon=3, task="krige")


def _dense_reference(batch, kernel, ell, var, noise, mean):
    """Per (b, w): the posterior mean at targets and visible stations from the observed stations only."""
    ps, pt = batch.pos_src.double().numpy(), batch.pos_tgt.double().numpy()
    x, m = batch.x[..., 1].double().numpy(), batch.x_mask[..., 1].numpy()
    b, w, n = x.shape
    src, tgt, lml = np.zeros((b, w, n)), np.zeros((b, w, pt.shape[0])), np.zeros((b, w))
    for i in range(b):
        for t in range(w):
            o = m[i, t]
            y = x[i, t, o]
            mu = y.mean() if (mean == "observed" and o.any()) else 0.0
            if not o.any():
                src[i, t], tgt[i, t] = mu, mu
                continue
            k_oo = _kernel_np(_chord_np(ps[o], ps[o]), kernel, ell, var) + (noise + JITTER) * np.eye(o.sum())
            alpha = np.linalg.solve(k_oo, y - mu)
            tgt[i, t] = mu + _kernel_np(_chord_np(pt, ps[o]), kernel, ell, var) @ alpha
            src[i, t] = np.where(o, x[i, t], mu + _kernel_np(_chord_np(ps, ps[o]), kernel, ell, var) @ alpha)
            _, logdet = np.linalg.slogdet(k_oo)
            lml[i, t] = -0.5 * (y - mu) @ alpha - 0.5 * logdet - 0.5 * o.sum() * math.log(2 * math.pi)
    return src, tgt, lml


@pytest.mark.parametrize(("kernel", "mean"), [("matern32", "observed"), ("rbf", "zero")])
def test_posterior_mean_and_lml_match_dense_reference(kernel, mean):
    batch, sizes = _mixed_batch()
    params = GPParams(kernel=kernel, lengthscale_km=7.0, variance=1.5, noise=0.2, mean=mean)
    model = GPKriging(sizes, params)
    out = model(batch)
    src, tgt, lml = _dense_reference(batch, kernel, 7.0, 1.5, 0.2, mean)
    torch.testing.assert_close(out.tgt[..., 0].double(), torch.from_numpy(tgt), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.src[..., 0].double(), torch.from_numpy(src), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.log_marginal_likelihood(batch)[..., 0], torch.from_numpy(lml))
    # the unobserved visible cells are genuine estimates, not the input's zeros
    gaps = ~batch.x_mask[0, 1, :, 1]
    assert (out.src[0, 1, gaps, 0].abs() > 1e-3).all()


def test_zero_noise_interpolates_observed_stations():
    batch, sizes = _mixed_batch()
    batch.pos_tgt = POS_SRC[[1, 3]]  # targets on top of visible stations 1 and 3
    tight = GPKriging(sizes, GPParams(noise=1e-7))(batch)
    obs = batch.x_mask[..., [1, 3], 1]
    truth = batch.x[..., [1, 3], 1]
    torch.testing.assert_close(tight.tgt[..., 0][obs], truth[obs], rtol=0, atol=1e-3)
    loose = GPKriging(sizes, GPParams(noise=0.5))(batch)  # with noise the posterior mean shrinks
    assert (loose.tgt[..., 0][obs] - truth[obs]).abs().max() > 0.05


def _gp_samples(n_pos=30, n_steps=64, ell=15.0, noise=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack([39.7 + 0.6 * torch.rand(n_pos, generator=g), 116.0 + 0.8 * torch.rand(n_pos, generator=g)], -1)
    r = torch.from_numpy(_chord_np(pos.double().numpy(), pos.double().numpy()))
    s = math.sqrt(3) * r / ell
    cov = (1 + s) * torch.exp(-s) + noise * torch.eye(n_pos, dtype=torch.float64)
    z = torch.randn(n_steps, n_pos, generator=g, dtype=torch.float64)
    y = (z @ torch.linalg.cholesky(cov).T).float().view(1, n_steps, n_pos, 1)
    mask = torch.ones_like(y, dtype=torch.bool)
    batch = GraphBatch(y, mask, torch.zeros(1, n_steps, 6), torch.zeros(1, n_steps, 6), pos, pos[:0])
    return batch, DataSizes(1, 1, (0,), window=n_steps, horizon=n_steps, task="krige")


@pytest.mark.parametrize("start_km", [60.0, 4.0])
def test_marginal_likelihood_recovers_the_lengthscale(start_km):
    batch, sizes = _gp_samples()
    model = GPKriging(sizes, GPParams(lengthscale_km=start_km, mean="zero"))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(80):
        loss = -model.log_marginal_likelihood(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 15.0 / 1.5 < model.lengthscale_km < 15.0 * 1.5
    assert 1.0 / 1.5 < model.variance < 1.0 * 1.5


def test_cross_validation_loss_fits_the_lengthscale():
    """The engine's objective: hide stations, predict them from the others (CV fitting)."""
    full, sizes = _gp_samples(seed=1)
    model = GPKriging(sizes, GPParams(lengthscale_km=60.0, mean="zero"))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    for _ in range(60):
        hide = torch.randperm(30, generator=g)[:6]
        keep = torch.ones(30, dtype=torch.bool)
        keep[hide] = False
        batch = GraphBatch(
            full.x[:, :, keep],
            full.x_mask[:, :, keep],
            full.x_time,
            full.y_time,
            full.pos_src[keep],
            full.pos_src[hide],
        )
        loss = ((model(batch).tgt - full.x[:, :, hide]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 15.0 / 1.5 < model.lengthscale_km < 15.0 * 1.5


def test_reset_and_bad_options():
    sizes = DataSizes(1, 1, (0,), 2, 2, task="krige")
    model = GPKriging(sizes, GPParams(lengthscale_km=12.0, variance=2.0, noise=0.3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.reset_parameters()
    assert model.lengthscale_km == pytest.approx(12.0) and model.variance == pytest.approx(2.0)
    assert model.noise == pytest.approx(0.3)
    with pytest.raises(ValueError, match="kernel must be one of"):
        GPKriging(sizes, GPParams(kernel="matern52"))
    with pytest.raises(ValueError, match="mean must be one of"):
        GPKriging(sizes, GPParams(mean="median"))
    with pytest.raises(ValueError, match="lengthscale_km must be > 0"):
        GPKriging(sizes, GPParams(lengthscale_km=0.0))


# --- outside oracle: scikit-learn's GaussianProcessRegressor --------------------------------


def _xyz_km(pos: np.ndarray) -> np.ndarray:
    """Latitude/longitude (degrees) -> 3-D Earth-centred coordinates in km (chord distances)."""
    lat, lon = np.radians(pos[:, 0]), np.radians(pos[:, 1])
    return EARTH_RADIUS_KM * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


@pytest.mark.parametrize("mean", ["observed", "zero"])
def test_posterior_mean_matches_scikit_learn(mean):
    """GP kriging equals sklearn's GaussianProcessRegressor with ConstantKernel · Matérn(ν = 3/2) +
    WhiteKernel (all fixed, ``optimizer=None``, ``alpha`` = the jitter, ``normalize_y=False``) on
    the stations' xyz km coordinates, fitted per step on the stations observed then; the prior
    mean (``observed``: the mean of those observations) is subtracted before the fit and added back."""
    from sklearn import gaussian_process as gp  # the dev extra installs it: a missing oracle fails
    from sklearn.gaussian_process import kernels

    ell, var, noise = 18.0, 1.7, 0.15
    g = torch.Generator().manual_seed(5)
    n_src, n_tgt, steps = 12, 4, 6
    pos = torch.stack(
        [39.7 + 0.5 * torch.rand(n_src + n_tgt, generator=g), 116.1 + 0.6 * torch.rand(n_src + n_tgt, generator=g)], -1
    )
    pos = pos.double()
    x = torch.randn(1, steps, n_src, 1, generator=g, dtype=torch.float64)
    mask = torch.rand(1, steps, n_src, 1, generator=g) > torch.linspace(0.0, 0.8, steps).view(1, steps, 1, 1)
    mask[0, -1, :, 0] = False
    mask[0, -1, 3, 0] = True  # one station observed
    batch = GraphBatch(
        torch.where(mask, x, 0), mask, torch.zeros(1, steps, 6), torch.zeros(1, steps, 6), pos[:n_src], pos[n_src:]
    )
    sizes = DataSizes(1, 1, (0,), window=steps, horizon=steps, task="krige")
    with torch.no_grad():
        out = GPKriging(sizes, GPParams(lengthscale_km=ell, variance=var, noise=noise, mean=mean))(batch)
    assert out.tgt.dtype == torch.float64

    kernel = kernels.ConstantKernel(var, "fixed") * kernels.Matern(ell, "fixed", nu=1.5) + kernels.WhiteKernel(
        noise, "fixed"
    )
    xyz = _xyz_km(pos.numpy())
    src_xyz, tgt_xyz = xyz[:n_src], xyz[n_src:]
    counts = set()
    for t in range(steps):
        o = mask[0, t, :, 0].numpy()
        counts.add(int(o.sum()))
        y = x[0, t, o, 0].numpy()
        mu = y.mean() if mean == "observed" else 0.0
        reg = gp.GaussianProcessRegressor(kernel, alpha=JITTER, optimizer=None, normalize_y=False)
        reg.fit(src_xyz[o], y - mu)
        np.testing.assert_allclose(out.tgt[0, t, :, 0].numpy(), mu + reg.predict(tgt_xyz), rtol=0, atol=1e-6)
        hidden = ~o
        if hidden.any():
            np.testing.assert_allclose(
                out.src[0, t, hidden, 0].numpy(), mu + reg.predict(src_xyz[hidden]), rtol=0, atol=1e-6
            )
    assert len(counts) >= 4  # the steps really have different observation sets
