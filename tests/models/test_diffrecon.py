"""DiffRecon: shapes of both stages, what each stage's loss covers, what sampling returns and
ignores, the training schedule and its ablations, and tiny end-to-end runs with CRPS."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.run import evaluate_run, run_experiment
from stgraph.models import build_model
from stgraph.models.base import DataSizes, GraphBatch
from stgraph.models.baselines.upsample import bicubic_upsample
from stgraph.models.diffrecon.fine import idw_to_fine
from stgraph.nn.st_pointformer import STPointFormer
from stgraph.ops.neighbours import canonical_order
from stgraph.ops.quantiles import sample_quantiles
from stgraph.testing import synthetic_stations
from tests.models.contract import POS, make_batch
from tests.models.test_contract import TINY

HP = TINY["diffrecon"]
CSDI = {"backbone": "csdi", "channels": 8, "residual_layers": 2, "residual_heads": 2}  # CSDI's body, tiny


def build(task: str = "krige", **kw):
    torch.manual_seed(0)
    batch, sizes = make_batch(task)
    return build_model("diffrecon", sizes, {**HP, **kw}), batch, sizes


def structured(batch):
    """The batch with a smooth target channel (time and latitude), and (B, W, 6, 1) truth of all 6 stations."""
    b, w = batch.x.shape[:2]
    t = torch.arange(w, dtype=torch.float32)
    field = torch.sin(t[None, :, None] / 3 + torch.arange(b)[:, None, None]) + 5 * (POS[:, 0] - 39.9)[None, None, :]
    field = field[..., None]
    out = copy.copy(batch)
    out.x = torch.cat([field[:, :, :5], batch.x[..., 1:]], -1) * batch.x_mask
    return out, field


def all_terms(y: torch.Tensor, tgt: bool = True):
    every = torch.ones_like(y, dtype=torch.bool)
    terms = [("src", y[:, :, :5], every[:, :, :5], 1.0)]
    return terms + [("tgt", y[:, :, 5:], every[:, :, 5:], 1.0)] if tgt else terms


# --- shapes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", [{}, CSDI], ids=["gnn", "csdi"])
@pytest.mark.parametrize("task", ["krige", "impute", "reconstruct"])
def test_shapes_of_both_stages_and_of_the_samples(task, backbone):
    model, batch, sizes = build(task, **backbone)
    b, w, s, d = 4, sizes.window, HP["num_samples"], HP["d_model"]
    pred = model(batch)
    assert pred.src.shape == (b, w, 5, 1) and pred.tgt.shape == (b, w, 1, 1)
    assert pred.samples_src.shape == (s, b, w, 5, 1) and pred.samples_tgt.shape == (s, b, w, 1, 1)
    assert torch.isfinite(pred.samples_src).all() and torch.isfinite(pred.samples_tgt).all()
    # stage 1: ε̂ at every coarse cell; the non-target channel and its mask are node features
    ci = model.coarse_inputs(batch)
    assert ci.x.shape == (b, w, 5, 1) and ci.node_feats.shape == (b, w, 5, 2)
    guide = model.guide(ci.x, ci.mask, ci.pos)
    points = model.condition_coarse(ci, ci.x, ci.mask, guide)
    eps = model.coarse_eps(ci, torch.randn(b, w, 5, 1), torch.zeros(b, dtype=torch.long), ci.x, ci.mask, guide, points)
    assert eps.shape == (b, w, 5, 1)
    # stage 2: T-PatternNet features and the IDW guide carried to the fine node, ε̂ there
    cond = model.fine.condition(ci.x, ci.time_enc, ci.pos, batch.pos_tgt)
    assert cond.feats.shape == (b, w, 1, d) and cond.guide.shape == (b, w, 1, 1)
    assert model.fine(torch.randn(b, w, 1, 1), torch.zeros(b, dtype=torch.long), cond).shape == (b, w, 1, 1)


def test_pointformer_encoded_once_and_read_for_folded_samples_equals_the_forward():
    """encode once + read for S folded samples equals STPointFormer's forward on the tiled inputs
    (DiffRecon's sampling cache is exact, not an approximation)."""
    torch.manual_seed(0)
    kw = dict(value_channels=1, d_model=8, heads=2, num_self_layers=1, num_cross_layers=1, node_features=2,
              cell_features=3, max_steps=12)  # fmt: skip
    layer = STPointFormer(**kw)
    g = torch.Generator().manual_seed(1)
    x, mask = torch.randn(2, 12, 5, 1, generator=g), torch.rand(2, 12, 5, 1, generator=g) > 0.3
    te, nf, cf = torch.randn(2, 12, 6, generator=g), torch.randn(2, 12, 5, 2, generator=g), torch.randn(6, 12, 5, 3)
    tiled = [v.repeat(3, *([1] * (v.dim() - 1))) for v in (x, mask, te, nf)]
    want = layer(tiled[0], tiled[1], POS[:5], tiled[2], tiled[3], cf)
    torch.testing.assert_close(layer.read(layer.encode(x, mask, POS[:5], te, nf), cf, reps=3), want)
    assert not torch.allclose(want[:2], want[2:4])  # the samples' cell features matter: the check can fail


# --- what the losses cover ------------------------------------------------------------------------------


def _output_grads(model, batch, terms, module):
    """Gradient of the training loss with respect to ``module``'s output (ε̂), and its inputs."""
    seen = {}

    def hook(mod, args, out):
        out.retain_grad()
        seen["out"], seen["args"] = out, args

    handle = module.register_forward_hook(hook)
    try:
        model.training_loss(batch, terms).backward()
    finally:
        handle.remove()
    return seen["out"].grad, seen["args"]


def test_stage1_loss_covers_exactly_the_cells_to_infer():
    """impute: the ε loss has gradient exactly at the src terms' cells the input lacks; the noisy
    input is 0 at the conditioning (observed) cells, and the condition is 0 elsewhere."""
    model, batch, _ = build("impute")
    y = torch.randn(4, 12, 6, 1)
    grad, args = _output_grads(model, batch, all_terms(y, tgt=False), model.coarse)
    observed = batch.x_mask[..., :1]
    assert torch.equal(grad != 0, ~observed)
    x_t, _, cond, cond_mask = args[:4]
    assert torch.equal(cond_mask, observed) and (x_t[observed] == 0).all() and (x_t[~observed] != 0).all()
    assert (cond[~observed] == 0).all() and torch.equal(cond[observed], batch.x[..., :1][observed])
    # a src term on part of the missing cells: only those
    part = ~observed & (torch.rand(observed.shape, generator=torch.Generator().manual_seed(2)) < 0.5)
    model.zero_grad()
    grad, _ = _output_grads(model, batch, [("src", y[:, :, :5], part, 1.0)], model.coarse)
    assert part.any() and torch.equal(grad != 0, part)


def test_krige_hides_a_fraction_of_observed_cells_and_learns_them():
    """krige's src terms cover observed cells only (visible gaps are not scored): stage 1 hides
    ``self_mask`` of the observed cells per batch and its loss covers those; with self_mask 0 it has none."""
    model, batch, _ = build("krige", self_mask=0.5)
    y = torch.randn(4, 12, 6, 1)
    observed = batch.x_mask[..., :1]
    terms = [("src", y[:, :, :5], observed, 1.0), ("tgt", y[:, :, 5:], torch.ones(4, 12, 1, 1, dtype=bool), 1.0)]
    grad, args = _output_grads(model, batch, terms, model.coarse)
    hidden = observed & ~args[3]  # observed, but not given as a condition
    assert torch.equal(grad != 0, hidden)
    assert 0.35 < hidden.sum() / observed.sum() < 0.65
    model, batch, _ = build("krige", self_mask=0.0)
    grad, _ = _output_grads(model, batch, terms, model.coarse)
    assert (grad == 0).all()


def test_stage2_loss_covers_the_target_terms_cells():
    model, batch, _ = build("reconstruct")
    y = torch.randn(4, 12, 6, 1)
    part = torch.rand(4, 12, 1, 1, generator=torch.Generator().manual_seed(3)) < 0.5
    terms = [all_terms(y)[0], ("tgt", y[:, :, 5:], part, 1.0)]
    grad, _ = _output_grads(model, batch, terms, model.fine)
    assert torch.equal(grad != 0, part)


def test_values_outside_the_masks_never_change_the_loss():
    """Unobserved inputs and the truth outside the loss terms' masks poisoned with 1e9: the same loss, bit for bit."""
    model, batch, _ = build("reconstruct")
    y = torch.randn(4, 12, 6, 1)
    part = torch.rand(4, 12, 6, 1, generator=torch.Generator().manual_seed(4)) < 0.5
    terms = [("src", y[:, :, :5], part[:, :, :5], 1.0), ("tgt", y[:, :, 5:], part[:, :, 5:], 1.0)]
    ref = model.training_loss(batch, terms)
    model.train_steps.zero_()
    bad = copy.copy(batch)
    bad.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e9))
    yb = torch.where(part, y, torch.full_like(y, 1e9))
    poisoned = [("src", yb[:, :, :5], part[:, :, :5], 1.0), ("tgt", yb[:, :, 5:], part[:, :, 5:], 1.0)]
    assert torch.equal(model.training_loss(bad, poisoned), ref)


