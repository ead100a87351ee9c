"""Tasks as objects: what each hides in training, what it scores, and how it merges windows."""

import numpy as np
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.run import run_experiment
from stgraph.engine.tasks import get_task
from stgraph.testing import synthetic_stations


def cfg(task="krige", **train):
    return config_from_dict(
        {
            "data": {"target_channels": ["x0"], "task": task, "window": 12, "horizon": 4, "eval_steps": [1, 4]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": "idw"},
            "train": {"batch_size": 8, **train},
        }
    )


def test_sample_masking_hides_a_different_set_per_sample_and_never_gives_hidden_values():
    data = synthetic_stations(num_nodes=12, num_steps=24 * 10, num_channels=2, seed=0)
    c = cfg("forecast", node_masking="sample", hide_fraction=0.3, subgraph_size=5)
    exp = prepare_experiment(c, data)
    w = exp.train.windows[torch.arange(8)]
    view = exp.task.training_view(w, exp.train.stations, exp.targets, c.train, torch.Generator().manual_seed(0))
    assert len(view.nodes) == 5 and len(view.tgt) == 0 and len(view.src) == 5  # a 5-station subgraph
    hidden = ~view.w.x_mask.any(dim=(1, 3))  # (B, N): stations with no input in a sample
    assert (hidden.sum(1) == 2).all() and len({tuple(h.tolist()) for h in hidden}) > 1
    assert (view.w.x[hidden[:, None, :, None].expand_as(view.w.x)] == 0).all()
    y_teacher, m_teacher = view.teacher
    assert not m_teacher[hidden[:, None, :, None].expand_as(m_teacher)].any()
    assert (y_teacher[hidden[:, None, :, None].expand_as(y_teacher)] == 0).all()
    hid_term = view.terms[0]
    assert hid_term.mask.any() and not (hid_term.mask & ~hidden[:, None, :, None]).any()  # loss at hidden cells


def test_krige_scores_each_cell_once(tmp_path):
    data = synthetic_stations(num_nodes=12, num_steps=24 * 20, num_channels=1, seed=1)
    c = cfg("krige", max_eval_windows=None)
    run, m = run_experiment(c, tmp_path, data=data, progress=False)
    exp = prepare_experiment(c, data)
    test = exp.periods.period("test")
    _, tgt = exp.roles("test")
    expected = int(data.mask[test][:, tgt, 0].sum())
    hidden = m["test"]["hidden"]
    assert hidden["overall"]["count"] == expected
    assert set(hidden["at_steps"]) == {"1", "4"}  # per-position metrics still reported (per window)
    n_windows = len(run.load_predictions()["start"])
    assert n_windows > 24 and hidden["at_steps"]["1"]["count"] <= n_windows * len(tgt)  # one cell per window


def test_forecast_keeps_one_row_per_window():
    task = get_task("forecast")
    pred = torch.zeros(3, 4, 2, 1)
    out = task.merge_windows(pred, pred, pred.bool(), torch.tensor([0, 1, 2]))
    assert out[0].shape == (3, 4, 2, 1)


def test_in_sample_impute_trains_on_every_step_without_evaluation_cells(aqi36):
    data = aqi36.select_times("2015-02-01", "2015-04-30")
    base = {
        "data": {"dataset": "aqi36", "target_channels": ["PM2.5"], "task": "impute", "window": 12, "eval_steps": []},
        "split": {"test_months": [3, 6, 9, 12], "time_gap": 0, "time_val": 0.1},
        "model": {"name": "idw"},
    }
    out = prepare_experiment(config_from_dict(base), data)
    base["split"]["impute_training"] = "in-sample"
    ins = prepare_experiment(config_from_dict(base), data)
    assert len(ins.train.windows) > len(out.train.windows)
    starts = ins.train.windows.starts.numpy()
    march = np.flatnonzero(np.asarray(data.times.astype("datetime64[M]") == np.datetime64("2015-03")))
    assert np.isin(starts, march).any()  # test months are trained on ...
    assert not ins.train.windows.mask[torch.as_tensor(data.eval_mask)].any()  # ... but never their evaluation cells


def test_fit_context_gives_training_stations_only():
    from stgraph.engine.fitting import fit_context
    from stgraph.engine.run import build_experiment

    data = synthetic_stations(num_nodes=12, num_steps=24 * 10, num_channels=1, seed=2)
    exp, model = build_experiment(cfg("krige", max_train_windows=16), data)
    ctx = fit_context(model, exp)
    batches = list(ctx.train_batches())
    assert len(batches) == 2  # 16 windows in batches of 8
    train_pos = exp.pos(exp.train.stations)
    for batch, terms in batches:
        seen = torch.cat([batch.pos_src, batch.pos_tgt])
        assert len(seen) == len(train_pos) and (seen[:, None] == train_pos[None]).all(-1).any(1).all()
        assert {t[0] for t in terms} == {"tgt", "src"} and terms[0][1].shape[2] == batch.pos_tgt.size(0)
    assert ctx.validate() > 0


def test_fit_context_val_batches_match_validate():
    """val_batches: train-role visible, val-role hidden, the same cells validate() scores."""
    from stgraph.engine.fitting import fit_context
    from stgraph.engine.run import build_experiment

    data = synthetic_stations(num_nodes=12, num_steps=24 * 10, num_channels=1, seed=2)
    exp, model = build_experiment(cfg("krige", max_train_windows=16), data)
    ctx = fit_context(model, exp)
    val_pos = exp.pos(exp.split.indices(exp.data, "val"))
    test_pos = exp.pos(exp.split.indices(exp.data, "test"))
    err, count = 0.0, 0.0
    for batch, terms in ctx.val_batches():
        assert torch.equal(batch.pos_tgt, val_pos)
        assert not (batch.pos_src[:, None] == test_pos[None]).all(-1).any()
        which, y, m, _ = terms[0]
        pred = getattr(model(batch), which)
        err += float(((pred - y).abs() * m).sum())
        count += float(m.sum())
    assert count > 0 and abs(err / count - ctx.validate()) < 1e-5
