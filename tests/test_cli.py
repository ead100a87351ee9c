"""The CLI calls the same functions the rest of the tests call."""

import json
import re

import pandas as pd

from stgraph.cli import main
from stgraph.testing import synthetic_stations


def test_datasets_list_and_info(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "uci-beijing-12" in out and "aqi36" in out and "cn-stations" in out
    assert main(["datasets", "info", "aqi36"]) == 0
    out = capsys.readouterr().out
    assert "STMVL-Release.zip" in out and "pm25_ground.txt" in out
    assert main(["datasets", "info", "nope"]) == 1
    assert "available" in capsys.readouterr().err


def test_summary_on_real_data_writes_map(tmp_path, capsys):
    png = tmp_path / "map.png"
    assert main(["summary", "uci-beijing-12", "--offline", "--k", "4", "--map", str(png), "--json"]) == 0
    out = capsys.readouterr().out
    assert "stations         12" in out and "2013-03-01" in out and "PM2.5" in out
    info = json.loads(out[out.index("{") :])
    assert info["graph"]["num_components"] == 1 and info["graph"]["degree_min"] >= 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_summary_on_your_own_long_file(tmp_path, capsys):
    data = synthetic_stations(num_nodes=5, num_steps=48, seed=1)
    t, n, _ = data.values.shape
    long = pd.DataFrame(
        {
            "station": pd.Series(data.station_ids * t),
            "time": data.times.repeat(n),
            "pm25": data.values[..., 0].reshape(-1),
        }
    )
    long.to_csv(tmp_path / "m.csv", index=False)
    data.stations.to_csv(tmp_path / "st.csv", index=False)
    assert main(["summary", "--long", str(tmp_path / "m.csv"), "--stations", str(tmp_path / "st.csv"), "--k", "2"]) == 0
    assert "stations         5" in capsys.readouterr().out


def test_bad_file_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("station,time,pm25\nA,yesterday,1\n")
    (tmp_path / "st.csv").write_text("station,latitude,longitude\nA,1,2\n")
    assert main(["summary", "--long", str(tmp_path / "m.csv"), "--stations", str(tmp_path / "st.csv")]) == 1
    err = capsys.readouterr().err
    assert "m.csv" in err and "line 2" in err and "'time'" in err


def test_train_and_evaluate_on_a_real_slice(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: cli\n"
        "data: {dataset: uci-beijing-12, input_channels: [PM2.5, NO2, TEMP], start: '2014-01-01', end: '2014-02-15',"
        " task: krige, window: 12}\n"
        "split: {method: kfold, n_folds: 4, fold: 0}\n"
        "model: {name: aqnet, hparams: {hidden_channels: 8, num_layers: 1, heads: 2, k: 4}}\n"
        "train: {epochs: 3, batch_size: 8, max_train_windows: 16, max_eval_windows: 8}\n"
    )
    assert main(["train", str(cfg), "--set", "train.epochs=1", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    run = tmp_path / "runs" / "cli"
    for f in ("config.yaml", "split.json", "env.json", "metrics.json", "predictions.npz", "best.pt", "last.pt"):
        assert (run / f).exists(), f
    assert "epochs: 1" in (run / "config.yaml").read_text()
    env = json.loads((run / "env.json").read_text())
    assert env["knn_backend"] == "torch_cluster"
    assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])  # the tests run in a git checkout
    first = json.loads((run / "metrics.json").read_text())["test"]["hidden"]["overall"]
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "evaluation.json").read_text())["test"]["hidden"]["overall"]
    assert again == first and "hidden" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["test"]["hidden"]["overall"] == first  # untouched
    assert main(["train", str(cfg), "--set", "train.lrr=1"]) == 1
    assert "train.lrr" in capsys.readouterr().err


