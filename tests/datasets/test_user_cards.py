"""Your own network as a named dataset: card, checksums, loading everywhere a name is accepted."""

import numpy as np
import pandas as pd
import pytest

from stgraph.data.errors import DataValidationError
from stgraph.data.readers import read_long_table
from stgraph.datasets import ChecksumError, DatasetNotFoundError, list_datasets, load_dataset
from stgraph.datasets.user_cards import add_user_dataset, stgraph_home, user_cards
from stgraph.testing import synthetic_stations


def write_long_table(folder, num_nodes=8, num_steps=24 * 8, seed=0, duplicate=False):
    """A long table + stations table from the synthetic network (what a user brings)."""
    data = synthetic_stations(num_nodes=num_nodes, num_steps=num_steps, seed=seed, missing_rate=0.05)
    t, n, _ = data.values.shape
    ids = np.asarray(data.station_ids)
    long = pd.DataFrame({
        "station": np.tile(ids, t),
        "time": np.repeat(pd.DatetimeIndex(data.times).strftime("%Y-%m-%d %H:%M"), n),
        "pm25": np.where(data.mask[:, :, 0], data.values[:, :, 0], np.nan).ravel(),
    })  # fmt: skip
    stations = data.stations[["station", "latitude", "longitude"]].copy()
    if duplicate:
        stations.loc[1, ["latitude", "longitude"]] = stations.loc[0, ["latitude", "longitude"]].to_numpy()
    folder.mkdir(parents=True, exist_ok=True)
    long.to_csv(folder / "long.csv", index=False)
    stations.to_csv(folder / "stations.csv", index=False)
    return folder / "long.csv", folder / "stations.csv"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STGRAPH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_stgraph_home_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("STGRAPH_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert stgraph_home() == tmp_path / "cfg" / "stgraph"
    monkeypatch.setenv("STGRAPH_HOME", str(tmp_path / "h"))
    assert stgraph_home() == tmp_path / "h"


def test_add_then_load_by_name_with_checksums(home, tmp_path):
    long, stations = write_long_table(tmp_path / "files")
    card, data = add_user_dataset("My-City", long, stations, units={"pm25": "ug/m3"})
    assert card.name == "my-city" and card.path == home / "datasets" / "my-city.yaml"
    assert "my-city" in list_datasets() and "my-city" in user_cards()
    loaded = load_dataset("my-city")
    assert loaded.num_nodes == 8 and loaded.units == ("ug/m3",) and loaded.meta["dataset"] == "my-city"
    np.testing.assert_array_equal(loaded.values, data.values)
    # a changed file is refused, with the command that re-adds it
    long.write_text(long.read_text().replace("2024-01-01 00:00", "2024-01-01 00:00", 1) + "\n")
    with pytest.raises(ChecksumError, match=r"changed since it was added.*stgraph datasets add my-city --long"):
        load_dataset("my-city")
    add_user_dataset("my-city", long, stations, force=True)  # re-added: loads again
    assert load_dataset("my-city").num_nodes == 8
    long.unlink()
    with pytest.raises(DatasetNotFoundError, match="is missing; put it back or re-add"):
        load_dataset("my-city")


def test_add_refuses_bad_names_builtins_duplicates_and_unknown_options(home, tmp_path):
    long, stations = write_long_table(tmp_path / "files")
    with pytest.raises(ValueError, match="lower-case letters"):
        add_user_dataset("my city!", long, stations)
    with pytest.raises(ValueError, match="built-in dataset"):
        add_user_dataset("aqi36", long, stations)
    add_user_dataset("city", long, stations)
    with pytest.raises(ValueError, match="already exists.*--force"):
        add_user_dataset("city", long, stations)
    with pytest.raises(ValueError, match="unknown reader option"):
        add_user_dataset("city2", long, stations, colour="red")
    with pytest.raises(FileNotFoundError, match="no such file"):
        add_user_dataset("city3", tmp_path / "nope.csv", stations)
    with pytest.raises(KeyError, match="add one with `stgraph datasets add"):
        load_dataset("nowhere")


def test_duplicate_coordinates_advice_is_reachable_from_reader_and_card(home, tmp_path):
    long, stations = write_long_table(tmp_path / "files", duplicate=True)
    with pytest.raises(DataValidationError, match="duplicate_coordinates='keep'"):
        read_long_table(long, stations)
    assert read_long_table(long, stations, duplicate_coordinates="keep").num_nodes == 8
    with pytest.raises(DataValidationError, match="--duplicate-coordinates keep"):
        add_user_dataset("dup", long, stations)
    card, _ = add_user_dataset("dup", long, stations, duplicate_coordinates="keep")
    assert card.reader == {"duplicate_coordinates": "keep"}
    assert load_dataset("dup").num_nodes == 8  # the card applies the option at every load
