"""Station roles: which stations are ``train`` (visible), ``val`` (hidden, model selection) and
``test`` (hidden, scored). Every splitter returns :class:`StationSplit` objects keyed by station
id, saved to and loaded from JSON so a run can be repeated exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stgraph.data.station_data import StationData
from stgraph.geo import latlon_to_xyz

ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class StationSplit:
    """Disjoint station-id lists for the three roles; together they may cover a subset."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    method: str = "explicit"
    seed: int | None = None
    fold: int | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role in ROLES:
            object.__setattr__(self, role, tuple(str(s) for s in getattr(self, role)))
        seen: dict[str, str] = {}
        for role in ROLES:
            for s in getattr(self, role):
                if s in seen:
                    raise ValueError(f"station '{s}' is in both '{seen[s]}' and '{role}'")
                seen[s] = role
        if not self.train:
            raise ValueError("a split needs at least one train station")

    def role_of(self, station: str) -> str | None:
        return next((r for r in ROLES if station in getattr(self, r)), None)

    def indices(self, data: StationData, role: str) -> np.ndarray:
        """Node indices of one role in ``data``."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return data.station_index(getattr(self, role))

    def to_dict(self) -> dict:
        d = asdict(self)
        for role in ROLES:
            d[role] = list(d[role])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StationSplit:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown split keys {sorted(unknown)}")
        return cls(**d)


def save_split(split: StationSplit | list[StationSplit], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = split if isinstance(split, list) else [split]
    path.write_text(json.dumps({"splits": [s.to_dict() for s in splits]}, indent=2))
    return path


def load_split(path: str | Path) -> StationSplit | list[StationSplit]:
    """Inverse of :func:`save_split`: one split, or the list of folds that was saved."""
    d = json.loads(Path(path).read_text())
    if "splits" not in d:
        raise ValueError(f"{path}: expected a JSON object with key 'splits'")
    splits = [StationSplit.from_dict(s) for s in d["splits"]]
    return splits[0] if len(splits) == 1 else splits


def _ids(data: StationData | list[str]) -> list[str]:
    return data.station_ids if isinstance(data, StationData) else [str(s) for s in data]


def _count(n_or_frac: float, total: int) -> int:
    n = int(round(n_or_frac * total)) if isinstance(n_or_frac, float) and n_or_frac < 1 else int(n_or_frac)
    return max(0, min(n, total))


def explicit_split(data: StationData | list[str], *, test, val=(), train=None) -> StationSplit:
    """Roles from lists; ``train`` defaults to every station not in val or test."""
    ids = _ids(data)
    known = set(ids)
    for role, lst in (("test", test), ("val", val), ("train", train or [])):
        bad = [s for s in lst if str(s) not in known]
        if bad:
            raise KeyError(f"{role} stations {bad} are not in the data")
    hidden = {str(s) for s in (*test, *val)}
    train = [s for s in ids if s not in hidden] if train is None else train
    return StationSplit(train=train, val=val, test=test, method="explicit")


def random_station_split(
    data: StationData | list[str], *, test: float = 0.2, val: float = 0.1, seed: int = 0
) -> StationSplit:
    """Seeded random roles; ``test``/``val`` are fractions (< 1) or counts."""
    ids = _ids(data)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_test, n_val = _count(test, len(ids)), _count(val, len(ids))
    pick = [ids[i] for i in perm]
    return StationSplit(
        train=pick[n_test + n_val :],
        val=pick[n_test : n_test + n_val],
        test=pick[:n_test],
        method="random",
        seed=seed,
        params={"test": test, "val": val},
    )


def bernoulli_station_split(
    data: StationData | list[str], *, test: float = 0.5, val: float = 2, seed: int = 0
) -> StationSplit:
    """KITS's station split (Xu et al. 2023, its AQI-36 setting): each station is hidden (test) with
    probability ``test`` for the whole series, independently, so the number hidden varies with the
    seed; ``val`` stations (a count >= 1 or a fraction of the visible ones) are drawn from the
    visible stations for model selection, the rest train. At least one station of each role is
    kept (a draw that hides every station, or none, is redrawn from the same generator)."""
    ids = _ids(data)
    if not 0.0 < test < 1.0:
        raise ValueError(f"split.test={test}: the probability of hiding a station must be in (0, 1)")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        hidden = rng.random(len(ids)) < test
        visible = np.flatnonzero(~hidden)
        n_val = _count(val, len(visible))
        if hidden.any() and len(visible) - n_val >= 1 and n_val >= 1:
            break
    else:  # pragma: no cover - needs a probability at the edge of (0, 1) and very few stations
        raise ValueError(f"split.method bernoulli: no draw of {len(ids)} stations left every role non-empty")
    pick_val = set(rng.permutation(visible)[:n_val].tolist())
    return StationSplit(
        train=[ids[i] for i in visible if i not in pick_val],
        val=[ids[i] for i in visible if i in pick_val],
        test=[ids[i] for i in np.flatnonzero(hidden)],
        method="bernoulli",
        seed=seed,
        params={"test": test, "val": val},
    )


def _nearest_block(xyz: np.ndarray, centre: int, size: int, allowed: np.ndarray) -> np.ndarray:
    cand = np.flatnonzero(allowed)
    d = np.linalg.norm(xyz[cand] - xyz[centre], axis=1)
    return cand[np.argsort(d, kind="stable")[:size]]


def spatial_block_split(data: StationData, *, test: float = 0.2, val: float = 0.1, seed: int = 0) -> StationSplit:
    """Hold out spatial blocks: a random centre station and its nearest neighbours form the test
    block, another block from the rest forms val. Harder and more honest than a random split when
    stations cluster (several Beijing stations are < 2 km apart)."""
    ids, xyz = data.station_ids, latlon_to_xyz(data.latlon)
    rng = np.random.default_rng(seed)
    free = np.ones(len(ids), dtype=bool)
    blocks = []
    for n in (_count(test, len(ids)), _count(val, len(ids))):
        if n == 0:
            blocks.append(np.array([], dtype=np.int64))
            continue
        centre = rng.choice(np.flatnonzero(free))
        block = _nearest_block(xyz, centre, n, free)
        free[block] = False
        blocks.append(block)
    return StationSplit(
        train=[ids[i] for i in np.flatnonzero(free)],
        val=[ids[i] for i in blocks[1]],
        test=[ids[i] for i in blocks[0]],
        method="spatial_block",
        seed=seed,
        params={"test": test, "val": val},
    )


def _spatial_folds(xyz: np.ndarray, n_folds: int, rng: np.random.Generator, iters: int = 50) -> np.ndarray:
    """Balanced spatial clusters: k-means centres, then stations assigned greedily (closest
    station-centre pairs first) to clusters with room, so fold sizes differ by at most one."""
    n = len(xyz)
    centres = xyz[rng.choice(n, n_folds, replace=False)]
    cap = np.full(n_folds, n // n_folds) + (np.arange(n_folds) < n % n_folds)
    for _ in range(iters):
        d = np.linalg.norm(xyz[:, None] - centres[None], axis=2)  # (n, folds): n is a station count
        order = np.argsort(d, axis=None, kind="stable")
        fold = np.full(n, -1)
        room = cap.copy()
        for flat in order:
            i, f = divmod(int(flat), n_folds)
            if fold[i] < 0 and room[f] > 0:
                fold[i], room[f] = f, room[f] - 1
        new = np.stack([xyz[fold == f].mean(0) for f in range(n_folds)])
        if np.allclose(new, centres):
            break
        centres = new
    return fold


def kfold_station_splits(
    data: StationData, n_folds: int = 4, *, val: float = 1, seed: int = 0, spatial: bool = False
) -> list[StationSplit]:
    """K-fold station cross-validation: every station is a test station in exactly one fold.

    Args:
        n_folds: number of folds (2..N).
        val: val stations per fold, drawn (seeded) from the non-test stations; a count or a fraction.
        spatial: folds are balanced spatial clusters instead of random groups.
    """
    ids = _ids(data)
    n = len(ids)
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be in [2, {n}], got {n_folds}")
    rng = np.random.default_rng(seed)
    if spatial:
        fold_of = _spatial_folds(latlon_to_xyz(data.latlon), n_folds, rng)
    else:
        fold_of = np.empty(n, dtype=np.int64)
        fold_of[rng.permutation(n)] = np.arange(n) % n_folds
    splits = []
    for f in range(n_folds):
        test_idx = np.flatnonzero(fold_of == f)
        rest = np.flatnonzero(fold_of != f)
        val_idx = rng.choice(rest, _count(val, len(rest)), replace=False) if len(rest) > 1 else rest[:0]
        train_idx = np.setdiff1d(rest, val_idx)
        splits.append(
            StationSplit(
                train=[ids[i] for i in train_idx],
                val=[ids[i] for i in np.sort(val_idx)],
                test=[ids[i] for i in test_idx],
                method="spatial_kfold" if spatial else "kfold",
                seed=seed,
                fold=f,
                params={"n_folds": n_folds, "val": val},
            )
        )
    return splits


def leave_one_station_out(data: StationData | list[str], *, val: float = 1, seed: int = 0) -> list[StationSplit]:
    """N folds, each testing one station (val drawn from the others, seeded)."""
    ids = _ids(data)
    rng = np.random.default_rng(seed)
    out = []
    for f, s in enumerate(ids):
        rest = [x for x in ids if x != s]
        v = list(rng.choice(rest, _count(val, len(rest)), replace=False))
        out.append(
            StationSplit(
                train=[x for x in rest if x not in v],
                val=v,
                test=[s],
                method="loso",
                seed=seed,
                fold=f,
                params={"val": val},
            )
        )
    return out