def test_stage2_needs_hidden_training_stations():
    model, batch, _ = build("krige")
    alone = copy.copy(batch)
    alone.pos_tgt = POS[:0]
    with pytest.raises(ValueError, match="node_masking: batch"):
        model.training_loss(alone, all_terms(torch.randn(4, 12, 6, 1), tgt=False))


# --- sampling ---------------------------------------------------------------------------------------------


def test_observed_cells_are_returned_unchanged_and_the_point_is_the_median():
    model, batch, _ = build("reconstruct", num_samples=3)
    pred = model(batch)
    observed = batch.x_mask[..., :1]
    assert torch.equal(pred.src[observed], batch.x[..., :1][observed])
    assert all(torch.equal(s[observed], batch.x[..., :1][observed]) for s in pred.samples_src)
    assert (pred.samples_src.std(0)[~observed] > 0).all()  # the missing cells are genuinely sampled
    for point, samples in ((pred.src, pred.samples_src), (pred.tgt, pred.samples_tgt)):
        assert torch.equal(point, samples.median(0).values)  # odd S: the middle sample
    even = build("reconstruct", num_samples=4)[0](batch)  # even S: the mean of the two middle ones
    np.testing.assert_allclose(even.tgt.numpy(), np.median(even.samples_tgt.numpy(), axis=0), rtol=1e-6, atol=1e-7)
    assert torch.equal(even.tgt, sample_quantiles(even.samples_tgt, (0.5,))[0])  # what evaluation calls q50


