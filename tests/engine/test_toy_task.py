"""A new task is one file: this one defines ``krige-last`` (kriging scored at the last step of
each window only: the current hour at stations never seen), registers it, and trains and
evaluates it end to end. Nothing else in the package knows it exists."""

import numpy as np
import pytest
import torch

from stgraph.engine.config import ConfigError, config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.run import run_experiment
from stgraph.engine.tasks import TASK_CLASSES, Krige, register_task
from stgraph.models.base import Prediction
from stgraph.testing import synthetic_stations


@register_task
class KrigeLast(Krige):
    """Hidden stations, trained as ``krige``, scored at the last input step of each window."""

    name = "krige-last"
    kind = "krige"

    def scored(self, pred: Prediction, y: torch.Tensor, m: torch.Tensor, src: np.ndarray, tgt: np.ndarray):
        last = torch.zeros(m.size(1), dtype=torch.bool)
        last[-1] = True
        return pred.tgt, y[:, :, tgt], m[:, :, tgt] & last.view(1, -1, 1, 1)


def cfg(task: str, model: str = "idw", **train):
    return config_from_dict(
        {
            "data": {"target_channels": ["x0"], "task": task, "window": 12, "eval_steps": []},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": model, "hparams": {"hidden_channels": 8, "k": 3} if model == "ignnk" else {}},
            "train": {"batch_size": 8, "max_eval_windows": None, **train},
        }
    )


def test_a_task_in_one_file_trains_and_is_scored_end_to_end(tmp_path):
    data = synthetic_stations(num_nodes=12, num_steps=24 * 12, num_channels=1, seed=3)
    exp = prepare_experiment(cfg("krige-last"), data)
    assert exp.task.name == "krige-last" and exp.sizes.task == "krige"  # models see the kind only

    _, m = run_experiment(cfg("krige-last"), tmp_path, name="idw", data=data, progress=False)
    test = np.flatnonzero(exp.periods.period("test"))
    _, tgt = exp.roles("test")
    last_steps = test[exp.cfg.data.window - 1 :]  # the last step of every test window (stride 1)
    assert m["test"]["hidden"]["overall"]["count"] == int(data.mask[last_steps][:, tgt, 0].sum())

    _, krige = run_experiment(cfg("krige"), tmp_path, name="idw-krige", data=data, progress=False)
    assert krige["test"]["hidden"]["overall"]["count"] > m["test"]["hidden"]["overall"]["count"]

    _, trained = run_experiment(cfg("krige-last", "ignnk", steps=20, val_every=10), tmp_path, name="ignnk",
                                data=data, progress=False)  # fmt: skip
    assert np.isfinite(trained["test"]["hidden"]["overall"]["mae"])
    assert trained["training"]["steps"] == 20


class KrigeLastHorizon(KrigeLast):
    """The toy task, reading one option of its own (declared here, in its file)."""

    name = "krige-last-horizon"
    options = frozenset({"data.horizon"})


@pytest.fixture
def registered_toy_with_option():
    register_task(KrigeLastHorizon)
    yield
    TASK_CLASSES.pop(KrigeLastHorizon.name)  # other tests' krige configs may set data.horizon


def test_a_task_owns_its_options(registered_toy_with_option):
    """A ``krige-last-horizon`` run may set ``data.horizon``, a ``krige`` run may not, and the error
    names the key and its owner."""
    with_horizon = {"target_channels": ["x0"], "window": 12, "horizon": 6}
    assert config_from_dict({"data": {"task": "krige-last-horizon", **with_horizon}}).data.horizon == 6
    with pytest.raises(ConfigError, match="data.horizon=6 is an option of task 'krige-last-horizon'"):
        config_from_dict({"data": {"task": "krige", **with_horizon}})


def test_an_unknown_task_and_a_taken_name_are_errors():
    with pytest.raises(ConfigError, match="data.task: expected one of .*krige-last"):
        cfg("krige-lost")

    class Impostor(Krige):
        name = "krige"

    with pytest.raises(ValueError, match="already registered"):
        register_task(Impostor)
