"""AMLSG's three protocol options: each gives the model what it declares and nothing more.

Hybrid anchor (``data.colocated_channels``), backcasting (``split.backcast``, ``split.periods``) and
downscaling (``data.aggregate``). Every leak check poisons what must not be seen with 1e9 (and
pretends it observed) and requires the batches to stay bit-identical; each has a twin check that
the declared information does show up, so the tests can fail.
"""

import dataclasses
from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.data.scalers import MaskedStandardScaler
from stgraph.engine.config import ConfigError, config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.fitting import fit_context
from stgraph.testing import synthetic_stations

ANCHOR, TARGET, OTHER = 1, 0, 2  # channel indices of x1 (anchor), x0 (target), x2 (neither)


def cfg(task="krige", data=None, split=None, train=None):
    return config_from_dict(
        {
            "data": {
                "target_channels": ["x0"],
                "task": task,
                "window": 12,
                "horizon": 4,
                "eval_steps": [1],
                **(data or {}),
            },
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2, **(split or {})},
            "model": {"name": "idw"},
            "train": {"batch_size": 8, "max_train_windows": 24, **(train or {})},
        }
    )


@pytest.fixture(scope="module")
def data():
    return synthetic_stations(num_nodes=12, num_steps=24 * 12, num_channels=3, seed=4)


def poisoned(data, stations=None, channels=None, steps=None):
    """A copy with the chosen cells set to 1e9 and marked observed (default: all of each axis)."""
    values, mask = data.values.copy(), data.mask.copy()
    idx = tuple(slice(None) if a is None else np.asarray(a) for a in (steps, stations, channels))
    grid = np.ix_(*[np.arange(s)[i] for s, i in zip(values.shape, idx, strict=True)])
    values[grid], mask[grid] = 1e9, True
    return replace(data, values=values, mask=mask)


def assert_same_batch(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None), f.name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), f.name


def eval_batches(exp, role):
    inputs, _ = exp.eval_windows(role, 64)
    src, tgt = exp.roles(role)
    return [exp.batch(inputs[idx], src, tgt) for idx in torch.arange(len(inputs)).split(32)], inputs


def training_batches(exp):
    """(batch, terms, view) of every training batch fit_context yields (the views recorded on the way)."""
    task, views = exp.task, []
    original = task.training_view

    def recording(*args, **kwargs):
        views.append(original(*args, **kwargs))
        return views[-1]

    task.training_view = recording
    try:
        out = [(b, t) for b, t in fit_context(None, exp).train_batches()]
    finally:
        del task.training_view
    return [(b, t, v) for (b, t), v in zip(out, views, strict=True)]


def role_nodes(exp, *roles):
    return np.concatenate([exp.split.indices(exp.data, r) for r in roles])


# --- hybrid anchor ------------------------------------------------------------------------------


def test_anchor_training_batches_carry_the_anchor_and_never_the_targets_other_channels(data):
    exp = prepare_experiment(cfg(data={"colocated_channels": ["x1"]}), data)
    batches = training_batches(exp)
    assert len(batches) == 3
    for batch, _, view in batches:
        tgt = torch.as_tensor(view.tgt)
        assert batch.colocated_tgt.shape == (8, 12, len(view.tgt), 1) and len(view.tgt) > 0
        m = view.w.x_mask[:, :, tgt][..., [ANCHOR]]
        assert torch.equal(batch.colocated_tgt_mask, m) and m.any()
        assert torch.equal(batch.colocated_tgt, torch.where(m, view.w.x[:, :, tgt][..., [ANCHOR]], 0))
        # poison everything of the hidden training stations but their anchor: the batch does not move
        x, xm = view.w.x.clone(), view.w.x_mask.clone()
        for c in (TARGET, OTHER):
            x[:, :, tgt, c], xm[:, :, tgt, c] = 1e9, True
        dirty = exp.batch(replace(view.w, x=x, x_mask=xm), view.src, view.tgt, view.nodes)
        assert_same_batch(batch, dirty)
        # ... and the anchor channel itself does reach it
        x[:, :, tgt, ANCHOR], xm[:, :, tgt, ANCHOR] = 1e9, True
        moved = exp.batch(replace(view.w, x=x, x_mask=xm), view.src, view.tgt, view.nodes)
        assert (moved.colocated_tgt == 1e9).all()


