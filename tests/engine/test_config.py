import textwrap

import pytest

from stgraph.engine.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults():
    cfg = config_from_dict({})
    assert cfg == ExperimentConfig()
    assert cfg.data.target_channels == ["PM2.5"] and cfg.data.eval_steps is None
    assert cfg.split.method == "kfold" and cfg.split.time_gap is None
    assert config_from_dict(None) == cfg
    assert ExperimentConfig().data.eval_days is not ExperimentConfig().data.eval_days  # no shared mutable defaults


def test_load_and_round_trip(tmp_path):
    path = _write(
        tmp_path,
        """
        name: small
        data:
          dataset: aqi36
          input_channels: [PM2.5, PM10]
          start: 2014-01-01        # stays a string, not a date
          task: krige
          eval_steps: [1, 3]
        split: {method: explicit, test_stations: ["1001", "1002"], val: 0.2}
        model: {name: aqnet, hparams: {k: 8, layers: [16, 16], enc: {dropout: 0.1}}}
        train: {lr: 3e-4, epochs: 2, max_train_windows: 100, weight_decay: 0}
        """,
    )
    cfg = load_config(path)
    assert cfg.name == "small"
    assert cfg.data.start == "2014-01-01" and cfg.data.task == "krige"
    assert cfg.data.input_channels == ["PM2.5", "PM10"]
    assert cfg.split.test_stations == ["1001", "1002"] and cfg.split.val == 0.2
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0  # int where a float is expected is fine
    assert cfg.model.hparams == {"k": 8, "layers": [16, 16], "enc": {"dropout": 0.1}}

    out = save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(out) == cfg
    d = config_to_dict(cfg)
    assert d["train"]["epochs"] == 2 and d["data"]["eval_days"] == []
    d["model"]["hparams"]["enc"]["dropout"] = 0.5  # a deep copy
    assert cfg.model.hparams["enc"]["dropout"] == 0.1
    assert config_from_dict(d).model.hparams["enc"]["dropout"] == 0.5


def test_round_trip_quotes_strings_that_look_like_other_types(tmp_path):
    cfg = ExperimentConfig(name="1e-3", data=DataConfig(target_channels=["true", "null", "12"], end="2015-01-01"))
    assert load_config(save_config(cfg, tmp_path / "c.yaml")) == cfg


