"""Station mini-batches in training: the subgraph is drawn before the windows are cut, the batch
holds only its stations, runs are bit-identical to drawing after the cut, val/test stations never
enter, and a tiny AQ-Net learns with local subgraphs and chunked evaluation."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.evaluate import predict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.fitting import fit_context, fit_model
from stgraph.engine.run import build_experiment
from stgraph.engine.run_folder import RunDir
from stgraph.engine.station_batches import StationBatcher
from stgraph.engine.trainer import train_model
from stgraph.geo import latlon_to_xyz
from stgraph.testing import synthetic_stations
from tests.models.test_contract import TINY

DATA = synthetic_stations(num_nodes=40, num_steps=24 * 6, num_channels=2, seed=3)


def cfg(task="krige", model="idw", data=None, **train):
    return config_from_dict({
        "data": {"task": task, "window": 8, "horizon": 4, "stride": 4, "eval_stride": 8, "eval_steps": [],
                 "target_channels": ["x0"], **(data or {})},
        "split": {"method": "random", "test": 8, "val": 4, "seed": 0},
        "model": {"name": model, "hparams": TINY.get(model, {})},
        "train": {"epochs": 1, "batch_size": 4, "max_train_windows": 12, "max_eval_windows": 6, **train},
    })  # fmt: skip


def views(exp, *, cut_first: bool, n_batches: int = 3, seed: int = 5):
    """The task's training views of the first batches, the subgraph drawn before the cut (the
    engine) or after it (the task's own draw on the full-width batch, as before)."""
    gen, batcher, task = torch.Generator().manual_seed(seed), StationBatcher(exp), exp.task
    windows, nodes, out = exp.train.windows, exp.train.stations, []
    for idx in torch.arange(n_batches * 4).split(4):
        w, n = batcher.cut(windows, idx, nodes, gen) if cut_first else (windows[idx], nodes)
        out.append(task.training_view(w, n, exp.targets, exp.cfg.train, gen))
    return out


def assert_same_view(a, b):
    assert np.array_equal(a.nodes, b.nodes) and np.array_equal(a.src, b.src) and np.array_equal(a.tgt, b.tgt)
    for f in ("x", "x_mask", "y", "y_mask", "x_time", "start"):
        assert torch.equal(getattr(a.w, f), getattr(b.w, f)), f
    for ta, tb in zip(a.terms, b.terms, strict=True):
        assert ta.which == tb.which and torch.equal(ta.y, tb.y) and torch.equal(ta.mask, tb.mask)


@pytest.mark.parametrize(
    "task,subgraph,masking",
    [("krige", "random", "batch"), ("krige", "local", "batch"), ("forecast", "local", "sample"),
     ("reconstruct", "local", "batch")],
)  # fmt: skip
def test_drawing_before_the_cut_gives_the_same_batches_with_only_the_subgraph_read(task, subgraph, masking):
    c = cfg(task, subgraph_size=7, subgraph=subgraph, node_masking=masking)
    exp = prepare_experiment(c, DATA)
    before, after = views(exp, cut_first=True), views(exp, cut_first=False)
    for a, b in zip(before, after, strict=True):
        assert_same_view(a, b)
        assert len(a.nodes) == 7 and a.w.x.size(2) == 7  # the batch holds its 7 stations only


def test_the_cut_reads_the_series_at_the_subgraph_columns_only():
    exp = prepare_experiment(cfg(subgraph_size=5, subgraph="local"), DATA)
    windows, nodes = exp.train.windows, exp.train.stations
    read = []

    class Spy(torch.Tensor):  # records how many columns every read of the series takes
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.Tensor.__getitem__ and args[0] is series:
                index = args[1] if isinstance(args[1], tuple) else (args[1],)
                read.append(index[1].numel() if len(index) > 1 else series.size(1))  # no column index: all
            return super().__torch_function__(func, types, args, kwargs or {})

    series = windows.values = windows.values.as_subclass(Spy)
    w, cut = StationBatcher(exp).cut(windows, torch.arange(4), nodes, torch.Generator().manual_seed(0))
    assert read == [5] and w.x.size(2) == 5 and len(cut) == 5


def test_local_subgraphs_are_seeded_compact_and_sized():
    exp = prepare_experiment(cfg(subgraph_size=9, subgraph="local"), DATA)
    nodes = exp.train.stations
    xyz = latlon_to_xyz(exp.data.latlon[nodes])
    batcher = StationBatcher(exp)

    def draw(seed):
        return [
            batcher.cut(exp.train.windows, torch.arange(2), nodes, g)[1]
            for g in [torch.Generator().manual_seed(seed)] * 4
        ]

    first, again, other = draw(1), draw(1), draw(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))  # seeded
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    for sub in first:
        assert len(sub) == 9 and len(set(sub)) == 9
        cols = np.flatnonzero(np.isin(nodes, sub))
        d = np.linalg.norm(xyz[:, None] - xyz[None, cols], axis=-1)  # (N_train, 9)
        # some member is a centre whose 9 nearest training stations are exactly the subgraph
        assert any(set(np.argsort(d[:, j], kind="stable")[:9]) == set(cols) for j in range(9))


