"""stgraph reanalyse: values at stations equal the model's own predictions, CF layout, bounded
chunks, and a clear error for every bad input."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stgraph.cli import main
from stgraph.datasets.user_cards import add_user_dataset
from stgraph.engine.config import config_from_dict
from stgraph.engine.run import run_experiment
from stgraph.reanalysis import grid_targets, load_reanalysis_run, read_points, write_reanalysis
from tests.datasets.test_user_cards import write_long_table


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rean")
    mp = pytest.MonkeyPatch()
    mp.setenv("STGRAPH_HOME", str(tmp / "home"))
    long, stations = write_long_table(tmp / "files", num_nodes=10, num_steps=24 * 6)
    add_user_dataset("rean-city", long, stations, units={"pm25": "ug/m3"})
    out = {}
    for model in ("gp", "idw"):
        cfg = config_from_dict({
            "name": model,
            "data": {"dataset": "rean-city", "task": "krige", "window": 12, "stride": 12, "eval_stride": 12,
                     "eval_steps": [], "target_channels": ["pm25"]},
            "split": {"method": "kfold", "n_folds": 4, "val": 1, "time_gap": 0},
            "model": {"name": model},
            "train": {"epochs": 1, "max_train_windows": 8},
        })  # fmt: skip
        run, _ = run_experiment(cfg, tmp / "runs", progress=False)
        out[model] = run.path
    yield tmp, out
    mp.undo()


def test_values_at_hidden_stations_are_the_models_own_predictions(runs):
    tmp, paths = runs
    for model, path in paths.items():
        rr = load_reanalysis_run(path)
        preds = np.load(path / "predictions.npz")
        ids = [str(s) for s in preds["stations"]]
        table = rr.exp.data.stations.set_index("station").loc[ids].reset_index()
        points = pd.DataFrame({"point": ids, "latitude": table.latitude, "longitude": table.longitude})
        times = pd.DatetimeIndex(rr.exp.data.times)
        starts, h = preds["start"], preds["pred"].shape[1]
        first, last = int(starts.min()), int(starts.max()) + h
        nc = write_reanalysis(rr, tmp / f"{model}.nc", points=points, start=str(times[first]),
                              end=str(times[last - 1] + pd.Timedelta("1h")), progress=False)  # fmt: skip
        with xr.open_dataset(nc) as ds:
            got = ds["pm25"].values  # (T, point)
            assert ds["pm25"].attrs["units"] == "ug/m3" and ds.attrs["Conventions"] == "CF-1.8"
            assert ds.attrs["model"] == model and ds.attrs["visible_stations_role"] == "train"
            assert ("pm25_std" in ds) == (model == "gp")
            assert list(ds["point_id"].values.astype(str)) == ids
        want = np.full((last - first, len(ids)), np.nan, dtype=np.float32)
        for b in range(len(starts) - 1, -1, -1):  # a step's value is its first window's (the period's
            want[starts[b] - first : starts[b] - first + h] = preds["pred"][b, :, :, 0]  # tail window overlaps)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_grid_file_layout_distance_and_chunking(runs):
    tmp, paths = runs
    rr = load_reanalysis_run(paths["gp"])
    lat, lon = rr.visible_latlon[0]
    spec = grid_targets(f"{lat - 0.075},{lat + 0.075},{lon - 0.075},{lon + 0.075},0.05")  # centre (1, 1) at a station
    a = write_reanalysis(rr, tmp / "a.nc", grid=spec, cell_chunk=1, window_batch=1, progress=False)
    b = write_reanalysis(rr, tmp / "b.nc", grid=spec, cell_chunk=10_000, window_batch=64, progress=False)
    with xr.open_dataset(a) as da, xr.open_dataset(b) as db:
        assert da["pm25"].dims == ("time", "lat", "lon") and da.sizes["time"] == rr.exp.data.num_steps
        np.testing.assert_allclose(da["pm25"].values, db["pm25"].values, rtol=1e-6)
        np.testing.assert_allclose(da["pm25_std"].values, db["pm25_std"].values, rtol=1e-6)
        assert not np.isnan(da["pm25"].values).any()
        assert da["distance_to_nearest_station"].values[1, 1] == pytest.approx(0.0, abs=1e-3)
        assert (da["distance_to_nearest_station"].values > 1).sum() >= 4  # the corners are away from it
        assert da["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
        assert da["pm25"].attrs["standard_name"] == "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air"


def test_cli_writes_netcdf_and_csv_for_points(runs, tmp_path, capsys):
    _, paths = runs
    pts = tmp_path / "points.csv"
    pd.DataFrame({"point": ["a", "b"], "latitude": [39.9, 40.0], "longitude": [116.4, 116.5]}).to_csv(pts, index=False)
    assert main(["reanalyse", str(paths["idw"]), "--points", str(pts), "--out", str(tmp_path / "p.nc"),
                 "--csv", str(tmp_path / "p.csv"), "--quiet"]) == 0  # fmt: skip
    df = pd.read_csv(tmp_path / "p.csv")
    assert {"time", "point", "pm25", "distance_to_nearest_station"} <= set(df.columns) and len(df) == 2 * 24 * 6


def test_every_bad_input_is_a_clear_error(runs, tmp_path, capsys):
    _, paths = runs
    with pytest.raises(ValueError, match="zero cells"):
        grid_targets("40,39,116,117,0.1")
    with pytest.raises(ValueError, match="expected LAT0,LAT1,LON0,LON1,RES"):
        grid_targets("40,41,116")
    rr = load_reanalysis_run(paths["idw"])
    with pytest.raises(ValueError, match="The data spans"):
        rr.steps("2030-01-01", "2030-02-01")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_reanalysis_run(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((paths["gp"] / "config.yaml").read_text().replace("name: gp", "name: ignnk", 1)
                                      .replace("name: gp", "name: ignnk"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        load_reanalysis_run(bare)
    fc = tmp_path / "fc"
    fc.mkdir()
    (fc / "config.yaml").write_text((paths["idw"] / "config.yaml").read_text().replace("task: krige", "task: forecast"))
    with pytest.raises(ValueError, match="reanalyse needs a run of task"):
        load_reanalysis_run(fc)
    bad = tmp_path / "bad.csv"
    bad.write_text("point,latitude,longitude\na,39.9,116.4\nb,95,116.4\nc,,116\n")
    with pytest.raises(ValueError, match=r"lines \[3, 4\]"):
        read_points(bad)
    assert main(["reanalyse", str(paths["idw"]), "--grid", "40,39,116,117,0.1", "--out", str(tmp_path / "x.nc")]) == 1
    assert "zero cells" in capsys.readouterr().err


def _estimate_all(rr, latlon):
    steps = rr.steps(None, None)
    out = np.full((len(steps), len(latlon)), np.nan, dtype=np.float32)
    for got_steps, lo, arrays in rr.estimate(latlon, steps, window_batch=4, cell_chunk=7):
        out[got_steps - steps[0], lo : lo + arrays["mean"].shape[1]] = arrays["mean"][..., 0]
    return out


def test_cells_are_asked_through_the_evaluators_chunked_path(runs):
    """Grid cells are targets of the evaluator's chunked forward: the run's eval_target_chunk and
    eval_neighbours apply to them as to hidden stations, so a local model (IDW on its 4 nearest)
    gives the same values streamed in chunks of 3 cells with 4-station neighbourhoods, and other
    values when each chunk sees only its nearest station."""
    _, paths = runs
    rr = load_reanalysis_run(paths["idw"])
    rr.model.params.k = 4
    rng = np.random.default_rng(0)
    latlon = rr.visible_latlon[rng.integers(0, len(rr.visible), 20)] + rng.normal(0, 0.02, (20, 2))
    whole = _estimate_all(rr, latlon)
    rr.exp.cfg.train.eval_target_chunk, rr.exp.cfg.train.eval_neighbours = 3, 4
    chunked = _estimate_all(rr, latlon)
    assert rr.exp._chunk_plan[0][2] is True  # the plan was made for places, not dataset nodes
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)
    rr.exp.cfg.train.eval_neighbours = 1
    assert not np.allclose(_estimate_all(rr, latlon), whole, atol=1e-3)