def test_unobserved_values_never_change_the_output():
    model, batch, _ = build("krige")
    ref = model(batch)
    bad = copy.copy(batch)
    bad.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e9))
    out = model(bad)
    for name in ("src", "tgt", "samples_src", "samples_tgt"):
        assert torch.equal(getattr(out, name), getattr(ref, name)), name


def test_sampling_is_deterministic_given_sample_seed_and_ignores_station_order():
    model, batch, _ = build("krige")
    a, b = model(batch), model(batch)
    assert torch.equal(a.samples_src, b.samples_src) and torch.equal(a.samples_tgt, b.samples_tgt)
    other = build("krige", sample_seed=1)[0](batch)
    assert not torch.equal(other.samples_tgt, a.samples_tgt)
    perm = torch.tensor([3, 0, 4, 1, 2])
    shuffled = copy.copy(batch)
    shuffled.x, shuffled.x_mask, shuffled.pos_src = batch.x[:, :, perm], batch.x_mask[:, :, perm], batch.pos_src[perm]
    out = model(shuffled)
    assert torch.equal(out.samples_src, a.samples_src[:, :, :, perm]) and torch.equal(out.samples_tgt, a.samples_tgt)


def test_idw_stage2_is_the_idw_of_each_stage1_sample():
    model, batch, _ = build("krige", stage2="idw")
    assert model.fine is None and not model.learns_interpolation
    pred = model(batch)
    want = idw_to_fine(pred.samples_src.flatten(0, 1), batch.pos_src, batch.pos_tgt, HP["fine_k"], 2.0)
    torch.testing.assert_close(pred.samples_tgt, want.unflatten(0, pred.samples_src.shape[:2]))


def test_forward_draws_stage2_through_sample_fine():
    """With every coarse cell observed stage 1 draws nothing, so the forward's fine samples are
    ``sample_fine``'s of the observed map under a freshly seeded generator (what the stage-2 probe
    calls with the true coarse map)."""
    model, batch, _ = build("krige")
    full = copy.copy(batch)
    full.x_mask = torch.ones_like(batch.x_mask)
    pred = model(full)
    o_src, o_tgt = canonical_order(full.pos_src), canonical_order(full.pos_tgt)
    canon = copy.copy(full)
    canon.x, canon.x_mask = full.x[:, :, o_src], full.x_mask[:, :, o_src]
    canon.pos_src, canon.pos_tgt = full.pos_src[o_src], full.pos_tgt[o_tgt]
    ci = model.coarse_inputs(canon)
    s = HP["num_samples"]
    g = torch.Generator().manual_seed(model.params.sample_seed)
    fine = model.sample_fine(ci.x.expand(s, *ci.x.shape), ci.time_enc, ci.pos, canon.pos_tgt, None, g)
    assert fine.shape == pred.samples_tgt.shape
    torch.testing.assert_close(pred.samples_tgt, fine[:, :, :, torch.argsort(o_tgt)])
    assert not torch.equal(fine[0], fine[1])  # one draw per completion, not one shared


