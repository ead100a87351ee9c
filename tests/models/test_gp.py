"""GP kriging: posterior mean and marginal likelihood against dense per-step references,
interpolation at zero noise, hyperparameter recovery, the engine's fit hook (deterministic, and
never moved by test stations' values), and scikit-learn as an outside oracle."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.evaluate import predict
from stgraph.engine.fitting import fit_model
from stgraph.engine.run import build_experiment, evaluate_run, run_experiment
from stgraph.geo import EARTH_RADIUS_KM, haversine_km
from stgraph.models import DataSizes, GraphBatch
from stgraph.models.base import FitContext
from stgraph.models.baselines.gp import JITTER, GPKriging, GPParams
from stgraph.testing import synthetic_stations

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
    with model.fitting() as theta:
        opt = torch.optim.Adam(theta, lr=0.1)
        for _ in range(80):
            loss = -model.log_marginal_likelihood(batch).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert not model.log_lengthscale.requires_grad  # frozen again
    assert 15.0 / 1.5 < model.lengthscale_km < 15.0 * 1.5
    assert 1.0 / 1.5 < model.variance < 1.0 * 1.5


def _cv_context(full: GraphBatch, model: GPKriging, n_train: int = 24) -> FitContext:
    """Training batches hide 5 of the first ``n_train`` stations (a new set per batch, the same
    sequence every pass); validation predicts the remaining stations from the first ``n_train``."""

    def subset(keep, hide):
        return GraphBatch(
            full.x[:, :, keep],
            full.x_mask[:, :, keep],
            full.x_time,
            full.y_time,
            full.pos_src[keep],
            full.pos_src[hide],
        )

    def train_batches():
        g = torch.Generator().manual_seed(2)
        for _ in range(10):
            perm = torch.randperm(n_train, generator=g)
            hide, keep = perm[:5], perm[5:]
            yield subset(keep, hide), (("tgt", full.x[:, :, hide], full.x_mask[:, :, hide], 1.0),)

    val = subset(torch.arange(n_train), torch.arange(n_train, full.x.size(2)))

    @torch.no_grad()
    def validate():
        return float((model(val).tgt - full.x[:, :, n_train:]).abs().mean())

    return FitContext(train_batches=train_batches, validate=validate)


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_fit_hook_recovers_the_lengthscale_by_cross_validation(loss):
    """The engine's objective: hide stations, predict them from the others (CV fitting)."""
    full, sizes = _gp_samples(seed=1)
    model = GPKriging(sizes, GPParams(lengthscale_km=60.0, mean="zero", fit_loss=loss, fit_lr=0.1, fit_passes=8))
    ctx = _cv_context(full, model)
    record = model.fit(ctx)
    assert 15.0 / 1.5 < model.lengthscale_km < 15.0 * 1.5
    assert record["lengthscale_km"] == model.lengthscale_km and record["noise"] == model.noise
    assert record["steps"] == 10 * record["passes"] and record["best_pass"] >= 1
    assert record["val_mae"] == ctx.validate() < record["initial_val_mae"]  # the kept parameters are the best
    assert loss in record["objective"] and not any(t.requires_grad for t in model.buffers())
    again = GPKriging(sizes, model.params)
    assert again.fit(_cv_context(full, again)) == record  # deterministic


def test_fit_with_no_passes_keeps_the_initial_kernel():
    full, sizes = _gp_samples(seed=1)
    model = GPKriging(sizes, GPParams(lengthscale_km=60.0, fit_passes=0))
    record = model.fit(_cv_context(full, model))
    assert record["steps"] == 0 and record["lengthscale_km"] == pytest.approx(60.0)


