"""Bad inputs, one row each: the exit code and the key words of the message a user sees.

Each case writes its files into a temporary folder and returns the ``stgraph`` arguments; the
command must end with the exit code and print every key word (case-insensitive) on stderr, and
never a Python traceback. A case expected to succeed (exit 0) names words of its stdout instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stgraph.cli import main
from stgraph.testing import synthetic_stations

STATIONS = "station,latitude,longitude\nA,39.9,116.4\nB,40.0,116.5\nC,39.8,116.3\nD,40.1,116.2\n"


def long_csv(folder: Path, rows: str | bytes, name: str = "long.csv") -> str:
    path = folder / name
    path.write_bytes(rows if isinstance(rows, bytes) else rows.encode())
    return str(path)


def stations_csv(folder: Path, text: str = STATIONS) -> str:
    (folder / "st.csv").write_text(text)
    return str(folder / "st.csv")


def good_rows(stations=("A", "B", "C", "D"), hours=48, value="1.5") -> str:
    times = pd.date_range("2024-01-01", periods=hours, freq="1h").strftime("%Y-%m-%d %H:%M")
    return "station,time,pm25\n" + "".join(f"{s},{t},{value}\n" for t in times for s in stations)


def summary(folder: Path, rows, *extra: str, stations: str = STATIONS) -> list[str]:
    return ["summary", "--long", long_csv(folder, rows), "--stations", stations_csv(folder, stations), "--k", "2",
            *extra]  # fmt: skip


def config(folder: Path, text: str) -> list[str]:
    (folder / "c.yaml").write_text(text)
    return ["train", str(folder / "c.yaml"), "--out", str(folder / "runs"), "--quiet"]


BASE = (
    "name: bad\ndata: {dataset: uci-beijing-12, target_channels: [PM2.5], input_channels: [PM2.5], task: krige, "
    "start: '2014-01-01', end: '2014-01-20', window: 8, stride: 8}\nmodel: {name: idw}\n"
)


def with_train(train: str = "", data: str = "") -> str:
    text = BASE.replace("stride: 8}", f"stride: 8{', ' + data if data else ''}}}")
    return text + (f"train: {{{train}}}\n" if train else "")


def one_station(folder: Path) -> list[str]:
    long = long_csv(folder, good_rows(stations=("A",)))
    st = stations_csv(folder, "station,latitude,longitude\nA,39.9,116.4\n")
    (folder / "c.yaml").write_text(
        f"name: one\ndata: {{long: {long}, stations: {st}, target_channels: [pm25], task: krige, window: 8}}\n"
        "model: {name: idw}\n"
    )
    return ["train", str(folder / "c.yaml"), "--out", str(folder / "runs"), "--quiet"]


def junk_card(folder: Path, monkeypatch) -> list[str]:
    home = folder / "home"
    (home / "datasets").mkdir(parents=True)
    (home / "datasets" / "junk.yaml").write_text("name: [unclosed\n")
    monkeypatch.setenv("STGRAPH_HOME", str(home))
    return ["datasets", "list"]


def suite(folder: Path, text: str, *extra: str) -> list[str]:
    (folder / "s.yaml").write_text(text)
    return ["benchmark", str(folder / "s.yaml"), "--out", str(folder / "bench"), "--workers", "0", "--no-maps", *extra]


SUITE = (
    "name: s\nfolds: [0, 1]\nseeds: [0]\nbase:\n"
    "  data: {dataset: uci-beijing-12, target_channels: [PM2.5], input_channels: [PM2.5], start: '2014-01-01',"
    " end: '2014-01-20', window: 8, stride: 8}\n"
    "  split: {method: kfold, n_folds: 4, val: 1}\n"
    "tasks:\n  krige: {data: {task: krige}}\nmodels:\n  idw: {}\n  knn: {hparams: {k: 2}}\n"
)


def interrupted(folder: Path, monkeypatch) -> list[str]:
    import stgraph.engine.run as run_module

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "run_experiment", ctrl_c)
    return config(folder, with_train())


# (id, build(folder, monkeypatch) -> argv, exit code, key words of stderr (or stdout when exit 0))
CASES = [
    # --- files a user brings ---
    ("header-only csv", lambda f, m: summary(f, "station,time,pm25\n"), 1, ["long.csv", "no data rows"]),
    ("empty file", lambda f, m: summary(f, ""), 1, ["long.csv", "empty"]),
    ("not utf-8", lambda f, m: summary(f, good_rows().encode() + "A,caf\xe9,1\n".encode("latin-1")), 1,
     ["long.csv", "not valid utf-8", "--encoding"]),
    ("mixed utc offsets are converted", lambda f, m: summary(
        f, "station,time,pm25\nA,2024-01-01 08:00+08:00,1\nB,2024-01-01 00:00+00:00,2\nA,2024-01-01 01:00Z,3\n"
        "B,2024-01-01 09:00+08:00,4\nC,2024-01-01 00:00+00:00,5\nD,2024-01-01 00:00+00:00,6\n"), 0, ["stations"]),
    ("offset and naive stamps mixed", lambda f, m: summary(
        f, "station,time,pm25\nA,2024-01-01 08:00+08:00,1\nB,2024-01-01 00:00,2\n"), 1,
     ["long.csv", "line 3", "no utc offset"]),
    ("freq banana", lambda f, m: summary(f, good_rows(), "--freq", "banana"), 1, ["long.csv", "banana", "1h"]),
    ("value beyond float32", lambda f, m: summary(f, good_rows().replace("1.5\n", "1e308\n", 1)), 1,
     ["long.csv", "line 2", "pm25", "single precision"]),
    ("unknown --nonnegative channel", lambda f, m: summary(f, good_rows(), "--nonnegative", "pm52"), 1,
     ["pm52", "not variables"]),
    # --- configs ---
    ("window 0", lambda f, m: config(f, BASE.replace("window: 8", "window: 0")), 1, ["c.yaml", "data.window", ">= 1"]),
    ("window -5", lambda f, m: config(f, BASE.replace("window: 8", "window: -5")), 1, ["data.window", ">= 1"]),
    ("batch_size 0", lambda f, m: config(f, with_train("batch_size: 0")), 1, ["train.batch_size", ">= 1"]),
    ("negative lr", lambda f, m: config(f, with_train("lr: -0.001")), 1, ["train.lr", "positive"]),
    ("epochs -1", lambda f, m: config(f, with_train("epochs: -1")), 1, ["train.epochs", ">= 1"]),
    ("duplicate yaml key", lambda f, m: config(f, with_train("lr: 0.001, lr: 0.01")), 1,
     ["c.yaml", "'lr' appears twice"]),
    ("eval_steps beyond the window", lambda f, m: config(f, with_train(data="eval_steps: [1, 24]")), 1,
     ["data.eval_steps", "[24]", "1..8"]),
    ("one station", lambda f, m: one_station(f), 1, ["1 station", "at least 3"]),
    ("fold beyond n_folds", lambda f, m: config(f, BASE + "split: {n_folds: 4, fold: 4}\n"), 1,
     ["split.fold", "n_folds"]),
    ("missing config file", lambda f, m: ["train", str(f / "nope.yaml")], 1, ["nope.yaml", "no such config"]),
    ("config not utf-8", lambda f, m: [(f / "c.yaml").write_bytes(b"name: caf\xe9\n"), "train", str(f / "c.yaml")][1:],
     1, ["c.yaml", "utf-8"]),
    # --- user cards ---
    ("junk card is reported, others listed", junk_card, 0, ["uci-beijing-12"]),
    # --- benchmark ---
    ("malformed suite yaml", lambda f, m: suite(f, "name: s\ntasks: {krige: [\n"), 1, ["s.yaml", "not valid yaml"]),
    ("label escapes --out", lambda f, m: suite(f, SUITE.replace("  idw: {}", "  ../../../x: {model: idw}")), 1,
     ["s.yaml", "../../../x", "single folder name"]),
    ("--folds out of range", lambda f, m: suite(f, SUITE, "--folds", "9"), 1, ["--folds", "[9]", "folds [0, 1]"]),
    ("--seeds out of range", lambda f, m: suite(f, SUITE, "--seeds", "3"), 1, ["--seeds", "[3]"]),
    ("--folds not numbers", lambda f, m: suite(f, SUITE, "--folds", "a"), 1, ["--folds", "int"]),
    # --- the command line itself ---
    ("ctrl-c", interrupted, 130, ["interrupted", "rerun the same command to resume"]),
]


@pytest.mark.parametrize(("build", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_named_error(tmp_path, monkeypatch, capsys, build, code, words):
    argv = build(tmp_path, monkeypatch)
    assert main(argv) == code
    out, err = capsys.readouterr()
    text = (out + err if code == 0 else err).lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in:\n{text}"
    assert "traceback" not in (out + err).lower()


def test_junk_card_is_named_on_stderr(tmp_path, monkeypatch, capsys):
    assert main(junk_card(tmp_path, monkeypatch)) == 0
    err = capsys.readouterr().err
    assert "junk.yaml" in err and "not a valid dataset card" in err


def test_batch_size_zero_leaves_no_half_written_run(tmp_path, capsys):
    assert main(config(tmp_path, with_train("batch_size: 0"))) == 1
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main([*config(tmp_path, with_train("lr: -1")), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


# --- readers: what a user expects, not an error ---


def test_station_ids_are_read_as_text(tmp_path):
    from stgraph.data.readers import read_long_table

    st = "station,latitude,longitude\n" + "".join(f"00{i},{39.5 + i / 10},{116 + i / 10}\n" for i in range(4))
    rows = good_rows(stations=[f"00{i}" for i in range(4)], hours=4)
    data = read_long_table(long_csv(tmp_path, rows), stations_csv(tmp_path, st))
    assert data.station_ids == ["000", "001", "002", "003"]


def test_negatives_are_masked_only_where_they_cannot_occur(tmp_path):
    from stgraph.data.readers import read_long_table

    times = pd.date_range("2024-01-01", periods=4, freq="1h").strftime("%Y-%m-%d %H:%M")
    rows = "station,time,pm25,temp\n" + "".join(f"{s},{t},-1,-5.5\n" for t in times for s in "ABCD")
    data = read_long_table(long_csv(tmp_path, rows), stations_csv(tmp_path))
    pm, temp = data.channel_index("pm25"), data.channel_index("temp")
    assert not data.mask[:, :, pm].any() and data.mask[:, :, temp].all()
    assert np.allclose(data.values[:, :, temp], -5.5)
    report = data.meta["report"]
    assert report["counts"]["negative pm25 values masked"] == 16
    assert any("non-negative channels" in n and "pm25" in n and "temp" not in n for n in report["notes"])


def test_a_station_without_rows_is_named_in_the_report(tmp_path):
    from stgraph.data.readers import read_long_table

    data = read_long_table(long_csv(tmp_path, good_rows(stations=("A", "B", "C"), hours=4)), stations_csv(tmp_path))
    assert data.meta["report"]["counts"]["stations in the table without rows (all missing)"] == 1
    assert any("'D'" in n for n in data.meta["report"]["notes"])


def test_utc_offsets_are_converted(tmp_path):
    from stgraph.data.readers import read_long_table

    rows = "station,time,pm25\nA,2024-01-01 08:00+08:00,1\nB,2024-01-01 00:00+00:00,2\n"
    data = read_long_table(long_csv(tmp_path, rows), stations_csv(tmp_path))
    assert data.num_steps == 1 and str(pd.Timestamp(data.times[0])) == "2024-01-01 00:00:00"
    assert any("UTC" in n for n in data.meta["report"]["notes"])


def test_the_encoding_option_reads_a_latin1_file(tmp_path, capsys):
    st = "station,latitude,longitude,name\nA,39.9,116.4,Caf\xe9\nB,40.0,116.5,b\nC,39.8,116.3,c\n"
    (tmp_path / "st.csv").write_bytes(st.encode("latin-1"))
    long_csv(tmp_path, good_rows(stations="ABC"))
    argv = ["summary", "--long", str(tmp_path / "long.csv"), "--stations", str(tmp_path / "st.csv"), "--k", "1"]
    assert main(argv) == 1
    assert main([*argv, "--encoding", "latin-1"]) == 0


def test_the_re_add_command_keeps_the_reader_options(tmp_path, monkeypatch):
    from stgraph.datasets.user_cards import UserCard

    card = UserCard(name="c", long="/d/long.csv", long_sha256="0", stations="/d/st.csv", stations_sha256="1",
                    reader={"freq": "1h", "nonnegative": ["pm25", "no2"], "units": {"pm25": "ug/m3"},
                            "duplicate_coordinates": "keep"})  # fmt: skip
    cmd = card.readd_command()
    for part in ("--freq 1h", "--nonnegative pm25,no2", "--units pm25=ug/m3", "--duplicate-coordinates keep",
                 "--force"):  # fmt: skip
        assert part in cmd, cmd


# --- benchmark: a subset rerun keeps the other models' rows ---


def test_a_subset_rerun_keeps_every_finished_row(tmp_path, capsys):
    assert main(suite(tmp_path, SUITE, "--folds", "0")) == 0
    assert main(suite(tmp_path, SUITE, "--models", "idw", "--folds", "0")) == 0
    board = (tmp_path / "bench" / "leaderboard.md").read_text()
    assert "`idw`" in board and "`knn`" in board
    knn_row = next(line for line in board.splitlines() if line.startswith("| `knn`"))
    assert "—" not in knn_row.split("|")[2]  # knn's finished fold is still on the board


# --- reanalysis: sized first, negative bounds as typed, nothing half-written ---


@pytest.fixture
def idw_run(tmp_path):
    data = synthetic_stations(num_nodes=8, num_steps=24 * 4, seed=2)
    t, n, _ = data.values.shape
    folder = tmp_path / "files"
    folder.mkdir()
    pd.DataFrame({
        "station": np.tile(np.asarray(data.station_ids), t),
        "time": np.repeat(pd.DatetimeIndex(data.times).strftime("%Y-%m-%d %H:%M"), n),
        "pm25": data.values[:, :, 0].ravel(),
    }).to_csv(folder / "long.csv", index=False)  # fmt: skip
    data.stations[["station", "latitude", "longitude"]].to_csv(folder / "st.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        f"name: r\ndata: {{long: {folder / 'long.csv'}, stations: {folder / 'st.csv'}, target_channels: [pm25], "
        "task: krige, window: 12, stride: 12}\nsplit: {method: kfold, n_folds: 4, val: 1}\nmodel: {name: idw}\n"
    )
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    return tmp_path / "runs" / "r", data


def test_reanalysis_is_sized_before_it_starts(idw_run, tmp_path, capsys):
    run, _ = idw_run
    out = tmp_path / "big.nc"
    assert main(["reanalyse", str(run), "--grid", "35,45,110,120,0.001", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "100,000,000 cells" in err and "gb" in err.lower() and "--max-output-gb" in err
    assert not out.exists() and not out.with_suffix(".nc.partial").exists()
    assert main(["reanalyse", str(run), "--grid", "35,45,110,120,0.001", "--out", str(out), "--quiet",
                 "--max-output-gb", "1e6", "--max-memory-gb", "0.001"]) == 1  # fmt: skip
    assert "--max-memory-gb" in capsys.readouterr().err


def test_negative_grid_bounds_work_as_typed(idw_run, tmp_path, capsys):
    run, data = idw_run
    lat, lon = data.latlon.mean(axis=0)
    out = tmp_path / "south.nc"
    spec = f"{lat - 0.2:.3f},{lat + 0.2:.3f},{lon - 0.2:.3f},{lon + 0.2:.3f},0.1"
    assert main(["reanalyse", str(run), "--grid", spec, "--out", str(out), "--quiet"]) == 0
    assert main(["reanalyse", str(run), "--grid", "-89,-88,-10,-9,0.5", "--out", str(tmp_path / "s.nc"),
                 "--quiet"]) == 0  # fmt: skip
    import xarray as xr

    with xr.open_dataset(tmp_path / "s.nc") as ds:
        assert float(ds.lat.min()) < -88 and float(ds.lon.min()) < -9


def test_a_failed_reanalysis_leaves_no_partial_file(idw_run, tmp_path, monkeypatch):
    from stgraph.reanalysis import load_reanalysis_run, netcdf, write_reanalysis

    run, data = idw_run
    rr = load_reanalysis_run(run)

    def fail(*a, **k):
        raise OSError(27, "File too large")

    monkeypatch.setattr(netcdf, "_write_cells", fail)
    out = tmp_path / "x.nc"
    out.with_suffix(".nc.partial").write_text("left over by a killed process")
    lat, lon = data.latlon.mean(axis=0)
    from stgraph.reanalysis import grid_targets

    with pytest.raises(OSError, match="File too large"):
        write_reanalysis(rr, out, grid=grid_targets(f"{lat - 0.2},{lat + 0.2},{lon - 0.2},{lon + 0.2},0.1"),
                         progress=False)  # fmt: skip
    assert not out.exists() and not out.with_suffix(".nc.partial").exists()