def test_anchor_evaluation_batches_ignore_hidden_stations_target_channels(data):
    c = cfg(data={"colocated_channels": ["x1"]})
    clean = prepare_experiment(c, data)
    hidden = role_nodes(clean, "val", "test")
    dirty = prepare_experiment(c, poisoned(data, hidden, [TARGET, OTHER]))
    for role in ("val", "test"):
        a, inputs = eval_batches(clean, role)
        b, _ = eval_batches(dirty, role)
        for x, y in zip(a, b, strict=True):
            assert_same_batch(x, y)
        _, tgt = clean.roles(role)
        w = inputs[torch.arange(min(32, len(inputs)))]
        m = w.x_mask[:, :, tgt][..., [ANCHOR]]
        assert torch.equal(a[0].colocated_tgt_mask, m) and m.any()
        assert torch.equal(a[0].colocated_tgt, torch.where(m, w.x[:, :, tgt][..., [ANCHOR]], 0))
    # the test stations' anchor channel shows up when the test stations are scored, and only then
    anchored = prepare_experiment(c, poisoned(data, clean.split.indices(data, "test"), [ANCHOR]))
    (moved, *_), _ = eval_batches(anchored, "test")
    assert (moved.colocated_tgt[moved.colocated_tgt_mask] > 1e6).all()
    for x, y in zip(eval_batches(clean, "val")[0], eval_batches(anchored, "val")[0], strict=True):
        assert_same_batch(x, y)


def test_sample_masking_keeps_the_anchor_at_hidden_stations(data):
    c = cfg("forecast", data={"colocated_channels": ["x1"]}, train={"node_masking": "sample", "hide_fraction": 0.3})
    exp = prepare_experiment(c, data)
    w = exp.train.windows[torch.arange(8)]
    view = exp.task.training_view(w, exp.train.stations, exp.targets, c.train, torch.Generator().manual_seed(0))
    hidden = ~view.w.x_mask[..., [TARGET, OTHER]].any(dim=(1, 3))  # (B, N): stations hidden in a sample
    assert hidden.any(1).all()
    keep = hidden[:, None, :].expand(-1, 12, -1)  # (B, W, N)
    assert torch.equal(view.w.x_mask[..., ANCHOR][keep], w.x_mask[..., ANCHOR][keep])  # anchor still observed
    assert torch.equal(view.w.x[..., ANCHOR][keep], w.x[..., ANCHOR][keep])
    assert (view.w.x[..., TARGET][keep] == 0).all() and (view.w.x[..., OTHER][keep] == 0).all()
    teacher_y, teacher_m = view.teacher
    assert not teacher_m[hidden[:, None, :, None].expand_as(teacher_m)].any()  # hidden targets never given


def test_anchor_config_errors(data):
    with pytest.raises(ValueError, match=r"data.colocated_channels \['x2'\] must be input channels"):
        prepare_experiment(cfg(data={"input_channels": ["x0", "x1"], "colocated_channels": ["x2"]}), data)
    with pytest.raises(ValueError, match=r"data.colocated_channels \['x0'\] are target channels"):
        prepare_experiment(cfg(data={"colocated_channels": ["x1", "x0"]}), data)
    with pytest.raises(ValueError, match="more than once"):
        prepare_experiment(cfg(data={"colocated_channels": ["x1", "x1"]}), data)
    with pytest.raises(ValueError, match="mean nothing for task 'impute'"):
        prepare_experiment(cfg("impute", data={"colocated_channels": ["x1"]}), data)
    with pytest.raises(ValueError, match="data.aggregate='mean' is a protocol of the station tasks"):
        prepare_experiment(cfg("impute", data={"aggregate": "mean"}), data)
    with pytest.raises(ConfigError, match="data.aggregate"):
        cfg(data={"aggregate": "median"})