@pytest.mark.parametrize("prior_std", [1.0, 0.4])
def test_prior_eps_is_the_best_noise_estimate_under_its_gaussian_prior(prior_std):
    """Monte Carlo: with x0 ~ N(A, σ²), the skip's ε has the least squared error of its scalings and
    reaches the posterior variance of ε given x_t, 1 - (1 - ᾱ) / (ᾱ σ² + 1 - ᾱ)."""
    model = build("krige", prior_std=prior_std)[0]
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for step in (2, 4):
        ab = float(model.schedule.alpha_bars[step])
        centre = torch.randn(n, 1, generator=g)
        x0 = centre + prior_std * torch.randn(n, 1, generator=g)
        eps = torch.randn(n, 1, generator=g)
        t = torch.full((n,), step)
        guess = model.prior_eps(model.schedule.q_sample(x0, t, eps), t, centre)
        mse = {a: float(((a * guess - eps) ** 2).mean()) for a in (0.9, 1.0, 1.1)}
        assert mse[1.0] < min(mse[0.9], mse[1.1])
        assert mse[1.0] == pytest.approx(1 - (1 - ab) / (ab * prior_std**2 + 1 - ab), rel=0.02)


@pytest.mark.parametrize("backbone", [{}, CSDI], ids=["gnn", "csdi"])
def test_untrained_model_centres_its_estimate_on_the_anchor(backbone):
    """Zero output layers: stage 1's x̂0 is the prior's posterior mean, the guide at the last step."""
    model, batch, _ = build("impute", **backbone)
    ci = model.coarse_inputs(batch)
    guide = model.guide(ci.x, ci.mask, ci.pos)
    points = model.condition_coarse(ci, ci.x, ci.mask, guide)
    x_t = torch.randn_like(ci.x)
    for step in (0, 5):
        t = torch.full((4,), step)
        x0 = model.schedule.predict_x0(x_t, t, model.coarse_eps(ci, x_t, t, ci.x, ci.mask, guide, points))
        ab = float(model.schedule.alpha_bars[step])
        torch.testing.assert_close(x0, guide + ab**0.5 * (x_t - ab**0.5 * guide), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_edm_scaling_bounds_what_the_network_moves_the_estimate_by(stage):
    """A network that outputs a constant c moves x̂0 away from the skip's posterior mean by
    c · sqrt((1 - ᾱ) / ᾱ) without ``edm_scaling`` (≈ 170 c at CSDI's last step: the trained stage 2 of
    the ERA5 grid run put x̂0 25 K off there) and by c · c_out ≤ c · prior_std with it."""
    for edm in (False, True):
        model, batch, sizes = build("krige", edm_scaling=edm, prior_std=0.5)
        net = model.coarse if stage == "coarse" else model.fine
        torch.nn.init.constant_(net.decoder.out.bias, 0.1)  # ε̂ = prior ε + s(t) · 0.1
        ci = model.coarse_inputs(batch)
        guide = model.guide(ci.x, ci.mask, ci.pos)
        t = torch.full((4,), model.params.diffusion_steps - 1)
        ab = float(model.schedule.alpha_bars[-1])
        if stage == "coarse":
            points = model.condition_coarse(ci, ci.x, ci.mask, guide)
            x_t = torch.randn_like(ci.x)
            eps = model.coarse_eps(ci, x_t, t, ci.x, ci.mask, guide, points)
            centre = guide
        else:
            cond = model.fine.condition(ci.x, ci.time_enc, ci.pos, batch.pos_tgt)
            x_t = torch.randn_like(cond.guide)
            eps = model.fine_eps(x_t, t, cond)
            centre = cond.guide
        moved = model.schedule.predict_x0(x_t, t, eps) - model.schedule.predict_x0(
            x_t, t, model.prior_eps(x_t, t, centre)
        )
        if edm:
            c_out = 0.5 * (1 - ab) ** 0.5 / (ab * 0.25 + 1 - ab) ** 0.5
            torch.testing.assert_close(moved, torch.full_like(moved, -0.1 * c_out), rtol=1e-3, atol=1e-4)
            assert moved.abs().max() <= 0.1 * 0.5
        else:
            torch.testing.assert_close(
                moved, torch.full_like(moved, -0.1 * ((1 - ab) / ab) ** 0.5), rtol=1e-3, atol=1e-3
            )


def test_edm_loss_is_csdis_at_low_noise_and_uniform_in_network_units():
    """eps_loss: the plain masked ε-MSE without ``edm_scaling``; with it, (ε̂ - ε) / s(t), s(0) ≈ 1,
    so the network's output error counts alike at every noise level."""
    plain = build("krige")[0]
    edm = build("krige", edm_scaling=True)[0]
    eps, mask = torch.randn(4, 3, 2, 1), torch.ones(4, 3, 2, 1, dtype=torch.bool)
    err = torch.full_like(eps, 0.1)
    last = torch.full((4,), plain.params.diffusion_steps - 1)
    first = torch.zeros(4, dtype=torch.long)
    assert float(plain.eps_loss(eps + err, eps, mask, last)) == pytest.approx(0.01, rel=1e-4)
    assert float(edm.eps_loss(eps + err, eps, mask, first)) == pytest.approx(0.01, rel=1e-2)
    s_last = edm.net_scale(last, eps)
    assert float(edm.eps_loss(eps + s_last * err, eps, mask, last)) == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError, match="edm_scaling"):
        build("krige", edm_scaling=True, skip=False)


