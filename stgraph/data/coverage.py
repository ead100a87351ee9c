"""Station roles that can be scored, and how far each hidden station is from the training ones.

A val (test) station needs an observed target in the val
(test) period, or the run cannot score it.

Real networks are patchy: a station may have no PM2.5 at all in the last 30 % of the record. A
drawn split (k-fold, random, spatial) moves such a station to the train role (it still serves as
an input wherever it has data) and, if a role ends up empty, gives it the first station of a
seeded shuffle of the train role that has coverage there; each move is recorded in
``split.params["coverage_moves"]``. When every station has coverage nothing changes. An explicit
split (``explicit``, ``loso``) is the user's choice: it is refused, naming the station and the period.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from stgraph.data.splits import StationSplit
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit
from stgraph.geo import geodesic_km

FIXED_METHODS = ("explicit", "loso")


def role_coverage(data: StationData, periods: TimeSplit, channels) -> pd.DataFrame:
    """(N, 3) fraction of steps with an observed target (any of ``channels``) per station (rows:
    station ids) in each period (columns train, val, test)."""
    ch = np.asarray(channels, dtype=np.int64)
    out = {}
    for name in ("train", "val", "test"):
        period = periods.period(name)
        observed = data.mask[period][:, :, ch].any(axis=2)  # (T_period, N)
        out[name] = observed.mean(axis=0) if period.any() else np.zeros(data.num_nodes)
    return pd.DataFrame(out, index=pd.Index(data.station_ids, name="station"))


def _span(data: StationData, period: np.ndarray) -> str:
    idx = np.flatnonzero(period)
    if not len(idx):
        return "empty"
    fmt = lambda t: str(pd.Timestamp(data.times[t]))  # noqa: E731
    return f"{fmt(idx[0])} to {fmt(idx[-1])}"


def ensure_coverage(data: StationData, split: StationSplit, periods: TimeSplit, channels) -> StationSplit:
    """The split with every val/test station observed (target channels) in its scored period."""
    cov = role_coverage(data, periods, channels)
    roles = {r: list(getattr(split, r)) for r in ("train", "val", "test")}
    moves = []
    for role in ("val", "test"):
        empty = [s for s in roles[role] if cov.at[s, role] == 0]
        if empty and split.method in FIXED_METHODS:
            raise ValueError(
                f"{split.method} split: {role} station(s) {empty} have no observed target in the {role} period "
                f"({_span(data, periods.period(role))}), so they cannot be scored; choose other {role} stations"
            )
        for s in empty:
            roles[role].remove(s)
            roles["train"].append(s)
            moves.append({"station": s, "from": role, "to": "train", "reason": f"no target observed in {role} period"})
    rng = np.random.default_rng(0 if split.seed is None else split.seed)
    for role in ("val", "test"):
        if roles[role] or not getattr(split, role):
            continue  # still has stations, or never had any
        candidates = [s for s in rng.permutation(sorted(roles["train"])) if cov.at[s, role] > 0]
        if not candidates:
            raise ValueError(
                f"no station has an observed target in the {role} period ({_span(data, periods.period(role))}); "
                "change the time split (split.time_val / split.time_test / split.periods)"
            )
        roles["train"].remove(candidates[0])
        roles[role].append(candidates[0])
        moves.append({"station": str(candidates[0]), "from": "train", "to": role, "reason": f"{role} role was empty"})
    if not moves:
        return split
    order = {s: i for i, s in enumerate(data.station_ids)}
    params = {**split.params, "coverage_moves": moves}
    return replace(split, **{r: tuple(sorted(v, key=order.get)) for r, v in roles.items()}, params=params)


def connectivity_report(
    data: StationData, split: StationSplit, *, isolation_km: float = 50.0, periods=None, channels=None
) -> pd.DataFrame:
    """For each hidden (val/test) station: its nearest training station and the geodesic
    distance to it; ``isolated`` marks hidden stations with no training station within
    ``isolation_km``, where any interpolation is an extrapolation. With ``periods`` (a TimeSplit)
    every station gets a row (train-role ones too) and ``coverage_train/val/test`` columns: the
    fraction of steps of each period with an observed value of ``channels`` (default: any channel);
    ``scorable``: a val/test station has an observation in the period it is scored in (a train-role
    station: in the train period)."""
    train_idx = split.indices(data, "train")
    rows = []
    latlon = data.latlon
    for role in ("val", "test"):
        idx = split.indices(data, role)
        if len(idx) == 0:
            continue
        a = np.repeat(latlon[idx], len(train_idx), axis=0)
        b = np.tile(latlon[train_idx], (len(idx), 1))
        d = geodesic_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1]).reshape(len(idx), len(train_idx))
        j = d.argmin(1)
        dist = d[np.arange(len(idx)), j]
        rows.append(
            pd.DataFrame(
                {
                    "station": data.ids(idx),
                    "role": role,
                    "nearest_train": data.ids(train_idx[j]),
                    "distance_km": dist.astype(float),
                    "isolated": dist > isolation_km,
                }
            )
        )
    columns = ["station", "role", "nearest_train", "distance_km", "isolated"]
    report = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    if periods is None:
        return report
    cov = role_coverage(data, periods, range(data.num_channels) if channels is None else channels)
    train = pd.DataFrame({"station": data.ids(train_idx), "role": "train"})
    report = pd.concat([train, report], ignore_index=True)
    for name in ("train", "val", "test"):
        report[f"coverage_{name}"] = cov.loc[report.station, name].to_numpy()
    own = [getattr(r, f"coverage_{r.role}") for r in report.itertuples()]  # coverage in the role's own period
    report["scorable"] = [bool(c > 0) for c in own]
    return report
