"""The peers' plumbing (``benchmarks/peers``): an outside model's completed windows are scored by
the engine on every test evaluation cell in original units, its graph is GRIN's, and its time
budget stops training only once something has been validated."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stgraph.engine.experiment import prepare_experiment
from tests.engine.test_impute import impute_cfg

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"


def _load(name: str):
    sys.path.insert(0, str(PEERS))
    spec = importlib.util.spec_from_file_location(f"peers_{name}", PEERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_peer_is_scored_on_every_test_evaluation_cell_in_original_units(aqi36):
    common = _load("common")
    data = aqi36.select_times("2015-02-01", "2015-04-30")
    cfg = impute_cfg()
    cfg.train.max_eval_windows = None
    exp = prepare_experiment(cfg, data)
    proto = common.Protocol(exp, int(exp.targets[0]), np.zeros((1, 12, 36)), np.zeros((1, 12, 36)),
                            np.zeros((1, 12, 36)))  # fmt: skip
    hid = common.score_peer(proto, lambda x: np.full(x.shape, 0.5, dtype=np.float32))  # scaled 0.5 everywhere
    test = exp.periods.period("test")[:, None, None] & data.eval_mask
    cells = test[..., int(exp.targets[0])]  # (T, N)
    assert hid["overall"]["count"] == int(cells.sum()) > 0
    ch, scaler = int(exp.targets[0]), exp.train.scaler
    constant = scaler.mean[ch] + 0.5 * scaler.std[ch]  # the scaler is per channel
    expected = np.abs(data.values[..., ch][cells] - constant).mean()
    assert hid["overall"]["mae"] == pytest.approx(expected, rel=1e-4)


def test_a_sampling_peer_is_scored_by_its_median_with_crps_and_coverage(aqi36):
    common = _load("common")
    data = aqi36.select_times("2015-02-01", "2015-04-30")
    cfg = impute_cfg()
    cfg.train.max_eval_windows = None
    exp = prepare_experiment(cfg, data)
    proto = common.Protocol(exp, int(exp.targets[0]), np.zeros((1, 12, 36)), np.zeros((1, 12, 36)),
                            np.zeros((1, 12, 36)))  # fmt: skip
    offsets = np.array([0.2, 0.5, 0.9], dtype=np.float32)[:, None, None, None]  # 3 samples, median 0.5
    hid = common.score_peer(proto, lambda x: np.zeros((1, *x.shape), dtype=np.float32) + offsets)
    point = common.score_peer(proto, lambda x: np.full(x.shape, 0.5, dtype=np.float32))
    assert hid["overall"]["mae"] == pytest.approx(point["overall"]["mae"], rel=1e-6)
    assert np.isfinite(hid["overall"]["crps"]) and 0.0 <= hid["overall"]["coverage90"] <= 1.0
    assert hid["overall"]["samples"] == 3 and "crps" not in point["overall"]


def test_grin_peer_graph_is_the_thresholded_gaussian_kernel_without_self_loops(aqi36):
    grin = _load("tsl_grin_peer")
    st = aqi36.stations
    index, weight = grin.gaussian_graph(st["latitude"].to_numpy(float), st["longitude"].to_numpy(float))
    assert (index[0] != index[1]).all() and (weight >= 0.1).all() and (weight <= 1).all()
    dense = torch.zeros(36, 36)
    dense[index[0], index[1]] = weight
    assert torch.equal(dense, dense.T) and 0 < len(weight) < 36 * 35


def test_the_time_budget_interrupts_only_after_an_epoch_was_validated():
    pypots_peer = _load("pypots_peer")
    common = _load("common")
    deadline, counter, state = common.Deadline(0.0), {"steps": 0}, {"validated": False}
    param = torch.nn.Parameter(torch.ones(1))
    opt = pypots_peer.budget_optimizer(torch.optim.SGD, deadline, counter, lambda: state["validated"])([param], lr=0.1)
    param.grad = torch.ones(1)
    opt.step()  # past the deadline, nothing validated yet: the step is taken
    assert counter["steps"] == 1
    state["validated"] = True
    with pytest.raises(KeyboardInterrupt):
        opt.step()
    assert counter["steps"] == 1