def test_reset_and_bad_options():
    sizes = DataSizes(1, 1, (0,), 2, 2, task="krige")
    model = GPKriging(sizes, GPParams(lengthscale_km=12.0, variance=2.0, noise=0.3))
    assert not list(model.parameters()) and not model.trainable and model.fits  # fitted by the hook only
    with torch.no_grad():
        for p in model.buffers():
            p.add_(1.0)
    assert model.lengthscale_km != pytest.approx(12.0)
    model.reset_parameters()
    assert model.lengthscale_km == pytest.approx(12.0) and model.variance == pytest.approx(2.0)
    assert model.noise == pytest.approx(0.3)
    with pytest.raises(ValueError, match="kernel must be one of"):
        GPKriging(sizes, GPParams(kernel="matern52"))
    with pytest.raises(ValueError, match="mean must be one of"):
        GPKriging(sizes, GPParams(mean="median"))
    with pytest.raises(ValueError, match="lengthscale_km must be > 0"):
        GPKriging(sizes, GPParams(lengthscale_km=0.0))
    with pytest.raises(ValueError, match="fit_loss must be one of"):
        GPKriging(sizes, GPParams(fit_loss="huber"))
    with pytest.raises(ValueError, match="fit_passes must be an integer >= 0"):
        GPKriging(sizes, GPParams(fit_passes=-1))
    with pytest.raises(ValueError, match="fit_patience must be an integer >= 1"):
        GPKriging(sizes, GPParams(fit_patience=0))
    with pytest.raises(ValueError, match="fit_lr must be > 0"):
        GPKriging(sizes, GPParams(fit_lr=0.0))


# --- the engine's fit hook ------------------------------------------------------------------


def _engine_cfg(task="krige"):
    return config_from_dict(
        {
            "data": {"target_channels": ["x0"], "task": task, "window": 12, "eval_steps": [1]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": "gp", "hparams": {"fit_passes": 4, "fit_lr": 0.1}},
            "train": {"batch_size": 8, "max_train_windows": 32, "max_eval_windows": 32},
        }
    )


def _fit(data, cfg=None):
    exp, model = build_experiment(cfg or _engine_cfg(), data)
    return exp, model, fit_model(model, exp)


def test_fit_never_sees_test_stations():
    """Test stations poisoned with 1e9 (and marked observed) leave the fitted kernel bit-identical;
    changing a training station moves it, so the check can fail."""
    data = synthetic_stations(num_nodes=12, num_steps=24 * 10, num_channels=1, seed=3)
    exp, model, record = _fit(data)
    assert record["steps"] > 0 and record["best_pass"] >= 1 and record["lengthscale_km"] != pytest.approx(20.0)
    test = exp.split.indices(data, "test")
    values, mask = data.values.copy(), data.mask.copy()
    values[:, test], mask[:, test] = 1e9, True
    _, dirty_model, dirty = _fit(replace(data, values=values, mask=mask))
    assert dirty == record
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), dirty_model.buffers(), strict=True))
    values = data.values.copy()
    values[:, exp.train.stations[0]] *= 1.5
    _, _, moved = _fit(replace(data, values=values))
    assert moved["lengthscale_km"] != record["lengthscale_km"]


def test_fit_hook_runs_in_the_engine_and_refits_deterministically(tmp_path):
    data = synthetic_stations(num_nodes=12, num_steps=24 * 10, num_channels=1, seed=3)
    run, metrics = run_experiment(_engine_cfg(), tmp_path, data=data, progress=False)
    fit = metrics["training"]["fit"]
    assert {"lengthscale_km", "variance", "noise", "objective", "steps", "val_mae"} <= set(fit)
    assert run.read_json("fit.json") == fit and not run.best_path.exists()  # fitted, never gradient-trained
    again = evaluate_run(run.path, data=data)  # fits again: the same kernel, the same scores
    assert again["test"]["hidden"]["overall"] == metrics["test"]["hidden"]["overall"]
    assert _fit(data)[2] == fit


def test_fit_hook_for_impute():
    """``impute``: the hidden cells of visible stations are the objective (src terms)."""
    data = synthetic_stations(num_nodes=8, num_steps=24 * 10, num_channels=1, seed=5)
    data = replace(data, eval_mask=data.mask & (np.random.default_rng(0).random(data.mask.shape) < 0.1))
    exp, model, record = _fit(data, _engine_cfg("impute"))
    assert record["steps"] > 0 and np.isfinite(record["val_mae"]) and record["val_mae"] <= record["initial_val_mae"]


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


# --- local GP (neighbours: k) ---------------------------------------------------------------