# --- backcasting --------------------------------------------------------------------------------


def test_backcast_trains_on_the_latest_period_only(data):
    c = cfg(split={"backcast": True, "time_val": 0.1, "time_test": 0.25})
    exp = prepare_experiment(c, data)
    p = exp.periods
    assert p.method == "backcast(gap=12)"
    test_steps, val_steps = np.flatnonzero(p.test), np.flatnonzero(p.val)
    assert test_steps[0] == 0 and p.train[-1]  # test is the earliest part, training the latest
    assert test_steps[-1] + 12 < val_steps[0] and val_steps[-1] + 12 < np.flatnonzero(p.train)[0]  # gaps
    starts = exp.train.windows.starts.numpy()
    assert starts.min() > val_steps.max() > test_steps.max()
    # the scaler: train-role stations, train period only (an independent computation)
    train_nodes = exp.train.stations
    v = data.values[p.train][:, train_nodes].astype(np.float64)
    m = data.mask[p.train][:, train_nodes]
    mean = (v * m).sum((0, 1)) / m.sum((0, 1))
    std = np.sqrt((((v - mean) * m) ** 2).sum((0, 1)) / m.sum((0, 1)))
    np.testing.assert_allclose(exp.train.scaler.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(exp.train.scaler.std, std, rtol=1e-12)
    whole = MaskedStandardScaler().fit(data, train_nodes)
    assert not np.allclose(whole.mean, exp.train.scaler.mean)  # the period matters: this check can fail


def test_backcast_poisoning_the_test_period_changes_nothing_training_sees(data):
    c = cfg(split={"backcast": True, "time_val": 0.1, "time_test": 0.25})
    clean = prepare_experiment(c, data)
    dirty = prepare_experiment(c, poisoned(data, steps=np.flatnonzero(clean.periods.test)))
    assert np.array_equal(clean.train.scaler.mean, dirty.train.scaler.mean)
    assert np.array_equal(clean.train.scaler.std, dirty.train.scaler.std)
    every = torch.arange(len(clean.train.windows))  # every training window (the series tensor holds all steps)
    wa, wb = clean.train.windows[every], dirty.train.windows[every]
    assert all(torch.equal(getattr(wa, f), getattr(wb, f)) for f in ("x", "x_mask", "y", "y_mask", "start"))
    for (a, ta, _), (b, tb, _) in zip(training_batches(clean), training_batches(dirty), strict=True):
        assert_same_batch(a, b)
        for (_, ya, ma, _), (_, yb, mb, _) in zip(ta, tb, strict=True):  # loss terms: truth and mask
            assert torch.equal(ya, yb) and torch.equal(ma, mb)
    for a, b in zip(eval_batches(clean, "val")[0], eval_batches(dirty, "val")[0], strict=True):
        assert_same_batch(a, b)
    # poisoning the training period does move it
    moved = prepare_experiment(c, poisoned(data, clean.train.stations[:1], steps=np.flatnonzero(clean.periods.train)))
    assert not np.array_equal(clean.train.scaler.mean, moved.train.scaler.mean)


PERIODS = {
    "test": ["2024-01-01", "2024-01-05"],
    "val": ["2024-01-05", "2024-01-07"],
    "train": ["2024-01-07", "2024-01-13"],
}


def test_explicit_periods(data):
    exp = prepare_experiment(cfg(split={"periods": PERIODS, "time_gap": 6}), data)
    p, day = exp.periods, 24
    steps = np.arange(data.num_steps)
    assert np.array_equal(p.test, steps < 4 * day)
    assert np.array_equal(p.val, (steps >= 4 * day + 6) & (steps < 6 * day))  # gap after test
    assert np.array_equal(p.train, (steps >= 6 * day + 6) & (steps < 12 * day))  # gap after val
    assert p.method.startswith("periods(train=[2024-01-07 00:00:00, 2024-01-13 00:00:00)") and p.method.endswith(
        "gap=6)"
    )
    assert exp.train.windows.starts.min() >= 6 * day + 6
    assert prepare_experiment(cfg(split={"periods": PERIODS, "time_gap": 0}), data).periods.val.sum() == 2 * day


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"val": ["2024-01-04", "2024-01-07"]}, r"split.periods.val .* and split.periods.test .* overlap"),
        ({"train": ["2024-01-06 12:00", "2024-01-13"]}, r"split.periods.train .* and split.periods.val .* overlap"),
        ({"test": ["2024-01-05", "2024-01-01"]}, "start '2024-01-05' must be before end"),
        ({"test": ["2024-01-01", "2024-01-01 10:00"]}, r"split.periods.test .* no run of 12 consecutive steps"),
        ({"val": ["2030-01-01", "2030-02-01"]}, r"split.periods.val .* holds 0 steps"),
        ({"val": ["not a date", "2024-01-07"]}, "are not dates pandas parses"),
        ({"val": ["2024-01-05"]}, r"split.periods.val: expected \[start, end\]"),
    ],
)
def test_explicit_period_errors(data, change, message):
    with pytest.raises(ValueError, match=message):
        prepare_experiment(cfg(split={"periods": {**PERIODS, **change}}), data)