def test_own_network_from_csv_to_leaderboard_with_cli_commands_only(tmp_path, monkeypatch, capsys):
    """The documented path for a new user (docs/data.md): add the files as a dataset, look at it, train a config that
    names it, train one that names the files inline, and benchmark a suite on it."""
    from tests.datasets.test_user_cards import write_long_table

    monkeypatch.setenv("STGRAPH_HOME", str(tmp_path / "home"))
    long, stations = write_long_table(tmp_path / "files")
    assert main(["datasets", "add", "mycity", "--long", str(long), "--stations", str(stations),
                 "--units", "pm25=ug/m3"]) == 0  # fmt: skip
    assert "added dataset 'mycity': 8 stations" in capsys.readouterr().out
    assert main(["datasets", "list"]) == 0
    assert "[yours:" in capsys.readouterr().out
    assert main(["datasets", "info", "mycity"]) == 0
    assert "sha256" in capsys.readouterr().out
    common = (
        "data: {target_channels: [pm25], task: krige, window: 12, stride: 12}\n"
        "split: {method: kfold, n_folds: 4, val: 1}\n"
        "model: {name: idw}\n"
        "train: {epochs: 1}\n"
    )
    named = tmp_path / "named.yaml"
    named.write_text("name: named\n" + common.replace("data: {", "data: {dataset: mycity, "))
    inline = tmp_path / "inline.yaml"
    inline.write_text("name: inline\n" + common.replace("data: {", f"data: {{long: {long}, stations: {stations}, "))
    assert main(["train", str(named), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    out_named = capsys.readouterr().out
    assert main(["train", str(inline), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    out_inline = capsys.readouterr().out
    mae = lambda text: text.split("hidden")[1].split("MAE")[1].split()[0]  # noqa: E731
    assert mae(out_named) == mae(out_inline)  # the same data either way
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: mine\nfolds: [0, 1]\nseeds: [0]\n"
        "base:\n  data: {dataset: mycity, target_channels: [pm25], window: 12, stride: 12}\n"
        "  split: {method: kfold, n_folds: 4, val: 1}\n  train: {epochs: 1}\n"
        "tasks:\n  krige:\n    data: {task: krige}\n"
        "models:\n  idw: {}\n  knn: {hparams: {k: 2}}\n"
    )
    assert main(["benchmark", str(suite), "--out", str(tmp_path / "bench"), "--workers", "0", "--no-maps"]) == 0
    board = (tmp_path / "bench" / "leaderboard.md").read_text()
    assert "idw" in board and "knn" in board
    run = tmp_path / "bench" / "runs" / "krige" / "idw" / "fold0-seed0"
    nc = tmp_path / "mycity.nc"
    assert main(["reanalyse", str(run), "--grid", "39.6,40.4,116.0,117.0,0.1", "--out", str(nc), "--quiet"]) == 0
    assert main(["plot", "map", str(nc), "--time", "2024-01-02 08:00", "--out", str(tmp_path / "map.png")]) == 0
    assert main(["plot", "error-distance", str(tmp_path / "bench"), "--task", "krige",
                 "--out", str(tmp_path / "err.png")]) == 0  # fmt: skip
    assert (tmp_path / "map.png").stat().st_size > 10_000 and (tmp_path / "err.png").stat().st_size > 10_000


def test_reader_advice_is_reachable_from_the_command_line(tmp_path, monkeypatch, capsys):
    """Each option an error recommends exists on the command that raised it."""
    from tests.datasets.test_user_cards import write_long_table

    monkeypatch.setenv("STGRAPH_HOME", str(tmp_path / "home"))
    long, stations = write_long_table(tmp_path / "dup", duplicate=True)
    assert main(["datasets", "add", "dup", "--long", str(long), "--stations", str(stations)]) == 1
    assert "--duplicate-coordinates keep" in capsys.readouterr().err
    assert main(["datasets", "add", "dup", "--long", str(long), "--stations", str(stations),
                 "--duplicate-coordinates", "keep"]) == 0  # fmt: skip
    long, stations = write_long_table(tmp_path / "neg")
    text = long.read_text().splitlines()
    row = text[1].split(",")
    row[2] = "-5"
    long.write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    assert main(["summary", "--long", str(long), "--stations", str(stations), "--negative", "raise"]) == 1
    assert "--negative mask" in capsys.readouterr().err
    assert main(["summary", "--long", str(long), "--stations", str(stations), "--negative", "mask"]) == 0
    text = long.read_text().replace("2024-01-01 03:00", "2024-01-01 03:20")
    long.write_text(text)
    assert main(["summary", "--long", str(long), "--stations", str(stations)]) == 1
    assert "--irregular resample" in capsys.readouterr().err
    assert main(["summary", "--long", str(long), "--stations", str(stations), "--irregular", "resample"]) == 0
