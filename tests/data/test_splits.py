from dataclasses import replace

import numpy as np
import pytest

from stgraph.data import (
    StationSplit,
    bernoulli_station_split,
    connectivity_report,
    explicit_split,
    kfold_station_splits,
    leave_one_station_out,
    load_split,
    random_station_split,
    save_split,
    spatial_block_split,
)
from stgraph.geo import latlon_to_xyz


def roles_cover(split, ids):
    got = set(split.train) | set(split.val) | set(split.test)
    return got == set(ids) and len(split.train) + len(split.val) + len(split.test) == len(ids)


def test_random_split_is_seeded_and_disjoint(synthetic):
    a = random_station_split(synthetic, test=0.25, val=2, seed=3)
    b = random_station_split(synthetic, test=0.25, val=2, seed=3)
    c = random_station_split(synthetic, test=0.25, val=2, seed=4)
    assert a == b and a != c
    assert len(a.test) == 3 and len(a.val) == 2 and roles_cover(a, synthetic.station_ids)


def test_bernoulli_split_hides_each_station_with_its_probability():
    """KITS's split: the hidden count varies with the seed around p * N; val from the visible only."""
    ids = [f"s{i:02d}" for i in range(36)]
    splits = [bernoulli_station_split(ids, test=0.5, val=2, seed=s) for s in range(200)]
    assert bernoulli_station_split(ids, test=0.5, val=2, seed=7) == splits[7]  # seeded
    counts = np.array([len(s.test) for s in splits])
    assert len(set(counts.tolist())) > 3  # independent draws, not a fixed fraction
    assert abs(counts.mean() - 18) < 1.0  # 36 x 0.5
    for s in splits:
        assert roles_cover(s, ids) and len(s.val) == 2 and s.train and s.method == "bernoulli"
    hidden_share = np.mean([[i in s.test for i in ids] for s in splits], axis=0)
    assert hidden_share.min() > 0.3 and hidden_share.max() < 0.7  # every station, not a block
    with pytest.raises(ValueError, match="probability"):
        bernoulli_station_split(ids, test=1.0)


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


def _patchy(num_nodes=10):
    """A network whose last 30 % holds no value at stations S000-S002."""
    from stgraph.testing import synthetic_stations

    data = synthetic_stations(num_nodes=num_nodes, num_steps=24 * 10, missing_rate=0.0)
    mask = data.mask.copy()
    mask[int(0.7 * data.num_steps) :, :3] = False
    return replace(data, values=np.where(mask, data.values, 0.0), mask=mask)


def test_split_roles_need_coverage_in_their_scored_period():
    from stgraph.data.coverage import ensure_coverage
    from stgraph.data.time_splits import chronological_time_split

    data = _patchy()
    periods = chronological_time_split(data.num_steps, val=0.1, test=0.2, gap=0)
    bad = explicit_split(data, test=["S000", "S005"], val=["S006"])
    with pytest.raises(ValueError, match=r"test station\(s\) \['S000'\] have no observed target in the test period"):
        ensure_coverage(data, bad, periods, [0])
    for fold in range(4):
        split = kfold_station_splits(data, 4, val=1, seed=1)[fold]
        fixed = ensure_coverage(data, split, periods, [0])
        assert not {"S000", "S001", "S002"} & set(fixed.val + fixed.test)
        assert fixed.val and fixed.test
        moved = {m["station"] for m in fixed.params.get("coverage_moves", [])}
        assert moved >= {"S000", "S001", "S002"} & set(split.val + split.test)
        report = connectivity_report(data, fixed, periods=periods, channels=[0])
        assert report.scorable.all() and len(report) == data.num_nodes
        assert report.set_index("station").at["S000", "coverage_test"] == 0.0
    full = kfold_station_splits(data, 4, val=1, seed=1)[0]
    whole = replace(data, mask=np.ones_like(data.mask))
    assert ensure_coverage(whole, full, periods, [0]) is full  # complete networks: unchanged


def test_patchy_network_trains_instead_of_dying_after_the_first_epoch(tmp_path):
    from stgraph.engine.config import config_from_dict
    from stgraph.engine.run import run_experiment

    data = _patchy()
    cfg = config_from_dict({
        "name": "patchy", "data": {"task": "krige", "window": 12, "stride": 12, "target_channels": ["x0"]},
        "split": {"method": "kfold", "n_folds": 4, "val": 1, "seed": 0, "time_val": 0.1, "time_test": 0.2},
        "model": {"name": "ignnk", "hparams": {"hidden_channels": 8, "order": 1, "k": 3}},
        "train": {"epochs": 1, "max_train_windows": 8},
    })  # fmt: skip
    for fold in range(4):
        cfg.split.fold = fold
        run, metrics = run_experiment(cfg, tmp_path, name=f"f{fold}", data=data, progress=False)
        assert metrics["test"]["hidden"]["overall"]["count"] > 0