def test_period_config_errors(data):
    with pytest.raises(ValueError, match="needs exactly the keys"):
        prepare_experiment(cfg(split={"periods": {"train": PERIODS["train"], "test": PERIODS["test"]}}), data)
    with pytest.raises(ValueError, match="leave split.test_months and split.backcast unset"):
        prepare_experiment(cfg(split={"periods": PERIODS, "backcast": True}), data)
    with pytest.raises(ValueError, match="does not apply to split.test_months"):
        prepare_experiment(cfg(split={"backcast": True, "test_months": [1]}), data)
    with pytest.raises(ValueError, match="split.backcast: the val period"):
        prepare_experiment(cfg(split={"backcast": True, "time_val": 0.01}), data)
    with pytest.raises(ConfigError, match="split.periods.train"):
        cfg(split={"periods": {"train": "2024"}})


# --- downscaling --------------------------------------------------------------------------------


def test_aggregate_training_batches_never_see_val_or_test_stations(data):
    c = cfg(data={"aggregate": "mean"}, train={"subgraph_size": 5})
    clean = prepare_experiment(c, data)
    dirty = prepare_experiment(c, poisoned(data, role_nodes(clean, "val", "test")))
    for (a, _, view), (b, _, _) in zip(training_batches(clean), training_batches(dirty), strict=True):
        assert_same_batch(a, b)
        # the mean over the batch's whole universe: the 5 sampled stations, hidden ones included
        assert len(view.nodes) == 5 and a.aggregate.shape == (8, 12, 1)
        y, m = view.w.x[..., [TARGET]], view.w.x_mask[..., [TARGET]]
        ref = torch.where(m, y, 0).sum(2) / m.sum(2).clamp_min(1)
        torch.testing.assert_close(a.aggregate, ref, rtol=1e-6, atol=1e-6)
        assert torch.equal(a.aggregate_mask, m.any(2))


def test_aggregate_counts_sample_masked_stations(data):
    c = cfg(data={"aggregate": "mean"}, train={"node_masking": "sample", "hide_fraction": 0.4})
    exp = prepare_experiment(c, data)
    w = exp.train.windows[torch.arange(8)]
    view = exp.task.training_view(w, exp.train.stations, exp.targets, c.train, torch.Generator().manual_seed(1))
    batch = exp.batch(view.w, view.src, view.tgt, view.nodes)
    y, m = w.x[..., [TARGET]], w.x_mask[..., [TARGET]]  # before the hidden stations were cleared
    torch.testing.assert_close(batch.aggregate, torch.where(m, y, 0).sum(2) / m.sum(2), rtol=1e-6, atol=1e-6)
    vis = view.w.x_mask[..., [TARGET]]
    visible_only = torch.where(vis, view.w.x[..., [TARGET]], 0).sum(2) / vis.sum(2).clamp_min(1)
    assert (batch.aggregate - visible_only).abs().max() > 1e-3


