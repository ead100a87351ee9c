"""DiffRecon's grid protocol: coarse cells visible with a sparse pattern, fine cells the targets,
seen in the train period only."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from stgraph.data.grid import coarse_fine_network, grid_to_stations
from stgraph.engine.config import config_from_dict
from stgraph.engine.evaluate import predict
from stgraph.engine.run import build_experiment, run_experiment
from stgraph.engine.run_folder import RunDir
from stgraph.engine.trainer import train_model


def grid_data(t=96, i=8, j=8, seed=0):
    rng = np.random.default_rng(seed)
    lat, lon = np.linspace(55.0, 51.5, i), np.linspace(-4.0, 0.0, j)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    hours = np.arange(t)[:, None, None]
    values = 280 + 3 * np.sin(2 * np.pi * hours / 24 + la / 2) + 0.5 * lo + rng.normal(0, 0.3, (t, i, j))
    times = pd.date_range("2024-01-01", periods=t, freq="1h").to_numpy()
    return grid_to_stations(values[..., None], lat, lon, times, channels=("t2m",), units=("K",), name="toygrid")


def cfg(model="idw", hparams=None, **train):
    return config_from_dict({
        "name": "grid",
        "data": {"dataset": "toygrid", "task": "reconstruct", "grid_coarsen": 2, "window": 8, "stride": 4,
                 "eval_stride": 8, "eval_steps": [], "target_channels": ["t2m"]},
        "split": {"pattern": "random", "pattern_ratio": 0.4, "time_val": 0.25, "time_test": 0.25, "time_gap": 0},
        "model": {"name": model, "hparams": hparams or {}},
        "train": {"epochs": 2, "patience": 5, "batch_size": 4, "max_train_windows": 8, "subgraph_size": 12,
                  **train},
    })  # fmt: skip


def test_coarse_fine_network_is_block_means_then_cells():
    fine = grid_data(t=5)
    net = coarse_fine_network(fine, 2)
    assert net.num_nodes == 16 + 64 and list(net.stations.level[:16]) == ["coarse"] * 16
    assert net.station_ids[0] == "coarse-r000c000" and net.station_ids[16:] == fine.station_ids
    v = fine.values[:, :, 0].reshape(5, 8, 8)
    np.testing.assert_allclose(net.values[:, 0, 0], v[:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(net.values[:, 16:], fine.values)


def test_roles_training_columns_and_what_is_scored():
    exp, _ = build_experiment(cfg(), grid_data())
    assert len(exp.split.train) == 16 and len(exp.split.test) == 64 and not exp.split.val
    src, tgt = exp.roles("val")
    assert list(src) == list(range(16)) and list(tgt) == list(range(16, 80))
    assert list(exp.train.stations) == list(range(80))  # fine cells are training targets
    assert exp.pattern.removed.shape == (96, 16) and 0.3 < exp.pattern.removed.mean() < 0.5
    assert exp.task.name == "reconstruct" and exp.task.protocol == "grid"
    view = exp.task.training_view(exp.train.windows[torch.arange(4)], exp.train.stations, exp.targets,
                                      exp.cfg.train, torch.Generator().manual_seed(0))  # fmt: skip
    assert len(view.src) == 16 and len(view.tgt) == 12 and set(view.nodes[view.tgt]) <= set(range(16, 80))
    assert not view.w.x_mask[:, :, torch.as_tensor(view.tgt)].any()  # fine cells are never inputs
    removed = view.terms[1].mask
    assert removed.any() and not (removed & view.w.x_mask[:, :, torch.as_tensor(view.src)][..., :1]).any()


def test_val_and_test_values_of_fine_and_removed_cells_never_reach_training_or_inputs(tmp_path):
    """Poison the fine cells outside the train period and every cell the pattern removed: the
    trained weights and every prediction stay bit-identical (only the truth changes)."""
    data = coarse_fine_network(grid_data(), 2)
    c = cfg("ignnk", {"hidden_channels": 8, "order": 1, "k": 3})
    exp, _ = build_experiment(c, data)
    outside = ~exp.periods.period("train")  # (T,) val, test and gaps
    values, mask = data.values.copy(), data.mask.copy()
    values[np.ix_(outside, np.arange(16, 80))] = 1e9
    removed = np.zeros(values.shape[:2], dtype=bool)
    removed[:, exp.pattern.nodes] = exp.pattern.removed
    values[removed] = -1e9
    dirty = replace(data, values=values, mask=mask)
    out = []
    for d in (data, dirty):
        exp, model = build_experiment(c, d)
        train_model(model, exp, RunDir.create(tmp_path, f"r{len(out)}"), progress=False)
        out.append((model.state_dict(), predict(model, exp, "test")))
    (wa, pa), (wb, pb) = out
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    np.testing.assert_array_equal(pa["pred"], pb["pred"])
    np.testing.assert_array_equal(pa["pred_removed"], pb["pred_removed"])
    assert np.abs(pb["true"]).max() > 1e8  # the poison is in the truth that is scored


@pytest.mark.parametrize("model", ["bicubic", "idw-upsample", "idw"])
def test_parameter_free_models_run_the_grid_protocol_end_to_end(tmp_path, model):
    run, metrics = run_experiment(cfg(model), tmp_path, data=grid_data(), progress=False)
    hidden, removed = metrics["test"]["hidden"]["overall"], metrics["test"]["removed"]["overall"]
    assert 0 < hidden["mae"] < 3 and 0 < removed["mae"] < 3  # kelvin, on a smooth field
    assert hidden["count"] == 64 * 24  # every fine cell, each test step once


def test_grid_protocol_is_refused_where_it_does_not_apply():
    bad = cfg()
    bad.data.task = "krige"
    with pytest.raises(ValueError, match="grid protocol of task 'reconstruct'"):
        build_experiment(bad, grid_data())
    from stgraph.testing import synthetic_stations

    with pytest.raises(ValueError, match="not a grid"):
        build_experiment(cfg(), synthetic_stations(num_nodes=8, num_steps=96))


def test_fine_training_cells_uniform_or_a_compact_patch():
    """``train.subgraph: random`` draws the fine cells uniformly (the draw of randperm, as before);
    ``local`` draws a patch: a centre and its nearest cells, so a model convolving the fine map sees
    it filled around the centre, as at evaluation, not five in six cells empty."""
    data = grid_data(i=16, j=16)
    for mode in ("random", "local"):
        exp, _ = build_experiment(cfg(subgraph=mode, subgraph_size=16), data)
        w = exp.train.windows[torch.arange(4)]
        view = exp.task.training_view(
            w, exp.train.stations, exp.targets, exp.cfg.train, torch.Generator().manual_seed(3)
        )
        fine_cols = view.nodes[view.tgt] - 64  # fine cells are the nodes after the 8 x 8 coarse ones
        assert len(fine_cols) == 16 and len(set(fine_cols)) == 16
        rows, cols = np.divmod(fine_cols, 16)
        box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        if mode == "random":
            gen = torch.Generator().manual_seed(3)  # the fine cells are the view's first draw
            coarse = np.isin(exp.train.stations, exp.task._pattern().nodes)
            expected = np.sort(torch.randperm(256, generator=gen)[:16].numpy())
            assert coarse.sum() == 64 and list(fine_cols) == list(expected)
            assert box > 64  # scattered over the grid
        else:
            assert box <= 36  # a compact patch around one cell (lon spacing is shorter here: not square)
