import numpy as np
import pytest

from stgraph.data import (
    StationSplit,
    connectivity_report,
    explicit_split,
    kfold_station_splits,
    leave_one_station_out,
    load_split,
    random_station_split,
    save_split,
    spatial_block_split,
)
from stgraph.graph import latlon_to_xyz


def roles_cover(split, ids):
    got = set(split.train) | set(split.val) | set(split.test)
    return got == set(ids) and len(split.train) + len(split.val) + len(split.test) == len(ids)


def test_random_split_is_seeded_and_disjoint(synthetic):
    a = random_station_split(synthetic, test=0.25, val=2, seed=3)
    b = random_station_split(synthetic, test=0.25, val=2, seed=3)
    c = random_station_split(synthetic, test=0.25, val=2, seed=4)
    assert a == b and a != c
    assert len(a.test) == 3 and len(a.val) == 2 and roles_cover(a, synthetic.station_ids)


@pytest.mark.parametrize("spatial", [False, True])
def test_kfold_tests_every_station_exactly_once(synthetic, spatial):
    folds = kfold_station_splits(synthetic, 4, val=1, seed=0, spatial=spatial)
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(synthetic.station_ids)
    for f in folds:
        assert roles_cover(f, synthetic.station_ids) and len(f.val) == 1
        assert abs(len(f.test) - 3) <= 1


def test_spatial_folds_are_compact(synthetic):
    """A spatial fold's stations are closer to each other than a random fold's, on average."""
    xyz = latlon_to_xyz(synthetic.latlon)

    def spread(folds):
        return np.mean(
            [
                np.linalg.norm(
                    xyz[synthetic.station_index(f.test)] - xyz[synthetic.station_index(f.test)].mean(0), axis=1
                ).mean()
                for f in folds
            ]
        )

    assert spread(kfold_station_splits(synthetic, 3, spatial=True)) < spread(kfold_station_splits(synthetic, 3))


def test_spatial_block_holds_out_nearest_neighbours(uci12):
    split = spatial_block_split(uci12, test=3, val=1, seed=0)
    test = uci12.station_index(split.test)
    xyz = latlon_to_xyz(uci12.latlon)
    centre = test[0]
    d = np.linalg.norm(xyz - xyz[centre], axis=1)
    assert set(test) == set(np.argsort(d)[:3])
    assert roles_cover(split, uci12.station_ids)


def test_leave_one_out_and_explicit(synthetic):
    folds = leave_one_station_out(synthetic, val=1)
    assert len(folds) == synthetic.num_nodes and all(len(f.test) == 1 for f in folds)
    s = explicit_split(synthetic, test=["S000"], val=["S001"])
    assert s.test == ("S000",) and "S000" not in s.train and len(s.train) == synthetic.num_nodes - 2
    with pytest.raises(KeyError, match="S999"):
        explicit_split(synthetic, test=["S999"])
    with pytest.raises(ValueError, match="both"):
        StationSplit(train=["a", "b"], val=[], test=["b"])


def test_split_json_round_trip(tmp_path, synthetic):
    folds = kfold_station_splits(synthetic, 3, seed=1)
    assert load_split(save_split(folds, tmp_path / "split.json")) == folds
    one = random_station_split(synthetic, seed=2)
    assert load_split(save_split(one, tmp_path / "one.json")) == one


def test_connectivity_report_on_real_stations(uci12):
    split = explicit_split(uci12, test=["Huairou", "Dongsi"], val=["Tiantan"])
    rep = connectivity_report(uci12, split, isolation_km=20)
    by = rep.set_index("station")
    # Dongsi's nearest training station is Nongzhanguan (~4 km); Huairou is > 20 km from all others.
    assert by.loc["Dongsi", "nearest_train"] == "Nongzhanguan" and by.loc["Dongsi", "distance_km"] < 5
    assert bool(by.loc["Huairou", "isolated"]) and not bool(by.loc["Dongsi", "isolated"])
    assert set(rep["role"]) == {"val", "test"}
