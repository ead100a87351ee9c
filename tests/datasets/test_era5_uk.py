"""ERA5 UK 2 m temperature, read from the mirror: the fine 32 x 48 grid, its 8 x 12 block means,
the 2:1:1 time split, the card, and the loader's errors."""

import eccodes
import numpy as np
import pandas as pd
import pytest

from stgraph.cli import main
from stgraph.data.grid import coarse_fine_index, stations_to_grid
from stgraph.datasets import (
    ChecksumError,
    DatasetNotFoundError,
    era5_uk_time_split,
    get_card,
    load_era5_uk,
    resolve_files,
)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def fine():
    return load_era5_uk(download=False)


@pytest.fixture(scope="module")
def coarse():
    return load_era5_uk(coarse_factor=4, download=False)


def test_fine_grid(fine):
    assert (fine.num_steps, fine.num_nodes, fine.num_channels) == (744, 32 * 48, 1)
    assert fine.channels == ("t2m",) and fine.units == ("K",) and fine.freq == pd.Timedelta("1h")
    assert str(fine.times[0]) == "2019-03-01T00:00:00.000000000" and str(fine.times[-1]).startswith("2019-03-31T23")
    assert fine.mask.all() and 250 < fine.values.min() and fine.values.max() < 300
    grid = fine.meta["grid"]
    assert grid["shape"] == (32, 48) and grid["lat"][0] == 58.0 and grid["lat"][-1] == 50.25  # row 0 north
    assert grid["lon"][0] == -10.0 and grid["lon"][-1] == 1.75  # 50.0 N and 2.0 E dropped
    assert fine.station_ids[49] == "r001c001" and fine.latlon[49].tolist() == [57.75, -9.75]
    assert fine.meta["sha256"]["era5-2mt-2019-03-uk.grib"] == get_card("era5-uk-t2m").files[0].sha256


def test_values_match_the_raw_grib_message(fine):
    """Independent read of the first GRIB message with eccodes: same numbers, same orientation."""
    with open(fine.meta["files"]["era5-2mt-2019-03-uk.grib"], "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
        try:
            nj, ni = eccodes.codes_get(h, "Nj"), eccodes.codes_get(h, "Ni")
            first = eccodes.codes_get_values(h).reshape(nj, ni)  # scanned north to south, west to east
        finally:
            eccodes.codes_release(h)
    assert (nj, ni) == (33, 49)
    assert np.allclose(fine.values[0, :, 0], first[:32, :48].ravel(), atol=1e-3)


def test_no_index_file_written_beside_the_data(fine):
    folder = resolve_files(get_card("era5-uk-t2m"), download=False)["era5-2mt-2019-03-uk.grib"].parent
    assert not list(folder.glob("*.idx"))


def test_coarse_is_the_mean_of_4x4_blocks(fine, coarse):
    assert (coarse.num_steps, coarse.num_nodes) == (744, 8 * 12) and coarse.meta["grid"]["shape"] == (8, 12)
    fv, _, _ = stations_to_grid(fine)
    blocks = fv.reshape(744, 8, 4, 12, 4, 1).mean(axis=(2, 4), dtype=np.float64)
    assert np.allclose(coarse.values.reshape(744, 8, 12, 1), blocks, atol=1e-4)
    # the containment index sends each fine cell to the coarse cell centred in its block
    idx = coarse_fine_index((32, 48), 4)
    assert np.abs(coarse.latlon[idx] - fine.latlon).max() == pytest.approx(0.375)
    assert coarse.latlon[0].tolist() == [57.625, -9.625]


def test_time_split_is_2_1_1(fine):
    split = era5_uk_time_split(fine.num_steps)
    assert (split.train.sum(), split.val.sum(), split.test.sum()) == (372, 186, 186)
    assert split.train[:372].all() and split.val[372:558].all() and split.test[558:].all()


def test_card_and_cli(capsys):
    card = get_card("era5-uk-t2m")
    assert card.url == "https://github.com/pydata/xarray-data/raw/master/era5-2mt-2019-03-uk.grib"
    assert "Contains modified Copernicus Climate Change Service information 2019" in " ".join(card.licence.split())
    assert main(["datasets", "list"]) == 0
    assert "era5-uk-t2m" in capsys.readouterr().out
    assert main(["datasets", "info", "era5-uk-t2m"]) == 0
    out = capsys.readouterr().out
    assert "era5-2mt-2019-03-uk.grib" in out and "t2m [K]" in out and "e5e82609f0e28e84" in out


def test_missing_and_corrupt_file_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("STGRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STGRAPH_DATA_DIR", raising=False)
    card = get_card("era5-uk-t2m")
    with pytest.raises(DatasetNotFoundError) as e:
        resolve_files(card, tmp_path / "mine", download=False, use_mirror=False)
    assert str(tmp_path / "mine" / "era5_uk_t2m") in str(e.value) and card.url in str(e.value)
    (tmp_path / "mine" / "era5_uk_t2m").mkdir(parents=True)
    (tmp_path / "mine" / "era5_uk_t2m" / "era5-2mt-2019-03-uk.grib").write_bytes(b"GRIB not really")
    with pytest.raises(ChecksumError, match="era5-2mt-2019-03-uk.grib"):
        load_era5_uk(tmp_path / "mine", download=False)