def test_empty_file_is_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == ExperimentConfig()


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = _write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ValueError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "train.lrr" in msg
    assert "lr" in msg and "batch_size" in msg  # lists the allowed keys

    with pytest.raises(ConfigError, match="'trian'"):
        load_config(_write(tmp_path, "trian: {}\n", "b.yaml"))


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('train:\n  epochs: "ten"\n', "train.epochs", "expected int, got str 'ten'"),
        ("train:\n  epochs: true\n", "train.epochs", "expected int"),  # bool is not an int
        ("train:\n  epochs: 2.5\n", "train.epochs", "expected int"),
        ("train:\n  lr: null\n", "train.lr", "expected float, got null"),
        ("train:\n  lr: fast\n", "train.lr", "expected float"),
        ("data:\n  eval_steps: [6, x]\n", "data.eval_steps[1]", "expected int"),
        ("data:\n  target_channels: PM2.5\n", "data.target_channels", "expected list of str"),
        ("data:\n  task: classify\n", "data.task", "expected one of ['forecast', 'impute', 'krige'"),
        ("split:\n  method: kfolds\n", "split.method", "one of 'kfold'"),
        ("data: [1]\n", "data", "expected a mapping"),
        ("model:\n  hparams: 3\n", "model.hparams", "expected a mapping"),
        ("data:\n  daily: 1\n", "data.daily", "expected bool"),
    ],
)
def test_type_errors(tmp_path, text, key, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and expected in msg


def test_none_where_allowed():
    cfg = config_from_dict({"data": {"data_dir": None, "input_channels": None}, "split": {"time_gap": None}})
    assert cfg.data.data_dir is None and cfg.split.time_gap is None
    with pytest.raises(ConfigError, match=r"data\.input_channels: expected list of str or null"):
        config_from_dict({"data": {"input_channels": "PM2.5"}})


def test_overrides(tmp_path):
    path = _write(tmp_path, "model:\n  hparams: {k: 4, enc: {dropout: 0.1}}\n")
    cfg = load_config(
        path,
        [
            "train.lr=3e-4",
            "data.eval_steps=[6,12]",
            "model.hparams.k=10",
            "model.hparams.enc.layers=2",
            "model.hparams.new.deep=x",
            "data.start=2014-01-01",
            "data.input_channels=null",
            "split.test_stations=[a, b]",
            "train={epochs: 3}",  # a whole section merges
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.eval_steps == [6, 12]
    assert cfg.model.hparams == {"k": 10, "enc": {"dropout": 0.1, "layers": 2}, "new": {"deep": "x"}}
    assert cfg.data.start == "2014-01-01"
    assert cfg.split.test_stations == ["a", "b"]
    assert cfg.train.epochs == 3 and cfg.train.batch_size == TrainConfig().batch_size


def test_override_errors(tmp_path):
    path = _write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["train.lrr=1"])
    assert "train.lrr" in str(e.value) and str(path) in str(e.value) and "weight_decay" in str(e.value)
    with pytest.raises(ConfigError, match="train.epochs: expected int, got str 'ten'"):
        load_config(path, ["train.epochs=ten"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="has no key"):
        load_config(path, ["train.epochs.x=1"])
    with pytest.raises(ConfigError, match="has no key"):
        load_config(_write(tmp_path, "model: {hparams: {k: 3}}\n", "h.yaml"), ["model.hparams.k.x=1"])


@pytest.mark.parametrize(
    "d, match",
    [
        ({"data": {"task": "krige", "scaler": "station"}}, "data.scaler: 'station' needs a task without target"),
        ({"split": {"val_months": [2]}}, "split.val_months needs split.test_months"),
        ({"split": {"test_months": [3], "val_months": [3, 4]}}, r"share months \[3\]"),
        ({"split": {"test_months": [3], "val_months": [13]}}, r"split.val_months: months are 1-12, got \[13\]"),
    ],
)
def test_protocol_options_that_do_not_fit_are_refused(d, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(d)
    assert config_from_dict({"data": {"task": "impute", "scaler": "station"}}).data.scaler == "station"


@pytest.mark.parametrize(
    "d, match",
    [
        ({"data": {"task": "krige"}, "split": {"pattern_ratio": 0.6}},
         r"split.pattern_ratio=0.6 is an option of task 'reconstruct'"),
        ({"data": {"task": "forecast", "grid_coarsen": 4}}, r"data.grid_coarsen=4 is an option of task 'reconstruct'"),
        ({"data": {"task": "reconstruct"}, "train": {"hide_ratio": "uniform"}},
         r"train.hide_ratio='uniform' is an option of task 'impute'"),
        ({"data": {"task": "krige"}, "split": {"impute_training": "in-sample"}},
         r"split.impute_training='in-sample' .* task 'impute'"),
        ({"data": {"task": "krige"}, "train": {"hide_block": 3}},
         r"train.hide_block=3 is an option of task 'impute', which a 'krige' run"),
    ],
)  # fmt: skip
def test_an_option_another_task_owns_is_refused_not_ignored(d, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(d)


def test_a_task_reads_its_own_options_and_defaults_pass_everywhere():
    cfg = config_from_dict({"data": {"task": "reconstruct"}, "split": {"pattern_ratio": 0.6}})
    assert cfg.split.pattern_ratio == 0.6
    assert config_from_dict({"data": {"task": "impute"}, "train": {"hide_ratio": "uniform", "hide_block": 4}})
    for task in ("forecast", "krige", "impute", "reconstruct"):  # every owned option at its default
        config_from_dict({"data": {"task": task}, "split": {"pattern_ratio": 0.4}, "train": {"hide_block": 1}})
