"""``reconstruct``: the pattern's cells never reach an input, a training batch or the scaler; hidden
stations never reach training; both groups (hidden stations, removed cells) are scored and saved."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.data.patterns import SparsePattern, block_nodes
from stgraph.engine.config import config_from_dict
from stgraph.engine.evaluate import predict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.run import PATTERN_FILE, evaluate_run, run_experiment
from stgraph.engine.trainer import validate
from stgraph.models.registry import build_model
from stgraph.testing import synthetic_stations
from tests.models.test_contract import TINY


def cfg(pattern="random", model="idw", ratio=0.4, **train):
    return config_from_dict(
        {
            "name": "rec",
            "data": {"target_channels": ["x0"], "task": "reconstruct", "window": 12, "eval_steps": [1, 12]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2, "pattern": pattern, "pattern_ratio": ratio},
            "model": {"name": model, "hparams": TINY[model]},
            "train": {"epochs": 1, "batch_size": 8, "max_train_windows": 16, "max_eval_windows": 48, **train},
        }
    )


@pytest.fixture(scope="module")
def data():
    return synthetic_stations(num_nodes=16, num_steps=24 * 12, num_channels=2, seed=3)


def removed_cells(exp) -> np.ndarray:
    """(T, N) bool: the pattern's cells over the dataset's nodes."""
    removed = np.zeros(exp.data.mask.shape[:2], dtype=bool)
    removed[:, exp.pattern.nodes] = exp.pattern.removed
    return removed


def poison(data, cells: np.ndarray):
    """The data with absurd values at ``cells`` (T, N), every one of them marked observed."""
    values, mask = data.values.copy(), data.mask.copy()
    values[cells] = 1e9
    mask[cells] = True
    return replace(data, values=values, mask=mask)


def training_views(exp, n_batches=3):
    gen = torch.Generator().manual_seed(0)
    windows = exp.train.windows
    out = []
    for idx in torch.arange(len(windows)).split(exp.cfg.train.batch_size)[:n_batches]:
        out.append(exp.task.training_view(windows[idx], exp.train.stations, exp.targets, exp.cfg.train, gen))
    return out


def assert_same_training(a, b):
    assert np.array_equal(a.train.scaler.mean, b.train.scaler.mean)
    assert np.array_equal(a.train.scaler.std, b.train.scaler.std)
    assert torch.equal(a.train.windows.values, b.train.windows.values)
    assert torch.equal(a.train.windows.mask, b.train.windows.mask)
    for va, vb in zip(training_views(a), training_views(b), strict=True):
        assert torch.equal(va.w.x, vb.w.x) and torch.equal(va.w.x_mask, vb.w.x_mask)
        assert np.array_equal(va.src, vb.src) and np.array_equal(va.tgt, vb.tgt)
        for ta, tb in zip(va.terms, vb.terms, strict=True):
            assert torch.equal(ta.y, tb.y) and torch.equal(ta.mask, tb.mask)


@pytest.mark.parametrize("pattern", ["fixed", "random", "block"])
def test_pattern_is_removed_from_what_models_see(data, pattern):
    exp = prepare_experiment(cfg(pattern), data)
    train = exp.split.indices(exp.data, "train")
    assert np.array_equal(exp.pattern.nodes, train) and exp.pattern.kind == pattern
    cells = removed_cells(exp)
    assert cells.any() and not cells[:, np.setdiff1d(np.arange(data.num_nodes), train)].any()  # coarse nodes only
    assert not exp.data.mask[cells].any() and (exp.data.values[cells] == 0).all()  # out of the input
    assert np.array_equal(exp.data.mask[~cells], data.mask[~cells])  # nothing else is touched
    assert np.array_equal(exp.truth_values, data.values) and np.array_equal(exp.truth_mask, data.mask)
    per_step = exp.pattern.removed.sum(1)
    if pattern == "block":
        assert (exp.pattern.removed == block_nodes(data.latlon[train])).all()
    else:
        assert (per_step == round(0.4 * len(train))).all()


@pytest.mark.parametrize("pattern", ["fixed", "random", "block"])
def test_poisoned_removed_cells_leave_training_and_inputs_bit_identical(data, pattern):
    clean = prepare_experiment(cfg(pattern), data)
    dirty = prepare_experiment(cfg(pattern), poison(data, removed_cells(clean)))
    assert clean.pattern.same_as(dirty.pattern)
    assert_same_training(clean, dirty)
    assert np.array_equal(clean.scaled, dirty.scaled)  # evaluation inputs too
    assert np.abs(clean.train.scaler.mean).max() < 1e3  # the poison would have dominated


def test_poisoned_removed_cells_change_the_removed_score_only(tmp_path, data):
    c = cfg("random")
    run_a, ma = run_experiment(c, tmp_path, name="clean", data=data, progress=False)
    exp = prepare_experiment(c, data)
    run_b, mb = run_experiment(c, tmp_path, name="poisoned", data=poison(data, removed_cells(exp)), progress=False)
    pa, pb = run_a.load_predictions(), run_b.load_predictions()
    assert np.array_equal(pa["pred"], pb["pred"]) and np.array_equal(pa["pred_removed"], pb["pred_removed"])
    assert ma["test"]["hidden"]["overall"] == mb["test"]["hidden"]["overall"]
    assert ma["test"]["removed"]["overall"]["mae"] < 1e3 < 1e6 < mb["test"]["removed"]["overall"]["mae"]


def test_poisoned_hidden_stations_never_reach_training(data):
    clean = prepare_experiment(cfg("random"), data)
    hidden = np.concatenate([clean.split.indices(data, "val"), clean.split.indices(data, "test")])
    cells = np.zeros(data.mask.shape[:2], dtype=bool)
    cells[:, hidden] = True
    dirty = prepare_experiment(cfg("random"), poison(data, cells))
    assert_same_training(clean, dirty)
    assert not np.isin(clean.train.stations, hidden).any()


def test_poisoning_a_kept_cell_does_change_training(data):
    """The same checks can fail: a visible cell the pattern kept reaches the scaler."""
    clean = prepare_experiment(cfg("random"), data)
    kept = np.zeros(data.mask.shape[:2], dtype=bool)
    t = int(np.flatnonzero(clean.periods.period("train"))[0])
    n = clean.pattern.nodes[~clean.pattern.removed[t]][0]
    kept[t, n] = True
    dirty = prepare_experiment(cfg("random"), poison(data, kept))
    assert not np.array_equal(clean.train.scaler.mean, dirty.train.scaler.mean)


@pytest.mark.parametrize("pattern", ["fixed", "random", "block"])
def test_training_view_hides_stand_ins_and_a_fresh_pattern(data, pattern):
    exp = prepare_experiment(cfg(pattern, hide_fraction=0.25), data)
    w = exp.train.windows[torch.arange(8)]
    view = training_views(exp, 1)[0]
    tgt_term, removed_term, kept_term = view.terms
    assert tgt_term.which == "tgt" and len(view.tgt) == round(0.25 * len(exp.train.stations))
    assert removed_term.which == "src" and removed_term.mask.any()
    s = torch.as_tensor(view.src)
    cleared = w.x_mask[:, :, s] & ~view.w.x_mask[:, :, s]  # observed cells the view hid
    assert cleared.any() and (view.w.x[:, :, s][cleared] == 0).all()  # hidden values never given
    assert torch.equal(removed_term.mask, w.x_mask[:, :, s][..., exp.targets] & cleared[..., exp.targets])
    assert torch.equal(kept_term.mask, view.w.x_mask[:, :, s][..., exp.targets])
    assert kept_term.weight == exp.cfg.train.src_loss_weight
    hid = cleared.any(dim=(0, 3))  # (W, N_src) cells hidden at some sample
    if pattern == "fixed":
        assert (hid == hid[0]).all()  # the same stations at every step
    if pattern == "random":
        assert len({tuple(r.tolist()) for r in hid}) > 1  # new cells each step


def test_sample_masking_keeps_stand_ins_in_src_with_no_input(data):
    exp = prepare_experiment(cfg("random", node_masking="sample", hide_fraction=0.25), data)
    view = training_views(exp, 1)[0]
    assert len(view.tgt) == 0 and len(view.src) == len(exp.train.stations)
    stand_in, removed, kept = view.terms
    assert stand_in.mask.any() and removed.mask.any()
    assert not (stand_in.mask & removed.mask).any() and not (kept.mask & (stand_in.mask | removed.mask)).any()
    empty = ~view.w.x_mask.any(dim=(1, 3))  # (B, N) stations with no input in a sample
    assert (empty.sum(1) >= round(0.25 * len(view.src))).all()


def test_removed_group_is_scored_each_cell_once_and_validation_averages_both(tmp_path, data):
    c = cfg("random", max_eval_windows=None)
    run, m = run_experiment(c, tmp_path, data=data, progress=False)
    exp = prepare_experiment(c, data)
    test = exp.periods.period("test")
    src, tgt = exp.roles("test")
    cells = removed_cells(exp)[:, src, None] & data.mask[:, src][..., exp.targets]
    assert m["test"]["removed"]["overall"]["count"] == int(cells[test].sum())
    assert m["test"]["hidden"]["overall"]["count"] == int(data.mask[test][:, tgt, 0].sum())
    assert set(m["test"]["removed"]["per_station"]) == {data.station_ids[i] for i in src}
    saved = run.load_predictions()
    assert {"pred_removed", "true_removed", "mask_removed", "stations_removed"} <= set(saved)
    # validation: the mean of the two groups' MAEs (standardised), windows as they come
    model = build_model("idw", exp.sizes, {})
    arrays = predict(model, exp, "val", "val")
    std = exp.train.scaler.std[exp.targets][0]

    def mae(suffix):
        err = np.abs(arrays["pred" + suffix] - arrays["true" + suffix]) * arrays["mask" + suffix]
        return err.sum() / arrays["mask" + suffix].sum() / std

    assert validate(model, exp) == pytest.approx((mae("") + mae("_removed")) / 2, rel=1e-4)


@pytest.mark.parametrize(("model", "masking"), [("idw", "batch"), ("ignnk", "batch"), ("ignnk", "sample")])
def test_end_to_end_writes_both_groups_and_the_pattern(tmp_path, data, model, masking):
    c = cfg("fixed", model, node_masking=masking)
    run, m = run_experiment(c, tmp_path, data=data, progress=False)
    for group in ("hidden", "removed"):
        overall = m["test"][group]["overall"]
        assert overall["count"] > 0 and 0 < overall["mae"] < 1e3 and overall["rmse"] >= overall["mae"]
    split = run.read_json("split.json")
    assert split["pattern"]["kind"] == "fixed" and split["pattern"]["file"] == PATTERN_FILE
    saved = SparsePattern.load(run.path / PATTERN_FILE)
    exp = prepare_experiment(c, data)
    assert saved.same_as(exp.pattern)
    again = evaluate_run(run.path, data=data)  # re-draws the pattern, checks it against the saved one
    for group in ("hidden", "removed"):
        assert again["test"][group]["overall"] == m["test"][group]["overall"]


def test_evaluate_run_refuses_a_pattern_that_differs_from_the_saved_one(tmp_path, data):
    run, _ = run_experiment(cfg("random"), tmp_path, data=data, progress=False)
    other = prepare_experiment(cfg("random", ratio=0.6), data).pattern
    other.save(run.path / PATTERN_FILE)
    with pytest.raises(ValueError, match="differs from the one the run saved"):
        evaluate_run(run.path, data=data)


def test_bad_pattern_settings_name_the_config_key(data):
    with pytest.raises(ValueError, match="split.pattern_ratio"):
        prepare_experiment(cfg("fixed", ratio=0.01), data)
    with pytest.raises(ValueError, match="split.pattern"):
        config_from_dict({"split": {"pattern": "stripes"}})