def _local_batch(n_src=14, n_tgt=5, seed=0):
    """B=2, W=4, one channel, random positions and masks (some steps with few stations observed)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack(
        [39.7 + 0.6 * torch.rand(n_src + n_tgt, generator=g), 116.0 + 0.8 * torch.rand(n_src + n_tgt, generator=g)], -1
    )
    x = torch.randn(2, 4, n_src, 1, generator=g)
    mask = torch.rand(2, 4, n_src, 1, generator=g) > 0.3
    mask[0, 3] = False  # a step with nothing observed
    batch = GraphBatch(
        torch.where(mask, x, 0), mask, torch.zeros(2, 4, 6), torch.zeros(2, 4, 6), pos[:n_src], pos[n_src:]
    )
    return batch, DataSizes(1, 1, (0,), window=4, horizon=4, task="krige")


@pytest.mark.parametrize("mean", ["observed", "zero"])
def test_local_gp_over_every_visible_station_is_the_global_gp(mean):
    batch, sizes = _local_batch()
    whole = GPKriging(sizes, GPParams(mean=mean, lengthscale_km=25.0))
    local = GPKriging(sizes, GPParams(mean=mean, lengthscale_km=25.0, neighbours=100))  # k >= N_src: all of them
    whole.predict_std = local.predict_std = True
    a, b = whole(batch), local(batch)
    torch.testing.assert_close(b.tgt, a.tgt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.src, a.src, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.std_tgt, a.std_tgt, rtol=1e-5, atol=1e-5)


def test_local_gp_predicts_each_station_from_its_k_nearest_only():
    """A target's estimate is the global GP's on its k nearest visible stations; moving a far
    station's value changes nothing, moving one of the k nearest does."""
    batch, sizes = _local_batch()
    k = 4
    model = GPKriging(sizes, GPParams(lengthscale_km=25.0, neighbours=k))
    pred = model(batch)
    d = torch.from_numpy(_chord_np(batch.pos_tgt.double().numpy(), batch.pos_src.double().numpy()))
    for t in range(batch.pos_tgt.size(0)):
        near = torch.argsort(d[t])[:k]
        sub = replace(batch, x=batch.x[:, :, near], x_mask=batch.x_mask[:, :, near], pos_src=batch.pos_src[near],
                      pos_tgt=batch.pos_tgt[t : t + 1])  # fmt: skip
        ref = GPKriging(sizes, GPParams(lengthscale_km=25.0))(sub)
        torch.testing.assert_close(pred.tgt[:, :, t : t + 1], ref.tgt, rtol=1e-5, atol=1e-5)
    far = torch.argsort(d[0])[-1]
    moved = batch.x.clone()
    moved[:, :, far] += 5.0
    assert torch.equal(model(replace(batch, x=moved)).tgt[:, :, 0], pred.tgt[:, :, 0])  # the farthest: not among the k
    moved = batch.x.clone()
    moved[:, :, torch.argsort(d[0])[0]] += 5.0
    assert not torch.allclose(model(replace(batch, x=moved)).tgt[:, :, 0], pred.tgt[:, :, 0])


def test_local_gp_fits_and_its_chunked_evaluation_equals_the_whole_network():
    data = synthetic_stations(num_nodes=24, num_steps=24 * 6, num_channels=1, seed=2)

    def cfg(**train):
        return config_from_dict({
            "data": {"target_channels": ["x0"], "task": "krige", "window": 8, "eval_stride": 8, "eval_steps": []},
            "split": {"method": "random", "test": 6, "val": 3, "seed": 0},
            "model": {"name": "gp", "hparams": {"neighbours": 5, "fit_passes": 2, "fit_lr": 0.1}},
            "train": {"batch_size": 4, "max_train_windows": 8, "max_eval_windows": 6, **train},
        })  # fmt: skip

    exp, model = build_experiment(cfg(), data)
    record = fit_model(model, exp)
    assert record["steps"] > 0 and np.isfinite(record["val_mae"])
    whole = predict(model, exp, "test")
    exp_c, _ = build_experiment(cfg(eval_target_chunk=2, eval_neighbours=5), data)
    chunked = predict(model, exp_c, "test")
    np.testing.assert_allclose(chunked["pred"], whole["pred"], rtol=1e-6, atol=1e-6)


def test_local_gp_refuses_a_bad_neighbour_count():
    _, sizes = _local_batch()
    with pytest.raises(ValueError, match="neighbours"):
        GPKriging(sizes, GPParams(neighbours=0))
