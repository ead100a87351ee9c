"""Built-in real datasets (cards in the repository's ``datasets/``) and their loaders."""

from stgraph.datasets.cards import DatasetCard
from stgraph.datasets.era5_uk import era5_uk_time_split, load_era5_uk
from stgraph.datasets.registry import get_card, list_datasets, load_dataset
from stgraph.datasets.resolve import ChecksumError, DatasetNotFoundError, resolve_files

__all__ = [
    "load_dataset",
    "list_datasets",
    "get_card",
    "DatasetCard",
    "resolve_files",
    "DatasetNotFoundError",
    "ChecksumError",
    "load_era5_uk",
    "era5_uk_time_split",
]