# --- training schedule ------------------------------------------------------------------------------------


def test_pretraining_then_joint_training_by_the_step_counter():
    model = build("krige", pretrain_fraction=0.4)[0]
    assert model.phase() == "pretrain"  # no budget told yet
    model.set_training_budget(10)
    phases = []
    for step in range(10):
        model.train_steps.fill_(step)
        phases.append(model.phase())
    assert phases == ["pretrain"] * 4 + ["joint"] * 6
    assert build("krige", pretrain=False)[0].phase() == "joint"
    no_joint = build("krige", joint=False)[0]
    no_joint.set_training_budget(10)
    no_joint.train_steps.fill_(9)
    assert no_joint.phase() == "pretrain"
    with pytest.raises(ValueError, match="cannot both be False"):
        build("krige", pretrain=False, joint=False)


@pytest.mark.parametrize("phase", ["pretrain", "joint"])
def test_stage2_loss_reaches_stage1_only_in_joint_training(phase):
    """Only stage 2's loss (src term empty): in joint training it flows into stage 1 through x̂0;
    in pre-training stage 1 gets no gradient."""
    model, batch, _ = build("reconstruct", pretrain=phase == "pretrain", joint=phase == "joint")
    torch.nn.init.normal_(model.fine.decoder.out.weight)  # zero at initialisation: nothing would flow back
    y = torch.randn(4, 12, 6, 1)
    none = torch.zeros(4, 12, 5, 1, dtype=torch.bool)
    model.training_loss(batch, [("src", y[:, :, :5], none, 1.0), all_terms(y)[1]]).backward()
    reached = any(p.grad is not None and (p.grad != 0).any() for p in model.coarse.parameters())
    assert reached == (phase == "joint")
    assert any(p.grad is not None and (p.grad != 0).any() for p in model.fine.parameters())


def test_training_draws_are_a_function_of_the_step_counter():
    """Resume is exact: a model loaded from another's state after k steps draws what it would have."""
    model, batch, _ = build("reconstruct")
    terms = all_terms(torch.randn(4, 12, 6, 1))
    with torch.no_grad():
        first = model.training_loss(batch, terms)
        state = copy.deepcopy(model.state_dict())
        second = model.training_loss(batch, terms)
    other = build("reconstruct")[0]
    torch.manual_seed(123)  # a different global RNG: it must not matter
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other.training_loss(batch, terms), second) and not torch.equal(first, second)
    assert int(other.train_steps) == 2


def test_validation_at_evenly_spaced_noise_levels_is_the_mean_of_the_losses_there():
    """val_noise_levels = n: every validation window scored at n fixed diffusion steps spread over
    the schedule (CSDI's calc_loss_valid scores every step), the mean of the losses at each one;
    the default keeps one drawn step per window. Neither moves the step counter."""
    model, batch, _ = build("reconstruct", val_noise_levels=3)
    t = model.params.diffusion_steps
    assert t >= 5 and model.validation_steps() == [0, round((t - 1) / 2), t - 1]
    assert build("reconstruct", val_noise_levels=80)[0].validation_steps() == list(range(t))
    assert build("reconstruct")[0].validation_steps() == [None]
    terms = all_terms(torch.randn(4, 12, 6, 1))
    model.eval()
    with torch.no_grad():
        val = model.validation_loss(batch, terms, draw=1)
        assert torch.equal(model.validation_loss(batch, terms, draw=1), val) and int(model.train_steps) == 0
        per_level = []
        for k, step in enumerate(model.validation_steps()):
            model._validation_draw, model._validation_step = 1 * 3 + k, step
            per_level.append(model.training_loss(batch, terms))
        model._validation_draw = model._validation_step = None
    torch.testing.assert_close(val, torch.stack(per_level).mean())
    assert per_level[0] > 1.5 * per_level[-1]  # the loss differs between noise levels: one level is a poor score
    with pytest.raises(ValueError, match="val_noise_levels"):
        build("reconstruct", val_noise_levels=-1)


