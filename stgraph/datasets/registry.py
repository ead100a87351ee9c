"""Built-in datasets by name: cards -> resolved, verified files -> :class:`StationData`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stgraph.data.station_data import StationData
from stgraph.datasets import aqi36, cn_stations, era5_uk, uci_beijing
from stgraph.datasets.cards import DatasetCard, all_cards
from stgraph.datasets.resolve import provenance, resolve_files
from stgraph.datasets.user_cards import load_user_dataset, read_user_cards, user_cards, user_cards_dir

LOADERS: dict[str, Callable[[DatasetCard, dict[str, Path]], StationData]] = {
    "uci_beijing": uci_beijing.load,
    "aqi36": aqi36.load,
    "cn_stations": cn_stations.load,
    "era5_uk": era5_uk.load,
}


def list_datasets() -> list[str]:
    """Built-in dataset names, then the user's (``stgraph datasets add``)."""
    return sorted(all_cards()) + sorted(user_cards())


def get_card(name: str) -> DatasetCard:
    """A built-in dataset's card (user datasets: :func:`stgraph.datasets.user_cards.user_cards`)."""
    cards = all_cards()
    key = name.strip().lower().replace("_", "-")
    if key not in cards:
        broken = read_user_cards()[1]
        if broken:
            first = next(iter(broken.values()))
            raise KeyError(
                f"unknown dataset '{name}'; available: built-in {sorted(cards)}, yours {sorted(user_cards())}; "
                f"{len(broken)} card file(s) in {user_cards_dir()} are broken, e.g. {first}"
            )
        raise KeyError(
            f"unknown dataset '{name}'; available: built-in {sorted(cards)}, yours {sorted(user_cards())} "
            f"(add one with `stgraph datasets add NAME --long FILE --stations FILE`; cards in {user_cards_dir()})"
        )
    return cards[key]


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = True) -> StationData:
    """Load a built-in dataset, reading verified files (see :mod:`stgraph.datasets.resolve`), or a
    user dataset added with ``stgraph datasets add`` (files verified against the card's SHA-256)."""
    key = name.strip().lower()
    if key.replace("_", "-") not in all_cards():
        user = user_cards()
        if key in user:
            return load_user_dataset(user[key])
    card = get_card(name)
    files = resolve_files(card, data_dir, download=download)
    data = LOADERS[card.loader](card, files)
    data.meta.update(provenance(card, files))
    return data