def poisoned(data, stations):
    values, mask = data.values.copy(), data.mask.copy()
    values[:, stations], mask[:, stations] = 1e9, True
    return replace(data, values=values, mask=mask)


@pytest.mark.parametrize("subgraph", ["random", "local"])
def test_station_batches_never_hold_val_or_test_stations(subgraph):
    c = cfg(subgraph_size=6, subgraph=subgraph, max_train_windows=None)
    clean = prepare_experiment(c, DATA)
    hidden = np.concatenate([clean.split.indices(clean.data, r) for r in ("val", "test")])
    dirty = prepare_experiment(c, poisoned(DATA, hidden))
    a, b = views(clean, cut_first=True, n_batches=5), views(dirty, cut_first=True, n_batches=5)
    for va, vb in zip(a, b, strict=True):
        assert_same_view(va, vb)
        assert not np.isin(va.nodes, hidden).any()
    for (ba, _), (bb, _) in zip(fit_context(None, clean).train_batches(), fit_context(None, dirty).train_batches(),
                                strict=True):  # fmt: skip
        assert torch.equal(ba.x, bb.x) and torch.equal(ba.pos_src, bb.pos_src) and torch.equal(ba.pos_tgt, bb.pos_tgt)
        assert ba.x.size(2) + ba.pos_tgt.size(0) == 6


def test_subgraph_size_below_two_is_refused():
    with pytest.raises(ValueError, match="train.subgraph_size: expected null or an integer >= 2"):
        cfg(subgraph_size=1)


def test_aqnet_learns_from_local_station_batches_with_chunked_evaluation(tmp_path):
    data = synthetic_stations(num_nodes=60, num_steps=24 * 8, seed=1)
    c = config_from_dict({
        "data": {"task": "krige", "window": 12, "stride": 2, "eval_stride": 12, "eval_steps": [],
                 "target_channels": ["x0"]},
        "split": {"method": "random", "test": 10, "val": 6, "seed": 0},
        "model": {"name": "aqnet", "hparams": {**TINY["aqnet"], "anchor": "none"}},
        "train": {"epochs": 4, "patience": 10, "batch_size": 8, "max_train_windows": 48, "lr": 3e-3, "seed": 0,
                  "subgraph_size": 12, "subgraph": "local", "eval_target_chunk": 3, "eval_neighbours": 10},
    })  # fmt: skip
    exp, net = build_experiment(c, data)
    run = RunDir.create(tmp_path, "r")
    summary = train_model(net, exp, run, progress=False)
    losses = [r["train_loss"] for r in run.read_log()]
    assert summary["epochs_run"] == 4 and np.isfinite(summary["best_val"])
    assert losses[-1] < 0.8 * losses[0], losses  # the loss falls
    arrays = predict(net, exp, "test")
    assert arrays["pred"].shape[2] == 10 and np.isfinite(arrays["pred"]).all()


@pytest.mark.parametrize("model", ["grin", "ignnk", "dcrnn", "stgcn", "aqnet", "gp"])
def test_every_graph_model_trains_on_station_subgraphs_and_evaluates_in_chunks(model, tmp_path):
    """The GNNs (on the subgraph), AQ-Net and the local GP: every training batch holds exactly
    ``subgraph_size`` stations, training runs, and chunked evaluation with bounded neighbourhoods
    gives finite estimates at every test station."""
    hparams = {**TINY[model], "neighbours": 4} if model == "gp" else TINY[model]
    c = config_from_dict({
        "data": {"task": "krige", "window": 8, "stride": 8, "eval_stride": 8, "eval_steps": [],
                 "target_channels": ["x0"]},
        "split": {"method": "random", "test": 6, "val": 3, "seed": 0},
        "model": {"name": model, "hparams": hparams},
        "train": {"epochs": 1, "batch_size": 4, "max_train_windows": 8, "max_eval_windows": 4, "seed": 0,
                  "subgraph_size": 8, "subgraph": "local", "eval_target_chunk": 2, "eval_neighbours": 5},
    })  # fmt: skip
    exp, net = build_experiment(c, DATA)
    sizes = [b.x.size(2) + b.pos_tgt.size(0) for b, _ in fit_context(net, exp).train_batches()]
    assert sizes and set(sizes) == {8}
    fitted = fit_model(net, exp)
    if net.trainable:
        summary = train_model(net, exp, RunDir.create(tmp_path, "r"), progress=False)
        assert summary["epochs_run"] == 1 and np.isfinite(summary["best_val"])
    else:
        assert fitted and np.isfinite(fitted["val_mae"])
    arrays = predict(net, exp, "test")
    assert arrays["pred"].shape[2] == 6 and np.isfinite(arrays["pred"]).all()