def test_aggregate_at_evaluation_is_the_mean_of_visible_and_scored_stations(data):
    c = cfg(data={"aggregate": "mean"})
    exp = prepare_experiment(c, data)
    scaler = exp.train.scaler
    for role, other in (("val", "test"), ("test", "val")):
        batches, inputs = eval_batches(exp, role)
        starts = inputs.starts[: len(batches[0].x)].numpy()
        t = starts[:, None] + np.arange(12)  # (B, W)
        nodes = role_nodes(exp, "train", role)
        v = (data.values[..., TARGET].astype(np.float64) - scaler.mean[TARGET]) / scaler.std[TARGET]
        m = data.mask[..., TARGET]
        ref = (np.where(m, v, 0)[t][:, :, nodes].sum(2) / m[t][:, :, nodes].sum(2))[..., None]
        np.testing.assert_allclose(batches[0].aggregate.numpy(), ref, rtol=1e-5, atol=1e-6)
        assert batches[0].aggregate_mask.all()
        everyone = role_nodes(exp, "train", role, other)
        ref_all = (np.where(m, v, 0)[t][:, :, everyone].sum(2) / m[t][:, :, everyone].sum(2))[..., None]
        assert np.abs(batches[0].aggregate.numpy() - ref_all).max() > 1e-3  # the other role is not in it
    # poisoning the test stations moves the test-role aggregate (by design) and nothing else
    dirty = prepare_experiment(c, poisoned(data, exp.split.indices(data, "test"), [TARGET]))
    for a, b in zip(eval_batches(exp, "val")[0], eval_batches(dirty, "val")[0], strict=True):
        assert_same_batch(a, b)
    for a, b in zip(eval_batches(exp, "test")[0], eval_batches(dirty, "test")[0], strict=True):
        assert (b.aggregate > 1e6).all()
        assert_same_batch(
            replace(a, aggregate=None, aggregate_mask=None), replace(b, aggregate=None, aggregate_mask=None)
        )


def test_without_protocols_poisoned_hidden_stations_change_no_batch(data):
    c = cfg()
    clean = prepare_experiment(c, data)
    dirty = prepare_experiment(c, poisoned(data, role_nodes(clean, "val", "test")))
    for (a, _, _), (b, _, _) in zip(training_batches(clean), training_batches(dirty), strict=True):
        assert_same_batch(a, b)
        assert a.colocated_tgt is None and a.aggregate is None
    for role in ("val", "test"):
        for a, b in zip(eval_batches(clean, role)[0], eval_batches(dirty, role)[0], strict=True):
            assert_same_batch(a, b)


def test_protocols_run_end_to_end(data, tmp_path):
    """A whole run with all three options: idw ignores the new fields and scores the backcast test period."""
    from stgraph.engine.run import run_experiment

    c = cfg(data={"colocated_channels": ["x1"], "aggregate": "mean"}, split={"backcast": True, "time_test": 0.25})
    run, metrics = run_experiment(c, tmp_path, data=data, progress=False)
    assert metrics["test"]["hidden"]["overall"]["count"] > 0
    periods = run.read_json("split.json")["time"]
    assert periods["method"] == "backcast(gap=12)" and periods["test"] == [[0, 72]]


def test_protocol_options_round_trip_through_yaml(tmp_path):
    from stgraph.engine.config import load_config, save_config

    c = cfg(data={"colocated_channels": ["x1"], "aggregate": "mean"}, split={"periods": PERIODS})
    again = load_config(save_config(c, tmp_path / "c.yaml"), ["split.backcast=false"])
    assert again == c and again.split.periods["test"] == ["2024-01-01", "2024-01-05"]