@pytest.mark.parametrize(
    "task, backbone, lr, steps, ratio",
    [("impute", {}, 1e-2, 200, 0.7), ("reconstruct", {}, 1e-2, 200, 0.7), ("impute", CSDI, 1e-3, 300, 0.8)],
    ids=["impute", "reconstruct", "csdi"],
)
def test_training_lowers_the_loss_at_fixed_noise(task, backbone, lr, steps, ratio):
    """Adam steps on a batch with a smooth truth lower the loss averaged over 8 fixed draws, scored
    without dropout (the untrained model's loss is already its prior's around the guide). CSDI's
    gated residual body wants a smaller learning rate (as in CSDI, 1e-3) and more steps."""
    model, batch, _ = build(task, **backbone)
    batch, field = structured(batch)
    terms = all_terms(field)

    def fixed_loss() -> float:
        saved = model.train_steps.clone()
        model.eval()
        with torch.no_grad():
            losses = []
            for k in range(8):
                model.train_steps.fill_(10**6 + k)
                losses.append(model.training_loss(batch, terms).item())
        model.train_steps.copy_(saved)
        model.train()
        return float(np.mean(losses))

    before = fixed_loss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model.training_loss(batch, terms)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < ratio * before, (before, after)


ABLATIONS = [
    {"pretrain": False},
    {"joint": False},
    {"pointformer": False},
    {"stage2": "idw"},
    {"tpatternnet": False},
    {"fine_position": False, "fine_mixing": False},
    {"carry": "attention"},
    {"guide": "idw"},
    {"guide": "none"},
    {"sampler": "ddpm"},
    {"sampler": "ddim", "eta": 1.0, "schedule": "linear"},
    {"skip": False},
    {"prior_std": 0.3},
    CSDI,
    {**CSDI, "pointformer": False},
    {**CSDI, "pristi": True},
]


