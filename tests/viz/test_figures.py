"""Every figure renders from a small real run as a non-blank PNG of the expected size."""

import contextlib
import io

import matplotlib.image as mpimg
import numpy as np
import pytest

from stgraph.cli import main
from stgraph.datasets.user_cards import add_user_dataset
from stgraph.reanalysis import grid_targets, load_reanalysis_run, write_reanalysis
from stgraph.viz import error_vs_distance, leaderboard_bars, learning_curves, reanalysis_map, station_series
from tests.datasets.test_user_cards import write_long_table

SUITE = """name: tiny
folds: [0, 1]
seeds: [0]
base:
  data: {dataset: viz-city, target_channels: [pm25], window: 12, stride: 12, eval_stride: 12, eval_steps: []}
  split: {method: kfold, n_folds: 4, val: 1, time_gap: 0}
  train: {epochs: 2, patience: 3, max_train_windows: 8}
tasks:
  krige:
    data: {task: krige}
models:
  idw: {}
  gp: {}
  ignnk: {hparams: {hidden_channels: 8, order: 1, k: 3}}
  aqnet: {hparams: {hidden_channels: 8, num_layers: 1, heads: 2, k: 3, key_channels: 4}}
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viz")
    mp = pytest.MonkeyPatch()
    mp.setenv("STGRAPH_HOME", str(tmp / "home"))
    long, stations = write_long_table(tmp / "files", num_nodes=12, num_steps=24 * 6)
    add_user_dataset("viz-city", long, stations, units={"pm25": "ug/m3"})
    (tmp / "suite.yaml").write_text(SUITE)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["benchmark", str(tmp / "suite.yaml"), "--out", str(tmp / "bench"), "--workers", "0", "--no-maps"])
    assert code == 0
    assert f"tensorboard --logdir {tmp / 'bench' / 'runs'}" in printed.getvalue()  # where the trained runs' curves are
    yield tmp
    mp.undo()


def check_png(path, size):
    img = mpimg.imread(path)
    assert img.shape[:2] == size[::-1]  # (height, width) pixels = figsize x 100 dpi
    assert img[..., :3].std() > 0.02  # not blank


def test_leaderboard_and_error_distance(bench):
    check_png(leaderboard_bars(bench / "bench", bench / "bars.png", task="krige"), (800, round(100 * (0.35 * 4 + 1.5))))
    check_png(error_vs_distance(bench / "bench", bench / "err.png", task="krige"), (800, 500))
    with pytest.raises(ValueError, match="no 'mae' for task 'forecast'"):
        leaderboard_bars(bench / "bench", bench / "x.png", task="forecast")
    with pytest.raises(FileNotFoundError, match="no runs of task"):
        error_vs_distance(bench / "bench", bench / "x.png", task="impute")


def test_curves_series_and_reanalysis_map(bench):
    run = bench / "bench" / "runs" / "krige" / "ignnk" / "fold0-seed0"
    check_png(learning_curves(run, bench / "curves.png"), (700, 400))
    station = str(np.load(run / "predictions.npz")["stations"][0])
    check_png(station_series(run, station, bench / "series.png"), (1000, 400))
    with pytest.raises(KeyError, match="not a hidden station"):
        station_series(run, "nope", bench / "x.png")
    rr = load_reanalysis_run(bench / "bench" / "runs" / "krige" / "gp" / "fold0-seed0")
    nc = write_reanalysis(rr, bench / "r.nc", grid=grid_targets("39.6,40.4,116.0,117.0,0.1"), progress=False)
    check_png(reanalysis_map(nc, bench / "map.png", time="2024-01-02 05:00"), (700, 600))
    with pytest.raises(ValueError, match="not a step"):
        reanalysis_map(nc, bench / "x.png", time="2031-01-01")
    assert main(["plot", "curves", str(run), "--out", str(bench / "c2.png")]) == 0
    assert main(["plot", "curves", str(bench), "--out", str(bench / "c3.png")]) == 1  # no learning curve there


def test_aqnet_attention_and_edges(bench):
    from stgraph.viz.attention import aqnet_attention

    run = bench / "bench" / "runs" / "krige" / "aqnet" / "fold0-seed0"
    check_png(aqnet_attention(run, bench / "att.png"), (1140, 400))  # figsize (3.2 x 2 heads + 5, 4)
    with pytest.raises(ValueError, match="no test window starts then"):
        aqnet_attention(run, bench / "x.png", window_start="2031-01-01")
    with pytest.raises(ValueError, match="need an AQ-Net run"):
        aqnet_attention(bench / "bench" / "runs" / "krige" / "idw" / "fold0-seed0", bench / "x.png")
