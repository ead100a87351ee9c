"""Every registered model passes one contract for every task it declares."""

import pytest

from stgraph.models import MODELS, DataSizes, build_model, get_model_class
from tests.models.contract import check_contract

TINY = {
    "aqnet": {"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0},
    "aqnet-ref": {"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0},
    "dcrnn": {"hidden_channels": 8, "num_layers": 1, "max_diffusion_step": 1, "k": 3},
    "ignnk": {"hidden_channels": 16, "order": 1, "k": 3},
    "grin": {"hidden_channels": 16, "ff_channels": 16, "kernel_size": 1, "k": 3},
    "spin": {"hidden_channels": 8, "num_layers": 2, "eta": 1, "k": 3},
    "spin-h": {"h_channels": 8, "z_channels": 8, "z_heads": 2, "num_layers": 2, "eta": 1, "k": 3},
    "diffrecon": {"d_model": 8, "heads": 2, "gnn_k": 3, "fine_k": 3, "step_dim": 8, "diffusion_steps": 6,
                  "sampling_steps": 3, "num_samples": 2, "top_k": 1, "num_kernels": 2},
    "amlsg": {"k": 3, "lags": [1, 2], "n_folds": 3, "n_estimators": 40, "mlp_epochs": 3, "mlp_hidden": [16],
              "max_rows": 1500, "max_val_rows": 400, "num_threads": 1},
    "lgbm": {"k": 3, "lags": [1, 2], "n_estimators": 40, "max_rows": 1500, "max_val_rows": 400, "num_threads": 1},
    "idw": {},
    "pypots": {"model": "BRITS", "options": {"rnn_hidden_size": 8}},
    "knn": {"k": 2},
    "gp": {},
    "bicubic": {},
    "idw-upsample": {},
    "lerp": {},
    "lerp-knn": {"tau": 4.0},
    "persistence": {},
    "seasonal-naive": {"season": 4},
    "stgcn": {"hidden_channels": 16, "bottleneck_channels": 8, "kt": 3, "ks": 3, "k": 3, "dropout": 0.0},
    "linear": {},
    "lstm": {"hidden_channels": 16, "num_layers": 1, "dropout": 0.0},
    "patchtst": {
        "patch_len": 4,
        "stride": 2,
        "d_model": 16,
        "heads": 2,
        "num_layers": 1,
        "ff_channels": 32,
        "dropout": 0.0,
    },
}
# models with too few parameters to fit a random batch; their own tests check their fitting.
# diffrecon's training loss is a noise-prediction loss at a fresh random diffusion step and noise draw
# per call, so one call's value is noisy and far from 0 (at low noise levels, ε = (x_t - sqrt(ᾱ) x0) /
# sqrt(1 - ᾱ) takes x0 to a precision the tiny model does not reach): it does not fall to 30% of its
# start on one batch in 150 steps (krige, reconstruct); tests/models/test_diffrecon.py checks that its
# loss at fixed draws falls with training.
NO_OVERFIT = {"gp", "diffrecon"}
# models whose visible nodes must form a full regular grid run the same checks on a grid in their own tests
GRID_ONLY = {"bicubic"}
CASES = [
    (name, task) for name in sorted(MODELS) if name not in GRID_ONLY for task in sorted(get_model_class(name)[0].tasks)
]


def test_every_model_is_in_the_contract():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize(("name", "task"), CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_contract(name, task):
    check_contract(name, TINY[name], task, overfit=name not in NO_OVERFIT)


def test_unknown_model_and_hparam_are_errors():
    sizes = DataSizes(2, 1, (0,), 12, 3)
    with pytest.raises(KeyError, match="choose one of"):
        build_model("aqnett", sizes)
    with pytest.raises(ValueError, match="hidden_size"):
        build_model("aqnet", sizes, {"hidden_size": 3})
    with pytest.raises(ValueError, match="k="):
        build_model("aqnet", sizes, {"k": "twenty"})


def test_sizes_never_infer_the_task_from_the_horizon():
    assert not DataSizes(2, 1, (0,), 24, 24).aligned  # a 24 h -> 24 h forecast is a forecast
    assert DataSizes(2, 1, (0,), 24, 24, task="krige").aligned
    with pytest.raises(ValueError, match="horizon must equal window"):
        DataSizes(2, 1, (0,), 24, 12, task="impute")


ALL = {"forecast", "krige", "impute", "reconstruct"}
TASK_TABLE = {  # docs/models.md's table of which model runs which task
    "aqnet": ALL,
    "aqnet-ref": ALL,
    "dcrnn": ALL,
    "stgcn": ALL,
    "ignnk": ALL,
    "grin": {"krige", "impute", "reconstruct"},
    "spin": {"krige", "impute", "reconstruct"},
    "spin-h": {"krige", "impute", "reconstruct"},
    "diffrecon": {"krige", "impute", "reconstruct"},
    "idw": ALL,
    "amlsg": {"forecast", "krige", "impute"},
    "lgbm": {"forecast", "krige", "impute"},
    "knn": {"krige", "impute", "reconstruct"},
    "gp": {"krige", "impute", "reconstruct"},
    "lerp": {"impute"},
    "pypots": {"impute", "reconstruct"},
    "lerp-knn": {"impute"},
    "bicubic": {"reconstruct"},
    "idw-upsample": {"krige", "reconstruct"},
    "persistence": {"forecast", "impute"},
    "seasonal-naive": {"forecast"},
    "linear": {"forecast"},
    "lstm": {"forecast"},
    "patchtst": {"forecast"},
}


def test_declared_tasks_match_the_readme_table():
    assert {name: set(get_model_class(name)[0].tasks) for name in MODELS} == TASK_TABLE


ANCHORED = [
    (name, task)
    for name, task in CASES
    if "anchor" in {f.name for f in __import__("dataclasses").fields(get_model_class(name)[1])}
]


@pytest.mark.parametrize(("name", "task"), ANCHORED, ids=[f"{n}-{t}" for n, t in ANCHORED])
def test_untrained_anchored_model_is_its_anchor(name, task):
    """Every model with an ``anchor`` hyperparameter, built with ``anchor: auto``, outputs exactly
    the anchor before training (a zero-initialised residual), in train and eval mode. Models whose
    targets are a fixed readout of the visible stations (``aqnet-ref``) are held to it at those."""
    import torch

    from stgraph.models.anchors import anchor_prediction
    from tests.models.contract import make_batch

    torch.manual_seed(0)
    batch, sizes = make_batch(task)
    model = build_model(name, sizes, {**TINY[name], "anchor": "auto"})
    want = anchor_prediction(batch, sizes, "auto")
    for mode in (model.train, model.eval):
        mode()
        got = model(batch)
        if model.learns_interpolation:
            torch.testing.assert_close(got.tgt, want.tgt)
        observed = batch.x_mask[..., :1].expand_as(got.src) if sizes.aligned else torch.zeros_like(got.src, dtype=bool)
        # where a visible cell was observed, a model may echo its input instead of the anchor's copy
        torch.testing.assert_close(torch.where(observed, want.src, got.src), want.src)
