"""Bring-your-own data: a valid table round-trips, every bad input names file, line and column."""

import numpy as np
import pandas as pd
import pytest

from stgraph.data import DataValidationError, read_long_table, read_stations

STATIONS = "station,latitude,longitude,altitude\nA,39.9,116.4,50\nB,40.0,116.3,60\nC,39.8,116.5,40\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def long_csv(rows):
    return "station,time,pm25,temp\n" + "\n".join(rows) + "\n"


GOOD = [
    "A,2024-01-01 00:00,10,-1.5",
    "B,2024-01-01 00:00,12,-2",
    "C,2024-01-01 00:00,,0",
    "A,2024-01-01 01:00,11,-1",
    "B,2024-01-01 01:00,13,-2",
    "C,2024-01-01 01:00,9,0.5",
]


def test_valid_table_round_trips(tmp_path):
    st = write(tmp_path, "st.csv", STATIONS)
    data = read_long_table(write(tmp_path, "m.csv", long_csv(GOOD)), st, nonnegative=["pm25"])
    assert data.values.shape == (2, 3, 2) and data.channels == ("pm25", "temp")
    assert data.values[1, 2, 0] == 9 and not data.mask[0, 2, 0]
    assert data.values[0, 0, 1] == -1.5  # temperature may be negative
    assert list(data.stations.columns) == ["station", "name", "latitude", "longitude", "altitude"]
    assert data.freq == pd.Timedelta("1h")


def test_parquet_and_embedded_coordinates(tmp_path):
    df = pd.DataFrame(
        {
            "station": ["A", "A", "B", "B"],
            "time": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"] * 2),
            "lat": [39.9, 39.9, 40.0, 40.0],
            "lon": [116.4, 116.4, 116.3, 116.3],
            "no2": [1.0, 2.0, 3.0, 4.0],
        }
    )
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    data = read_long_table(path)
    assert data.channels == ("no2",) and data.num_nodes == 2
    np.testing.assert_array_equal(data.values[:, :, 0], [[1, 3], [2, 4]])


def test_unsorted_rows_are_placed_by_key(tmp_path):
    st = write(tmp_path, "st.csv", STATIONS)
    a = read_long_table(write(tmp_path, "a.csv", long_csv(GOOD)), st)
    b = read_long_table(write(tmp_path, "b.csv", long_csv(GOOD[::-1])), st)
    np.testing.assert_array_equal(a.values, b.values)
    assert any("order" in n for n in b.meta["report"]["notes"])


def test_gaps_are_inserted_as_missing_and_counted(tmp_path):
    rows = GOOD + ["A,2024-01-01 04:00,5,1"]
    data = read_long_table(write(tmp_path, "m.csv", long_csv(rows)), write(tmp_path, "st.csv", STATIONS))
    assert data.num_steps == 5 and not data.mask[2:4].any()
    assert data.meta["report"]["counts"]["time steps with no rows (inserted as missing)"] == 2


BAD_INPUTS = [
    ("missing column", None, STATIONS, ["m.csv", "'time'"]),
    ("bad time", GOOD[:3] + ["A,2024-13-45 99:00,1,1"], STATIONS, ["m.csv", "line 5", "column 'time'"]),
    ("duplicate", GOOD + ["B,2024-01-01 01:00,3,3"], STATIONS, ["m.csv", "lines 6, 8", "duplicate rows", "'B'"]),
    (
        "irregular",
        GOOD + ["A,2024-01-01 02:00,3,3", "A,2024-01-01 02:30,3,3", "A,2024-01-01 03:00,3,3"],
        STATIONS,
        ["m.csv", "line 9", "02:30", "off the regular", "resample"],
    ),
    (
        "non-numeric",
        GOOD[:4] + ["B,2024-01-01 01:00,abc,1"],
        STATIONS,
        ["m.csv", "line 6", "column 'pm25'", "'abc'"],
    ),
    (
        "negative refused",
        GOOD[:2] + ["C,2024-01-01 00:00,-4,1"],
        STATIONS,
        ["m.csv", "line 4", "column 'pm25'", "negative"],
    ),
    ("unknown station", GOOD + ["Z,2024-01-01 00:00,1,1"], STATIONS, ["m.csv", "line 8", "['Z']"]),
    (
        "latitude range",
        GOOD,
        STATIONS.replace("40.0,116.3", "95.0,116.3"),
        ["st.csv", "line 3", "column 'latitude'", "[-90.0, 90.0]"],
    ),
    (
        "longitude text",
        GOOD,
        STATIONS.replace("116.5", "east"),
        ["st.csv", "line 4", "column 'longitude'", "not a number"],
    ),
    (
        "same coordinates",
        GOOD,
        STATIONS.replace("40.0,116.3", "39.9,116.4"),
        ["st.csv", "lines 2, 3", "['A', 'B']", "share"],
    ),
    ("duplicate station id", GOOD, STATIONS + "A,41,117,1\n", ["st.csv", "lines 2, 5", "'A'"]),
]


@pytest.mark.parametrize("case, rows, stations, needles", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_file_line_and_column(tmp_path, case, rows, stations, needles):
    text = "station,when,pm25,temp\nA,2024-01-01,1,1\n" if rows is None else long_csv(rows)
    path = write(tmp_path, "m.csv", text)
    kwargs = {"negative": "raise", "nonnegative": ["pm25"]} if case == "negative refused" else {}
    with pytest.raises(DataValidationError) as err:
        read_long_table(path, write(tmp_path, "st.csv", stations), **kwargs)
    for needle in needles:
        assert needle in str(err.value), (case, str(err.value))


def test_negative_values_are_masked_and_counted(tmp_path):
    rows = GOOD[:2] + ["C,2024-01-01 00:00,-4,1"]
    data = read_long_table(
        write(tmp_path, "m.csv", long_csv(rows)), write(tmp_path, "st.csv", STATIONS), nonnegative=["pm25"]
    )
    assert not data.mask[0, 2, 0] and data.mask[0, 2, 1]
    assert data.meta["report"]["counts"] == {"negative pm25 values masked": 1}


def test_irregular_resample_averages_onto_grid(tmp_path):
    rows = GOOD + ["A,2024-01-01 01:30,21,3", "A,2024-01-01 02:00,1,1", "A,2024-01-01 03:00,1,1"]
    data = read_long_table(
        write(tmp_path, "m.csv", long_csv(rows)), write(tmp_path, "st.csv", STATIONS), irregular="resample"
    )
    assert data.num_steps == 4 and data.values[1, 0, 0] == pytest.approx(16.0)  # mean of 11 and 21
    counts = data.meta["report"]["counts"]
    assert counts["rows moved onto the time grid (irregular='resample')"] == 1
    assert counts["rows averaged into one grid step"] == 1


def test_missing_cells_spelled_na_are_missing_not_errors(tmp_path):
    rows = GOOD[:2] + ["C,2024-01-01 00:00,NA,1"]
    data = read_long_table(write(tmp_path, "m.csv", long_csv(rows)), write(tmp_path, "st.csv", STATIONS))
    assert not data.mask[0, 2, 0]


def test_station_table_needs_its_columns(tmp_path):
    with pytest.raises(DataValidationError, match="missing latitude column"):
        read_stations(write(tmp_path, "st.csv", "station,x,y\nA,1,2\n"))
