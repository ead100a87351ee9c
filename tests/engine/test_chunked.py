"""Station mini-batches: local training subgraphs, and evaluation streamed over target chunks that
equals whole-network evaluation where both fit."""

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict, config_to_dict
from stgraph.engine.evaluate import predict
from stgraph.engine.run import build_experiment
from stgraph.engine.run_folder import RunDir
from stgraph.engine.tasks.base import subgraph_columns
from stgraph.engine.trainer import train_model, validate
from stgraph.models import MODELS, get_model_class
from stgraph.testing import synthetic_stations
from tests.models.test_contract import GRID_ONLY, TINY


def _cfg(model, **train):
    return config_from_dict({
        "data": {"task": "krige", "window": 8, "stride": 8, "eval_stride": 8, "eval_steps": [],
                 "target_channels": ["x0"]},
        "split": {"method": "random", "test": 8, "val": 3, "seed": 0},
        "model": {"name": model, "hparams": TINY[model]},
        "train": {"epochs": 1, "max_train_windows": 8, "max_eval_windows": 6, **train},
    })  # fmt: skip


DATA = synthetic_stations(num_nodes=30, num_steps=24 * 5)
# models whose estimate at a target does not depend on the other targets; not here: the GNNs whose
# hidden nodes exchange messages (grin, ignnk, dcrnn, stgcn: a chunk is a smaller graph), diffrecon
# (its draws depend on the call's shapes) and amlsg/lgbm (fitted on training batches before predicting)
INTERACTING = {"grin", "spin", "spin-h", "ignnk", "dcrnn", "stgcn", "diffrecon", "amlsg", "lgbm"}
KRIGE = [m for m in sorted(MODELS) if m not in GRID_ONLY | INTERACTING and "krige" in get_model_class(m)[0].tasks]


@pytest.mark.parametrize("model", KRIGE)
def test_chunked_evaluation_equals_whole_network_evaluation(model):
    """Targets one at a time, every visible station in each call: the same predictions and
    validation score as all targets at once, for every model that runs krige."""
    exp, net = build_experiment(_cfg(model), DATA)
    whole = predict(net, exp, "test")
    exp1, _ = build_experiment(_cfg(model, eval_target_chunk=1), DATA)
    chunked = predict(net, exp1, "test")
    np.testing.assert_allclose(chunked["pred"], whole["pred"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(chunked["pred_visible"], whole["pred_visible"], rtol=1e-4, atol=1e-4)
    assert validate(net, exp1) == pytest.approx(validate(net, exp), rel=1e-4)


def test_local_models_give_the_same_numbers_with_bounded_neighbourhoods():
    exp, net = build_experiment(_cfg("idw"), DATA)
    net.params.k = 4
    whole = predict(net, exp, "test")
    exp2, _ = build_experiment(_cfg("idw", eval_target_chunk=3, eval_neighbours=4), DATA)
    local = predict(net, exp2, "test")
    np.testing.assert_allclose(local["pred"], whole["pred"], rtol=1e-5, atol=1e-5)


def test_bounded_neighbourhoods_are_refused_where_visible_cells_are_scored():
    """reconstruct scores the visible stations' removed cells: a visible station outside every chunk's
    neighbourhood would silently go unscored, so eval_neighbours is refused, naming the option."""
    d = config_to_dict(_cfg("idw", eval_target_chunk=3, eval_neighbours=4))
    d["data"]["task"] = "reconstruct"
    d["split"].update(pattern="random", pattern_ratio=0.4)
    exp, net = build_experiment(config_from_dict(d), DATA)
    with pytest.raises(ValueError, match="eval_neighbours.*'reconstruct'"):
        predict(net, exp, "test")


def test_local_subgraphs_are_compact_seeded_and_exclude_hidden_roles():
    latlon = DATA.latlon
    tc = _cfg("idw", subgraph_size=6, subgraph="local").train
    a = subgraph_columns(len(latlon), tc, torch.Generator().manual_seed(3), latlon)
    b = subgraph_columns(len(latlon), tc, torch.Generator().manual_seed(3), latlon)
    assert np.array_equal(a, b) and len(a) == 6
    d = np.linalg.norm(latlon[:, None] - latlon[None], axis=-1)
    centre = a[np.argmin(d[np.ix_(a, a)].max(1))]
    assert d[centre, a].max() <= np.sort(d[centre])[5] + 1e-12  # the 6 nearest of some member
    exp, net = build_experiment(_cfg("ignnk", subgraph_size=6, subgraph="local", epochs=2), DATA)
    hidden = set(exp.split.indices(exp.data, "test")) | set(exp.split.indices(exp.data, "val"))
    assert not hidden & set(exp.train.stations)  # windows (and so subgraphs) hold train-role stations only
    summary = train_model(net, exp, RunDir.create(pytest.importorskip("tempfile").mkdtemp(), "r"), progress=False)
    assert summary["epochs_run"] == 2 and np.isfinite(summary["best_val"])