@pytest.mark.parametrize("flags", ABLATIONS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_ablations_build_train_a_step_and_sample(flags):
    model, batch, _ = build("reconstruct", **flags)
    model.set_training_budget(2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):  # a pre-training and a joint step (by the default schedule)
        loss = model.training_loss(batch, all_terms(torch.randn(4, 12, 6, 1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    pred = model(batch)
    assert torch.isfinite(pred.samples_src).all() and torch.isfinite(pred.samples_tgt).all()
    if flags.get("pointformer") is False:
        assert model.coarse.inter is None


def test_bad_hyperparameters_are_named():
    for kw, match in (
        ({"stage2": "gp"}, "stage2"),
        ({"sampling_steps": 99}, "sampling_steps"),
        ({"carry": "mean"}, "carry"),
        ({"d_model": 10, "heads": 4}, "divisible"),
        ({"self_mask": 1.0}, "self_mask"),
        ({"backbone": "wavenet"}, "backbone"),
        ({**CSDI, "channels": 9}, "residual_heads"),
        ({"pristi": True}, "pristi"),
    ):
        with pytest.raises(ValueError, match=match):
            build("krige", **kw)


# --- end to end -------------------------------------------------------------------------------------------


def _cfg(task: str) -> dict:
    return {
        "name": f"diffrecon-{task}",
        "data": {"target_channels": ["x0"], "task": task, "window": 12, "eval_steps": [1, 12]},
        "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
        "model": {"name": "diffrecon", "hparams": HP},
        "train": {"epochs": 2, "batch_size": 8, "max_train_windows": 16, "max_eval_windows": 16},
    }


@pytest.mark.parametrize("task", ["krige", "impute", "reconstruct"])
def test_runs_end_to_end_with_crps_and_coverage(tmp_path, task):
    data = synthetic_stations(num_nodes=10, num_steps=24 * 8, num_channels=2, seed=3)
    cfg = _cfg(task)
    if task == "impute":
        data = replace(data, eval_mask=data.mask & (np.random.default_rng(0).random(data.mask.shape) < 0.1))
        cfg["split"]["time_gap"] = 0
    if task == "reconstruct":
        cfg["split"].update(pattern="random", pattern_ratio=0.4)
    run, metrics = run_experiment(config_from_dict(cfg), tmp_path, data=data, progress=False)
    written = run.read_json("metrics.json")["test"]["hidden"]["overall"]
    assert written["crps"] == metrics["test"]["hidden"]["overall"]["crps"] and "coverage90" in written
    if task == "reconstruct":
        removed = metrics["test"]["removed"]["overall"]
        assert removed["count"] > 0 and np.isfinite(removed["mae"])
        # the removed cells are scored probabilistically too (CRPS per cell, 0 where not scored)
        saved = run.load_predictions()
        assert saved["quantiles_removed"].shape == (3, *saved["pred_removed"].shape)
        assert np.isfinite(removed["crps"]) and 0.0 <= removed["coverage90"] <= 1.0
        m = saved["mask_removed"]
        assert np.all(saved["crps_removed"][~m] == 0) and np.all(saved["crps_removed"][m] > 0)
    hidden = metrics["test"]["hidden"]["overall"]
    assert hidden["count"] > 0 and np.isfinite(hidden["mae"]) and np.isfinite(hidden["crps"])
    assert 0.0 <= hidden["coverage90"] <= 1.0 and metrics["training"]["steps"] == 4
    arrays = run.load_predictions()
    assert arrays["quantiles"].shape == (3, *arrays["pred"].shape)
    again = evaluate_run(run.path, data=data)  # re-evaluation samples the same numbers
    assert again["test"]["hidden"]["overall"] == hidden


def _poisoned(data, cells: np.ndarray):
    """The data with 1e9 at ``cells`` (T, N, C) bool, every one of them marked observed."""
    values, mask = data.values.copy(), data.mask.copy()
    values[cells], mask[cells] = 1e9, True
    return replace(data, values=values, mask=mask)


@pytest.mark.parametrize(
    "task, backbone", [("impute", {}), ("reconstruct", {}), ("impute", CSDI)], ids=["impute", "reconstruct", "csdi"]
)
def test_poisoned_hidden_cells_leave_weights_and_predictions_bit_identical(tmp_path, task, backbone):
    """Poisoned with 1e9 — impute: the test period's evaluation cells; reconstruct: the pattern's
    cells outside the val period and the test stations — the trained weights and every prediction
    and sample quantile stay bit-identical."""
    data = synthetic_stations(num_nodes=10, num_steps=24 * 8, num_channels=2, seed=3)
    cfg = _cfg(task)
    cfg["model"]["hparams"] = {**HP, **backbone}
    if task == "impute":
        held = data.mask & (np.random.default_rng(0).random(data.mask.shape) < 0.1)
        data = replace(data, eval_mask=held)
        cfg["split"]["time_gap"] = 0
        test = prepare_experiment(config_from_dict(cfg), data).periods.period("test")  # (T,) bool
        dirty = replace(_poisoned(data, held & test[:, None, None]), eval_mask=held)  # val cells choose the epoch
    else:
        cfg["split"].update(pattern="random", pattern_ratio=0.4)
        exp = prepare_experiment(config_from_dict(cfg), data)
        cells = np.zeros(data.mask.shape[:2], dtype=bool)
        cells[:, exp.pattern.nodes] = exp.pattern.removed
        cells[exp.periods.period("val")] = False  # the val period's removed cells choose the epoch
        cells[:, exp.split.indices(data, "test")] = True
        dirty = _poisoned(data, np.broadcast_to(cells[..., None], data.mask.shape))
    c = config_from_dict(cfg)
    run_a, ma = run_experiment(c, tmp_path, name="clean", data=data, progress=False)
    run_b, mb = run_experiment(c, tmp_path, name="poisoned", data=dirty, progress=False)
    wa, wb = (torch.load(r.best_path, weights_only=False)["model"] for r in (run_a, run_b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    pa, pb = run_a.load_predictions(), run_b.load_predictions()
    keys = ["pred", "pred_visible", "quantiles"] + (["pred_removed"] if task == "reconstruct" else [])
    for key in keys:
        assert np.array_equal(pa[key], pb[key]), key
    assert ma["test"]["hidden"]["overall"]["mae"] < 1e4 < mb["test"]["hidden"]["overall"]["mae"]


def test_a_fine_node_knows_where_it_is_whatever_the_other_fine_nodes():
    """Stage 2's own features of a fine node (position code in the visible stations' frame) are the
    same whether it is inferred alone or with others; without mixing, so is its ε̂. Two fine nodes
    that the coarse series cannot tell apart get different ε̂ only with their positions."""
    from stgraph.models.diffrecon.fine import FineDenoiser

    torch.manual_seed(0)
    fine = FineDenoiser(1, 8, 1, 2, 2, 50, 8, fine_k=2, mixing=False)
    for p in fine.decoder.parameters():  # the zero-initialised read-out would hide every input
        torch.nn.init.normal_(p)
    pos_c = torch.tensor([[39.9, 116.3], [40.0, 116.4], [39.8, 116.5]])
    pos_f = torch.tensor([[39.95, 116.35], [39.85, 116.45]])
    completed, time_enc = torch.randn(2, 6, 3, 1), torch.randn(2, 6, 6)
    x_t, t = torch.randn(2, 6, 2, 1), torch.tensor([3, 7])
    both = fine(x_t, t, fine.condition(completed, time_enc, pos_c, pos_f))
    alone = fine(x_t[:, :, :1], t, fine.condition(completed, time_enc, pos_c, pos_f[:1]))
    torch.testing.assert_close(alone, both[:, :, :1])
    blind = FineDenoiser(1, 8, 1, 2, 2, 50, 8, fine_k=3, mixing=False, position=False)
    seeing = FineDenoiser(1, 8, 1, 2, 2, 50, 8, fine_k=3, mixing=False)
    twins = torch.tensor([[39.95, 116.35], [39.86, 116.46]])
    flat = completed[:, :, :1].expand(-1, -1, 3, -1)  # every coarse node alike: any carry gives the same
    same_x = x_t[:, :, :1].expand(-1, -1, 2, -1)
    for model, differ in ((blind, False), (seeing, True)):
        for p in model.decoder.parameters():
            torch.nn.init.normal_(p)
        eps = model(same_x, t, model.condition(flat, time_enc, pos_c, twins))
        assert (not torch.allclose(eps[:, :, 0], eps[:, :, 1])) == differ


def _grid_batch(b: int = 2, w: int = 8):
    """A 4 x 5 coarse grid with 30 % of its cells unobserved and the 16 x 20 fine grid nested in it."""
    lat, lon = np.array([50.0, 51.0, 52.0, 53.0]), np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    offsets = np.array([-0.375, -0.125, 0.125, 0.375])

    def cells(la, lo):
        la, lo = np.meshgrid(la, lo, indexing="ij")
        return torch.tensor(np.stack([la.ravel(), lo.ravel()], 1), dtype=torch.float32)

    g = torch.Generator().manual_seed(0)
    pos = cells(lat, lon)
    x = torch.randn(b, w, len(pos), 1, generator=g)
    m = torch.rand(b, w, len(pos), 1, generator=g) > 0.3
    fine = cells((lat[:, None] + offsets).ravel(), (lon[:, None] + offsets).ravel())
    batch = GraphBatch(x=x * m, x_mask=m, x_time=torch.zeros(b, w, 6), y_time=torch.zeros(b, w, 6),
                       pos_src=pos, pos_tgt=fine)  # fmt: skip
    return batch, DataSizes(1, 1, (0,), w, w, task="reconstruct")


def test_bicubic_fine_guide_is_the_bicubic_baseline_of_each_completion():
    """``fine_guide="bicubic"``: the no-fine-diffusion ablation returns the bicubic upsampling of each
    stage-1 sample (the ``bicubic`` baseline's, given that sample as a complete map), and the
    diffusion stage's guide channel is the same upsampling of its condition."""
    batch, sizes = _grid_batch()
    torch.manual_seed(0)
    ablation = build_model("diffrecon", sizes, {**HP, "fine_guide": "bicubic", "stage2": "idw"})
    pred = ablation(batch)
    s = pred.samples_src.size(0)
    for i in range(s):
        done = copy.copy(batch)
        done.x, done.x_mask = pred.samples_src[i], torch.ones_like(batch.x_mask)
        torch.testing.assert_close(pred.samples_tgt[i], build_model("bicubic", sizes)(done).tgt)
    idw = build_model("diffrecon", sizes, {**HP, "stage2": "idw"})(batch)  # the default guide differs
    assert not torch.allclose(idw.samples_tgt, pred.samples_tgt)

    torch.manual_seed(0)
    model = build_model("diffrecon", sizes, {**HP, "fine_guide": "bicubic"})
    completed = pred.samples_src[0]
    cond = model.fine.condition(completed, torch.zeros(2, 8, 6), batch.pos_src, batch.pos_tgt)
    torch.testing.assert_close(cond.guide, bicubic_upsample(completed, batch.pos_src, batch.pos_tgt))


def test_bicubic_fine_guide_refuses_coarse_nodes_that_are_not_a_grid():
    model, batch, _ = build("krige", fine_guide="bicubic")
    with pytest.raises(ValueError, match="full regular grid"):
        model(batch)
    with pytest.raises(ValueError, match="fine_guide must be one of"):
        build("krige", fine_guide="cubic")
